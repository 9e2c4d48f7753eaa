"""Failover under traffic, measured (issue 13): 24 turns/s over 12 sessions through the load
balancers for 60 s while the Redis primary serving them is SIGKILLed 3 times (each killed node
comes back as a replica; on the kube target the primary's pod is deleted with zero grace, see
testsupport.targets.kube.KubePrimaryKiller, and Redis Cluster is local only). Then every
acknowledged turn is looked up in the transcripts. The figures are printed at the end of the
run; docs/runbook.md quotes them.

One run per Redis mode (Sentinel; a Cluster), each with 2 replicas per primary. Each run deploys
the service six times on the same Redis, 2 replicas behind nginx each: both memory APIs, each
with REDIS_WAIT_REPLICAS=2, 1 and 0, two sessions each.

What is asserted is what `WAIT` guarantees. With WAIT 2 every replica has an acknowledged turn,
so whichever replica is promoted has it: no acknowledged turn may be lost. With WAIT 1 only one
replica is known to have it, and the promoted one may be the other: a Sentinel picks by the
replication offsets it last read, and skips a replica that was slow to answer (a CI run under
heavy load lost 6 such turns; tests/history/test_redis_sentinel.py shows the mechanism
deterministically). WAIT 1 and WAIT 0 losses are reported, not asserted. Availability is
asserted where the killed node's return is not needed: with WAIT 1 and 0 no run of failed turns
may last over 10 s (WAIT 2 fails turns until the killed node is back as a replica; reported).
Every failed turn the service answers is a 503 `history_unavailable`, never a 500; a 500 fails
the run with the tracebacks the replicas logged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chat_history_k8s.hopcheck.client import Api, Endpoint
from e2e.conftest import unavailable
from testsupport.failover import run_failover
from testsupport.targets import Deployment, Target, TargetUnavailable
from testsupport.targets.base import HISTORY_APIS, HistoryApi, RedisMode

DURATION_S = 60.0
KILLS = 3
SESSIONS_PER_GROUP = 2  # 6 groups x 2 sessions x 2 turns/s = 24 turns/s
PER_SESSION_RATE = 2.0
LONGEST_FAILURE_S = 10.0
REPLICAS = 2  # chat replicas per deployment
REDIS_REPLICAS = 2  # per Redis primary, in both modes
WAITS = (REDIS_REPLICAS, 1, 0)


@pytest.fixture
def deployments(
    target: Target,
    pytestconfig: pytest.Config,
    request: pytest.FixtureRequest,
    report: list[str],
) -> Iterator[dict[str, Deployment]]:
    """group label -> its deployment; all six on the Redis the first one made."""
    mode: RedisMode = request.param
    if target.name != "local" and mode == "cluster":
        pytest.skip("Redis Cluster runs on the local target only: the chart deploys Redis "
                    "standalone or with replication (Sentinel); it reaches a Cluster only as "
                    "redis.external")  # fmt: skip
    groups = [(api, wait) for api in HISTORY_APIS for wait in WAITS]
    made: dict[str, Deployment] = {}
    started = time.monotonic()

    def label(api: HistoryApi, wait: int) -> str:
        return f"{api}, REDIS_WAIT_REPLICAS={wait}"

    def deploy(api: HistoryApi, wait: int, redis_from: Deployment | None) -> Deployment:
        return target.deploy(
            "redis", REPLICAS, api, redis_mode=mode,
            settings={"REDIS_WAIT_REPLICAS": str(wait)}, redis_from=redis_from,
        )  # fmt: skip

    try:
        # The first makes the Redis; the others only use it: on a cluster they are deployed
        # at once (Target.concurrent_deploys).
        first = deploy(*groups[0], None)
        made[label(*groups[0])] = first
        if target.concurrent_deploys:
            with ThreadPoolExecutor(max_workers=len(groups) - 1) as pool:
                pending = {label(api, wait): pool.submit(deploy, api, wait, first)
                           for api, wait in groups[1:]}  # fmt: skip
            made |= {name: f.result() for name, f in pending.items() if f.exception() is None}
            for future in pending.values():
                future.result()  # the first failure raised; every deployment made is in made
        else:
            for api, wait in groups[1:]:
                made[label(api, wait)] = deploy(api, wait, first)
    except BaseException as exc:
        for deployment in made.values():
            deployment.close()
        if isinstance(exc, TargetUnavailable):
            unavailable(pytestconfig, f"cannot deploy Redis in {mode} mode: {exc}")
        raise
    report.append(f"failover setup ({target.name}, {mode}): {len(made)} deployments on one "
                  f"Redis in {time.monotonic() - started:.0f} s")  # fmt: skip
    yield made
    for deployment in reversed(made.values()):
        deployment.close()


@pytest.mark.parametrize("deployments", ["sentinel", "cluster"], indirect=True)
def test_killing_the_redis_primary_under_traffic(
    deployments: dict[str, Deployment], pytestconfig: pytest.Config, report: list[str]
) -> None:
    first = next(iter(deployments.values()))
    run = uuid.uuid4().hex[:6]
    ids = first.failover_sessions(SESSIONS_PER_GROUP * len(deployments), f"failover-{run}")
    sessions: dict[str, Endpoint] = {}
    groups: dict[str, str] = {}
    for (group, deployment), n in zip(deployments.items(), range(len(deployments)), strict=True):
        entry = deployment.entry_point()
        if entry is None:
            unavailable(pytestconfig, deployment.entry_point_missing_reason())
        for session in ids[n * SESSIONS_PER_GROUP : (n + 1) * SESSIONS_PER_GROUP]:
            sessions[session], groups[session] = entry, group

    def transcript(session: str) -> list[str]:
        with Api(sessions[session]) as api:
            messages = api.messages(session)
        assert messages is not None, f"{session}: no transcript"
        return [content for kind, content in messages if kind == "human"]

    started = time.monotonic()
    result = run_failover(
        label=first.description, killer=first.failover_killer(ids), sessions=sessions,
        groups=groups, transcript=transcript,
        replica_restarts=lambda: sum(d.replica_restarts() for d in deployments.values()),
        duration_s=DURATION_S, kills=KILLS, per_session_rate=PER_SESSION_RATE,
    )  # fmt: skip
    report.extend(result.lines())
    report.append(f"failover run [{first.description}]: {time.monotonic() - started:.0f} s "
                  "including the transcript checks")  # fmt: skip
    print("\n".join(result.lines()))

    assert len(result.kills) == KILLS
    assert len(result.outcomes) >= 20 * DURATION_S * 0.9, "the traffic fell below 20 turns/s"
    assert result.replica_restarts == 0
    # A failing store is a 503 whatever raised it: tests/checkpoint/test_cluster.py has the
    # causes found so far (RedisClusterException; a connection closed under a write).
    if result.wrong_answers:
        errors = [e for d in deployments.values() for e in d.unhandled_errors()]
        pytest.fail(f"failed turns answered otherwise: {dict(result.wrong_answers)}; the "
                    f"replicas logged:\n" + "\n".join(errors[:3]))  # fmt: skip
    for group in deployments:
        part = result.of(group)
        if f"REDIS_WAIT_REPLICAS={REDIS_REPLICAS}" in group:
            lost = [o.message for o in part.lost]
            assert not lost, f"{group}: acknowledged turns lost: {lost}"
        else:
            assert part.longest_failure_s <= LONGEST_FAILURE_S, f"{group}: failed too long"
