"""The memory backend's bounds: session LRU, per-session cap, TTL, and their metrics."""

from __future__ import annotations

import asyncio
import time

import httpx
from langchain_core.messages import AIMessage, HumanMessage
from prometheus_client import generate_latest

from chat_history_k8s.history.memory import MemoryStore
from chat_history_k8s.metrics import Metrics
from tests.conftest import app_client, make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(i: int) -> list[HumanMessage | AIMessage]:
    return [HumanMessage(content=f"q{i}"), AIMessage(content=f"a{i}")]


def test_least_recently_used_session_is_evicted_at_the_cap() -> None:
    store = MemoryStore(max_sessions=3, max_messages=10, ttl_seconds=0)
    for sid in "abc":
        store.append(sid, pair(0))
    store.read("a")  # a is now the most recently used; b is the least
    store.append("d", pair(0))
    assert store.read("b") == []
    assert all(store.read(sid) for sid in "acd")
    assert (store.session_count, store.message_count, store.evictions["lru"]) == (3, 6, 1)


def test_per_session_cap_drops_the_oldest_messages_and_keeps_counts_right() -> None:
    store = MemoryStore(max_sessions=10, max_messages=4, ttl_seconds=0)
    for i in range(5):
        store.append("s", pair(i))
    assert [m.text for m in store.read("s")] == ["q3", "a3", "q4", "a4"]
    assert store.message_count == 4
    store.clear("s")
    assert (store.session_count, store.message_count) == (0, 0)


def test_ttl_slides_on_append_and_sweep_drops_expired_sessions() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=10, max_messages=10, ttl_seconds=60, clock=clock)
    store.append("old", pair(0))
    store.append("kept", pair(0))
    clock.now += 50
    store.append("kept", pair(1))  # slides kept's expiry to now + 60
    clock.now += 20  # old expired 10 s ago; kept has 40 s left
    assert store.sweep() == 1
    assert store.read("old") == [] and len(store.read("kept")) == 4
    assert (store.session_count, store.message_count, store.evictions["ttl"]) == (1, 4, 1)
    clock.now += 61
    assert store.read("kept") == []  # lazily expired on access
    assert store.evictions["ttl"] == 2 and store.message_count == 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def turn(client: httpx.AsyncClient, sid: str) -> int:
    r = await client.post("/v1/chat", json={"session_id": sid, "message": "x"})
    assert r.status_code == 200
    return int(r.json()["history_length"])


async def test_bounds_hold_in_a_running_app_and_show_in_metrics() -> None:
    settings = make_settings(
        "memory", memory_max_sessions=3, history_max_messages=4, history_window_messages=2,
        history_ttl_seconds=1,
    )  # fmt: skip
    async with app_client(settings) as client:
        for sid in ("s1", "s2", "s3", "s4", "s5"):
            await turn(client, sid)
        for _ in range(4):
            await turn(client, "s5")
        assert await turn(client, "s5") == 4  # capped at 4 messages
        text = (await client.get("/metrics")).text
        assert metric(text, "chat_history_memory_sessions") == 3
        assert metric(text, "chat_history_memory_messages") == 2 + 2 + 4
        assert 'chat_history_memory_evictions_total{reason="lru"} 2.0' in text
        assert (await client.get("/v1/sessions/s1/messages")).status_code == 404

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            if metric(text, "chat_history_memory_sessions") == 0:
                break
            await asyncio.sleep(0.1)
        assert metric(text, "chat_history_memory_messages") == 0
        assert 'chat_history_memory_evictions_total{reason="ttl"} 3.0' in text
        assert (await client.get("/v1/sessions/s5/messages")).status_code == 404


def test_total_message_cap_evicts_least_recently_used_sessions() -> None:
    store = MemoryStore(max_sessions=100, max_messages=10, ttl_seconds=0, max_total_messages=6)
    for sid in ("a", "b", "c"):
        store.append(sid, pair(0))
    store.read("a")  # b is now the least recently used
    store.append("d", pair(0))  # 8 messages > 6: b goes
    assert store.read("b") == [] and all(store.read(s) for s in "acd")
    assert (store.message_count, store.evictions["lru"]) == (6, 1)
    store.append("d", [m for i in range(1, 4) for m in pair(i)])  # d alone holds 8 > 6
    assert store.session_count == 1 and len(store.read("d")) == 8  # the writer is kept


def test_scraping_metrics_changes_nothing_and_expired_sessions_go_the_normal_way() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=10, max_messages=10, ttl_seconds=60, clock=clock)
    metrics = Metrics()
    metrics.watch_store(store)
    store.append("old", pair(0))
    clock.now += 30
    store.append("kept", pair(0))
    clock.now += 40  # old expired 10 s ago; kept has 20 s left
    for _ in range(2):
        text = generate_latest(metrics.registry).decode()
        assert metric(text, "chat_history_memory_sessions") == 2  # old is still held
        assert metric(text, "chat_history_memory_messages") == 4
        assert 'chat_history_memory_evictions_total{reason="ttl"} 0.0' in text
        assert 'chat_history_memory_evictions_total{reason="lru"} 0.0' in text
        assert metric(text, "chat_history_memory_max_sessions") == 10
    assert (store.session_count, store.message_count, store.evictions) == (
        2,
        4,
        {"lru": 0, "ttl": 0},
    )
    assert store.read("old") == []  # the normal path: expired when touched
    text = generate_latest(metrics.registry).decode()
    assert metric(text, "chat_history_memory_sessions") == 1
    assert metric(text, "chat_history_memory_messages") == 2
    assert 'chat_history_memory_evictions_total{reason="ttl"} 1.0' in text


async def test_a_started_store_sweeps_expired_sessions_in_the_background() -> None:
    clock = Clock()
    store = MemoryStore(
        max_sessions=10, max_messages=10, ttl_seconds=60, clock=clock, sweep_interval_seconds=0.01
    )
    await store.start()
    try:
        store.append("a", pair(0))
        clock.now += 61
        deadline = time.monotonic() + 5
        while store.session_count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (store.session_count, store.message_count, store.evictions["ttl"]) == (0, 0, 1)
    finally:
        await store.aclose()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "memory-sweep"] == []


def test_the_sweep_runs_at_least_once_per_ttl() -> None:
    assert MemoryStore(max_sessions=1, max_messages=2, ttl_seconds=1).sweep_interval_seconds == 1
    default = MemoryStore(max_sessions=1, max_messages=2, ttl_seconds=7 * 24 * 3600)
    assert default.sweep_interval_seconds == 60
