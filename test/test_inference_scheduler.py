"""The policy node's pure scheduling rules: newest frame, execution mode, staleness, instruction cap."""

from __future__ import annotations

import math

import pytest

from videovla_ros.inference_scheduler import Frame, InferenceJob, InferenceScheduler, Wait
from videovla_ros.instruction import bounded

S = 1_000_000_000  # ns per second


def _frame(capture_s: float, tag: str = "") -> Frame:
    return Frame(message=tag, capture_time_ns=round(capture_s * S), receipt_monotonic_ns=round(capture_s * S))


def test_async_uses_the_newest_frame_once():
    scheduler = InferenceScheduler("async", max_image_age=0.5)
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
    scheduler = InferenceScheduler("async", max_image_age=0.5)
    scheduler.set_instruction("go")
    scheduler.offer_frame(_frame(9.0))
    assert scheduler.take_job(10 * S) is Wait.STALE_FRAME
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME  # the stale frame was consumed


@pytest.mark.parametrize("mode", ["sync", "rtc"])  # rtc: the requests are the bridge's rtc_chunk_request
def test_request_driven_modes_wait_for_a_request_and_a_frame_captured_after_it(mode):
    scheduler = InferenceScheduler(mode, max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.offer_frame(_frame(9.9))
    assert scheduler.take_job(10 * S) is Wait.NO_REQUEST and scheduler.waiting_for_request
    scheduler.request(10 * S)
    assert scheduler.take_job(10 * S) is Wait.NO_FRAME  # captured before the request
    scheduler.offer_frame(_frame(10.05, "after"))
    job = scheduler.take_job(round(10.1 * S))
    assert isinstance(job, InferenceJob) and job.frame.message == "after"
    scheduler.offer_frame(_frame(10.2))
    assert scheduler.take_job(round(10.3 * S)) is Wait.NO_REQUEST  # one inference per request


def test_older_requests_do_not_replace_newer_ones():
    scheduler = InferenceScheduler("sync", max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.request(10 * S)
    scheduler.request(9 * S)
    scheduler.offer_frame(_frame(9.5))
    assert scheduler.take_job(round(9.6 * S)) is Wait.NO_FRAME


def test_instruction_generations_mark_jobs_outdated():
    scheduler = InferenceScheduler("async", max_image_age=1.0)
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
    scheduler = InferenceScheduler("sync", max_image_age=1.0)
    scheduler.set_instruction("go")
    scheduler.request(1 * S)
    scheduler.offer_frame(_frame(1.1))
    scheduler.reset()
    assert scheduler.instruction == "go"
    assert scheduler.take_job(round(1.2 * S)) is Wait.NO_REQUEST
    assert scheduler.last_frame_receipt_monotonic_ns is None


@pytest.mark.parametrize(
    ("mode", "age", "message"),
    [
        ("sometimes", 1.0, "parameter execution_mode must be one of ['sync', 'async', 'rtc'], got 'sometimes'"),
        ("sync", 0.0, "max_image_age must be a positive number of seconds, got 0.0"),
        ("sync", math.nan, "max_image_age must be a positive number of seconds, got nan"),
    ],
)
def test_bad_scheduler_settings(mode, age, message):
    with pytest.raises(ValueError) as error:
        InferenceScheduler(mode, age)
    assert message in str(error.value)


def test_instructions_longer_than_the_cap_are_rejected_and_the_old_one_kept():
    scheduler = InferenceScheduler("async", max_image_age=1.0, max_instruction_length=10)
    scheduler.set_instruction("pick  ")  # the cap applies to the stripped text
    with pytest.raises(ValueError) as error:
        scheduler.set_instruction("x" * 100_000)
    message = str(error.value)
    assert message.startswith("instruction is 100000 characters long, more than max_instruction_length=10")
    assert len(message) < 300  # the rejection quotes a bounded excerpt, never the whole text
    assert scheduler.instruction == "pick"
    with pytest.raises(ValueError, match="max_instruction_length must be >= 1 character, got 0"):
        InferenceScheduler("async", 1.0, max_instruction_length=0)


def test_user_text_in_logs_is_bounded():
    assert bounded("pick up") == "'pick up'"
    long = bounded("y" * 100_000)
    assert long.endswith("... (100000 characters)") and len(long) < 120
