"""A turn of the agent costs the same round trips, and the same commands, at any thread length."""

from __future__ import annotations

from collections import Counter

import redis

from chat_history_k8s.checkpoint import lua
from tests.checkpoint.conftest import SaverFactory, make_agent, say, user_text
from tests.conftest import commandstats

# create_agent (no tools), one turn: read the head, then 3 checkpoints and 2 sets of writes (in
# an order LangGraph does not fix: a checkpoint's writes may overtake it), inside a lease.
SCRIPTS = [lua.ACQUIRE, lua.GET, lua.PUT, lua.PUT_WRITES, lua.RELEASE]
TURN = Counter({"acquire": 1, "get": 1, "put": 3, "put_writes": 2, "release": 1})


async def test_a_turn_is_eight_round_trips_at_2_20_and_200_prior_turns(
    new_saver: SaverFactory, server: redis.Redis, count_round_trips: list[int]
) -> None:
    hook: list[str] = []
    saver = new_saver(on_round_trip=hook.append)
    agent = make_agent(saver)
    per_turn: dict[int, tuple[list[str], int, dict[str, int]]] = {}
    for prior in range(201):
        hook.clear()
        count_round_trips[0] = 0
        before = commandstats(server)
        async with saver.alease("t") as lease:
            messages = await say(agent, lease.config(), user_text(prior))
        after = commandstats(server)
        if prior in (2, 20, 200):
            server_side = {k: n - before.get(k, 0) for k, n in after.items() if k != "info"}
            per_turn[prior] = (
                list(hook),
                count_round_trips[0],
                {k: n for k, n in server_side.items() if n},
            )
    assert len(messages) == 402
    for hooked, sent, commands in per_turn.values():
        assert Counter(hooked) == TURN
        assert hooked[:2] == ["acquire", "get"] and hooked[-1] == "release"
        assert sent == len(hooked) == 8
        assert commands["evalsha"] == 8
        assert not {"scan", "keys", "eval"} & set(commands)
    # Inside the scripts too: the same commands, the same number of times.
    assert per_turn[2][2] == per_turn[20][2] == per_turn[200][2]


async def test_a_lost_script_cache_costs_one_more_round_trip_per_script_once(
    new_saver: SaverFactory, server: redis.Redis
) -> None:
    hook: list[str] = []
    saver = new_saver(on_round_trip=hook.append)
    agent = make_agent(saver)
    async with saver.alease("t") as lease:
        await say(agent, lease.config(), "warm")
    server.script_flush()  # what a restarted or failed-over server has: no scripts cached
    costs = []
    for _ in range(2):
        hook.clear()
        async with saver.alease("t") as lease:
            await say(agent, lease.config(), "again")
        costs.append(len(hook))
    # One more round trip (EVAL) for each call that found its script missing: once per script
    # (5 in a turn), or per call when LangGraph sends a put and its writes concurrently.
    assert 8 + 5 <= costs[0] <= 8 + 8
    assert costs[1] == 8
    assert server.script_exists(*[s.sha for s in SCRIPTS]) == [True] * len(SCRIPTS)
