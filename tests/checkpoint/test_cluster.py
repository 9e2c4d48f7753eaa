"""The saver unchanged on a real 3-primary Redis Cluster: a thread's keys share one slot, and
conversations on threads spread over the primaries run and read back, async and sync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from chat_history_k8s.checkpoint import RedisCheckpointSaver
from chat_history_k8s.history.redis_pool import ClusterConnection
from tests.api.models import AFTER, FlakyModel
from tests.checkpoint.conftest import make_agent, say, thread
from tests.conftest import app_client, auth_settings, bearer, make_settings, wait_ready
from testsupport import LocalRedisCluster

THREADS = [f"conversation-{i}" for i in range(6)]


@pytest.fixture
async def cluster_saver(cluster_url: str) -> AsyncIterator[RedisCheckpointSaver]:
    saver = RedisCheckpointSaver.from_url(cluster_url, cluster=True, ttl_seconds=600)
    yield saver
    await saver.aclose()
    saver.close()


async def test_conversations_run_and_read_back_on_a_three_primary_cluster(
    cluster_saver: RedisCheckpointSaver, redis_cluster: LocalRedisCluster
) -> None:
    agent = make_agent(cluster_saver)
    for thread_id in THREADS:
        for text in ("my name is Ada", "how are you?", "what is my name?"):
            async with cluster_saver.alease(thread_id) as lease:
                await say(agent, lease.config(), text)
    with cluster_saver.lease(THREADS[0]) as lease:  # the sync client, on the same threads
        agent.invoke({"messages": [("user", "and now?")]}, lease.config())

    reader = RedisCheckpointSaver.from_url(redis_cluster.url, cluster=True)  # another replica
    read_agent = make_agent(reader)
    for thread_id in THREADS:
        messages = (await read_agent.aget_state(thread(thread_id))).values["messages"]
        assert messages[5].text == "Your name is Ada. I can see 4 earlier messages."
        assert len(messages) == (8 if thread_id == THREADS[0] else 6)
    await reader.aclose()
    reader.close()

    # Each thread in one slot, the threads spread over every primary.
    client = redis_cluster.client()
    keys = [bytes(k).decode() for k in client.scan_iter("chat-history:ckpt:*")]
    client.close()
    slots = {
        t: {key_slot(k.encode()) for k in keys if k.startswith(f"chat-history:ckpt:{{{t}}}")}
        for t in THREADS
    }
    assert all(len(s) == 1 for s in slots.values()), slots
    owners = {redis_cluster.owner_of(s.pop()) for s in slots.values()}
    assert len(owners) == 3


async def test_scripts_lost_by_the_cluster_are_sent_again(
    cluster_saver: RedisCheckpointSaver, redis_cluster: LocalRedisCluster
) -> None:
    agent = make_agent(cluster_saver)
    await say(agent, thread("t"), "warm")
    for node in redis_cluster.nodes:
        with node.client() as c:
            c.script_flush()
    messages = await say(agent, thread("t"), "after a flush")
    assert len(messages) == 4


@pytest.mark.parametrize("history_api", ["message-history", "checkpointer"])
async def test_the_service_in_cluster_mode_serves_both_apis(
    cluster_url: str, redis_cluster: LocalRedisCluster, history_api: str
) -> None:
    """REDIS_MODE=cluster with REDIS_URL naming one node: sessions spread over the primaries,
    each one's keys in one slot, readiness pings every primary."""
    settings = make_settings(
        "redis", redis_cluster.nodes[1].url, history_api=history_api, redis_mode="cluster"
    )
    async with app_client(settings) as client:
        await wait_ready(client)
        for session in THREADS:
            for text in ("my name is Ada", "what is my name?"):
                r = await client.post("/v1/chat", json={"session_id": session, "message": text})
                assert r.status_code == 200, r.text
            assert r.json()["reply"].startswith("Your name is Ada.")
            transcript = await client.get(f"/v1/sessions/{session}/messages")
            assert len(transcript.json()["messages"]) == 4
        assert (await client.delete(f"/v1/sessions/{THREADS[0]}")).status_code == 204
        assert (await client.get(f"/v1/sessions/{THREADS[0]}/messages")).status_code == 404
    with redis_cluster.client() as c:
        keys = [bytes(k).decode() for k in c.scan_iter("chat-history:*")]
    owners = {redis_cluster.owner_of(key_slot(k.encode())) for k in keys}
    assert len(owners) >= 2, "the sessions should spread over the primaries"


async def test_keys_and_limits_hold_in_cluster_mode(
    cluster_url: str, redis_cluster: LocalRedisCluster, history_api: str, api_keys: dict[str, str]
) -> None:
    """Authentication, isolation and the per-principal limits with REDIS_MODE=cluster: the
    admission script's keys (one slot per principal) and the session's (another slot) are on
    different primaries, yet a turn is admitted, refused and isolated as in standalone mode."""
    alice, bob = api_keys["alice"], api_keys["bob"]
    settings = make_settings(
        "redis",
        redis_cluster.nodes[1].url,
        history_api=history_api,
        redis_mode="cluster",
        **auth_settings(api_keys, rate_limit_turns=4, max_sessions_per_principal=2),
    )
    async with app_client(settings) as client:
        await wait_ready(client)

        async def turn(key: str, session: str, text: str = "my name is Ada") -> int:
            r = await client.post(
                "/v1/chat", json={"session_id": session, "message": text}, headers=bearer(key)
            )
            return r.status_code

        assert [await turn(alice, s) for s in THREADS[:2]] == [200, 200]
        assert await turn(alice, THREADS[2]) == 429  # a third session: over the quota
        assert [await turn(alice, THREADS[0]) for _ in range(3)] == [200, 200, 429]  # 4 turns
        # Bob sees none of Alice's sessions, and his budget is his own.
        r = await client.get(f"/v1/sessions/{THREADS[0]}/messages", headers=bearer(bob))
        assert r.status_code == 404
        assert await turn(bob, THREADS[0]) == 200
        r = await client.get(f"/v1/sessions/{THREADS[0]}/messages", headers=bearer(alice))
        assert len(r.json()["messages"]) == 6  # Alice's 3 admitted turns there, nothing else


