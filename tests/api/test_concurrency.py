"""Concurrent turns on one session lose nothing, in both APIs; with the checkpointer they are
serialized per thread (a lease across Redis replicas, a lock in one process), a dead holder
blocks its thread only until its lease expires, and a turn that outlived its lease stores
nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis

from chat_history_k8s.checkpoint.layout import ThreadKeys
from tests.api.models import HOLD, STALL, FlakyModel
from tests.api.test_replicas import replicas
from tests.conftest import app_client, make_settings
from testsupport import Replica, await_until

TURNS = 50
WINDOW = 20  # HISTORY_WINDOW_MESSAGES' default


async def soon(check: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return check()

    await await_until(holds, timeout_s=10, what=what)


def assert_turns_whole(
    messages: list[dict[str, str]], expected: set[str], serialized: bool
) -> None:
    """Every human message is followed by its own AI reply, and each turn is there once; when
    turns are `serialized`, each reply saw every turn stored before it (up to the window)."""
    humans = [m["content"] for m in messages[::2]]
    assert [m["type"] for m in messages] == ["human", "ai"] * (len(messages) // 2)
    for position, (human, ai) in enumerate(zip(messages[::2], messages[1::2], strict=True)):
        assert ai["content"].startswith(f'You said: "{human["content"]}".')
        if serialized:
            seen = min(2 * position, WINDOW)
            assert ai["content"].endswith(f"I can see {seen} earlier messages."), ai
    assert sorted(humans) == sorted(expected)


async def concurrent_turns(pods: list[httpx.AsyncClient], session_id: str) -> list[int]:
    """TURNS turns sent at once, spread over `pods`; their history_length values."""
    results = await asyncio.gather(
        *(
            pods[i % len(pods)].post(
                "/v1/chat", json={"session_id": session_id, "message": f"turn-{i}"}
            )
            for i in range(TURNS)
        )
    )
    assert [r.status_code for r in results] == [200] * TURNS, [r.text for r in results][:3]
    return sorted(r.json()["history_length"] for r in results)


async def test_fifty_concurrent_turns_through_three_redis_replicas_lose_nothing(
    redis_url: str, history_api: str
) -> None:
    async with AsyncExitStack() as stack:
        pods = await replicas(stack, "redis", 3, redis_url, history_api)
        assert await concurrent_turns(pods, "busy") == list(range(0, 2 * TURNS, 2))
        messages = (await pods[0].get("/v1/sessions/busy/messages")).json()["messages"]
        assert len(messages) == 2 * TURNS
        sent = {f"turn-{i}" for i in range(TURNS)}
        assert_turns_whole(messages, sent, serialized=history_api == "checkpointer")


async def test_fifty_concurrent_turns_on_one_memory_replica_lose_nothing(history_api: str) -> None:
    async with app_client(make_settings("memory", history_api=history_api)) as pod:
        assert await concurrent_turns([pod], "busy") == list(range(0, 2 * TURNS, 2))
        messages = (await pod.get("/v1/sessions/busy/messages")).json()["messages"]
        sent = {f"turn-{i}" for i in range(TURNS)}
        assert_turns_whole(messages, sent, serialized=history_api == "checkpointer")


async def test_a_turn_that_cannot_get_its_busy_session_is_a_503_and_stores_nothing(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    settings = make_settings(
        backend, url, history_api="checkpointer", checkpoint_lease_wait_seconds=0.3
    )
    model = FlakyModel()
    async with app_client(settings, model) as pod:
        slow = asyncio.create_task(
            pod.post("/v1/chat", json={"session_id": "s", "message": f"{HOLD} first"})
        )
        await soon(lambda: model.calls == 1, "the first turn's model call")
        started = time.monotonic()
        busy = await pod.post("/v1/chat", json={"session_id": "s", "message": "second"})
        waited = time.monotonic() - started
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "history_unavailable"
        assert "busy" in busy.json()["error"]["message"]
        assert busy.headers["retry-after"] == "1"
        assert 0.3 <= waited < 2.0
        model.release.set()
        first = await slow
        assert (first.status_code, first.json()["history_length"]) == (200, 0)
        stored = (await pod.get("/v1/sessions/s/messages")).json()["messages"]
        assert [m["content"] for m in stored[::2]] == [f"{HOLD} first"]
        third = await pod.post("/v1/chat", json={"session_id": "s", "message": "third"})
        assert third.json()["history_length"] == 2


async def test_a_sigkilled_replica_blocks_its_thread_only_until_its_lease_expires(
    redis_url: str, tmp_path: Path
) -> None:
    lease_s = 2.0
    env = {
        "HISTORY_API": "checkpointer",
        "HISTORY_BACKEND": "redis",
        "REDIS_URL": redis_url,
        "CHECKPOINT_LEASE_SECONDS": str(lease_s),
        "LOG_LEVEL": "WARNING",
    }
    doomed = Replica("doomed", tmp_path, env, app="tests.api.stalling_app:app", access_log=False)
    lease_key = ThreadKeys("chat-history:ckpt:", "k").key("lease")
    settings = make_settings("redis", redis_url, history_api="checkpointer")
    async with AsyncExitStack() as stack:
        survivor = await stack.enter_async_context(app_client(settings))
        stack.callback(doomed.stop)
        doomed.start()
        await asyncio.to_thread(doomed.wait_ready)
        intro = await survivor.post(
            "/v1/chat", json={"session_id": "k", "message": "my name is Ada"}
        )
        assert intro.status_code == 200

        # The doomed replica takes the thread and its model never answers: kill it mid-turn.
        async with httpx.AsyncClient(base_url=doomed.url, timeout=30) as client:
            stalled = asyncio.create_task(
                client.post("/v1/chat", json={"session_id": "k", "message": f"{STALL} hi"})
            )
            with redis.Redis.from_url(redis_url) as server:
                await soon(lambda: bool(server.exists(lease_key)), "the doomed turn's lease")
            doomed.stop(signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(httpx.HTTPError):
                await stalled

        after = await survivor.post(
            "/v1/chat", json={"session_id": "k", "message": "what is my name?"}
        )
        waited = time.monotonic() - killed
        assert after.status_code == 200, after.text
        assert 1.0 <= waited <= lease_s + 1.0  # it waited for the expiry, and no longer
        assert (after.json()["history_length"], after.json()["reply"][:17]) == (
            2,
            "Your name is Ada.",
        )
        stored = (await survivor.get("/v1/sessions/k/messages")).json()["messages"]
        assert [m["content"] for m in stored[::2]] == ["my name is Ada", "what is my name?"]


async def test_a_turn_that_outlived_its_lease_stores_nothing(redis_url: str) -> None:
    settings = make_settings(
        "redis", redis_url, history_api="checkpointer", checkpoint_lease_seconds=0.5
    )
    model = FlakyModel()
    async with app_client(settings, model) as slow_pod, app_client(settings) as pod:
        slow = asyncio.create_task(
            slow_pod.post("/v1/chat", json={"session_id": "z", "message": f"{HOLD} slow"})
        )
        await soon(lambda: model.calls == 1, "the slow model call")
        # The slow turn's lease expires while its model call runs; another turn takes over.
        taken = await pod.post("/v1/chat", json={"session_id": "z", "message": "quick"})
        assert (taken.status_code, taken.json()["history_length"]) == (200, 0)
        model.release.set()
        late = await slow
        assert late.status_code == 503, late.text
        assert late.json()["error"]["code"] == "history_unavailable"
        stored = (await pod.get("/v1/sessions/z/messages")).json()["messages"]
        assert [m["content"] for m in stored] == [
            "quick",
            'You said: "quick". I can see 0 earlier messages.',
        ]


async def test_a_session_deleted_during_a_turn_stays_deleted(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Redis: the delete answers at once and fences the running turn out (503). Memory (no
    fence): the delete waits for the running turn, then deletes it too."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    model = FlakyModel()
    async with app_client(make_settings(backend, url, history_api="checkpointer"), model) as pod:
        await pod.post("/v1/chat", json={"session_id": "d", "message": "before"})
        running = asyncio.create_task(
            pod.post("/v1/chat", json={"session_id": "d", "message": f"{HOLD} during"})
        )
        await soon(lambda: model.calls == 2, "the running turn's model call")
        deleting = asyncio.create_task(pod.delete("/v1/sessions/d"))
        await asyncio.sleep(0.2)
        assert deleting.done() == (backend == "redis")
        model.release.set()
        turn, deleted = await running, await deleting
        assert deleted.status_code == 204
        assert turn.status_code == (503 if backend == "redis" else 200), turn.text
        assert (await pod.get("/v1/sessions/d/messages")).status_code == 404
