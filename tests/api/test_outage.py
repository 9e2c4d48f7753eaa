"""Redis down: a clear 503 fast, not-ready, alive; Redis back: recovery with no restart (both
APIs)."""

from __future__ import annotations

import signal
import time

from tests.conftest import app_client, make_settings, wait_ready
from testsupport import RedisServer


async def test_redis_outage_is_a_fast_503_and_the_service_recovers_alone(
    own_redis: RedisServer, history_api: str
) -> None:
    async with app_client(make_settings("redis", own_redis.url, history_api=history_api)) as client:
        ok = await client.post("/v1/chat", json={"session_id": "o", "message": "my name is Ada"})
        assert ok.status_code == 200

        own_redis.stop()
        started = time.monotonic()
        r = await client.post("/v1/chat", json={"session_id": "o", "message": "still there?"})
        assert time.monotonic() - started < 2
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "history_unavailable"
        assert r.headers["x-served-by"] == "redis-test"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["history"]["ok"] is False
        for answer in (r, ready):  # DESIGN.md: no error message reveals an internal address
            assert "127.0.0.1" not in answer.text and str(own_redis.port) not in answer.text
        assert r.json()["error"]["message"] == "history store unavailable: redis: ConnectionError"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/sessions/o/messages")).status_code == 503
        assert (await client.delete("/v1/sessions/o")).status_code == 503

        own_redis.start()  # same port, same AOF: the data is back
        await wait_ready(client)
        r = await client.post("/v1/chat", json={"session_id": "o", "message": "what is my name?"})
        assert r.status_code == 200
        assert r.json()["history_length"] == 2  # the failed turn stored nothing
        assert r.json()["reply"].startswith("Your name is Ada.")
        metrics = (await client.get("/metrics")).text
        assert 'chat_errors_total{code="history_unavailable"} 3.0' in metrics


async def test_a_hung_redis_times_out_within_two_seconds(
    own_redis: RedisServer, history_api: str
) -> None:
    settings = make_settings("redis", own_redis.url, history_api=history_api)
    async with app_client(settings) as client:
        assert (
            await client.post("/v1/chat", json={"session_id": "h", "message": "x"})
        ).status_code == 200
        own_redis.process.send(signal.SIGSTOP)  # connections stay open, nothing answers
        try:
            started = time.monotonic()
            r = await client.post("/v1/chat", json={"session_id": "h", "message": "y"})
            assert time.monotonic() - started < 2
            assert r.status_code == 503 and r.json()["error"]["code"] == "history_unavailable"
            started = time.monotonic()
            assert (await client.get("/readyz")).status_code == 503
            assert time.monotonic() - started < 2
        finally:
            own_redis.process.send(signal.SIGCONT)
        await wait_ready(client)
        r = await client.post("/v1/chat", json={"session_id": "h", "message": "z"})
        assert r.json()["history_length"] == 2  # the timed-out turn was not stored


async def test_a_full_redis_refuses_the_turn_with_503_and_keeps_what_it_has(
    own_redis: RedisServer, history_api: str
) -> None:
    server = own_redis.client()
    async with app_client(make_settings("redis", own_redis.url, history_api=history_api)) as client:
        ok = await client.post("/v1/chat", json={"session_id": "full", "message": "first"})
        assert ok.status_code == 200
        used = int(server.info("memory")["used_memory"])
        server.config_set("maxmemory-policy", "noeviction")
        server.config_set("maxmemory", str(used))  # already full: every write is refused
        r = await client.post("/v1/chat", json={"session_id": "full", "message": "second"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "history_unavailable"
        assert "OutOfMemoryError" in r.json()["error"]["message"]  # noeviction: write refused
        assert (await client.get("/readyz")).status_code == 200  # reads still work: stay ready
        transcript = (await client.get("/v1/sessions/full/messages")).json()["messages"]
        assert [m["content"] for m in transcript][::2] == ["first"]
        server.config_set("maxmemory", "0")
        r = await client.post("/v1/chat", json={"session_id": "full", "message": "third"})
        assert r.status_code == 200 and r.json()["history_length"] == 2
