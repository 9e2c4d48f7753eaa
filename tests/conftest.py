"""Shared fixtures: a real redis-server, and apps driven in-process over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
from langchain_core.language_models import BaseChatModel

from chat_history_k8s.config import Settings
from chat_history_k8s.history.redis_mux import MultiplexedConnection
from chat_history_k8s.main import create_app
from testsupport import RedisServer, await_until, new_key, write_key_file

# A test's figures worth reading in the log (record_property(FIGURES, line)): printed at the end
# of the run, also from pytest-xdist's workers, whose own output is not shown.
FIGURES = "figures"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in report.user_properties
        if name == FIGURES
    ]
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server's URL, with the database emptied before each test."""
    if not redis_server.running:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def make_settings(backend: str, redis_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"history_backend": backend, "pod_name": f"{backend}-test"}
    if redis_url is not None:
        values["redis_url"] = redis_url
    values.update(overrides)
    return Settings(**values)


HISTORY_APIS = ("message-history", "checkpointer")


@asynccontextmanager
async def app_client(
    settings: Settings, model: BaseChatModel | None = None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An app started with its lifespan, and an HTTP client speaking ASGI to it. An exception
    the app raised reaches the test, unless `raise_app_exceptions` is False: then the client
    gets the 500 that uvicorn would send (the app's error handler has answered it)."""
    app = create_app(settings, model=model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def wait_ready(client: httpx.AsyncClient, within: float = 10.0) -> None:
    """Poll /readyz like a kubelet until it answers 200 (a Service routes only to ready pods)."""

    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await await_until(ready, timeout_s=within, what="/readyz to answer 200")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=HISTORY_APIS)
def history_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_settings(backend: str, history_api: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for the parametrized backend and API (starting Redis only when needed)."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return make_settings(backend, url, history_api=history_api)


def stored_sessions(client: redis.Redis, history_api: str) -> int:
    """Sessions stored in this Redis by either API (one LIST, or one thread's `idx` key)."""
    if history_api == "checkpointer":
        return sum(1 for _ in client.scan_iter("chat-history:ckpt:{*}:idx", count=1000))
    limits = b"chat-history:limits:"  # the abuse limits' counters are not sessions
    return sum(
        1 for k in client.scan_iter("chat-history:*", count=1000) if not k.startswith(limits)
    )


@pytest.fixture
async def client(backend_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(backend_settings) as c:
        yield c


@pytest.fixture
def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every write to Redis from async clients in this process: one per round trip (a
    pipeline is packed and sent once), through redis-py's connections and through the turn's
    multiplexed connection (whose one write method every command goes through)."""
    sent = [0]
    original: Callable[..., Awaitable[None]] = aredis.Connection.send_packed_command

    async def counting(self: aredis.Connection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    write: Callable[..., None] = MultiplexedConnection._write

    def counting_write(self: MultiplexedConnection, wire: Any, data: bytes, batch: Any) -> None:
        sent[0] += 1
        write(self, wire, data, batch)

    monkeypatch.setattr(aredis.Connection, "send_packed_command", counting)
    monkeypatch.setattr(MultiplexedConnection, "_write", counting_write)
    return sent


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def commands_per_turn(
    before: dict[str, int], after: dict[str, int], turns: int
) -> dict[str, float]:
    """The commands Redis ran per turn between two `commandstats`, those it ran at all (INFO,
    the reading itself, left out)."""
    counts = {k: (n - before.get(k, 0)) / turns for k, n in after.items() if k != "info"}
    return {k: v for k, v in counts.items() if v}


@pytest.fixture
def api_keys(tmp_path: Path) -> dict[str, str]:
    """A key file with one fresh key each for alice and bob; `path` maps to the file."""
    keys = {"alice": new_key(), "bob": new_key()}
    path = write_key_file(tmp_path / "api-keys", {p: [k] for p, k in keys.items()})
    return keys | {"path": str(path)}


def auth_settings(api_keys: dict[str, str], **limits: Any) -> dict[str, Any]:
    """Settings overrides that turn authentication (and `limits`) on with `api_keys`' file."""
    return {"auth_enabled": True, "auth_api_keys_file": api_keys["path"], **limits}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
