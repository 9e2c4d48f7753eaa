"""The `local` target: uvicorn replicas and a redis-server as processes on loopback.

Restart = stop + start of the process, exactly what happens to a pod's memory. The load
balancer is a real one (nginx, round robin, a new upstream connection per request) when nginx
is installed. Everything lives in one temporary directory per run and is removed at the end.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Protocol

import redis
from redis.crc import key_slot

from chat_history_k8s.hopcheck.client import Api, Endpoint
from testsupport import (
    LocalRedisCluster,
    LocalSentinel,
    MissingTool,
    Nginx,
    RedisServer,
    Replica,
    find_tool,
    free_port,
    new_key,
    wait_until,
    write_key_file,
)
from testsupport.failover import PrimaryKiller
from testsupport.procs import tail
from testsupport.targets.base import (
    Backend,
    Deployment,
    HistoryApi,
    RedisMode,
    Target,
    TargetUnavailable,
    unhandled_errors_in,
)

START_TIMEOUT_S = 30.0


# Authentication on, as the chart deploys it by default, and the limits on with room for every
# turn the suite sends (it checks history, not the limits: tests/api does).
AUTH_ENV = {
    "AUTH_ENABLED": "true", "RATE_LIMIT_TURNS": "100000", "RATE_LIMIT_WINDOW_SECONDS": "60",
    "MAX_SESSIONS_PER_PRINCIPAL": "100000",
}  # fmt: skip


class _Slot:
    """A replica's place: a fixed port (the load balancer's upstream) and its current process;
    like a new pod, a (re)started replica has a new name: replica-<slot>-<generation>."""

    def __init__(self, index: int, replica: Replica, api_key: str) -> None:
        self.index = index
        self.replica = replica
        self.generation = 0
        self.api_key = api_key

    @property
    def running(self) -> bool:
        return self.replica.process.running

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.replica.name, self.replica.url, api_key=self.api_key)


class LocalDeployment(Deployment):
    """`replica_count` uvicorn processes with one backend and API; fixed ports per replica slot."""

    def __init__(
        self,
        backend: Backend,
        replicas: int,
        workdir: Path,
        history_api: HistoryApi,
        redis_mode: RedisMode = "standalone",
        settings: dict[str, str] | None = None,
        redis_from: LocalDeployment | None = None,
    ) -> None:
        self.backend = backend
        self.history_api = history_api
        self.replica_count = replicas
        self.workdir = workdir
        self.store: RedisServer | None = None
        self.ha: _HaRedis | None = None  # Sentinel-managed, or a cluster
        self._owns_ha = False
        self.lb: Nginx | None = None
        self._slots: list[_Slot] = []
        self._extra_env: dict[str, str] = dict(settings or {})
        self._password: str | None = None
        self._down: set[int] = set()  # replicas' ports taken out of the load balancer
        self.api_key = new_key()
        self._keys = write_key_file(workdir / "api-keys", {"e2e": [self.api_key]})
        try:
            if redis_from is not None and redis_from.ha is not None:
                self.ha = redis_from.ha  # the same Redis: the other release's, as redis.external
            elif backend == "redis" and redis_mode != "standalone":
                self.ha = (
                    _SentinelRedis(workdir) if redis_mode == "sentinel" else _ClusterRedis(workdir)
                )
                self._owns_ha = True
            if self.ha is not None:
                self._redis_url, self._password = self.ha.url, self.ha.password
                self._extra_env = self.ha.env() | self._extra_env
            elif backend == "redis":
                self.store = RedisServer(workdir, password=secrets.token_urlsafe(16))
                self.store.start()
                self._redis_url, self._password = self.store.url, self.store.password
            else:
                # Nothing listens here: proves that the memory backend never touches Redis.
                self._redis_url, self._password = f"redis://127.0.0.1:{free_port()}/0", None
            for index in range(replicas):
                replica = Replica(
                    f"slot-{index}", workdir, {}, graceful_shutdown_s=5, access_log=False
                )
                self._slots.append(_Slot(index, replica, self.api_key))
            self._start(self._slots)
            if find_tool("nginx") is not None:
                self.lb = Nginx(workdir, [slot.replica.port for slot in self._slots])
                self.lb.start()
        except BaseException:
            self.close()
            raise
        store = f", redis-server {self.store.version} (AOF, fsync always)" if self.store else ""
        if self.ha is not None:
            store = f", {self.ha.description}"
        lb = ", nginx round robin" if self.lb else ""
        self.description = f"{replicas} uvicorn replicas on 127.0.0.1{store}{lb}, API keys on"

    def _start(self, slots: list[_Slot]) -> None:
        """Start the slots' processes together (they import in parallel), then wait until
        each is ready."""
        for slot in slots:
            slot.generation += 1
            slot.replica.settings = self._settings()
            slot.replica.start(f"replica-{slot.index}-{slot.generation}")
        for slot in slots:
            slot.replica.wait_ready()

    def _settings(self) -> dict[str, str]:
        settings = {
            "HISTORY_BACKEND": self.backend,
            "HISTORY_API": self.history_api,
            "REDIS_URL": self._redis_url,
            "LOG_LEVEL": "WARNING",
            "AUTH_API_KEYS_FILE": str(self._keys),
        } | AUTH_ENV
        if self._password:
            settings["REDIS_PASSWORD"] = self._password
        return settings | self._extra_env

    def _running(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.running]

    def replicas(self) -> list[Endpoint]:
        return [slot.endpoint for slot in self._running()]

    def entry_point(self) -> Endpoint | None:
        if self.lb is None:
            return None
        return Endpoint("nginx", self.lb.url, fresh_connections=True, api_key=self.api_key)

    def entry_point_missing_reason(self) -> str:
        return "nginx not installed (apt-get install nginx-light): no load balancer to test"

    def _stop(self, slots: list[_Slot]) -> None:
        """Stop replicas the way Kubernetes does: out of the load balancer first (a terminating
        pod leaves the Service's endpoints), then SIGTERM, which drains in-flight requests."""
        if self.lb is not None and slots:
            self._down |= {slot.replica.port for slot in slots}
            self.lb.route_around(self._down)
        for slot in slots:
            slot.replica.stop()

    def _serve(self, slots: list[_Slot]) -> None:
        """Start replicas and, once ready, put them behind the load balancer again."""
        self._start(slots)
        if self.lb is not None and self._down & {slot.replica.port for slot in slots}:
            self._down -= {slot.replica.port for slot in slots}
            self.lb.route_around(self._down)

    def restart_replica(self, index: int) -> None:
        slot = self._running()[index]
        self._stop([slot])
        self._serve([slot])

    def rolling_restart(self) -> None:
        for slot in self._running():
            self._stop([slot])
            self._serve([slot])

    def scale(self, replicas: int) -> None:
        self._stop([slot for slot in self._slots[replicas:] if slot.running])
        self._serve([slot for slot in self._slots[:replicas] if not slot.running])

    def kill_history_store(self) -> None:
        if self.ha is not None:
            killer = self.failover_killer(self.failover_sessions(1, "any"))
            killer.kill_primary()
            killer.restore()
            return
        if self.store is None:  # memory: the history is in the replicas' heap
            running = self._running()
            for slot in running:
                slot.replica.stop(signal.SIGKILL)
            self._start(running)
            return
        self.store.kill()
        self.store.start()
        self.wait_replicas_ready()

    def store_identity(self) -> str | None:
        return f"redis-server pid {self.store.process.pid}" if self.store else None

    def stop_store(self) -> None:
        if self.store is not None:
            self.store.stop()

    def start_store(self) -> None:
        if self.store is not None and not self.store.running:
            self.store.start()

    def wait_replicas_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        for slot in self._running():
            slot.replica.wait_ready(timeout_s=timeout_s)

    def serving_endpoints(self) -> int:
        # What a health-checking load balancer (a Service's endpoints) would route to.
        count = 0
        for endpoint in self.replicas():
            with Api(endpoint, timeout_s=2.0) as api:
                count += api.ready()
        return count

    # -- runbook procedures: the redis-cli commands of docs/runbook.md, run for real ---------
    def _redis(self) -> RedisServer:
        if self.store is None:
            raise NotImplementedError("the memory backend has no store to operate on")
        return self.store

    def backup_store(self, dest: Path) -> None:
        store = self._redis()
        # A fresh AOF rewrite leaves a small, self-contained base + incr + manifest to copy.
        store.cli("BGREWRITEAOF")
        wait_until(
            lambda: store.persistence().get("aof_rewrite_in_progress") == "0"
            and store.persistence().get("aof_rewrite_scheduled") == "0",
            timeout_s=START_TIMEOUT_S, what="the AOF rewrite to finish",
        )  # fmt: skip
        shutil.copytree(store.data / "appendonlydir", dest / "appendonlydir")

    def lose_store_data(self) -> None:
        store = self._redis()
        store.stop()
        shutil.rmtree(store.data)
        store.data.mkdir()
        store.start()
        self.wait_replicas_ready()

    def restore_store(self, src: Path) -> None:
        store = self._redis()
        store.stop()  # Redis must not run while its AOF is replaced
        shutil.rmtree(store.data / "appendonlydir", ignore_errors=True)
        shutil.copytree(src / "appendonlydir", store.data / "appendonlydir")
        store.start()
        self.wait_replicas_ready()

    def rotate_store_password(self) -> str:
        store = self._redis()
        old, new = store.password, secrets.token_urlsafe(16)
        if old is None:
            raise NotImplementedError("this store has no password to rotate")
        # 1. Redis accepts both passwords (commands on stdin keep them out of process args).
        store.cli(stdin=f"ACL SETUSER default on >{new}\n")
        # 2. Replicas move to the new one, one at a time (the Secret update + rollout restart).
        self._password = new
        self.rolling_restart()
        # 3. Revoke the old one; redis-cli now authenticates with the new password.
        store.password = new
        store.cli(stdin=f"ACL SETUSER default <{old}\n")
        return old

    def store_rejects_password(self, password: str) -> bool:
        client = self._redis().client(password=password)
        try:
            client.ping()
        except redis.AuthenticationError:
            return True
        finally:
            client.close()
        return False

    def upgrade(self, settings: dict[str, str]) -> None:
        self._extra_env |= settings
        self.rolling_restart()

    def failover_sessions(self, count: int, prefix: str) -> list[str]:
        if self.ha is None:
            return super().failover_sessions(count, prefix)
        return self.ha.sessions(count, prefix)

    def failover_killer(self, sessions: list[str]) -> PrimaryKiller:
        if self.ha is None:
            raise NotImplementedError(f"{self.description}: no Redis primary with replicas")
        return self.ha.killer(sessions)

    def replica_restarts(self) -> int:
        # No supervisor restarts a local replica: one that is not running has died.
        return sum(not slot.running for slot in self._slots)

    def unhandled_errors(self) -> list[str]:
        # Every process's log stays in the workdir: restarted replicas' too.
        logs = sorted(self.workdir.glob("replica-*.log"))
        return [e for log in logs for e in unhandled_errors_in(log.read_text(errors="replace"))]

    def diagnostics(self) -> str:
        parts = [f"--- {log.name} (last 40 lines):\n{tail(log, 40)}"
                 for log in sorted(self.workdir.glob("replica-*.log"))]  # fmt: skip
        if self.store is not None:
            parts.append(f"--- redis-server (last 20 lines):\n{self.store.process.log_tail(20)}")
        return "\n".join(parts) or f"{self.description}: no logs yet"

    def close(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for slot in self._slots:
            slot.replica.stop()
        if self.store is not None:
            self.store.stop()
        if self.ha is not None and self._owns_ha:
            self.ha.stop()


class _HaRedis(Protocol):
    """A Redis with replicas that survives losing its primary: Sentinel-managed or a cluster."""

    url: str
    password: str
    description: str

    def env(self) -> dict[str, str]: ...

    def sessions(self, count: int, prefix: str) -> list[str]: ...

    def killer(self, sessions: list[str]) -> PrimaryKiller: ...

    def stop(self) -> None: ...


class _SentinelRedis:
    description = "Redis primary + 2 replicas (AOF) + 3 Sentinels (quorum 2, down after 2 s)"

    def __init__(self, workdir: Path) -> None:
        self.password = secrets.token_urlsafe(16)
        self.sentinel = LocalSentinel(
            workdir / "redis", password=self.password, sentinel_password=secrets.token_urlsafe(16)
        )
        self.sentinel.start()
        self.url = self.sentinel.nodes[0].url  # unused in sentinel mode; set for clarity

    def env(self) -> dict[str, str]:
        return {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": self.sentinel.addresses,
            "REDIS_SENTINEL_MASTER": self.sentinel.master,
            "REDIS_SENTINEL_PASSWORD": self.sentinel.sentinel_password or "",
        }

    def sessions(self, count: int, prefix: str) -> list[str]:
        return [f"{prefix}-{i}" for i in range(count)]

    def killer(self, sessions: list[str]) -> PrimaryKiller:
        return _SentinelKiller(self.sentinel)

    def stop(self) -> None:
        self.sentinel.stop()


class _SentinelKiller:
    """SIGKILL of the primary the Sentinels name; the killed redis-server comes back as a
    replica once the Sentinels have promoted another."""

    def __init__(self, sentinel: LocalSentinel) -> None:
        self.sentinel = sentinel
        self._killed: RedisServer | None = None
        self._killed_at = 0.0

    def kill_primary(self) -> str:
        self._killed = self.sentinel.kill_primary()
        self._killed_at = time.monotonic()
        return f"redis-server :{self._killed.port} (SIGKILL)"

    def restore(self) -> str | None:
        if self._killed is None:
            return None
        new = self.sentinel.wait_failover(self._killed)
        promoted_s = time.monotonic() - self._killed_at
        self.sentinel.restart_as_replica(self._killed)
        self._killed = None
        return _failover_note(new.port, promoted_s, time.monotonic() - self._killed_at)


class _ClusterRedis:
    """Node timeout 1 s, so that a failover fits the failover test's 10 s even when the two
    replicas split the vote: they have the same replication offset when nothing was written
    since their last sync, so the same rank, and each starts its election 0.5-1 s after it sees
    the primary fail. Two requests that reach the two surviving primaries in different orders
    win one vote each, neither a majority, and both try again only after 2 x max(2 x node
    timeout, 2 s): 4 s here, 8 s with a 2 s timeout (a failover then took 12.6 s, seen on this
    harness). See docs/runbook.md ("How long")."""

    description = "Redis Cluster, 3 primaries with 2 replicas each (node timeout 1 s)"
    key_prefix = "chat-history:"  # the service's default REDIS_KEY_PREFIX

    def __init__(self, workdir: Path) -> None:
        self.password = secrets.token_urlsafe(16)
        self.cluster = LocalRedisCluster(
            workdir / "redis", replicas=2, node_timeout_ms=1000, password=self.password
        )
        self.cluster.start()
        self.url = self.cluster.url

    def env(self) -> dict[str, str]:
        return {"REDIS_MODE": "cluster"}

    def _slot_keys(self, session: str) -> list[str]:
        # message history: one key per session; checkpointer: the tag {<session>}.
        return [f"{self.key_prefix}{session}", f"{{{session}}}"]

    def sessions(self, count: int, prefix: str) -> list[str]:
        """Sessions whose keys (either API) all live on one primary: killing it hits them all."""
        chosen: list[str] = []
        owner = None
        for n in range(100_000):
            session = f"{prefix}-{n}"
            owners = {self.cluster.owner_of_key(k) for k in self._slot_keys(session)}
            owner = owner or (owners.pop() if len(owners) == 1 else None)
            if owners <= {owner} and owner is not None:
                chosen.append(session)
                if len(chosen) == count:
                    return chosen
        raise RuntimeError("no sessions found on one primary")

    def killer(self, sessions: list[str]) -> PrimaryKiller:
        return _ClusterKiller(self.cluster, self._slot_keys(sessions[0])[0])

    def stop(self) -> None:
        self.cluster.stop()


class _ClusterKiller:
    """SIGKILL of the primary that serves `key`'s slot; the killed node comes back (empty, it
    has no volume) as a replica once the cluster has promoted its replica."""

    def __init__(self, cluster: LocalRedisCluster, key: str) -> None:
        self.cluster = cluster
        self.slot = key_slot(key.encode())
        self._killed: RedisServer | None = None
        self._killed_at = 0.0

    def kill_primary(self) -> str:
        self._killed = self.cluster.node(self.cluster.owner_of(self.slot))
        self._killed.kill()
        self._killed_at = time.monotonic()
        return f"redis-server :{self._killed.port} (SIGKILL, primary of slot {self.slot})"

    def restore(self) -> str | None:
        if self._killed is None:
            return None
        self.cluster.wait_failover(self.slot, self._killed)
        promoted_s = time.monotonic() - self._killed_at
        primary = self.cluster.owner_of(self.slot)  # the one promoted, as the Sentinel note says
        self.cluster.restart(self._killed)
        self._killed = None
        return _failover_note(primary, promoted_s, time.monotonic() - self._killed_at)


def _failover_note(primary: int, promoted_s: float, back_s: float) -> str:
    """The kill line's timings, in seconds after the kill."""
    return (
        f":{primary} primary after {promoted_s:.1f} s, the killed node a replica after "
        f"{back_s:.1f} s"
    )


class LocalTarget(Target):
    """Processes on 127.0.0.1 in one temporary directory per run."""

    name = "local"

    def __init__(self, keep: bool = False) -> None:
        if importlib.util.find_spec("chat_history_k8s") is None:
            raise TargetUnavailable(
                "the service package is not importable: pip install -e . in this Python"
            )
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix="chat-history-e2e-"))
        self.description = "local processes on 127.0.0.1"
        self._deployments: list[LocalDeployment] = []

    def deploy(
        self,
        backend: Backend,
        replicas: int,
        history_api: HistoryApi = "message-history",
        redis_mode: RedisMode = "standalone",
        settings: dict[str, str] | None = None,
        redis_from: Deployment | None = None,
    ) -> Deployment:
        workdir = Path(tempfile.mkdtemp(prefix=f"{backend}-{history_api}-", dir=self.workdir))
        shared = redis_from if isinstance(redis_from, LocalDeployment) else None
        try:
            deployment = LocalDeployment(
                backend, replicas, workdir, history_api, redis_mode, settings, shared
            )
        except MissingTool as exc:
            raise TargetUnavailable(
                f"{exc} (scripts/demo.sh installs it on Debian as root)"
            ) from exc
        self._deployments.append(deployment)
        return deployment

    def close(self) -> None:
        for deployment in self._deployments:
            deployment.close()
        self._deployments.clear()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
