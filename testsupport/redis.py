"""A real `redis-server` on a free loopback port, in a directory of its own."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from testsupport.procs import LOOPBACK, Process, ProcessError, free_port, require_tool, wait_until

START_TIMEOUT_S = 30.0


class RedisServer:
    """One redis-server process; `start()` again after `stop()`/`kill()` reuses the port and
    the data directory, so with `appendonly` the data survives the restart.

    AOF uses `appendfsync always`: the suites claim that *every acknowledged* turn survives a
    SIGKILL, and with `everysec` the last second of writes may be lost (the right trade-off for
    many deployments, but not a claim a test can make). Benchmarks pass `appendonly=False`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.password = password
        self.data = workdir / "redis-data"
        self.data.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.data),
            "--save", "", "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if password:
            argv += ["--requirepass", password]
        argv += extra_args  # e.g. the cluster options of testsupport.redis_cluster
        self.process = Process("redis-server", argv, workdir / "redis.log")
        version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        self.version = next((v[2:] for v in version if v.startswith("v=")), "unknown")

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process.running

    def client(self, **options: Any) -> redis.Redis:
        """A sync client of its own (close it when done); `options` go to `redis.Redis`."""
        settings: dict[str, Any] = {"socket_timeout": 5, "password": self.password} | options
        return redis.Redis(host=LOOPBACK, port=self.port, **settings)

    def start(self) -> None:
        self.process.start()
        try:
            wait_until(self._answers, timeout_s=START_TIMEOUT_S, what="redis-server to answer")
        except BaseException:
            self.process.stop(signal.SIGKILL)
            raise

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)

    def kill(self) -> None:
        self.process.stop(signal.SIGKILL)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """`redis-cli` as the runbook runs it: the password from REDISCLI_AUTH, never argv."""
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        done = subprocess.run(
            [require_tool("redis-cli"), "-p", str(self.port), *args], input=stdin, env=env,
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        if done.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise ProcessError(f"redis-cli {' '.join(args)}: {done.stdout.strip()}")
        return done.stdout

    def persistence(self) -> dict[str, str]:
        """`INFO persistence` as a dict."""
        info = self.cli("INFO", "persistence")
        return dict(line.split(":", 1) for line in info.split() if ":" in line)

    def _answers(self) -> bool:
        self.process.check_alive()
        client = self.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
