"""The failover report's figures: the longest run of failed turns and who answered them, per
group (what the e2e failover test asserts and what CI logs show)."""

from __future__ import annotations

from testsupport.failover import FailoverReport, Outcome

STORE, BALANCER = "503 history_unavailable", "503 (not the service)"


def outcome(session: str, started: float, ended: float, answer: str | None) -> Outcome:
    status = 200 if answer is None else 503
    return Outcome(session, f"{session} {started}", started, ended, status, answer or "")


def report() -> FailoverReport:
    return FailoverReport(
        "run", 20.0, {"a1": "A", "a2": "A", "b1": "B"}, ["kill"],
        [
            outcome("a1", 0.0, 0.1, None),
            outcome("a1", 1.0, 1.5, STORE),  # a run of A's: 1.0 .. 4.2
            outcome("a2", 1.2, 4.2, STORE),
            outcome("a1", 2.0, 2.1, BALANCER),
            outcome("a2", 5.0, 5.1, None),
            outcome("a1", 6.0, 6.5, STORE),  # a shorter run, still open at the end
            outcome("b1", 1.1, 1.2, None),
        ],
    )  # fmt: skip


def test_the_longest_run_spans_from_its_first_start_to_its_last_end_across_sessions() -> None:
    assert report().of("A").longest_failure_s == 3.2
    assert report().of("B").longest_failure_s == 0.0


def test_a_success_in_another_group_does_not_end_a_groups_run() -> None:
    # b1's success at 1.1 falls inside A's run; per group it does not count, overall it does.
    assert report().longest_failure_s < 3.2


def test_each_group_line_says_who_answered_its_failed_turns() -> None:
    lines = report().lines()
    group_a = next(line for line in lines if line.startswith("  A:"))
    assert group_a.endswith(f"; answered {STORE} x3, {BALANCER} x1")
    assert "answered" not in next(line for line in lines if line.startswith("  B:"))
    assert lines[-1] == f"  failed turns answered: {STORE} x3, {BALANCER} x1"
