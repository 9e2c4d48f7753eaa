"""The contract every target fulfils, so that one suite runs unchanged on each of them."""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import Literal

from chat_history_k8s.errors import UNHANDLED_ERROR
from chat_history_k8s.hopcheck.client import Endpoint
from testsupport.failover import PrimaryKiller

Backend = Literal["memory", "redis"]
BACKENDS: tuple[Backend, ...] = ("memory", "redis")
HistoryApi = Literal["message-history", "checkpointer"]
HISTORY_APIS: tuple[HistoryApi, ...] = ("message-history", "checkpointer")
# How the redis backend's Redis is deployed: one server, or a primary with replicas and
# Sentinels (REDIS_MODE=sentinel), or a Redis Cluster with replicas (REDIS_MODE=cluster).
RedisMode = Literal["standalone", "sentinel", "cluster"]


# A log line that starts a new record: the service's own format, or uvicorn's.
_NEW_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|[A-Z]+: )")


def unhandled_errors_in(log: str) -> list[str]:
    """Each 500's record in a replica's `log`: the line naming the request, then its traceback."""
    found: list[list[str]] = []
    record: list[str] | None = None
    for line in log.splitlines():
        if UNHANDLED_ERROR in line:
            record = [line]
            found.append(record)
        elif record is not None and not _NEW_RECORD.match(line):
            record.append(line)
        else:
            record = None
    return ["\n".join(lines) for lines in found]


class TargetUnavailable(RuntimeError):
    """The target cannot run here; the message says why and what would fix it."""


