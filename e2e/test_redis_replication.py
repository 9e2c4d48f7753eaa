"""The chart's `redis.architecture: replication` on a real cluster (kube target only): a primary,
2 replicas and 3 Sentinels converge, and when the primary's pod is deleted with zero grace the
Sentinels promote a replica, a write acknowledged by a replica (WAIT) survives, and the deleted
pod comes back as a replica of the new primary. Redis's side only: the chat pods' Sentinel mode
is the service's (REDIS_MODE=sentinel), tested with it."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testsupport import wait_until
from testsupport.targets.base import Target
from testsupport.targets.kube import CHART, MANAGED_BY, RELEASE, KubeTarget

pytestmark = pytest.mark.kube_only

REDIS = f"{RELEASE}-redis"
MASTER = "chat-history"
PODS = [f"{REDIS}-{i}" for i in range(3)]
FAILOVERS = 3
# Sentinel's down-after (5 s) plus an election and a promotion, with room for a busy 2-core node.
FAILOVER_LIMIT_S = 30.0
# cluster/up.sh's node runs everything: a restarted pod, its init container and a full sync.
REJOIN_LIMIT_S = 180.0
AUTH = 'REDISCLI_AUTH="$(cat /run/secrets/redis/password)" exec redis-cli "$@"'


@dataclass
class Replication:
    kube: KubeTarget
    namespace: str

    def cli(self, pod: str, *args: str, container: str = "redis") -> str:
        argv = ["-n", self.namespace, "exec", pod, "-c", container, "--", "sh", "-c", AUTH, "rcli"]
        return self.kube.kubectl(*argv, *args, timeout_s=30).strip()

    def sentinel(self, pod: str, *args: str) -> str:
        return self.cli(pod, "-p", "26379", *args, container="sentinel")

    def primary(self, asking: str) -> str:
        """The pod name of the primary, as the Sentinel of `asking` names it."""
        answer = self.sentinel(asking, "sentinel", "get-master-addr-by-name", MASTER)
        return answer.splitlines()[0].split(".")[0]

    def promoted(self, asking: str, old: str) -> bool:
        """The Sentinel of `asking` names a primary other than `old`."""
        try:
            return self.primary(asking) not in {old, ""}
        except (RuntimeError, IndexError):
            return False

    def master_info(self, asking: str) -> dict[str, str]:
        flat = self.sentinel(asking, "sentinel", "master", MASTER).splitlines()
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def ready(self, pod: str) -> bool:
        status = json.loads(
            self.kube.kubectl("-n", self.namespace, "get", "pod", pod, "-o", "json")
        )
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in status.get("status", {}).get("conditions", [])
        )

    def converged(self) -> bool:
        """Every pod ready; every Sentinel agrees on the primary and knows 2 replicas and the 2
        other Sentinels; the primary has 2 connected replicas, and the 2 others are replicas of
        it with their link up (a pod that came back as a primary was turned into one)."""
        try:
            if not all(self.ready(pod) for pod in PODS):
                return False
            primaries = {self.primary(pod) for pod in PODS}
            infos = [self.master_info(pod) for pod in PODS]
            if len(primaries) != 1:
                return False
            (primary,) = primaries
            roles = {pod: self.cli(pod, "info", "replication") for pod in PODS}
        except (RuntimeError, ValueError, IndexError):
            return False
        sentinels_agree = all(
            i["num-slaves"] == "2"
            and i["num-other-sentinels"] == "2"
            and "s_down" not in i["flags"]
            for i in infos
        )
        replicas_follow = all(
            "role:slave" in info
            and f"master_host:{primary}." in info
            and "master_link_status:up" in info
            for pod, info in roles.items()
            if pod != primary
        )
        return sentinels_agree and replicas_follow and "connected_slaves:2" in roles[primary]


@pytest.fixture(scope="module")
def replication(target: Target) -> Iterator[Replication]:
    assert isinstance(target, KubeTarget)
    namespace = f"chat-e2e-{target.run_id}-redis-ha"
    labels = " ".join(f"{k}={v}" for k, v in MANAGED_BY.items())
    target.kubectl("create", "namespace", namespace)
    target.kubectl("label", "namespace", namespace, *labels.split())
    target.namespaces.append(namespace)  # removed by the target at the end
    args = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", namespace,
            "--values", str(CHART / "ci" / "redis-replication-values.yaml")]  # fmt: skip
    for values in target.values_files:
        args += ["--values", values]
    # One chat pod, no helm test pod: only Redis is under test here.
    args += ["--set", "replicaCount=1", "--set", "tests.enabled=false"]
    for value in target.set_values:
        args += ["--set", value]
    result = target.helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    yield Replication(target, namespace)


def test_a_primary_two_replicas_and_three_sentinels_converge(replication: Replication) -> None:
    wait_until(replication.converged, timeout_s=REJOIN_LIMIT_S, interval_s=3.0,
               what="3 Redis pods ready and 3 Sentinels agreeing on the primary")  # fmt: skip
    primary = replication.primary(PODS[0])
    info = replication.cli(primary, "info", "replication")
    assert "role:master" in info and "connected_slaves:2" in info, info


def test_deleting_the_primary_pod_fails_over_and_loses_no_acknowledged_write(
    replication: Replication, report: list[str]
) -> None:
    wait_until(replication.converged, timeout_s=REJOIN_LIMIT_S, interval_s=3.0,
               what="the replication to converge")  # fmt: skip
    for n in range(1, FAILOVERS + 1):
        old = replication.primary(PODS[0])
        survivor = next(p for p in PODS if p != old)
        key, value = f"e2e-failover-{n}", uuid.uuid4().hex
        assert replication.cli(old, "set", key, value) == "OK"
        # Acknowledged by a replica too: what REDIS_WAIT_REPLICAS=1 makes of every turn.
        assert replication.cli(old, "wait", "1", "2000") in {"1", "2"}
        replication.kube.kubectl(
            "-n", replication.namespace, "delete", "pod", old, "--grace-period=0", "--force",
        )  # fmt: skip
        started = time.monotonic()

        wait_until(functools.partial(replication.promoted, survivor, old),
                   timeout_s=FAILOVER_LIMIT_S, interval_s=0.5,
                   what=f"the Sentinels to promote a replica after {old} was deleted")  # fmt: skip
        failover_s = time.monotonic() - started
        new = replication.primary(survivor)
        assert replication.cli(new, "get", key) == value, "an acknowledged write was lost"
        wait_until(replication.converged, timeout_s=REJOIN_LIMIT_S, interval_s=3.0,
                   what=f"{old} to come back as a replica")  # fmt: skip
        rejoin_s = time.monotonic() - started
        assert replication.primary(PODS[0]) == new
        rejoined = replication.cli(old, "info", "replication")
        assert "role:slave" in rejoined and f"master_host:{new}." in rejoined, rejoined
        report.append(
            f"replication failover {n}/{FAILOVERS}: {old} deleted (zero grace), {new} primary "
            f"after {failover_s:.1f} s; {old} back as its replica, all 3 Sentinels agreeing, "
            f"after {rejoin_s:.1f} s; the WAIT-acknowledged write kept"
        )
