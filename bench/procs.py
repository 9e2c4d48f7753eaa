"""Processes the benchmarks start on loopback: redis-server, uvicorn replicas, nginx.

Everything lives in one temporary directory per benchmark and is stopped (by its own pid) and
removed when the `with` block ends, also on errors.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import redis

START_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark cannot run or a process misbehaved; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def which(name: str) -> str:
    """The path of a required binary, or a BenchError that says how to get it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found is None:
        package = {
            "redis-server": "redis-server",
            "redis-benchmark": "redis-tools",
            "wrk": "wrk",
            "nginx": "nginx-light",
        }.get(name, name)
        raise BenchError(f"{name} not found: apt-get install -y {package}")
    return found


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll `check` until it is true; BenchError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _die_with_parent() -> None:
    # Children get SIGKILL if the benchmark itself dies, so an aborted run leaves no servers.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stat_fields(pid: int) -> list[str]:
    # Fields after "pid (comm)": state is [0], ppid [1], utime [11], stime [12].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class Process:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = log.open("wb")
        self._popen = subprocess.Popen(
            argv,
            env=env if env is not None else dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only the main thread starts processes
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def check_alive(self) -> None:
        if self._popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self._popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the process and its children (nginx's
        workers), from /proc."""
        return sum(_cpu_seconds(pid) for pid in (self.pid, *_children(self.pid)))

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=5)
        self._log_file.close()


def _wait_or_stop(process: Process, check: Callable[[], bool], what: str) -> None:
    try:
        wait_until(check, timeout_s=START_TIMEOUT_S, what=what)
    except BaseException:
        process.stop()
        raise


class RedisServer:
    """A throwaway redis-server: no persistence, loopback only, its own port and directory."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            which("redis-server"),
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ]
        self.process = Process("redis-server", argv, workdir / "redis.log")
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5)

        def answers() -> bool:
            self.process.check_alive()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        _wait_or_stop(self.process, answers, "redis-server to answer PING")
        self.version = str(client.info("server")["redis_version"])
        client.close()

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=30, **kwargs)  # type: ignore[arg-type]


def uvicorn_argv(app: str, port: int) -> list[str]:
    """The image's command (see Dockerfile), on loopback: every app is served the same way."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        "20",
    ]


class Replica:
    def __init__(self, name: str, app: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        full_env = {**os.environ, **env, "POD_NAME": name}
        self.process = Process(
            name, uvicorn_argv(app, self.port), workdir / f"{name}.log", full_env
        )
        self.url = f"http://{LOOPBACK}:{self.port}"

    def wait_ready(self, path: str) -> None:
        def ready() -> bool:
            self.process.check_alive()
            try:
                return httpx.get(f"{self.url}{path}", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=START_TIMEOUT_S, what=f"{self.name} {path}")


class Nginx:
    """nginx round robin over the replicas, with keep-alive upstream connections."""

    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        self.port = free_port()
        prefix = workdir / "nginx"
        prefix.mkdir(parents=True)
        servers = "\n".join(f"    server {LOOPBACK}:{p} max_fails=0;" for p in upstream_ports)
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream chat {{
{servers}
    keepalive 128;
  }}
  server {{
    listen {LOOPBACK}:{self.port};
    location / {{
      proxy_pass http://chat;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 30s;
    }}
  }}
}}
"""
        )
        argv = [
            which("nginx"),
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            str(prefix / "error.log"),
            "-g",
            "daemon off;",
        ]
        self.process = Process("nginx", argv, prefix / "stdout.log")
        self.url = f"http://{LOOPBACK}:{self.port}"

        def answers() -> bool:
            self.process.check_alive()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_or_stop(self.process, answers, "nginx to proxy /healthz")
