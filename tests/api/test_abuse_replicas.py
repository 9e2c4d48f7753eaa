"""Authentication and abuse limits on real replicas (uvicorn processes) over a real Redis: a key
rotated on a running replica, and one client flooding while another keeps chatting."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import HISTORY_APIS, bearer, stored_sessions
from testsupport import Replica, new_key, wait_until, write_key_file

RATE = 60  # turns per principal per window
WINDOW_S = 120  # longer than the test: the flood meets the limit, never a fresh window
QUOTA = 20  # live sessions per principal


def limited_env(redis_url: str, keys: Path, history_api: str) -> dict[str, str]:
    return {
        "HISTORY_BACKEND": "redis", "REDIS_URL": redis_url, "HISTORY_API": history_api,
        "AUTH_ENABLED": "true", "AUTH_API_KEYS_FILE": str(keys),
        "AUTH_RELOAD_CHECK_SECONDS": "0.2",
        "RATE_LIMIT_TURNS": str(RATE), "RATE_LIMIT_WINDOW_SECONDS": str(WINDOW_S),
        "MAX_SESSIONS_PER_PRINCIPAL": str(QUOTA),
    }  # fmt: skip


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Replica]]:
    """Replicas the test starts; all stopped at the end."""
    replicas: list[Replica] = []
    yield replicas
    for replica in replicas:
        replica.stop()


def test_a_key_rotated_on_a_running_replica_takes_effect_without_a_restart(
    redis_url: str, tmp_path: Path, started: list[Replica]
) -> None:
    old, new = new_key(), new_key()
    keys = write_key_file(tmp_path / "api-keys", {"alice": [old]})
    replica = Replica("rotate-0", tmp_path, limited_env(redis_url, keys, "message-history"))
    started.append(replica)
    replica.start()
    replica.wait_ready()
    pid = replica.process.pid

    def status(key: str) -> int:
        body = {"session_id": "rot", "message": "hi"}
        return httpx.post(f"{replica.url}/v1/chat", json=body, headers=bearer(key)).status_code

    assert (status(old), status(new)) == (200, 401)
    # The procedure of docs/security.md: add the new key, move the client to it, drop the old.
    write_key_file(keys, {"alice": [old, new]})
    wait_until(lambda: status(new) == 200, timeout_s=10, what="the new key to be accepted")
    assert status(old) == 200
    write_key_file(keys, {"alice": [new]})
    wait_until(lambda: status(old) == 401, timeout_s=10, what="the old key to be refused")
    assert status(new) == 200
    assert replica.process.pid == pid and replica.process.running  # the same process
    # The rotated key reaches the same principal's sessions.
    r = httpx.get(f"{replica.url}/v1/sessions/rot/messages", headers=bearer(new))
    assert r.status_code == 200 and len(r.json()["messages"]) >= 6


@pytest.mark.parametrize("history_api", HISTORY_APIS)
def test_a_flooding_client_is_refused_and_another_keeps_chatting(
    redis_url: str, tmp_path: Path, started: list[Replica], history_api: str
) -> None:
    flooder, victim = new_key(), new_key()
    keys = write_key_file(tmp_path / "api-keys", {"flooder": [flooder], "victim": [victim]})
    env = limited_env(redis_url, keys, history_api)
    for i in range(2):
        started.append(Replica(f"flood-{i}", tmp_path, env | {"REDIS_MAX_CONNECTIONS": "32"}))
        started[-1].start()
    for replica in started:
        replica.wait_ready()
    server = redis.Redis.from_url(redis_url)
    memory_before = int(server.info("memory")["used_memory"])

    f = asyncio.run(flood_while_chatting([r.url for r in started], flooder, victim))

    keys_after = server.dbsize()
    memory_after = int(server.info("memory")["used_memory"])
    sessions = stored_sessions(server, history_api)
    print(
        f"\n[{history_api}] flood: {f.sent} requests sent, {f.accepted} accepted, "
        f"{f.refused} refused (429: {dict(f.refused_for)}), other answers {dict(f.other)}; "
        f"victim: {len(f.victim)} turns, {f.victim_failures} failures; store: {keys_after} keys, "
        f"{sessions} sessions, used_memory {memory_before} -> {memory_after} bytes"
    )
    assert f.other == Counter()  # every flood request: 200 or 429, nothing else
    assert f.victim_failures == 0 and len(f.victim) == 30
    assert f.accepted <= RATE
    assert f.refused >= f.sent - RATE
    assert sessions <= QUOTA + 2  # the flooder's quota, and the victim's two sessions
    for sid in ("talk-0", "talk-1"):  # every one of the victim's turns is stored
        r = httpx.get(f"{started[0].url}/v1/sessions/{sid}/messages", headers=bearer(victim))
        assert len(r.json()["messages"]) == 30
    # The store holds at most the two principals' sessions and their limit keys.
    per_session = 1 if history_api == "message-history" else 8
    assert keys_after <= (QUOTA + 2) * per_session + 4
    assert memory_after - memory_before < 2_000_000


@dataclass
class Figures:
    """What the flood sent and got, and the victim's answers."""

    flood: Counter[int] = field(default_factory=Counter)
    refused_for: Counter[str] = field(default_factory=Counter)
    victim: list[int] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.flood.values())

    @property
    def accepted(self) -> int:
        return self.flood[200]

    @property
    def refused(self) -> int:
        return self.flood[429]

    @property
    def other(self) -> Counter[int]:
        return Counter({s: n for s, n in self.flood.items() if s not in (200, 429)})

    @property
    def victim_failures(self) -> int:
        return sum(1 for s in self.victim if s != 200)


async def flood_while_chatting(urls: list[str], flooder: str, victim: str) -> Figures:
    """The flooder sends turns from 12 concurrent workers for 8 s, each on a new session half
    the time, across both replicas; the victim chats on its two sessions meanwhile."""
    stop_at = time.monotonic() + 8.0
    figures = Figures()
    fresh = itertools.count()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:

        async def flood_worker() -> None:
            while time.monotonic() < stop_at:
                i = next(fresh)
                sid = f"new-{i}" if i % 2 else f"mine-{i % 7}"
                r = await client.post(
                    f"{urls[i % len(urls)]}/v1/chat",
                    json={"session_id": sid, "message": f"flood {i}"},
                    headers=bearer(flooder),
                )
                figures.flood[r.status_code] += 1
                if r.status_code == 429:
                    why = "quota" if "quota" in r.json()["error"]["message"] else "rate"
                    figures.refused_for[why] += 1

        async def victim_chat() -> None:
            for i in range(30):
                r = await client.post(
                    f"{urls[i % len(urls)]}/v1/chat",
                    json={"session_id": f"talk-{i % 2}", "message": f"my name is Vic, turn {i}"},
                    headers=bearer(victim),
                )
                figures.victim.append(r.status_code)
                await asyncio.sleep(0.2)

        await asyncio.gather(victim_chat(), *(flood_worker() for _ in range(12)))
    return figures