class Deployment(abc.ABC):
    """The chat service deployed with one history backend and memory API (`HISTORY_API`), and
    the ways to disturb it.

    Every method returns only once the deployment has settled: replicas that were (re)started
    answer /readyz with 200, except while the store is stopped on purpose.
    """

    backend: Backend
    history_api: HistoryApi
    replica_count: int
    description: str
    # The key every endpoint sends when the deployment has authentication on (both targets
    # deploy it on, as the chart does by default).
    api_key: str | None = None

    @abc.abstractmethod
    def replicas(self) -> list[Endpoint]:
        """One endpoint per running replica, each reachable on its own, in a stable order."""

    @abc.abstractmethod
    def entry_point(self) -> Endpoint | None:
        """The load-balanced entry point (fresh connection per request), if there is one."""

    def entry_point_missing_reason(self) -> str:
        return "this target has no load-balanced entry point"

    @abc.abstractmethod
    def restart_replica(self, index: int) -> None:
        """Replace one replica; the new one holds no process state."""

    @abc.abstractmethod
    def rolling_restart(self) -> None:
        """Replace every replica, one after the other (what `kubectl rollout restart` does)."""

    @abc.abstractmethod
    def scale(self, replicas: int) -> None:
        """Change the number of replicas; removed replicas are gone for good."""

    @abc.abstractmethod
    def kill_history_store(self) -> None:
        """Hard-kill whatever holds the history, then bring it back.

        redis: the Redis server (SIGKILL locally, pod delete on Kubernetes), on the same data.
        memory: the history lives in the replicas' heap, so every replica is killed.
        """

    def store_identity(self) -> str | None:
        """Names the running store instance (pid, pod uid), to prove it was replaced."""
        return None

    @abc.abstractmethod
    def stop_store(self) -> None:
        """Take the external store away (no-op for memory: it has none)."""

    @abc.abstractmethod
    def start_store(self) -> None:
        """Bring the external store back after stop_store(); does not wait for the replicas."""

    @abc.abstractmethod
    def wait_replicas_ready(self, timeout_s: float) -> None:
        """Wait until every running replica is ready (and, on Kubernetes, an endpoint)."""

    @abc.abstractmethod
    def serving_endpoints(self) -> int:
        """How many replicas the load balancer would route to now (ready endpoints)."""

    def reset(self) -> None:
        """Back to the starting shape: store up, `replica_count` replicas ready."""
        self.start_store()
        if len(self.replicas()) != self.replica_count:
            self.scale(self.replica_count)
        self.wait_replicas_ready(60.0)

    # -- runbook procedures (docs/runbook.md); a target without one skips its test ------------
    def backup_store(self, dest: Path) -> None:
        """Runbook "Back up": a consistent copy of the store's data (AOF) into `dest`."""
        raise NotImplementedError(f"{self.description}: no backup procedure")

    def lose_store_data(self) -> None:
        """Runbook "PVC loss": the store comes back empty."""
        raise NotImplementedError(f"{self.description}: no way to lose the store's data")

    def restore_store(self, src: Path) -> None:
        """Runbook "Restore": put a backup made by backup_store() back and start the store."""
        raise NotImplementedError(f"{self.description}: no restore procedure")

    def rotate_store_password(self) -> str:
        """Runbook "Rotate the Redis password": new password, old one revoked, no downtime.
        Returns the old password."""
        raise NotImplementedError(f"{self.description}: no password rotation procedure")

    def upgrade(self, settings: dict[str, str]) -> None:
        """Runbook "Upgrade": roll every replica to new settings, one at a time."""
        raise NotImplementedError(f"{self.description}: no upgrade procedure")

    def store_rejects_password(self, password: str) -> bool:
        """Whether the store refuses `password` (to prove a rotation revoked it)."""
        raise NotImplementedError(f"{self.description}: cannot check a password")

    # -- failover under traffic (testsupport/failover.py) --------------------------------------
    def failover_sessions(self, count: int, prefix: str) -> list[str]:
        """`count` session ids for a failover run; on a cluster, ids whose keys all live on
        one primary, the one `failover_killer` kills."""
        return [f"{prefix}-{i}" for i in range(count)]

    def failover_killer(self, sessions: list[str]) -> PrimaryKiller:
        """What kills the Redis primary that serves `sessions` (a deployment made with
        redis_mode "sentinel" or "cluster")."""
        raise NotImplementedError(f"{self.description}: no Redis primary to kill")

    def replica_restarts(self) -> int:
        """How many times chat replicas restarted or died on their own (pods: restart counts)."""
        raise NotImplementedError(f"{self.description}: cannot count replica restarts")

    def unhandled_errors(self) -> list[str]:
        """The tracebacks the replicas logged for requests they answered 500 (from the logs of
        the replicas running now; a pod that was replaced took its log with it)."""
        raise NotImplementedError(f"{self.description}: cannot read the replicas' logs")

    def helm_test(self) -> tuple[bool, str]:
        raise NotImplementedError("helm test needs a Helm release (kube target)")

    def diagnostics(self) -> str:
        """What a failed test's report shows of the deployment: the tails of its replicas' and
        its store's logs (a 503's record names its cause: which address, connect or read), and
        on Kubernetes its recent events. Gathered right after the failure, before the next
        test resets the deployment."""
        return f"{self.description}: no diagnostics"

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and remove everything this deployment made."""


class Target(abc.ABC):
    """A place to deploy the service: local processes, or a Kubernetes cluster."""

    name: str
    description: str
    # Whether deploy() may run in several threads at once. A release mostly waits on its
    # cluster, so releases made together share that wait. Local processes die with the thread
    # that started them (PR_SET_PDEATHSIG, testsupport/procs.py), so a local deployment is made
    # by the thread that will use it, and making them is CPU-bound anyway.
    concurrent_deploys = False

    @abc.abstractmethod
    def deploy(
        self,
        backend: Backend,
        replicas: int,
        history_api: HistoryApi = "message-history",
        redis_mode: RedisMode = "standalone",
        settings: dict[str, str] | None = None,
        redis_from: Deployment | None = None,
    ) -> Deployment:
        """The service with `backend` and `history_api`; `redis_mode` how its Redis is deployed;
        `settings` extra environment for every replica (e.g. REDIS_WAIT_REPLICAS); `redis_from`
        another deployment whose Redis this one uses instead of its own (redis.external)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove everything the deployments made."""
