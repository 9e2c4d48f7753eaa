"""The `helm test` hop check against real replicas: uvicorn processes behind nginx, which like
kube-proxy for new connections spreads the check's requests over them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from chat_history_k8s.hopcheck.check import main as hopcheck_main
from tests.conftest import HISTORY_APIS
from testsupport import Nginx, RedisServer, Replica, free_port, new_key, write_key_file


@contextmanager
def replicas(
    workdir: Path,
    count: int,
    backend: str,
    history_api: str,
    redis_url: str = "",
    extra: dict[str, str] | None = None,
) -> Iterator[str]:
    """`count` replicas of the service behind a round-robin balancer; yields its URL."""
    settings = {"HISTORY_BACKEND": backend, "HISTORY_API": history_api, "LOG_LEVEL": "WARNING"}
    settings |= extra or {}
    if redis_url:
        settings["REDIS_URL"] = redis_url
    with ExitStack() as stack:
        pods = [Replica(f"replica-{i}", workdir, settings, access_log=False) for i in range(count)]
        for pod in pods:
            stack.callback(pod.stop)
            pod.start()
        for pod in pods:
            pod.wait_ready("/healthz")
        balancer = Nginx(workdir, [pod.port for pod in pods])
        stack.callback(balancer.stop)
        balancer.start()
        yield balancer.url


@pytest.fixture(scope="module", params=HISTORY_APIS)
def history_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def redis_replicas(tmp_path_factory: pytest.TempPathFactory, history_api: str) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("hop-redis")
    server = RedisServer(workdir)
    server.start()
    try:
        with replicas(workdir, 3, "redis", history_api, server.url) as url:
            yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def memory_replicas(tmp_path_factory: pytest.TempPathFactory, history_api: str) -> Iterator[str]:
    with replicas(tmp_path_factory.mktemp("hop-memory"), 3, "memory", history_api) as url:
        yield url


@pytest.fixture(scope="module")
def authed_replicas(
    tmp_path_factory: pytest.TempPathFactory, history_api: str
) -> Iterator[tuple[str, Path]]:
    """Redis replicas with authentication and the limits on, as the chart deploys them; yields
    their URL and a file holding a valid key (as `helm test` mounts it)."""
    workdir = tmp_path_factory.mktemp("hop-auth")
    key = new_key()
    keys = write_key_file(workdir / "api-keys", {"helm-test": [key]})
    (workdir / "api-key").write_text(key + "\n")
    limits = {
        "AUTH_ENABLED": "true", "AUTH_API_KEYS_FILE": str(keys),
        "RATE_LIMIT_TURNS": "100", "MAX_SESSIONS_PER_PRINCIPAL": "10",
    }  # fmt: skip
    server = RedisServer(workdir)
    server.start()
    try:
        with replicas(workdir, 3, "redis", history_api, server.url, limits) as url:
            yield url, workdir / "api-key"
    finally:
        server.stop()


def check(url: str, backend: str, *extra: str) -> int:
    return hopcheck_main(
        ["--url", url, "--turns", "6", "--backend", backend, "--wait", "5", *extra]
    )


def test_redis_replicas_pass_every_pod_sees_the_whole_history(
    redis_replicas: str, history_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(redis_replicas, "redis", "--history-api", history_api) == 0
    out = capsys.readouterr().out
    assert f"(redis backend, {history_api} API)" in out
    assert "OK: 3 pods served the turns" in out
    assert "every pod saw the whole history" in out


def test_memory_replicas_pass_by_showing_the_loss(
    memory_replicas: str, history_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(memory_replicas, "memory", "--history-api", history_api) == 0
    assert "history lost on" in capsys.readouterr().out


def test_with_authentication_on_the_check_passes_with_a_key_and_says_why_without(
    authed_replicas: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, key_file = authed_replicas
    assert check(url, "redis", "--api-key-file", str(key_file)) == 0
    assert "every pod saw the whole history" in capsys.readouterr().out
    assert check(url, "redis") == 1
    assert "requires an API key (auth=api-keys): pass --api-key-file" in capsys.readouterr().out


def test_replicas_of_the_other_api_fail_the_check_with_the_reason(
    redis_replicas: str, history_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "checkpointer" if history_api == "message-history" else "message-history"
    assert check(redis_replicas, "redis", "--history-api", other) == 1
    assert f"reports history_api {history_api!r}, expected {other!r}" in capsys.readouterr().out


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
    assert hopcheck_main(["--url", url, "--backend", "redis", "--wait", "1"]) == 1
    assert "the service was not ready within 1s" in capsys.readouterr().out


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        hopcheck_main(["--url", "http://x", "--backend", "postgres"])
    assert exc.value.code == 2
