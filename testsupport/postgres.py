"""A real PostgreSQL server (Debian's `postgresql` package) on a free loopback port."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from testsupport.procs import LOOPBACK, Process, ProcessError, free_port, require_tool, wait_until

START_TIMEOUT_S = 60.0
# PostgreSQL refuses to run as root: as root, the server runs as this system user (the
# `postgresql` package creates it).
SYSTEM_USER = "postgres"


class PostgresServer:
    """One `postgres` process serving a cluster that `initdb` made in a directory of its own.

    TCP on 127.0.0.1 only (no Unix socket), user `postgres` with `trust` authentication: a
    throwaway server for tests and benchmarks, never a deployment. `settings` become `-c
    name=value` options (e.g. `{"fsync": "off"}`). As root it runs, like `initdb`, as the
    `postgres` system user with the parent-death signal re-armed after the user switch, so an
    aborted run leaves no server behind. The cluster lives outside `workdir` (which may be a
    directory that user cannot reach), in a temporary directory the first `start()` makes and
    `close()` removes; `start()` again after `stop()` keeps the data. Its log is
    `workdir/postgres.log`.
    """

    def __init__(self, workdir: Path, *, settings: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "postgres.log"
        self.options = {
            "listen_addresses": LOOPBACK,
            "unix_socket_directories": "",
            **(settings or {}),
        }
        self._user = _system_user() if os.geteuid() == 0 else None
        self._home: Path | None = None  # made by the first start(), removed by close()
        self.process: Process | None = None
        self.version = subprocess.run(
            [require_tool("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[2]

    def _as_user(self) -> list[str]:
        """The prefix that runs a program as the system user when this process is root."""
        if self._user is None:
            return []
        return [
            require_tool("setpriv"), f"--reuid={self._user.pw_uid}",
            f"--regid={self._user.pw_gid}", "--init-groups", "--pdeathsig", "KILL",
        ]  # fmt: skip

    @property
    def data(self) -> Path | None:
        """The cluster's directory, once the first start() has made it (None after close())."""
        return None if self._home is None else self._home / "data"

    def _make_home(self) -> Path:
        self._home = Path(tempfile.mkdtemp(prefix="chat-history-pg-"))
        if self._user is not None:
            os.chown(self._home, self._user.pw_uid, self._user.pw_gid)
        return self._home / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> None:
        data = self.data or self._make_home()
        if not (data / "PG_VERSION").exists():
            self._initdb(data)
        if self.process is None:
            argv = [*self._as_user(), require_tool("postgres"), "-D", str(data)]
            argv += ["-p", str(self.port)]
            for name, value in self.options.items():
                argv += ["-c", f"{name}={value}"]
            self.process = Process("postgres", argv, self.log)
        self.process.start()
        try:
            wait_until(self._answers, timeout_s=START_TIMEOUT_S, what="postgres to answer")
        except BaseException:
            self.process.stop(signal.SIGKILL)
            raise

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        if self.process is not None:
            self.process.stop(signal.SIGINT)

    def close(self) -> None:
        """Stop the server and remove its cluster."""
        self.stop()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
            self.process = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _initdb(self, data: Path) -> None:
        argv = [
            *self._as_user(), require_tool("initdb"), "-D", str(data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, cwd=data.parent
        )
        if done.returncode != 0:
            raise ProcessError(f"initdb failed ({done.returncode}):\n{done.stderr[-2000:]}")

    def _answers(self) -> bool:
        assert self.process is not None
        self.process.check_alive()
        done = subprocess.run(
            [require_tool("pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-t", "1"],
            capture_output=True, check=False, timeout=10,
        )  # fmt: skip
        return done.returncode == 0


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ProcessError(
            f"PostgreSQL refuses to run as root, and there is no `{SYSTEM_USER}` user to run it "
            "as: apt-get install postgresql"
        ) from None
