"""ExecuteInstruction goal bookkeeping: validation, completion, preemption, timeouts, cancellation."""

from __future__ import annotations

import math

import pytest

from videovla_ros.goals import GoalBook, Outcome, check_goal

S = 1_000_000_000  # ns per second


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        (("", 0, 0.0), "goal instruction must be a non-empty string, got ''"),
        (("go", -1, 0.0), "goal max_chunks must be >= 0 (0 = no limit), got -1"),
        (("go", 0, -2.0), "goal timeout must be a finite number of seconds >= 0 (0 = no limit), got -2.0"),
        (("go", 0, math.inf), "goal timeout must be a finite number of seconds >= 0 (0 = no limit), got inf"),
    ],
)
def test_bad_goals_are_named(goal, message):
    with pytest.raises(ValueError) as error:
        check_goal(*goal)
    assert message in str(error.value)


def test_goal_instructions_are_capped_and_stripped():
    assert check_goal("  go  ", 0, 0.0, max_instruction_length=2) == "go"
    with pytest.raises(ValueError, match="goal instruction is 3 characters long, more than max_instruction_length=2"):
        check_goal("abc", 0, 0.0, max_instruction_length=2)
    with pytest.raises(ValueError, match="max_instruction_length=4"):
        GoalBook().start("a", "x" * 5, 0, 0.0, 0, max_instruction_length=4)


def test_goal_completes_at_max_chunks():
    book = GoalBook()
    record = book.start("a", "go", max_chunks=2, timeout=0.0, now_ns=0)
    assert book.on_chunk("a", 1 * S) is record and not record.done.is_set()
    book.on_chunk("a", 2 * S)
    assert record.done.is_set() and record.outcome is Outcome.COMPLETED_LIMIT and record.chunks == 2
    assert record.elapsed(10 * S) == 2.0 and book.active is None
    assert book.on_chunk("a", 3 * S) is None  # ended goals count no more chunks


def test_newer_goal_preempts_and_timeouts_end_goals():
    book = GoalBook()
    first = book.start("a", "go", 0, 0.0, 0)
    second = book.start("b", "stop", 0, 1.5, 1 * S)
    assert first.outcome is Outcome.PREEMPTED and "newer goal" in first.reason
    assert book.active is second
    assert book.on_chunk("a", 1 * S) is None  # chunks of the old goal are not counted for the new one
    assert book.check_timeout(2 * S) is None
    assert book.check_timeout(round(2.6 * S)) is second
    assert second.outcome is Outcome.TIMED_OUT and second.reason == "timeout of 1.5 s reached"


def test_goals_end_once_and_only_the_named_goal_is_cancelled():
    book = GoalBook()
    record = book.start("a", "go", 0, 0.0, 0)
    assert book.end("other", Outcome.CANCELED, "x", 1) is None
    assert book.end("a", Outcome.CANCELED, "canceled by the client", 2) is record
    assert book.end_active(Outcome.FAILED, "late", 3) is None
    assert (record.outcome, record.reason) == (Outcome.CANCELED, "canceled by the client")
