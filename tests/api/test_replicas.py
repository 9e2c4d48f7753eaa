"""Several app instances: Redis history is shared, memory history is not; no turn is lost."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx

from tests.conftest import app_client, make_settings


async def replicas(
    stack: AsyncExitStack, backend: str, n: int, url: str | None
) -> list[httpx.AsyncClient]:
    return [
        await stack.enter_async_context(
            app_client(make_settings(backend, url, pod_name=f"pod-{i}"))
        )
        for i in range(n)
    ]


async def test_two_redis_replicas_share_a_session(redis_url: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await replicas(stack, "redis", 2, redis_url)
        await a.post("/v1/chat", json={"session_id": "hop", "message": "my name is Ada"})
        r = (
            await b.post("/v1/chat", json={"session_id": "hop", "message": "what is my name?"})
        ).json()
        assert (r["served_by"], r["history_length"]) == ("pod-1", 2)
        assert r["reply"].startswith("Your name is Ada.")
        ta = (await a.get("/v1/sessions/hop/messages")).json()["messages"]
        tb = (await b.get("/v1/sessions/hop/messages")).json()["messages"]
        assert ta == tb and len(ta) == 4


async def test_two_memory_replicas_do_not_share_a_session() -> None:
    async with AsyncExitStack() as stack:
        a, b = await replicas(stack, "memory", 2, None)
        await a.post("/v1/chat", json={"session_id": "hop", "message": "my name is Ada"})
        r = (
            await b.post("/v1/chat", json={"session_id": "hop", "message": "what is my name?"})
        ).json()
        assert (r["served_by"], r["history_length"]) == ("pod-1", 0)
        assert r["reply"].startswith("I don't know your name")
        assert len((await a.get("/v1/sessions/hop/messages")).json()["messages"]) == 2
        assert len((await b.get("/v1/sessions/hop/messages")).json()["messages"]) == 2


def assert_turns_whole(messages: list[dict[str, str]], expected: set[str]) -> None:
    """Every human message is followed by its own AI reply, and each turn is there once."""
    humans = [m["content"] for m in messages[::2]]
    assert [m["type"] for m in messages] == ["human", "ai"] * (len(messages) // 2)
    for human, ai in zip(messages[::2], messages[1::2], strict=True):
        assert ai["content"].startswith(f'You said: "{human["content"]}".')
    assert sorted(humans) == sorted(expected)


async def test_fifty_concurrent_turns_through_three_redis_replicas_lose_nothing(
    redis_url: str,
) -> None:
    async with AsyncExitStack() as stack:
        pods = await replicas(stack, "redis", 3, redis_url)
        sent = {f"turn-{i}" for i in range(50)}
        results = await asyncio.gather(
            *(
                pods[i % 3].post("/v1/chat", json={"session_id": "busy", "message": f"turn-{i}"})
                for i in range(50)
            )
        )
        assert all(r.status_code == 200 for r in results)
        assert sorted(r.json()["history_length"] for r in results) == list(range(0, 100, 2))
        messages = (await pods[0].get("/v1/sessions/busy/messages")).json()["messages"]
        assert len(messages) == 100
        assert_turns_whole(messages, sent)


async def test_fifty_concurrent_turns_on_one_memory_replica_lose_nothing() -> None:
    async with app_client(make_settings("memory")) as pod:
        sent = {f"turn-{i}" for i in range(50)}
        results = await asyncio.gather(
            *(pod.post("/v1/chat", json={"session_id": "busy", "message": m}) for m in sent)
        )
        assert all(r.status_code == 200 for r in results)
        assert_turns_whole((await pod.get("/v1/sessions/busy/messages")).json()["messages"], sent)
