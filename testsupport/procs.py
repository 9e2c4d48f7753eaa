"""Ports, tools and child processes on loopback, and polling with a deadline."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 15.0

# Where each tool comes from when it is missing (Debian package, or the script that builds it).
_HOW_TO_GET = {
    "redis-server": "apt-get install redis-server",
    "redis-cli": "apt-get install redis-tools",
    "redis-sentinel": "apt-get install redis-sentinel",
    "redis-benchmark": "apt-get install redis-tools",
    "nginx": "apt-get install nginx-light",
    "wrk": "apt-get install wrk",
    "postgres": "apt-get install postgresql",
    "initdb": "apt-get install postgresql",
    "pg_isready": "apt-get install postgresql-client",
    "psql": "apt-get install postgresql-client",
    "setpriv": "apt-get install util-linux",
    "helm": "scripts/tools.sh builds the pinned helm into .tools/bin",
    "kubectl": "see https://kubernetes.io/docs/tasks/tools/",
}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessError(RuntimeError):
    """A process could not be started or misbehaved; the message says why."""


class MissingTool(ProcessError):
    """A program the caller needs is not installed; the message says how to get it."""


# Ports handed out lately by this process, not handed out again (a server may not have bound
# its port yet when the next one is asked for).
_handed: collections.deque[int] = collections.deque(maxlen=4096)
_handed_lock = threading.Lock()


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ends of outgoing connections (and for bind to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, picked below the kernel's
    ephemeral range. A port the kernel gives for port 0 is in that range, where any outgoing
    connection may take it as its local end before the server binds it: the benchmark, starting
    28 servers per round while wrk, nginx and a Redis client per request made connections, had
    a replica fail to bind that way (EADDRINUSE)."""
    low, _ = _ephemeral_ports()
    first = 10000 if low > 12000 else 1024
    with _handed_lock:
        for _ in range(1000):
            port = random.randrange(first, low)
            if port in _handed:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue
            _handed.append(port)
            return port
    raise ProcessError(f"no free port between {first} and {low} on {LOOPBACK}")


def find_tool(name: str) -> str | None:
    """The path of `name`: the repository's own build in .tools/bin first, then PATH, then the
    sbin directories (nginx lives there and root's PATH may lack them), then Debian's
    PostgreSQL directories, newest major version first (`postgres` and `initdb` live there)."""
    local = REPO_ROOT / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    postgres_dirs = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
        reverse=True,
    )
    path = ":".join(["/usr/local/sbin:/usr/sbin:/sbin", *map(str, postgres_dirs)])
    return shutil.which(name) or shutil.which(name, path=path)


def require_tool(name: str) -> str:
    """Like find_tool, but raises MissingTool saying how to get it."""
    found = find_tool(name)
    if found is None:
        raise MissingTool(f"{name} not found: {_HOW_TO_GET.get(name, f'install {name}')}")
    return found


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` once `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


async def await_until(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> None:
    """wait_until for a coroutine condition, sleeping without blocking the event loop (an app
    served in-process keeps running while a test polls it)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_for_http(process: Process, url: str, *, timeout_s: float) -> None:
    """Poll `url` until it answers 200; ProcessError (with its log) if `process` exits first."""

    def answers() -> bool:
        process.check_alive()
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout_s=timeout_s, what=f"{process.name}: 200 from {url}")


def tail(log: Path, lines: int) -> str:
    """The last `lines` lines of the file `log` ("(no log)" when there is none)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _die_with_parent() -> None:
    # Children get SIGKILL when the Python that started them dies, so an aborted run leaves no
    # servers behind. PR_SET_PDEATHSIG follows the *thread* that forked: start processes from
    # the main thread only.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Process:
    """One child process with its log file. `start()` may be called again after `stop()`: a
    restart is a new process (what a pod restart does to memory)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        if self.running:
            raise ProcessError(f"{self.name} is already running")
        self._close_log()
        self._log_file = self.log.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # main thread only, see _die_with_parent
        )

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` (e.g. SIGSTOP to hang it) without waiting for anything."""
        if not self.running or self._popen is None:
            raise ProcessError(f"{self.name} is not running")
        self._popen.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` and wait for the exit; SIGKILL when that takes over STOP_TIMEOUT_S."""
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
        """ProcessError with the log's tail when the process has exited on its own."""
        if self._popen is not None and self._popen.poll() is not None:
            raise ProcessError(
                f"{self.name} exited with {self._popen.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log, lines)

    def cpu_seconds(self) -> float:
        """User + system CPU used so far by the process and its children (nginx's workers)."""
        if self.pid is None:
            return 0.0
        return sum(_cpu_seconds(pid) for pid in (self.pid, *self.children()))

    def context_switches(self) -> int:
        """Times the process and its children (their threads too) have left the CPU so far:
        waiting for I/O (voluntary) or preempted (involuntary)."""
        if self.pid is None:
            return 0
        return sum(_context_switches(pid) for pid in (self.pid, *self.children()))

    def children(self) -> list[int]:
        """The pids of its child processes now (nginx's workers)."""
        return [] if self.pid is None else _children(self.pid)

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc."""
        return self._status_bytes("VmRSS")

    def peak_rss_bytes(self) -> int:
        """The highest resident set size since the start or `reset_peak_rss()` (VmHWM)."""
        return self._status_bytes("VmHWM")

    def reset_peak_rss(self) -> None:
        """Start measuring the peak anew from the current size (Linux >= 4.0; the process's
        owner may write its clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def _status_bytes(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise ProcessError(f"no {field} for {self.name}")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _stat_fields(pid: int) -> list[str]:
    # Fields after "pid (comm)": state is [0], ppid [1], utime [11], stime [12].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _context_switches(pid: int) -> int:
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue  # a thread that ended meanwhile
        total += sum(int(ln.split()[1]) for ln in lines if "ctxt_switches:" in ln)
    return total


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
