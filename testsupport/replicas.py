"""Replicas of the service (or any ASGI app) as uvicorn processes on loopback."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from testsupport.procs import LOOPBACK, Process, free_port, wait_for_http

START_TIMEOUT_S = 30.0
# Settings of the service that must come from the caller's arguments only, never leak in from
# the shell that started the run.
_SERVICE_ENV_PREFIXES = (
    "HISTORY_", "REDIS_", "MEMORY_", "CHAT_MODEL", "OPENAI_", "POD_NAME", "AUTH_", "RATE_LIMIT_",
    "MAX_SESSIONS_PER_PRINCIPAL",
    "HTTP_HEADER_", "HTTP_BODY_", "HTTP_MAX_",  # not HTTP_PROXY and friends
)  # fmt: skip


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any service setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    return env | dict(settings)


class Replica:
    """One uvicorn process on a port that stays the same across restarts (a load balancer's
    upstream), started the way the image starts it (see Dockerfile's CMD).

    Like a new pod, every `start()` is a new process with a new name, and holds no memory of
    the one before.
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        settings: Mapping[str, str],
        *,
        app: str = "chat_history_k8s.main:app",
        http: str = "chat_history_k8s.protocol:GuardedHttpProtocol",
        graceful_shutdown_s: int = 20,
        access_log: bool = True,
        uvicorn_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.settings = dict(settings)
        self.workdir = workdir
        argv = [
            sys.executable, "-m", "uvicorn", app, "--http", http,
            "--host", LOOPBACK, "--port", str(self.port),
            "--timeout-graceful-shutdown", str(graceful_shutdown_s),
        ]  # fmt: skip
        if not access_log:
            argv.append("--no-access-log")
        argv.extend(uvicorn_args)
        self.process = Process(name, argv, workdir / f"{name}.log")

    @property
    def name(self) -> str:
        return self.process.name

    def start(self, name: str | None = None) -> None:
        """Start the process (as `name`, which becomes its POD_NAME and log file); returns at
        once: call wait_ready() after starting several, so they import in parallel."""
        if name is not None:
            self.process.name = name
            self.process.log = self.workdir / f"{name}.log"
        self.process.env = service_env(self.settings | {"POD_NAME": self.process.name})
        self.process.start()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.process.stop(sig)

    def wait_ready(self, path: str = "/readyz", timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once `path` answers 200; ProcessError if the process exits first."""
        wait_for_http(self.process, f"{self.url}{path}", timeout_s=timeout_s)