async def test_the_message_history_sends_its_script_again_after_the_cluster_lost_it(
    cluster_url: str, redis_cluster: LocalRedisCluster
) -> None:
    """The append is an EVALSHA routed by the session's key; a node that lost the script gets
    its source (EVAL) and the turn goes through."""
    settings = make_settings("redis", redis_cluster.nodes[1].url, redis_mode="cluster")
    async with app_client(settings) as client:
        await wait_ready(client)
        for session in THREADS:
            r = await client.post("/v1/chat", json={"session_id": session, "message": "one"})
            assert r.status_code == 200, r.text
        for node in redis_cluster.nodes:
            with node.client() as c:
                c.script_flush()
        for session in THREADS:
            r = await client.post("/v1/chat", json={"session_id": session, "message": "two"})
            assert r.status_code == 200, r.text
            assert r.json()["history_length"] == 2  # stored before this turn


async def test_a_limited_turn_on_a_lost_cluster_is_503_and_never_500(
    tmp_path: Path, history_api: str, api_keys: dict[str, str]
) -> None:
    """The cluster goes away after the model answered: the store write fails (503) and the
    admission's session slot is given back on a client that must now re-learn the cluster's
    layout, which fails too. redis-py's cluster client raises `RedisClusterException` there,
    which is not a `RedisError`: it must be the same 503 `history_unavailable` (a local e2e
    failover run once answered such a turn 500). The turns and the delete after it as well."""
    cluster = LocalRedisCluster(tmp_path / "cluster")
    cluster.start()
    try:
        settings = make_settings(
            "redis", cluster.url, history_api=history_api, redis_mode="cluster",
            **auth_settings(api_keys, rate_limit_turns=100, max_sessions_per_principal=10),
        )  # fmt: skip
        model = FlakyModel(after_answer=cluster.stop)
        alice = bearer(api_keys["alice"])
        async with app_client(settings, model, raise_app_exceptions=False) as client:
            await wait_ready(client)

            async def turn(text: str) -> httpx.Response:
                return await client.post(
                    "/v1/chat", json={"session_id": "s", "message": text}, headers=alice
                )

            assert (await turn("hello")).status_code == 200
            failed = [await turn(f"{AFTER} the cluster goes now"), await turn("and now?")]
            failed.append(await client.delete("/v1/sessions/s", headers=alice))
            assert [(r.status_code, r.json()["error"]["code"]) for r in failed] == [
                (503, "history_unavailable")
            ] * 3, [r.text for r in failed]
    finally:
        cluster.stop()


class WritePause:
    """Holds the next write of any cluster connection once `armed`, until `resume` is set: the
    moment between redis-py's check that the connection is open and its write."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()


@pytest.fixture
def write_pause(monkeypatch: pytest.MonkeyPatch) -> WritePause:
    pause = WritePause()
    write = ClusterConnection._send_packed_command

    async def paused(self: ClusterConnection, command: Iterable[bytes]) -> None:
        if pause.armed:
            pause.armed = False
            pause.reached.set()
            await pause.resume.wait()
        await write(self, command)

    monkeypatch.setattr(ClusterConnection, "_send_packed_command", paused)
    return pause


async def test_a_turn_whose_connection_another_turn_closed_is_retried_never_500(
    tmp_path: Path, history_api: str, write_pause: WritePause
) -> None:
    """redis-py's cluster client closes every connection, those of turns in flight included,
    when a command meets CLUSTERDOWN. A turn whose write was under way then met a closed
    connection: redis-py raised a bare AttributeError and the turn answered 500 (seen under
    Cluster failovers). It must be a lost connection: retried on the re-learned layout (here
    the turn goes through), a 503 if that fails too."""
    cluster = LocalRedisCluster(tmp_path / "cluster")
    cluster.start()
    try:
        settings = make_settings(
            "redis", cluster.url, history_api=history_api, redis_mode="cluster",
            redis_socket_timeout_seconds=10,  # the held write must not time out meanwhile
        )  # fmt: skip
        async with app_client(settings, raise_app_exceptions=False) as client:
            await wait_ready(client)

            async def turn(session: str, text: str) -> httpx.Response:
                return await client.post("/v1/chat", json={"session_id": session, "message": text})

            assert (await turn("a", "hello")).status_code == 200
            write_pause.armed = True
            held = asyncio.create_task(turn("a", "my name is Ada"))
            await asyncio.wait_for(write_pause.reached.wait(), 10)
            # Another turn meets CLUSTERDOWN (a slot nobody serves stops the whole cluster):
            # redis-py closes every connection, the held turn's too.
            slot = key_slot(b"chat-history:b")
            owner = cluster.node(cluster.owner_of(slot))
            with owner.client() as c:
                c.execute_command("CLUSTER", "DELSLOTS", slot)
            refused = await turn("b", "hello")
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                503, "history_unavailable"
            ), refused.text  # fmt: skip
            with owner.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTS", slot)
            cluster.wait_ok()
            write_pause.resume.set()
            answer = await held
            assert answer.status_code == 200, answer.text
            transcript = await client.get("/v1/sessions/a/messages")
            assert [m["content"] for m in transcript.json()["messages"]][-2] == "my name is Ada"
    finally:
        cluster.stop()
