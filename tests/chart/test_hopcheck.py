"""The `helm test` client against real replicas: uvicorn processes behind a small TCP balancer
that, like kube-proxy, picks a backend per new connection."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from service import hopcheck
from tests.redis_server import RedisServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class RoundRobinBalancer:
    """Accepts on a loopback port and pipes each connection to the next backend in turn."""

    def __init__(self, ports: list[int]) -> None:
        self._next = itertools.cycle(ports)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            try:
                upstream = socket.create_connection(("127.0.0.1", next(self._next)), timeout=5)
            except OSError:
                return
            with upstream:
                back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
                back.start()
                self._pipe(client, upstream)
                back.join(timeout=10)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()


@contextmanager
def replicas(count: int, backend: str, redis_url: str | None = None) -> Iterator[str]:
    """`count` uvicorn replicas of the service; yields the balancer's URL."""
    ports = [free_port() for _ in range(count)]
    procs = []
    for i, port in enumerate(ports):
        env = {**os.environ, "HISTORY_BACKEND": backend, "POD_NAME": f"replica-{i}"}
        if redis_url:
            env["REDIS_URL"] = redis_url
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env,
        ))  # fmt: skip
    balancer = None
    try:
        for proc, port in zip(procs, ports, strict=True):
            wait_healthy(proc, port)
        balancer = RoundRobinBalancer(ports)
        yield f"http://127.0.0.1:{balancer.port}"
    finally:
        if balancer:
            balancer.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def wait_healthy(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica on port {port} exited with {proc.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"replica on port {port} not healthy within 30 s")


@pytest.fixture(scope="module")
def redis_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("hop-redis"))
    server.start()
    try:
        with replicas(3, "redis", server.url) as url:
            yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def memory_replicas() -> Iterator[str]:
    with replicas(3, "memory") as url:
        yield url


def check(url: str, backend: str, *extra: str) -> int:
    return hopcheck.main(
        ["--url", url, "--turns", "6", "--backend", backend, "--wait", "5", *extra]
    )


def test_redis_replicas_pass_every_pod_sees_the_whole_history(
    redis_replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(redis_replicas, "redis") == 0
    out = capsys.readouterr().out
    assert "OK: 3 pods served the turns" in out
    assert "every pod saw the whole history" in out


def test_memory_replicas_pass_by_showing_the_loss(
    memory_replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(memory_replicas, "memory") == 0
    assert "history lost on" in capsys.readouterr().out


def test_memory_replicas_fail_the_redis_check_with_the_reason(
    memory_replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(memory_replicas, "redis") == 1
    assert "reports backend 'memory', expected 'redis'" in capsys.readouterr().out


def test_too_few_pods_fails_with_the_reason(
    redis_replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(redis_replicas, "redis", "--min-pods", "4") == 1
    assert "only 3 pod(s) served the 6 turns" in capsys.readouterr().out


def test_unreachable_url_fails_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert hopcheck.main(["--url", url, "--backend", "redis", "--wait", "1"]) == 1
    assert "the service was not ready within 1s" in capsys.readouterr().out


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        hopcheck.main(["--url", "http://x", "--backend", "postgres"])
    assert exc.value.code == 2
