"""The runbook's "move to another Redis" procedure: `python -m chat_history_k8s.history.migrate`
run as a real process, from a standalone redis-server to a real Redis Cluster, with sessions
the service wrote through both history APIs (docs/runbook.md names these tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import app_client, make_settings
from testsupport import LocalRedisCluster, RedisServer

SOURCE_PASSWORD = "old-store-secret"
TARGET_PASSWORD = "new-store-secret"


@pytest.fixture
def source(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "source", password=SOURCE_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def target_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("target"), password=TARGET_PASSWORD)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def target(target_cluster: LocalRedisCluster) -> LocalRedisCluster:
    for node in target_cluster.nodes:
        with node.client() as client:
            if client.info("replication")["role"] == "master":
                client.flushall()
    return target_cluster


def run_migrate(
    source: RedisServer, target: LocalRedisCluster, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "FROM_REDIS_"))
    }
    environment |= {
        "FROM_REDIS_URL": source.url, "FROM_REDIS_PASSWORD": SOURCE_PASSWORD,
        "REDIS_MODE": "cluster", "REDIS_URL": target.url, "REDIS_PASSWORD": TARGET_PASSWORD,
    } | env  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "chat_history_k8s.history.migrate", *args],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def transcripts(client: httpx.AsyncClient, sessions: list[str]) -> dict[str, object]:
    views = {}
    for session in sessions:
        r = await client.get(f"/v1/sessions/{session}/messages")
        assert r.status_code == 200, r.text
        views[session] = r.json()["messages"]
    return views


async def test_moving_to_a_cluster_keeps_every_session_of_both_apis(
    source: RedisServer, target: LocalRedisCluster, history_api: str
) -> None:
    sessions = [f"move-{i}" for i in range(30)]
    before_settings = make_settings(
        "redis", source.url, history_api=history_api, redis_password=SOURCE_PASSWORD
    )
    async with app_client(before_settings) as client:
        for session in sessions:
            for turn in range(3):
                r = await client.post(
                    "/v1/chat", json={"session_id": session, "message": f"{session} fact {turn}"}
                )
                assert r.status_code == 200, r.text
        before = await transcripts(client, sessions)
    with source.client() as c:
        keys = c.keys("chat-history:*")
        ttl_before = {k: c.pttl(k) for k in keys}

    done = run_migrate(source, target)
    assert done.returncode == 0, done.stderr
    assert f"copied {len(keys)} keys" in done.stdout

    cluster = target.client()
    try:
        for key, ttl in ttl_before.items():
            if ttl > 0:
                assert 0 < cluster.pttl(key) <= ttl, key  # the time to live went along
    finally:
        cluster.close()
    after_settings = make_settings(
        "redis", target.url, history_api=history_api, redis_mode="cluster",
        redis_password=TARGET_PASSWORD,
    )  # fmt: skip
    async with app_client(after_settings) as client:
        assert await transcripts(client, sessions) == before
        r = await client.post("/v1/chat", json={"session_id": sessions[0], "message": "next"})
        assert r.status_code == 200 and r.json()["history_length"] == 6, r.text


def test_a_target_with_history_is_refused_and_left_alone(
    source: RedisServer, target: LocalRedisCluster
) -> None:
    with source.client() as c:
        c.rpush("chat-history:s", "from the source")
    cluster = target.client()
    try:
        cluster.rpush("chat-history:t", "already here")
        refused = run_migrate(source, target)
        assert refused.returncode == 1
        assert "already holds keys under 'chat-history:'" in refused.stderr
        assert "--replace" in refused.stderr
        assert cluster.exists("chat-history:s") == 0  # nothing copied
        replaced = run_migrate(source, target, "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert cluster.lrange("chat-history:s", 0, -1) == [b"from the source"]
        assert cluster.lrange("chat-history:t", 0, -1) == [b"already here"]
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FROM_REDIS_MODE": "sentinel", "FROM_REDIS_SENTINELS": "a:1"},
         "source (FROM_REDIS_*) settings: Value error, REDIS_MODE=sentinel needs "
         "REDIS_SENTINEL_MASTER"),
        ({"FROM_REDIS_KEY_PREFIX": "other:"},
         "FROM_REDIS_KEY_PREFIX 'other:' differs from REDIS_KEY_PREFIX 'chat-history:'"),
        ({"FROM_REDIS_PASSWORD": "wrong"}, "source (FROM_REDIS_*): "),
        # No node answers: redis-py's cluster client raises RedisClusterException, which is
        # not a RedisError (a traceback here would hide which side failed).
        ({"REDIS_URL": "redis://127.0.0.1:1"}, "target (REDIS_*): "),
    ],
)  # fmt: skip
def test_bad_settings_are_named_and_nothing_is_copied(
    source: RedisServer, target: LocalRedisCluster, env: dict[str, str], message: str
) -> None:
    with source.client() as c:
        c.rpush("chat-history:s", "one")
    done = run_migrate(source, target, **env)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    cluster = target.client()
    try:
        assert cluster.exists("chat-history:s") == 0
    finally:
        cluster.close()
