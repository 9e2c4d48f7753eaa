"""A real `redis-server` on a free loopback port, in a directory of its own."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from testsupport.procs import LOOPBACK, Process, ProcessError, free_port, require_tool, wait_until

START_TIMEOUT_S = 30.0

# Where the AOF goes when the machine has a tmpfs there: the suites test the software, not this
# machine's disk (as etcd runs with --unsafe-no-fsync in cluster/up.sh). With `appendfsync
# always` every reply waits for an fsync in Redis's one thread, and on a VM disk one fsync can
# take over half a second with nothing else running (578 ms, the longest of ~34,000 in 8 s, on
# 2026-12-02): under a rollout's I/O, longer than REDIS_SOCKET_TIMEOUT_SECONDS, and a turn of a
# test that claims "no request fails" is answered 503 by a correct service (two CI runs did).
# Each directory is mkdtemp's (a new name, mode 0700), never a fixed path there.
SHM = Path("/dev/shm")  # noqa: S108
PREFIX = "chat-history-redis-"


# Free space a tmpfs needs to be used: a container's /dev/shm is often 64 MiB, and a full one
# would fail Redis's writes (MISCONF) in ways no test means to check.
SHM_MIN_FREE = 1 << 30


def is_tmpfs(path: Path) -> bool:
    """Whether `path` is a writable tmpfs mount with at least `SHM_MIN_FREE` bytes free."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == str(path):
                return (
                    fields[2] == "tmpfs"
                    and os.access(path, os.W_OK)
                    and shutil.disk_usage(path).free >= SHM_MIN_FREE
                )
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_orphans() -> None:
    """Data directories whose process died without its exit handlers (SIGKILL, a crash)."""
    for entry in SHM.glob(f"{PREFIX}*"):
        pid = entry.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and entry.stat().st_uid == os.getuid():
            shutil.rmtree(entry, ignore_errors=True)


def data_dir(workdir: Path) -> Path:
    """`workdir/redis-data`, or where it points: a directory of this process's own on tmpfs
    (removed when the process exits; `workdir/redis-data` is a symlink to it), else on disk.
    A second server on the same `workdir` finds the first one's data."""
    home = workdir / "redis-data"
    if home.is_dir():  # the directory itself, or a symlink to one
        return home.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    home.unlink(missing_ok=True)  # a symlink left dangling by an exited process
    if not is_tmpfs(SHM):
        home.mkdir()
        return home
    _sweep_orphans()
    data = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=SHM))
    atexit.register(shutil.rmtree, data, ignore_errors=True)
    home.symlink_to(data, target_is_directory=True)
    return data


class RedisServer:
    """One redis-server process; `start()` again after `stop()`/`kill()` reuses the port and
    the data directory, so with `appendonly` the data survives the restart.

    AOF uses `appendfsync always`: the suites claim that *every acknowledged* turn survives a
    SIGKILL, and with `everysec` the last second of writes may be lost (the right trade-off for
    many deployments, but not a claim a test can make). Benchmarks pass `appendonly=False`.
    The data directory is on tmpfs where the machine has one (`data_dir`, `SHM`).
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
        self.data = data_dir(workdir)
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
