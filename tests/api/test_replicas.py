"""Several app instances: Redis history is shared, memory history is not, in both APIs."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx

from tests.conftest import app_client, make_settings


async def replicas(
    stack: AsyncExitStack,
    backend: str,
    n: int,
    url: str | None,
    history_api: str,
    **overrides: object,
) -> list[httpx.AsyncClient]:
    return [
        await stack.enter_async_context(
            app_client(
                make_settings(
                    backend, url, pod_name=f"pod-{i}", history_api=history_api, **overrides
                )
            )
        )
        for i in range(n)
    ]


async def test_two_redis_replicas_share_a_session(redis_url: str, history_api: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await replicas(stack, "redis", 2, redis_url, history_api)
        await a.post("/v1/chat", json={"session_id": "hop", "message": "my name is Ada"})
        r = (
            await b.post("/v1/chat", json={"session_id": "hop", "message": "what is my name?"})
        ).json()
        assert (r["served_by"], r["history_length"]) == ("pod-1", 2)
        assert r["reply"].startswith("Your name is Ada.")
        ta = (await a.get("/v1/sessions/hop/messages")).json()["messages"]
        tb = (await b.get("/v1/sessions/hop/messages")).json()["messages"]
        assert ta == tb and len(ta) == 4


async def test_two_memory_replicas_do_not_share_a_session(history_api: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await replicas(stack, "memory", 2, None, history_api)
        await a.post("/v1/chat", json={"session_id": "hop", "message": "my name is Ada"})
        r = (
            await b.post("/v1/chat", json={"session_id": "hop", "message": "what is my name?"})
        ).json()
        assert (r["served_by"], r["history_length"]) == ("pod-1", 0)
        assert r["reply"].startswith("I don't know your name")
        assert len((await a.get("/v1/sessions/hop/messages")).json()["messages"]) == 2
        assert len((await b.get("/v1/sessions/hop/messages")).json()["messages"]) == 2
