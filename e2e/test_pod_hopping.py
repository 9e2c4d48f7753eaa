"""One conversation, many replicas: in-memory history is lost, Redis history is kept.

Every test runs once per backend and memory API (`[memory-message-history]`,
`[redis-message-history]`, `[memory-checkpointer]`, `[redis-checkpointer]`) and asserts that
backend's expected outcome, the same for both APIs, so the memory runs prove the failure the
Redis runs prove fixed. Run from the repo root: `pytest e2e --target local` (or `--target kube`).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from chat_history_k8s.hopcheck.client import Api, Message, Turn
from e2e.conftest import ReplicaApis, only
from testsupport import wait_until
from testsupport.targets import Deployment
from testsupport.targets.base import Backend, HistoryApi

NAME = "Ada"
INTRODUCTION = f"Hi, my name is {NAME}."
QUESTION = "What is my name?"
OUTAGE_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 90.0


def transcript(*turns: Turn) -> list[Message]:
    """The messages these turns store, oldest first."""
    return [m for t in turns for m in (("human", t.message), ("ai", t.reply))]


def assert_recalls_name(turn: Turn) -> None:
    assert NAME in turn.reply, f"the model should recall the name; it said {turn.reply!r}"


def assert_forgot_name(turn: Turn) -> None:
    assert NAME not in turn.reply, f"the model cannot know the name; it said {turn.reply!r}"
    assert "don't know your name" in turn.reply


def hop(apis: ReplicaApis, session_id: str, messages: list[str]) -> list[Turn]:
    """Send each message to the next replica in turn and check who served it."""
    turns = []
    for api, message in zip(itertools.cycle(apis.all), messages, strict=False):
        turn = api.chat(session_id, message)
        assert turn.served_by == api.endpoint.name, "the turn must be served by the chosen replica"
        turns.append(turn)
    return turns


def names(apis: ReplicaApis) -> set[str]:
    return {endpoint.name for endpoint in apis.endpoints}


# --- 0. what is deployed ----------------------------------------------------------------------


def test_every_replica_runs_the_backend_and_memory_api_of_its_deployment(
    cluster: Deployment, apis: ReplicaApis, backend: Backend, history_api: HistoryApi
) -> None:
    for api in apis.all:
        info = api.info()
        assert (info["backend"], info["history_api"]) == (backend, history_api), info
        assert info["served_by"] == api.endpoint.name


def test_every_replica_requires_the_key_and_a_session_id_is_per_principal(
    cluster: Deployment, apis: ReplicaApis, session_id: str
) -> None:
    """The deployment runs with API keys on (as the chart does by default): no key, no answer;
    the key's session is out of reach of anyone without it, on every replica."""
    assert cluster.api_key is not None, "the target deploys with authentication on"
    apis[0].chat(session_id, INTRODUCTION)
    for endpoint in apis.endpoints:
        with Api(replace(endpoint, api_key=None)) as anonymous:
            r = anonymous.chat_response(session_id, QUESTION)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = anonymous.request("GET", f"/v1/sessions/{session_id}/messages")
            assert r.status_code == 401 and NAME not in r.text
        with Api(replace(endpoint, api_key="not-a-key")) as stranger:
            assert stranger.chat_response(session_id, QUESTION).status_code == 401


# --- 1. hop ---------------------------------------------------------------------------------


def test_second_turn_on_another_replica_sees_history_only_with_redis(
    cluster: Deployment, apis: ReplicaApis, session_id: str, backend: Backend
) -> None:
    a, b = apis[0], apis[1]
    first = a.chat(session_id, INTRODUCTION)
    second = b.chat(session_id, QUESTION)

    assert (first.served_by, second.served_by) == (a.endpoint.name, b.endpoint.name)
    assert first.history_length == 0
    views = {api.endpoint.name: api.messages(session_id) for api in apis.all}
    if backend == "redis":
        assert second.history_length == 2
        assert_recalls_name(second)
        assert all(view == transcript(first, second) for view in views.values()), views
    else:
        assert second.history_length == 0, "replica B has never seen this session"
        assert_forgot_name(second)
        assert views.pop(a.endpoint.name) == transcript(first)
        assert views.pop(b.endpoint.name) == transcript(second)
        assert all(view is None for view in views.values()), "other replicas know nothing"


# --- 2. rolling restart ----------------------------------------------------------------------


def test_rolling_restart_of_all_replicas_loses_memory_history_and_keeps_redis_history(
    cluster: Deployment, apis: ReplicaApis, session_id: str, backend: Backend
) -> None:
    before = hop(apis, session_id, [INTRODUCTION, "I like tea.", "And long walks."])
    old_replicas = names(apis)

    cluster.rolling_restart()
    apis.refresh()
    assert names(apis).isdisjoint(old_replicas), "every replica must have been replaced"
    assert len(apis) == cluster.replica_count

    after = apis[0].chat(session_id, QUESTION)
    if backend == "redis":
        assert after.history_length == 2 * len(before)
        assert_recalls_name(after)
        for api in apis.all:
            assert api.messages(session_id) == transcript(*before, after)
    else:
        assert after.history_length == 0
        assert_forgot_name(after)
        assert apis[0].messages(session_id) == transcript(after)
        assert all(api.messages(session_id) is None for api in apis.all[1:])


