"""The official judge, run as its authors ship it: langgraph-checkpoint-conformance, every
capability, against a real redis-server and a real 3-primary Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.conformance.report import CapabilityReport, ProgressCallbacks
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from chat_history_k8s.checkpoint import RedisCheckpointSaver

# How many tests the installed suite has: a capability that ran fewer was not fully judged.
SUITE_SIZE = sum(
    len(tests)
    for tests in (
        test_put.ALL_PUT_TESTS,
        test_put_writes.ALL_PUT_WRITES_TESTS,
        test_get_tuple.ALL_GET_TUPLE_TESTS,
        test_list.ALL_LIST_TESTS,
        test_delete_thread.ALL_DELETE_THREAD_TESTS,
        test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS,
        test_copy_thread.ALL_COPY_THREAD_TESTS,
        test_prune.ALL_PRUNE_TESTS,
    )
)


async def judge(url: str, *, cluster: bool = False) -> CapabilityReport:
    name = f"RedisCheckpointSaver{' on Redis Cluster' if cluster else ''}"

    @checkpointer_test(name=name)
    async def fresh_saver() -> AsyncIterator[RedisCheckpointSaver]:
        saver = RedisCheckpointSaver.from_url(url, cluster=cluster)
        yield saver
        await saver.aclose()
        saver.close()

    report = await validate(fresh_saver, progress=ProgressCallbacks.verbose())
    report.print_report()
    return report


def assert_passed_everything(report: CapabilityReport) -> None:
    """Fails on any failed, skipped or undetected capability, and on any test not run."""
    assert set(report.results) == {c.value for c in Capability}
    not_passed = {
        name: r
        for name, r in report.results.items()
        if not (r.detected and r.passed is True and r.tests_failed == 0 and r.tests_skipped == 0)
    }
    assert not not_passed, f"capabilities not passed: {not_passed}"
    assert report.conformance_level() == "FULL"
    assert sum(r.tests_passed for r in report.results.values()) == SUITE_SIZE


async def test_the_saver_passes_the_conformance_suite_on_every_capability(redis_url: str) -> None:
    assert_passed_everything(await judge(redis_url))
    assert SUITE_SIZE == 81  # langgraph-checkpoint-conformance 0.0.2, as pinned


async def test_the_saver_passes_the_conformance_suite_on_a_redis_cluster(cluster_url: str) -> None:
    assert_passed_everything(await judge(cluster_url, cluster=True))
