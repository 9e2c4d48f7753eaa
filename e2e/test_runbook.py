"""The runbook's procedures, run for real (docs/runbook.md names each test).

Backup -> data loss -> restore; password rotation under traffic; an upgrade under traffic.
Traffic goes through the load-balanced entry point with a new connection per request, the way
clients reach a Service, and every acknowledged turn is checked afterwards.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chat_history_k8s.hopcheck.client import Api, Message
from e2e.conftest import ReplicaApis, only
from testsupport.targets import Deployment
from testsupport.targets.base import Backend

redis_only = only("redis")


def run_or_skip(procedure: Callable[[], None]) -> None:
    try:
        procedure()
    except NotImplementedError as exc:
        pytest.skip(str(exc))


TURNS_PER_SESSION = 20  # well under the per-session cap, so no acknowledged turn is trimmed
PACE_S = 0.02  # ~50 turns/s at most: steady traffic, not a load test


@dataclass
class Traffic:
    """Chat turns sent in a loop until stopped; what was acknowledged and what failed.

    Each session gets `TURNS_PER_SESSION` turns, then the next session starts: a long procedure
    (a Secret refresh takes a minute) must not push turns past HISTORY_MAX_MESSAGES.
    """

    api: Api
    prefix: str
    acknowledged: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    served_by: dict[str, str] = field(default_factory=dict)  # message -> replica
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for n in itertools.count():
            if self.stop.wait(PACE_S):
                return
            session = f"{self.prefix}-{n // TURNS_PER_SESSION}"
            message = f"turn {n}"
            try:
                response = self.api.chat_response(session, message)
            except httpx.HTTPError as exc:
                self.failures.append(f"{message}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200:
                self.failures.append(f"{message}: HTTP {response.status_code} {response.text}")
                continue
            body = response.json()
            self.served_by[message] = body["served_by"]
            self.acknowledged.setdefault(session, []).append(("human", message))
            self.acknowledged[session].append(("ai", body["reply"]))

    @property
    def turns(self) -> int:
        return sum(len(m) for m in self.acknowledged.values()) // 2


@contextmanager
def traffic_through_the_entry_point(cluster: Deployment) -> Iterator[Traffic]:
    entry = cluster.entry_point()
    if entry is None:
        pytest.skip(cluster.entry_point_missing_reason())
    with Api(entry, timeout_s=20.0) as api:
        traffic = Traffic(api, f"e2e-runbook-{uuid.uuid4().hex[:10]}")
        worker = threading.Thread(target=traffic.run, name="traffic", daemon=True)
        worker.start()
        try:
            yield traffic
        finally:
            traffic.stop.set()
            worker.join(timeout=60)


def transcripts(
    apis: ReplicaApis, sessions: list[str]
) -> dict[str, dict[str, list[Message] | None]]:
    return {s: {api.endpoint.name: api.messages(s) for api in apis.all} for s in sessions}


@redis_only
def test_backup_then_data_loss_then_restore_gives_back_identical_history(
    cluster: Deployment, apis: ReplicaApis, tmp_path: Path, session_id: str
) -> None:
    sessions = [f"{session_id}-{i}" for i in range(3)]
    for i, session in enumerate(sessions):
        for turn in range(3):
            apis[(i + turn) % len(apis)].chat(session, f"fact {turn} of session {i}")
    before = {s: apis[0].messages(s) for s in sessions}

    run_or_skip(lambda: cluster.backup_store(tmp_path))
    cluster.lose_store_data()
    apis.refresh()
    assert all(apis[0].messages(s) is None for s in sessions), "the data must really be gone"

    cluster.restore_store(tmp_path)
    apis.refresh()
    after = {s: [api.messages(s) for api in apis.all] for s in sessions}
    for session in sessions:
        assert before[session] is not None and len(before[session] or []) == 6
        assert all(view == before[session] for view in after[session]), session


@redis_only
def test_password_rotation_under_traffic_fails_no_request_and_loses_no_turn(
    cluster: Deployment, apis: ReplicaApis
) -> None:
    old_replicas = {e.name for e in apis.endpoints}
    revoked: list[str] = []
    with traffic_through_the_entry_point(cluster) as traffic:
        run_or_skip(lambda: revoked.append(cluster.rotate_store_password()))
    apis.refresh()

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.turns >= 10, "traffic must have flowed during the rotation"
    assert {e.name for e in apis.endpoints}.isdisjoint(old_replicas), "replicas were replaced"
    assert cluster.store_rejects_password(revoked[0]), "the old password must be revoked"
    for session, acknowledged in traffic.acknowledged.items():
        for api in apis.all:
            assert api.messages(session) == acknowledged, (session, api.endpoint.name)


def test_upgrade_under_traffic_fails_no_request(
    cluster: Deployment, apis: ReplicaApis, backend: Backend
) -> None:
    old_replicas = {e.name for e in apis.endpoints}
    with traffic_through_the_entry_point(cluster) as traffic:
        run_or_skip(lambda: cluster.upgrade({"LOG_LEVEL": "DEBUG"}))
    apis.refresh()

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.turns >= 10
    assert {e.name for e in apis.endpoints}.isdisjoint(old_replicas), "replicas were replaced"
    by_old = {m for m, replica in traffic.served_by.items() if replica in old_replicas}
    assert by_old, "some turns must have been served before the first replica was replaced"
    for session, views in transcripts(apis, list(traffic.acknowledged)).items():
        acknowledged = traffic.acknowledged[session]
        if backend == "redis":
            assert all(view == acknowledged for view in views.values()), session
        else:  # every process was replaced: what the old replicas served is gone everywhere
            kept = {content for view in views.values() for _, content in view or []}
            assert kept.isdisjoint(by_old), session