# --- 3. scale down and up --------------------------------------------------------------------


def test_scaling_to_one_replica_and_back_loses_memory_history_and_keeps_redis_history(
    cluster: Deployment, apis: ReplicaApis, session_id: str, backend: Backend
) -> None:
    before = hop(apis, session_id, [INTRODUCTION, "I like tea.", "And long walks."])
    old_replicas = names(apis)

    cluster.scale(1)
    apis.refresh()
    assert len(apis) == 1 and apis[0].endpoint.name in old_replicas
    survivor = apis[0].endpoint.name
    served_by_survivor = [t for t in before if t.served_by == survivor]
    middle = apis[0].chat(session_id, "Still there?")

    cluster.scale(cluster.replica_count)
    apis.refresh()
    newcomers = [api for api in apis.all if api.endpoint.name not in old_replicas]
    assert len(newcomers) == cluster.replica_count - 1, "scale-up must add new replicas"
    last = newcomers[0].chat(session_id, QUESTION)

    everything = transcript(*before, middle, last)
    if backend == "redis":
        assert middle.history_length == 2 * len(before)
        assert last.history_length == 2 * (len(before) + 1)
        assert_recalls_name(last)
        for api in apis.all:
            assert api.messages(session_id) == everything
    else:
        assert middle.history_length == 2 * len(served_by_survivor)
        assert last.history_length == 0
        assert_forgot_name(last)
        [kept] = [api for api in apis.all if api.endpoint.name == survivor]
        assert kept.messages(session_id) == transcript(*served_by_survivor, middle)
        assert newcomers[0].messages(session_id) == transcript(last)
        assert all(api.messages(session_id) is None for api in newcomers[1:])


# --- 4. the store is killed ------------------------------------------------------------------


def test_killing_the_history_store_keeps_every_acknowledged_turn_only_in_redis(
    cluster: Deployment, apis: ReplicaApis, session_id: str, backend: Backend
) -> None:
    acknowledged = hop(apis, session_id, [INTRODUCTION, "I like tea.", "And long walks."])
    old_store, old_replicas = cluster.store_identity(), names(apis)

    cluster.kill_history_store()
    apis.refresh()

    after = apis[1].chat(session_id, QUESTION)
    if backend == "redis":
        assert cluster.store_identity() != old_store, "the store must have been replaced"
        assert after.history_length == 2 * len(acknowledged)
        assert_recalls_name(after)
        for api in apis.all:
            assert api.messages(session_id) == transcript(*acknowledged, after)
    else:
        # The memory backend's store is the replica's heap: killing it kills the replicas.
        assert names(apis).isdisjoint(old_replicas)
        assert after.history_length == 0
        assert_forgot_name(after)
        assert [api.messages(session_id) for api in apis.all] == [
            None, transcript(after), *[None] * (len(apis) - 2)
        ]  # fmt: skip


# --- 5. concurrent writers -------------------------------------------------------------------

SESSIONS = 6
TURNS_PER_SESSION = 12
WRITERS = 12


