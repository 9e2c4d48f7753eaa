"""The chart's `redis.architecture: replication` on a real cluster (kube target only): a primary,
2 replicas and 3 Sentinels converge, and when the primary's pod is deleted with zero grace (its
replacements too until a promotion, as when its node is lost: KubePrimaryKiller) the Sentinels
promote a replica, a write acknowledged by a replica (WAIT) survives, and the deleted
pod comes back as a replica of the new primary. Redis's side only: the chat pods' Sentinel mode
is the service's (REDIS_MODE=sentinel), tested with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from testsupport.targets.base import Target
from testsupport.targets.kube import (
    REDIS_PODS,
    KubeDeployment,
    KubePrimaryKiller,
    KubeReplication,
    KubeTarget,
)

pytestmark = pytest.mark.kube_only

FAILOVERS = 3


@pytest.fixture(scope="module")
def release(target: Target) -> Iterator[KubeDeployment]:
    """The chart with `redis.architecture: replication`; 2 chat pods, for its `helm test`."""
    assert isinstance(target, KubeTarget)
    deployment = target.deploy("redis", 2, redis_mode="sentinel")
    assert isinstance(deployment, KubeDeployment) and deployment.replication is not None
    yield deployment
    deployment.close()


@pytest.fixture(scope="module")
def replication(release: KubeDeployment) -> KubeReplication:
    assert release.replication is not None
    return release.replication


def test_a_primary_two_replicas_and_three_sentinels_converge(replication: KubeReplication) -> None:
    replication.wait_converged("3 Redis pods ready and 3 Sentinels agreeing on the primary")
    primary = replication.primary(REDIS_PODS[0])
    info = replication.cli(primary, "info", "replication")
    assert "role:master" in info and "connected_slaves:2" in info, info


def test_deleting_the_primary_pod_fails_over_and_loses_no_acknowledged_write(
    replication: KubeReplication, report: list[str]
) -> None:
    replication.wait_converged("the replication to converge")
    killer = KubePrimaryKiller(replication)
    for n in range(1, FAILOVERS + 1):
        old = replication.current_primary()
        key, value = f"e2e-failover-{n}", uuid.uuid4().hex
        assert replication.cli(old, "set", key, value) == "OK"
        # Acknowledged by a replica too: what REDIS_WAIT_REPLICAS=1 makes of every turn.
        assert replication.cli(old, "wait", "1", "2000") in {"1", "2"}
        started = time.monotonic()
        killer.kill_primary()
        new = replication.current_primary()
        assert new != old
        assert replication.cli(new, "get", key) == value, "an acknowledged write was lost"
        events = killer.restore()
        rejoin_s = time.monotonic() - started
        assert replication.current_primary() == new
        rejoined = replication.cli(old, "info", "replication")
        assert "role:slave" in rejoined and f"master_host:{new}." in rejoined, rejoined
        report.append(
            f"replication failover {n}/{FAILOVERS}: {old} deleted (zero grace), {new} primary "
            f"after {killer.failover_s[-1]:.1f} s; {old} back as its replica, all 3 Sentinels "
            f"agreeing, after {rejoin_s:.1f} s; the WAIT-acknowledged write kept; {events}"
        )


def test_helm_test_passes_after_the_failovers(release: KubeDeployment) -> None:
    """The chart's own test (a conversation hopping over the chat pods, history kept) on the
    release whose primary the test above deleted 3 times: the chat pods follow the Sentinels."""
    passed, output = release.helm_test()
    assert passed, output
