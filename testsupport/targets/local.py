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
from pathlib import Path

import redis

from chat_history_k8s.hopcheck.client import Api, Endpoint
from testsupport import (
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
from testsupport.targets.base import Backend, Deployment, HistoryApi, Target, TargetUnavailable

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
        self, backend: Backend, replicas: int, workdir: Path, history_api: HistoryApi
    ) -> None:
        self.backend = backend
        self.history_api = history_api
        self.replica_count = replicas
        self.workdir = workdir
        self.store: RedisServer | None = None
        self.lb: Nginx | None = None
        self._slots: list[_Slot] = []
        self._extra_env: dict[str, str] = {}
        self._down: set[int] = set()  # replicas' ports taken out of the load balancer
        self.api_key = new_key()
        self._keys = write_key_file(workdir / "api-keys", {"e2e": [self.api_key]})
        try:
            if backend == "redis":
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

    def close(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for slot in self._slots:
            slot.replica.stop()
        if self.store is not None:
            self.store.stop()


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
        self, backend: Backend, replicas: int, history_api: HistoryApi = "message-history"
    ) -> Deployment:
        workdir = Path(tempfile.mkdtemp(prefix=f"{backend}-{history_api}-", dir=self.workdir))
        try:
            deployment = LocalDeployment(backend, replicas, workdir, history_api)
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