def test_concurrent_writers_on_all_replicas_lose_no_turn_with_redis_and_count_memory_loss(
    cluster: Deployment,
    apis: ReplicaApis,
    session_id: str,
    backend: Backend,
    history_api: HistoryApi,
    report: list[str],
) -> None:
    sessions = [f"{session_id}-{k}" for k in range(SESSIONS)]
    jobs = [
        (apis[(k * TURNS_PER_SESSION + m) % len(apis)], sid, f"{sid} turn {m}")
        for m in range(TURNS_PER_SESSION)
        for k, sid in enumerate(sessions)
    ]
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        turns = list(pool.map(lambda job: job[0].chat(job[1], job[2]), jobs))
    reply_to = {t.message: t.reply for t in turns}
    served_by = {t.message: t.served_by for t in turns}
    window = int(apis[0].info()["history_window_messages"])

    lost = stored = 0
    for sid in sessions:
        sent = {message for _, s, message in jobs if s == sid}
        for api in apis.all:
            view = api.messages(sid) or []
            humans = [content for kind, content in view[0::2]]
            # No turn is duplicated, and every turn is whole: human then its own reply.
            assert [kind for kind, _ in view] == ["human", "ai"] * (len(view) // 2)
            assert len(humans) == len(set(humans)) and set(humans) <= sent
            replies = [content for _, content in view[1::2]]
            assert replies == [reply_to[h] for h in humans], "a reply is not next to its turn"
            if history_api == "checkpointer":
                # Turns on a thread run one at a time: each saw every turn stored before it.
                for j, reply in enumerate(replies):
                    seen = min(2 * j, window)
                    assert reply.endswith(f"I can see {seen} earlier messages."), (j, reply)
            if backend == "redis":
                assert set(humans) == sent, f"{api.endpoint.name} lost turns of {sid}"
            else:
                mine = {m for m in sent if served_by[m] == api.endpoint.name}
                assert set(humans) == mine, "a memory replica sees exactly the turns it served"
            lost += len(sent) - len(humans)
            stored += len(humans)

    reads = SESSIONS * len(apis)
    acknowledged = len(turns) * len(apis)
    report.append(
        f"{backend:6} {history_api:15} concurrent writers: {len(turns)} turns "
        f"({SESSIONS} sessions x {TURNS_PER_SESSION}) over {len(apis)} replicas; reading each "
        f"session from each replica ({reads} reads) returned {stored}/{acknowledged} "
        f"acknowledged turns, {lost} missing ({100 * lost / acknowledged:.0f}%)"
    )
    if backend == "redis":
        assert lost == 0
    else:
        assert lost == acknowledged - len(turns), "each turn lives on exactly one replica"


# --- 6. store outage -------------------------------------------------------------------------


def test_store_outage_answers_503_and_unreadies_replicas_until_the_store_returns(
    cluster: Deployment, apis: ReplicaApis, session_id: str, backend: Backend
) -> None:
    before = apis[0].chat(session_id, INTRODUCTION)
    cluster.stop_store()
    try:
        if backend == "memory":
            # No external store: nothing to lose, so the replicas keep serving.
            assert cluster.serving_endpoints() == len(apis)
            during = apis[1].chat(session_id, "Still there?")
            assert during.history_length == 0
            return
        for api in apis.all:
            response = api.chat_response(session_id, "Is anyone there?")
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "history_unavailable"
            assert response.headers["x-served-by"] == api.endpoint.name
        wait_until(
            lambda: all(api.readyz_status() == 503 for api in apis.all),
            timeout_s=OUTAGE_TIMEOUT_S, what="every replica to answer /readyz 503",
        )  # fmt: skip
        wait_until(
            lambda: cluster.serving_endpoints() == 0,
            timeout_s=OUTAGE_TIMEOUT_S, what="no replica left behind the load balancer",
        )  # fmt: skip
    finally:
        cluster.start_store()

    # Nobody restarts the replicas: they must notice the store is back by themselves.
    wait_until(
        lambda: cluster.serving_endpoints() == len(apis),
        timeout_s=RECOVERY_TIMEOUT_S, what="every replica to become ready again",
    )  # fmt: skip
    after = apis[1].chat(session_id, QUESTION)
    assert after.history_length == 2, "the rejected turns must have stored nothing"
    assert_recalls_name(after)
    assert apis[2 % len(apis)].messages(session_id) == transcript(before, after)


# --- 7. through the load balancer ------------------------------------------------------------

LB_TURNS = 8


def test_load_balanced_session_spreads_over_pods_and_stays_whole_only_with_redis(
    cluster: Deployment,
    apis: ReplicaApis,
    session_id: str,
    backend: Backend,
    history_api: HistoryApi,
    report: list[str],
) -> None:
    entry = cluster.entry_point()
    if entry is None:
        pytest.skip(cluster.entry_point_missing_reason())
    messages = [INTRODUCTION, *(f"Fact number {i}." for i in range(LB_TURNS - 2)), QUESTION]
    with Api(entry) as lb:
        turns = [lb.chat(session_id, message) for message in messages]
        whole, reader = lb.messages_served(session_id)

    servers = Counter(t.served_by for t in turns)
    assert len(servers) >= 2, f"one session must be served by several pods: {servers}"
    assert set(servers) <= names(apis)
    seen = [t.history_length for t in turns]
    if backend == "redis":
        assert seen == [2 * i for i in range(len(turns))]
        assert_recalls_name(turns[-1])
        assert whole == transcript(*turns)
    else:
        # Each pod sees only the turns that it served itself.
        per_pod: defaultdict[str, list[Turn]] = defaultdict(list)
        for turn in turns:
            assert turn.history_length == 2 * len(per_pod[turn.served_by])
            per_pod[turn.served_by].append(turn)
        for api in apis.all:
            view = api.messages(session_id)
            assert view == (transcript(*per_pod[api.endpoint.name]) or None)
        # The read through the balancer lands on some pod: it shows that pod's turns only.
        assert whole == (transcript(*per_pod[reader]) or None), reader
        assert len(per_pod[reader]) < len(turns), "no pod may have served the whole session"
    full = sum(2 * i for i in range(len(turns)))
    report.append(
        f"{backend:6} {history_api:15} via load balancer: {len(turns)} turns served by "
        f"{len(servers)} pods; "
        f"the model saw {sum(seen)}/{full} of the earlier messages "
        f"({100 * sum(seen) / full:.0f}%)"
    )


# --- 8. helm test ----------------------------------------------------------------------------


@pytest.mark.kube_only
@only("redis")
def test_helm_test_passes_for_the_redis_release(cluster: Deployment) -> None:
    passed, output = cluster.helm_test()
    assert passed, output
