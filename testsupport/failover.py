"""Failover under traffic, measured: steady chat turns through a load balancer while the Redis
primary is killed again and again, then every acknowledged turn looked up in the transcripts.

Target-neutral: a target supplies the entry point's URL and a `PrimaryKiller` (local: SIGKILL
of a redis-server process; Kubernetes: a pod delete with zero grace). The traffic runs in
worker threads; the kills run in the calling thread (local processes must be started from the
main thread, see testsupport.procs).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from chat_history_k8s.hopcheck.client import Api, Endpoint


class PrimaryKiller(Protocol):
    """Kills the Redis primary that serves the run's sessions, and brings the killed node back
    (as a replica of whichever primary serves now)."""

    def kill_primary(self) -> str:
        """Hard-kill the primary; return what was killed (for the log)."""

    def restore(self) -> str | None:
        """Bring the killed node back; return once it serves as a replica, with what the run's
        log should say about the failover (e.g. the Sentinels' events), if anything."""


@dataclass(frozen=True)
class Outcome:
    session: str
    message: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all
    # A failed turn's answer: the service's error code, or who else answered (e.g. the load
    # balancer, when no replica was ready).
    answer: str = ""


@dataclass
class FailoverReport:
    """What a run measured, overall and per group of sessions (e.g. one group per memory API
    and REDIS_WAIT_REPLICAS value); `lines()` is what CI logs print."""

    label: str
    duration_s: float
    groups: dict[str, str]  # session -> its group
    kills: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    lost: list[Outcome] = field(default_factory=list)  # acknowledged, missing from transcripts
    failed_but_stored: list[Outcome] = field(default_factory=list)  # 503, yet in a transcript
    replica_restarts: int = 0

    def of(self, group: str) -> FailoverReport:
        """The same figures for one group's sessions."""
        mine = {s for s, g in self.groups.items() if g == group}
        return FailoverReport(
            f"{self.label}, {group}", self.duration_s, {s: group for s in mine}, self.kills,
            [o for o in self.outcomes if o.session in mine],
            [o for o in self.lost if o.session in mine],
            [o for o in self.failed_but_stored if o.session in mine],
            self.replica_restarts,
        )  # fmt: skip

    @property
    def acknowledged(self) -> int:
        return sum(o.status == 200 for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.status != 200 for o in self.outcomes)

    @property
    def wrong_answers(self) -> Counter[str]:
        """The service's own answers to failed turns other than 503 `history_unavailable` (a
        failing store is never anything else, e.g. never a 500)."""
        return Counter(
            o.answer for o in self.outcomes
            if o.status not in (0, 200) and not o.answer.endswith("(not the service)")
            and o.answer != "503 history_unavailable"
        )  # fmt: skip

    @property
    def longest_failure_s(self) -> float:
        """The longest run of consecutive failed turns (in start order, all sessions together):
        from the start of its first turn to the end of its last."""
        longest = 0.0
        run: tuple[float, float] | None = None  # (first start, last end) of the current run
        for outcome in sorted(self.outcomes, key=lambda o: o.started):
            if outcome.status != 200:
                end = outcome.ended if run is None else max(run[1], outcome.ended)
                run = (outcome.started if run is None else run[0], end)
            elif run is not None:
                longest, run = max(longest, run[1] - run[0]), None
        if run is not None:
            longest = max(longest, run[1] - run[0])
        return longest

    def lines(self) -> list[str]:
        rate = len(self.outcomes) / self.duration_s if self.duration_s else 0.0
        lines = [
            f"failover [{self.label}]: {len(self.outcomes)} turns in {self.duration_s:.0f} s "
            f"({rate:.1f}/s) over {len(self.groups)} sessions, {len(self.kills)} primaries "
            f"killed, replica restarts {self.replica_restarts}"
        ]
        for group in sorted(set(self.groups.values())):
            part = self.of(group)
            lines.append(
                f"  {group}: acknowledged {part.acknowledged}, failed {part.failed}, "
                f"acknowledged turns lost {len(part.lost)}, failed turns stored anyway "
                f"{len(part.failed_but_stored)}, longest run of failed turns "
                f"{part.longest_failure_s:.2f} s{part._answers('; answered ')}"
            )
        lines += [f"  kill {n}: {kill}" for n, kill in enumerate(self.kills, 1)]
        answered = self._answers("  failed turns answered: ")
        return [*lines, answered] if answered else lines

    def _answers(self, prefix: str) -> str:
        """`prefix` and how the failed turns were answered, most common first ("" if none)."""
        answers = Counter(o.answer for o in self.outcomes if o.status != 200)
        listed = ", ".join(f"{answer} x{n}" for answer, n in answers.most_common())
        return prefix + listed if answers else ""


class Traffic:
    """Conversations (session -> the endpoint it is sent to, with its API key if any), each
    sending one turn after another at `per_session_rate` turns/s (a new connection per turn, as
    independent clients do, when the endpoint has `fresh_connections`)."""

    def __init__(
        self, sessions: dict[str, Endpoint], per_session_rate: float, timeout_s: float = 5.0
    ) -> None:
        self.sessions = sessions
        self.interval = 1.0 / per_session_rate
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(s,), name=f"traffic-{s}", daemon=True)
            for s in sessions
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, session: str) -> None:
        n = 0
        next_at = time.monotonic()
        with Api(self.sessions[session], timeout_s=self.timeout_s) as api:
            while not self._stop.is_set():
                message = f"{session} turn {n}"
                started = time.monotonic()
                answer = ""
                try:
                    response = api.chat_response(session, message)
                    status = response.status_code
                    if status != 200:
                        answer = _answer(response)
                except httpx.HTTPError as exc:
                    status, answer = 0, type(exc).__name__
                with self._lock:
                    self.outcomes.append(
                        Outcome(session, message, started, time.monotonic(), status, answer)
                    )
                n += 1
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def _answer(response: httpx.Response) -> str:
    """`status code` for the service's own errors, `status (not the service)` otherwise."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} (not the service)"
    return f"{response.status_code} {code}"


def run_failover(
    *,
    label: str,
    killer: PrimaryKiller,
    sessions: dict[str, Endpoint],
    groups: dict[str, str],
    transcript: Callable[[str], list[str]],
    replica_restarts: Callable[[], int],
    duration_s: float = 60.0,
    kills: int = 3,
    per_session_rate: float = 3.0,
) -> FailoverReport:
    """Traffic to `sessions` (session -> the entry point) for `duration_s`, with `kills`
    primary kills spread over it (the first after a tenth of the run), each killed node
    restored once another primary serves; then every acknowledged turn is looked up with
    `transcript(session)` (its human messages)."""
    restarts_before = replica_restarts()
    traffic = Traffic(sessions, per_session_rate)
    report = FailoverReport(label, duration_s, groups)
    started = time.monotonic()
    traffic.start()
    try:
        gap = duration_s * 0.9 / kills
        for k in range(kills):
            _sleep_until(started + duration_s * 0.1 + k * gap)
            killed = killer.kill_primary()
            note = killer.restore()
            report.kills.append(f"{killed}; {note}" if note else killed)
        _sleep_until(started + duration_s)
    finally:
        traffic.stop()
    report.duration_s = time.monotonic() - started
    report.outcomes = list(traffic.outcomes)
    for session in sessions:
        stored = set(transcript(session))
        mine = [o for o in report.outcomes if o.session == session]
        report.lost += [o for o in mine if o.status == 200 and o.message not in stored]
        report.failed_but_stored += [o for o in mine if o.status != 200 and o.message in stored]
    report.replica_restarts = replica_restarts() - restarts_before
    return report


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
