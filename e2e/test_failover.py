"""Failover under traffic, measured (issue 13): 24 turns/s over 8 sessions through the load
balancer for 60 s while the Redis primary is SIGKILLed 3 times (each killed node comes back as
a replica). Then every acknowledged turn is looked up in the transcripts. The figures are
printed at the end of the run (docs/runbook.md quotes them).

With REDIS_WAIT_REPLICAS=1 no acknowledged turn may be lost; with 0 the loss is reported. The
two runs use one memory API each, so both APIs meet a failover within the CI budget.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from e2e.conftest import unavailable
from testsupport.failover import run_failover
from testsupport.targets import Target, TargetUnavailable
from testsupport.targets.base import HistoryApi

DURATION_S = 60.0
KILLS = 3
SESSIONS = 8
PER_SESSION_RATE = 3.0  # 8 x 3 = 24 turns/s
LONGEST_FAILURE_S = 10.0


@pytest.mark.parametrize(
    ("wait_replicas", "history_api"), [(1, "message-history"), (0, "checkpointer")]
)
def test_sentinel_failover_under_traffic(
    target: Target,
    pytestconfig: pytest.Config,
    report: list[str],
    wait_replicas: int,
    history_api: HistoryApi,
) -> None:
    if target.name != "local":
        pytest.skip("the kube target deploys a Sentinel-managed Redis with the chart's "
                    "redis.architecture=replication (the chart side of issue 13)")  # fmt: skip
    try:
        deployment = target.deploy(
            "redis", 3, history_api, redis_mode="sentinel",
            settings={"REDIS_WAIT_REPLICAS": str(wait_replicas)},
        )  # fmt: skip
    except TargetUnavailable as exc:
        unavailable(pytestconfig, f"cannot deploy Redis with Sentinels: {exc}")
    try:
        entry = deployment.entry_point()
        if entry is None:
            unavailable(pytestconfig, deployment.entry_point_missing_reason())
        run = uuid.uuid4().hex[:8]
        sessions = [f"failover-{run}-{i}" for i in range(SESSIONS)]

        def transcript(session: str) -> list[str]:
            r = httpx.get(f"{entry.url}/v1/sessions/{session}/messages", timeout=10)
            assert r.status_code == 200, r.text
            return [m["content"] for m in r.json()["messages"] if m["type"] == "human"]

        result = run_failover(
            label=f"sentinel, REDIS_WAIT_REPLICAS={wait_replicas}, {history_api}",
            url=entry.url, killer=deployment.failover_killer(), sessions=sessions,
            transcript=transcript, replica_restarts=deployment.replica_restarts,
            duration_s=DURATION_S, kills=KILLS, per_session_rate=PER_SESSION_RATE,
        )  # fmt: skip
    finally:
        deployment.close()
    report.extend(result.lines())
    print("\n".join(result.lines()))

    assert len(result.kills) == KILLS
    assert len(result.outcomes) >= 20 * DURATION_S * 0.9, "the traffic fell below 20 turns/s"
    assert result.replica_restarts == 0
    assert result.longest_failure_s <= LONGEST_FAILURE_S
    if wait_replicas:
        assert not result.lost, [o.message for o in result.lost]
