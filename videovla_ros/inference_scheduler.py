"""When the policy node infers, on which frame, for which instruction, and for which action goal (pure logic).

The policy node's callbacks only feed this module (newest frame, chunk requests, instructions, goals) and
ask it what to do; everything here is plain Python and thread-safe, so the rules are unit-tested without
ROS. Times are integers in nanoseconds: `*_time_ns` on the ROS clock (comparable with header stamps).

Triggers:
- "continuous" (asynchronous execution): infer back-to-back, each time on the newest frame that has not
  been used yet.
- "request" (synchronous execution): infer once per chunk request, on a frame captured at or after the
  request's stamp, so the chunk starts from the scene the arm has actually reached.
In both modes a frame older than `max_image_age` is dropped as stale: acting on an old scene is worse than
waiting for the next one.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Generic, TypeVar

from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND

T = TypeVar("T")

TRIGGERS: tuple[str, ...] = ("continuous", "request")


class LatestSlot(Generic[T]):
    """Holds only the newest item; `take` hands it out once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None

    def put(self, item: T) -> T | None:
        """Stores `item`; returns the item it replaced that was never taken (a dropped one), if any."""
        with self._lock:
            replaced, self._item = self._item, item
            return replaced

    def peek(self) -> T | None:
        with self._lock:
            return self._item

    def take(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._lock:
            self._item = None


@dataclass(frozen=True)
class Frame:
    """A camera message as received, converted only when it is used.

    message: the sensor_msgs Image or CompressedImage.
    capture_time_ns: its header.stamp (ROS time, ns).
    receipt_monotonic_ns: time.monotonic_ns() when the subscription got it (for overhead measurements).
    """

    message: Any
    capture_time_ns: int
    receipt_monotonic_ns: int


@dataclass(frozen=True)
class InferenceJob:
    """One inference to run: the frame, the instruction, and the instruction generation it belongs to.

    If the instruction changes while the job runs (a newer goal, say), `generation` no longer matches and the
    chunk is discarded instead of being published for an instruction nobody wants any more.
    """

    frame: Frame
    instruction: str
    generation: int


class Wait(Enum):
    """Why no inference runs now."""

    NO_INSTRUCTION = "no instruction"
    NO_REQUEST = "waiting for a chunk request"
    NO_FRAME = "waiting for a camera image"
    STALE_FRAME = "newest camera image is too old"


class InferenceScheduler:
    """Newest-frame slot + trigger + instruction state of the policy node."""

    def __init__(self, trigger: str, max_image_age: float) -> None:
        if trigger not in TRIGGERS:
            raise ValueError(f"inference_trigger must be one of {list(TRIGGERS)}, got {trigger!r}")
        if not (math.isfinite(max_image_age) and max_image_age > 0):
            raise ValueError(f"max_image_age must be a positive number of seconds, got {max_image_age}")
        self.trigger = trigger
        self.max_image_age_ns = round(max_image_age * NANOSECONDS_PER_SECOND)
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._request_time_ns: int | None = None
        self._instruction = ""
        self._generation = 0
        self.last_frame_receipt_monotonic_ns: int | None = None

    # ---- inputs -------------------------------------------------------------------------------------
    def offer_frame(self, frame: Frame) -> None:
        with self._lock:
            self._frame = frame
            self.last_frame_receipt_monotonic_ns = frame.receipt_monotonic_ns

    def request(self, request_time_ns: int) -> None:
        """A chunk request stamped `request_time_ns`; a newer request replaces a pending one."""
        with self._lock:
            if self._request_time_ns is None or request_time_ns > self._request_time_ns:
                self._request_time_ns = request_time_ns

    def set_instruction(self, instruction: str) -> int:
        """Sets the instruction (must be non-empty after stripping); returns its generation."""
        text = instruction.strip()
        if not text:
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        with self._lock:
            self._instruction = text
            self._generation += 1
            return self._generation

    def clear_instruction(self) -> None:
        """Stops inference until the next instruction (e.g. when the goal that set it has ended)."""
        with self._lock:
            self._instruction = ""
            self._generation += 1

    def reset(self) -> None:
        """Forgets frames and requests (on deactivation); the instruction is kept, like a latched topic."""
        with self._lock:
            self._frame = None
            self._request_time_ns = None
            self.last_frame_receipt_monotonic_ns = None

    # ---- state --------------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        with self._lock:
            return self._instruction

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def is_current(self, job: InferenceJob) -> bool:
        """Whether `job`'s instruction is still the one in force."""
        with self._lock:
            return job.generation == self._generation and bool(self._instruction)

    # ---- decision -----------------------------------------------------------------------------------
    def take_job(self, now_ns: int) -> InferenceJob | Wait:
        """The next inference to run at ROS time `now_ns`, or why there is none.

        Consumes the frame (each frame is used once) and, in request mode, the request. A stale frame is
        consumed too, and reported as Wait.STALE_FRAME so the caller can count it.
        """
        with self._lock:
            if not self._instruction:
                return Wait.NO_INSTRUCTION
            if self.trigger == "request" and self._request_time_ns is None:
                return Wait.NO_REQUEST
            frame = self._frame
            if frame is None:
                return Wait.NO_FRAME
            if now_ns - frame.capture_time_ns > self.max_image_age_ns:
                self._frame = None
                return Wait.STALE_FRAME
            if self.trigger == "request":
                assert self._request_time_ns is not None
                if frame.capture_time_ns < self._request_time_ns:
                    # Captured before the arm finished the last chunk; the next frame will show where it is.
                    return Wait.NO_FRAME
                self._request_time_ns = None
            self._frame = None
            return InferenceJob(frame=frame, instruction=self._instruction, generation=self._generation)


# ---- action goals -----------------------------------------------------------------------------------------
class Outcome(IntEnum):
    """Mirrors ExecuteInstruction.Result.OUTCOME_* (kept here so this module needs no ROS messages)."""

    COMPLETED_LIMIT = 0
    TIMED_OUT = 1
    CANCELED = 2
    PREEMPTED = 3
    FAILED = 4


@dataclass
class GoalRecord:
    """Bookkeeping of one ExecuteInstruction goal. `done` is set once `outcome` is decided."""

    goal_id: Any
    instruction: str
    max_chunks: int
    timeout: float
    accepted_monotonic_ns: int
    chunks: int = 0
    outcome: Outcome | None = None
    reason: str = ""
    ended_monotonic_ns: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed(self, now_monotonic_ns: int) -> float:
        end = self.ended_monotonic_ns if self.ended_monotonic_ns is not None else now_monotonic_ns
        return (end - self.accepted_monotonic_ns) / NANOSECONDS_PER_SECOND


def check_goal(instruction: str, max_chunks: int, timeout: float) -> None:
    """Raises ValueError naming the goal field that makes a goal unacceptable."""
    if not instruction.strip():
        raise ValueError(f"goal instruction must be a non-empty string, got {instruction!r}")
    if max_chunks < 0:
        raise ValueError(f"goal max_chunks must be >= 0 (0 = no limit), got {max_chunks}")
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"goal timeout must be a finite number of seconds >= 0 (0 = no limit), got {timeout}")


