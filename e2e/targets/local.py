"""The `local` target: uvicorn replicas and a redis-server as processes on loopback.

Restart = stop + start of the process, exactly what happens to a pod's memory. The load
balancer is a real one (nginx, round robin, a new upstream connection per request) when nginx
is installed. Everything lives in one temporary directory per run and is removed at the end.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import httpx
import redis

from e2e.client import Api, Endpoint, wait_until
from e2e.targets.base import Backend, Deployment, Target, TargetUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Variables of the service that must come from this file only, never from the caller's shell.
_SERVICE_ENV_PREFIXES = ("HISTORY_", "REDIS_", "MEMORY_", "CHAT_MODEL", "OPENAI_", "POD_NAME")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Children get SIGKILL if the suite itself dies, so an aborted run leaves no servers behind.
    # Processes are only started from the main thread (PR_SET_PDEATHSIG follows the thread).
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


class Process:
    """One child process with its log file; start() may be called again after stop()."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._close_log()
        self._log_file = self.log.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # main thread only, see _die_with_parent
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` and wait for the exit; SIGKILL if it takes longer than STOP_TIMEOUT_S."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            popen.send_signal(sig)
            try:
                popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self._popen = None
        self._close_log()

    def check_alive(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self._popen.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class RedisServer:
    """redis-server with AOF and `appendfsync always`.

    `always` because the suite claims that *every acknowledged* turn survives a SIGKILL: with
    `everysec` the last second of writes may be lost, which is the right trade-off for many
    deployments but not a claim a test can make.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.binary = binary
        self.data = data = workdir / "redis-data"
        data.mkdir()
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--requirepass", self.password, "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        self.process = Process("redis-server", argv, dict(os.environ), workdir / "redis.log")
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        self.version = next((v[2:] for v in version if v.startswith("v=")), "unknown")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process.start()
        wait_until(self._answers, timeout_s=START_TIMEOUT_S, what="redis-server to answer PING")

    def kill(self) -> None:
        self.process.stop(signal.SIGKILL)

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """`redis-cli` as the runbook runs it: password from REDISCLI_AUTH, never an argument."""
        cli = _which("redis-cli")
        if cli is None:
            raise TargetUnavailable("redis-cli not found (apt-get install redis-tools)")
        env = dict(os.environ, REDISCLI_AUTH=self.password)
        done = subprocess.run(
            [cli, "-p", str(self.port), *args], input=stdin, env=env, capture_output=True,
            text=True, check=True, timeout=30,
        )  # fmt: skip
        if done.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout.strip()}")
        return done.stdout

    def persistence(self) -> dict[str, str]:
        info = self.cli("INFO", "persistence")
        return dict(line.split(":", 1) for line in info.split() if ":" in line)

    def _answers(self) -> bool:
        self.process.check_alive()
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password,
            socket_timeout=0.5, socket_connect_timeout=0.5,
        )  # fmt: skip
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


class Nginx:
    """nginx as a round-robin load balancer with no keep-alive to the upstreams."""

    def __init__(self, binary: str, workdir: Path, upstream_ports: list[int]) -> None:
        self.port = free_port()
        prefix = workdir / "nginx"
        prefix.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream chat {{
    # Round robin (the default); no `keepalive`, so every request is a new upstream connection.
{servers}
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://chat;
      proxy_http_version 1.0;
      proxy_set_header Connection close;
      proxy_connect_timeout 2s;
      proxy_read_timeout 15s;
    }}
  }}
}}
"""
        )
        argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
                "-g", "daemon off;"]  # fmt: skip
        self.process = Process("nginx", argv, dict(os.environ), prefix / "stdout.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()

        def answers() -> bool:
            self.process.check_alive()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout_s=START_TIMEOUT_S, what="nginx to proxy /healthz")

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)


class _Slot:
    """A replica's place: a fixed port (the load balancer's upstream) and its current process."""

    def __init__(self, index: int, port: int, process: Process) -> None:
        self.index = index
        self.port = port
        self.process = process
        self.generation = 0

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.process.name, f"http://127.0.0.1:{self.port}")


class LocalDeployment(Deployment):
    """`replica_count` uvicorn processes with one backend; fixed ports per replica slot."""

    def __init__(
        self, backend: Backend, replicas: int, workdir: Path, redis_binary: str | None,
        nginx_binary: str | None,
    ) -> None:  # fmt: skip
        self.backend = backend
        self.replica_count = replicas
        self.workdir = workdir
        self.store: RedisServer | None = None
        self.lb: Nginx | None = None
        self._slots: list[_Slot] = []
        self._extra_env: dict[str, str] = {}
        try:
            if backend == "redis":
                assert redis_binary is not None
                self.store = RedisServer(redis_binary, workdir)
                self.store.start()
                self._redis_url, self._password = self.store.url, self.store.password
            else:
                # Nothing listens here: proves that the memory backend never touches Redis.
                self._redis_url, self._password = f"redis://127.0.0.1:{free_port()}/0", ""
            for index in range(replicas):
                log = workdir / f"slot-{index}.log"
                process = Process(f"slot-{index}", [], {}, log)
                self._slots.append(_Slot(index, free_port(), process))
            self._start(self._slots)
            if nginx_binary:
                self.lb = Nginx(nginx_binary, workdir, [slot.port for slot in self._slots])
                self.lb.start()
        except BaseException:
            self.close()
            raise
        store = f", redis-server {self.store.version} (AOF, fsync always)" if self.store else ""
        lb = ", nginx round robin" if self.lb else ""
        self.description = f"{replicas} uvicorn replicas on 127.0.0.1{store}{lb}"

    def _start(self, slots: list[_Slot]) -> None:
        """Start the slots' processes together, then wait until each is ready."""
        for slot in slots:
            # Like a new pod, a (re)started replica has a new name: replica-<slot>-<generation>.
            slot.generation += 1
            name = f"replica-{slot.index}-{slot.generation}"
            slot.process.name = name
            slot.process.argv = [
                sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                "--port", str(slot.port), "--timeout-graceful-shutdown", "5", "--no-access-log",
            ]  # fmt: skip
            slot.process.env = self._replica_env(name)
            slot.process.start()
        for slot in slots:
            self._wait_ready(slot)

    def _replica_env(self, pod_name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
        env |= {
            "HISTORY_BACKEND": self.backend,
            "REDIS_URL": self._redis_url,
            "POD_NAME": pod_name,
            "LOG_LEVEL": "WARNING",
        }
        if self._password:
            env["REDIS_PASSWORD"] = self._password
        return env | self._extra_env

    def _wait_ready(self, slot: _Slot, timeout_s: float = START_TIMEOUT_S) -> None:
        with Api(slot.endpoint, timeout_s=2.0) as api:

            def ready() -> bool:
                slot.process.check_alive()
                return api.ready()

            wait_until(ready, timeout_s=timeout_s, what=f"{slot.process.name} /readyz")

    def _running(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.process.running]

    def replicas(self) -> list[Endpoint]:
        return [slot.endpoint for slot in self._running()]

    def entry_point(self) -> Endpoint | None:
        if self.lb is None:
            return None
        return Endpoint("nginx", self.lb.url, fresh_connections=True)

    def entry_point_missing_reason(self) -> str:
        return "nginx not installed (apt-get install nginx-light): no load balancer to test"

    def restart_replica(self, index: int) -> None:
        slot = self._running()[index]
        slot.process.stop()
        self._start([slot])

    def rolling_restart(self) -> None:
        for slot in self._running():
            slot.process.stop()
            self._start([slot])

    def scale(self, replicas: int) -> None:
        for slot in self._slots[replicas:]:
            slot.process.stop()
        self._start([slot for slot in self._slots[:replicas] if not slot.process.running])

    def kill_history_store(self) -> None:
        if self.store is None:  # memory: the history is in the replicas' heap
            running = self._running()
            for slot in running:
                slot.process.stop(signal.SIGKILL)
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
        if self.store is not None and not self.store.process.running:
            self.store.start()

    def wait_replicas_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        for slot in self._running():
            self._wait_ready(slot, timeout_s)

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
        client = redis.Redis(host="127.0.0.1", port=self._redis().port, password=password)
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
            slot.process.stop()
        if self.store is not None:
            self.store.stop()


class LocalTarget(Target):
    """Processes on 127.0.0.1 in one temporary directory per run."""

    name = "local"

    def __init__(self, keep: bool = False) -> None:
        if importlib.util.find_spec("service") is None or not (REPO_ROOT / "service").is_dir():
            raise TargetUnavailable(
                "the service package is not importable: pip install -e . in this Python"
            )
        self.redis_binary = _which("redis-server")
        self.nginx_binary = _which("nginx")
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix="chat-history-e2e-"))
        self.description = "local processes on 127.0.0.1"
        self._deployments: list[LocalDeployment] = []

    def deploy(self, backend: Backend, replicas: int) -> Deployment:
        if backend == "redis" and self.redis_binary is None:
            raise TargetUnavailable(
                "redis-server not found: apt-get install redis-server (Debian/Ubuntu), "
                "or run scripts/demo.sh, which installs it on Debian as root"
            )
        workdir = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=self.workdir))
        deployment = LocalDeployment(
            backend, replicas, workdir, self.redis_binary, self.nginx_binary
        )
        self._deployments.append(deployment)
        return deployment

    def close(self) -> None:
        for deployment in self._deployments:
            deployment.close()
        self._deployments.clear()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
