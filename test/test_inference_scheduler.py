"""The policy node's pure scheduling rules: newest frame, triggers, staleness, goal bookkeeping, statistics."""

from __future__ import annotations

import math

import pytest

from videovla_ros.inference_scheduler import (
    Frame,
    GoalBook,
    InferenceJob,
    InferenceScheduler,
    LatestSlot,
    Outcome,
    RateMeter,
    RepeatFilter,
    RunningStats,
    Wait,
    check_goal,
)

S = 1_000_000_000  # ns per second


def _frame(capture_s: float, tag: str = "") -> Frame:
    return Frame(message=tag, capture_time_ns=round(capture_s * S), receipt_monotonic_ns=round(capture_s * S))


def test_latest_slot_keeps_only_the_newest_and_hands_it_out_once():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 was dropped unused
    assert slot.peek() == 2
    assert slot.take() == 2 and slot.take() is None


def test_continuous_uses_the_newest_frame_once():
    scheduler = InferenceScheduler("continuous", max_image_age=0.5)
    assert scheduler.take_job(10 * S) is Wait.NO_INSTRUCTION
    scheduler.set_instruction("  pick up the cube ")
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME
    scheduler.offer_frame(_frame(9.8, "old"))
    scheduler.offer_frame(_frame(9.9, "new"))
    job = scheduler.take_job(10 * S)
    assert isinstance(job, InferenceJob)
    assert (job.frame.message, job.instruction) == ("new", "pick up the cube")
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME


def test_stale_frames_are_dropped_and_reported():
    scheduler = InferenceScheduler("continuous", max_image_age=0.5)
    scheduler.set_instruction("go")
    scheduler.offer_frame(_frame(9.0))
    assert scheduler.take_job(10 * S) is Wait.STALE_FRAME
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME  # the stale frame was consumed


def test_request_mode_waits_for_a_request_and_a_frame_captured_after_it():
    scheduler = InferenceScheduler("request", max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.offer_frame(_frame(9.9))
    assert scheduler.take_job(10 * S) is Wait.NO_REQUEST
    scheduler.request(10 * S)
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME  # captured before the request
    scheduler.offer_frame(_frame(10.05, "after"))
    job = scheduler.take_job(round(10.1 * S))
    assert isinstance(job, InferenceJob) and job.frame.message == "after"
    scheduler.offer_frame(_frame(10.2))
    assert scheduler.take_job(round(10.3 * S)) is Wait.NO_REQUEST  # one inference per request


def test_older_requests_do_not_replace_newer_ones():
    scheduler = InferenceScheduler("request", max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.request(10 * S)
    scheduler.request(9 * S)
    scheduler.offer_frame(_frame(9.5))
    assert scheduler.take_job(round(9.6 * S)) is Wait.NO_FRAME


def test_instruction_generations_mark_jobs_outdated():
    scheduler = InferenceScheduler("continuous", max_image_age=1.0)
    generation = scheduler.set_instruction("first")
    scheduler.offer_frame(_frame(1.0))
    job = scheduler.take_job(1 * S)
    assert isinstance(job, InferenceJob) and job.generation == generation and scheduler.is_current(job)
    scheduler.set_instruction("second")
    assert not scheduler.is_current(job)
    scheduler.clear_instruction()
    assert scheduler.instruction == ""
    with pytest.raises(ValueError, match="instruction must be a non-empty string, got '  '"):
        scheduler.set_instruction("  ")


def test_reset_forgets_frames_and_requests_but_keeps_the_instruction():
    scheduler = InferenceScheduler("request", max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.request(1 * S)
    scheduler.offer_frame(_frame(1.1))
    scheduler.reset()
    assert scheduler.instruction == "go"
    assert scheduler.take_job(round(1.2 * S)) is Wait.NO_REQUEST
    assert scheduler.last_frame_receipt_monotonic_ns is None


@pytest.mark.parametrize(
    ("trigger", "age", "message"),
    [
        ("sometimes", 1.0, "inference_trigger must be one of ['continuous', 'request'], got 'sometimes'"),
        ("request", 0.0, "max_image_age must be a positive number of seconds, got 0.0"),
        ("request", math.nan, "max_image_age must be a positive number of seconds, got nan"),
    ],
)
def test_bad_scheduler_settings(trigger, age, message):
    with pytest.raises(ValueError) as error:
        InferenceScheduler(trigger, age)
    assert message in str(error.value)


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


def test_goal_completes_at_max_chunks():
    book = GoalBook()
    record = book.start("a", "go", max_chunks=2, timeout=0.0, now_monotonic_ns=0)
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


def test_statistics():
    stats = RunningStats()
    assert math.isnan(stats.mean)
    for value in (1.0, 2.0, 6.0):
        stats.add(value)
    assert (stats.last, stats.mean, stats.count) == (6.0, 3.0, 3)
    meter = RateMeter(window=2.0)
    for i in range(9):
        meter.tick(i * S // 4)  # 4 Hz for 2 s
    assert meter.rate(2 * S) == pytest.approx(4.0, abs=0.5)
    assert meter.rate(10 * S) == 0.0  # stopped streams report no rate
    with pytest.raises(ValueError, match="window must be a positive number of seconds, got 0"):
        RateMeter(window=0)


def test_repeat_filter_logs_new_kinds_at_once_and_repeats_once_per_period():
    gate = RepeatFilter(period=2.0)
    assert gate.check("image data is truncated: need 9216 bytes, got 100", 0) == 0
    assert gate.check("image data is truncated: need 9216 bytes, got 200", 1 * S) is None  # same kind
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(1.1 * S)) == 1  # new kind
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(1.2 * S)) is None
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(3.2 * S)) == 1  # period over