class GoalBook:
    """The one active ExecuteInstruction goal (a newer goal preempts it) and how it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: GoalRecord | None = None

    @property
    def active(self) -> GoalRecord | None:
        with self._lock:
            return self._active

    def start(
        self, goal_id: object, instruction: str, max_chunks: int, timeout: float, now_monotonic_ns: int
    ) -> GoalRecord:
        """Makes a new goal the active one, ending the previous one as PREEMPTED."""
        check_goal(instruction, max_chunks, timeout)
        record = GoalRecord(goal_id, instruction.strip(), max_chunks, timeout, now_monotonic_ns)
        with self._lock:
            previous, self._active = self._active, record
        if previous is not None:
            self._end(previous, Outcome.PREEMPTED, "preempted by a newer goal", now_monotonic_ns)
        return record

    def on_chunk(self, goal_id: object, now_monotonic_ns: int) -> GoalRecord | None:
        """Counts a chunk published for goal `goal_id`; returns the record if it is still the active one."""
        with self._lock:
            record = self._active
            if record is None or record.goal_id != goal_id or record.outcome is not None:
                return None
            record.chunks += 1
            limit_reached = 0 < record.max_chunks <= record.chunks
        if limit_reached:
            self._end(
                record, Outcome.COMPLETED_LIMIT, f"published max_chunks={record.max_chunks} chunks", now_monotonic_ns
            )
        return record

    def check_timeout(self, now_monotonic_ns: int) -> GoalRecord | None:
        """Ends the active goal as TIMED_OUT when its timeout has passed; returns it if so."""
        record = self.active
        if record is None or record.timeout <= 0:
            return None
        if record.elapsed(now_monotonic_ns) < record.timeout:
            return None
        return self._end(record, Outcome.TIMED_OUT, f"timeout of {record.timeout:g} s reached", now_monotonic_ns)

    def end_active(self, outcome: Outcome, reason: str, now_monotonic_ns: int) -> GoalRecord | None:
        """Ends whatever goal is active (failure, deactivation, a new instruction on the topic)."""
        record = self.active
        return None if record is None else self._end(record, outcome, reason, now_monotonic_ns)

    def end(self, goal_id: object, outcome: Outcome, reason: str, now_monotonic_ns: int) -> GoalRecord | None:
        """Ends goal `goal_id` if it is the active one (e.g. on cancel)."""
        record = self.active
        if record is None or record.goal_id != goal_id:
            return None
        return self._end(record, outcome, reason, now_monotonic_ns)

    def _end(self, record: GoalRecord, outcome: Outcome, reason: str, now_monotonic_ns: int) -> GoalRecord | None:
        with self._lock:
            if record.outcome is not None:
                return None
            record.outcome = outcome
            record.reason = reason
            record.ended_monotonic_ns = now_monotonic_ns
            if self._active is record:
                self._active = None
        record.done.set()
        return record


# ---- statistics -------------------------------------------------------------------------------------------
class RunningStats:
    """Last value and mean of a series (e.g. inference time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = math.nan
        self._total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self.last = value
            self._total += value
            self.count += 1

    @property
    def mean(self) -> float:
        with self._lock:
            return self._total / self.count if self.count else math.nan


class RateMeter:
    """Event rate [Hz] over a sliding time window; it falls to 0 when events stop."""

    def __init__(self, window: float = 5.0) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window}")
        self._window_ns = round(window * NANOSECONDS_PER_SECOND)
        self._lock = threading.Lock()
        self._times: deque[int] = deque()

    def tick(self, now_monotonic_ns: int) -> None:
        with self._lock:
            self._times.append(now_monotonic_ns)
            self._forget(now_monotonic_ns)

    def rate(self, now_monotonic_ns: int) -> float:
        """Events per second within the last window."""
        with self._lock:
            self._forget(now_monotonic_ns)
            return len(self._times) * NANOSECONDS_PER_SECOND / self._window_ns

    def _forget(self, now_monotonic_ns: int) -> None:
        while self._times and now_monotonic_ns - self._times[0] > self._window_ns:
            self._times.popleft()


class RepeatFilter:
    """Decides which rejections to log: a new kind at once, the same kind again at most once per `period`.

    A camera that sends the same bad frame 30 times a second must not flood the log, but a different problem
    should show up immediately. The kind of a message is its text with the numbers taken out.
    """

    def __init__(self, period: float) -> None:
        self._period_ns = round(period * NANOSECONDS_PER_SECOND)
        self._lock = threading.Lock()
        self._last_kind: str | None = None
        self._last_time_ns = 0
        self._suppressed = 0

    def check(self, message: str, now_monotonic_ns: int) -> int | None:
        """None: do not log `message`; otherwise log it, with this many similar ones suppressed before it."""
        kind = re.sub(r"\d+", "#", message)
        with self._lock:
            if kind == self._last_kind and now_monotonic_ns - self._last_time_ns < self._period_ns:
                self._suppressed += 1
                return None
            suppressed, self._suppressed = self._suppressed, 0
            self._last_kind, self._last_time_ns = kind, now_monotonic_ns
            return suppressed
