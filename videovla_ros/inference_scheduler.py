"""When the policy node infers, on which frame and for which instruction (pure logic).

The policy node's callbacks only feed this module (newest frame, chunk requests, instructions) and
ask it what to do; everything here is plain Python and thread-safe, so the rules are unit-tested without
ROS. Times are integers in nanoseconds: `*_time_ns` on the ROS clock (comparable with header stamps).

Execution modes (videovla_ros.execution_mode):
- "async": infer back-to-back, each time on the newest frame that has not been used yet.
- "sync": infer once per chunk request, on a frame captured at or after the request's stamp, so the chunk
  starts from the scene the arm has actually reached.
- "rtc": like sync, the requests being the bridge's real-time-chunking requests (the arm keeps moving).
In both modes a frame older than `max_image_age` is dropped as stale: acting on an old scene is worse than
waiting for the next one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any

from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND
from videovla_ros.execution_mode import REQUEST_DRIVEN_MODES, check_execution_mode
from videovla_ros.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH, check_instruction


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
    """Newest frame + execution mode + instruction state of the policy node."""

    def __init__(
        self, execution_mode: str, max_image_age: float, max_instruction_length: int = DEFAULT_MAX_INSTRUCTION_LENGTH
    ) -> None:
        self.execution_mode = check_execution_mode(execution_mode)
        self._request_driven = self.execution_mode in REQUEST_DRIVEN_MODES
        if not (math.isfinite(max_image_age) and max_image_age > 0):
            raise ValueError(f"max_image_age must be a positive number of seconds, got {max_image_age}")
        if max_instruction_length < 1:
            raise ValueError(f"max_instruction_length must be >= 1 character, got {max_instruction_length}")
        self.max_instruction_length = max_instruction_length
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

    def set_instruction(self, instruction: str, source: str = "instruction") -> int:
        """Sets the instruction (non-empty after stripping, at most max_instruction_length characters; a
        ValueError names `source` otherwise); returns its generation."""
        text = check_instruction(instruction, self.max_instruction_length, source)
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

    @property
    def waiting_for_request(self) -> bool:
        """Sync (or rtc) mode with no chunk request pending (the bridge has not asked, or is executing a chunk)."""
        with self._lock:
            return self._request_driven and self._request_time_ns is None

    def is_current(self, job: InferenceJob) -> bool:
        """Whether `job`'s instruction is still the one in force."""
        with self._lock:
            return job.generation == self._generation and bool(self._instruction)

    # ---- decision -----------------------------------------------------------------------------------
    def take_job(self, now_ns: int) -> InferenceJob | Wait:
        """The next inference to run at ROS time `now_ns`, or why there is none.

        Consumes the frame (each frame is used once) and, in sync and rtc modes, the request. A stale frame is
        consumed too, and reported as Wait.STALE_FRAME so the caller can count it.
        """
        with self._lock:
            if not self._instruction:
                return Wait.NO_INSTRUCTION
            if self._request_driven and self._request_time_ns is None:
                return Wait.NO_REQUEST
            frame = self._frame
            if frame is None:
                return Wait.NO_FRAME
            if now_ns - frame.capture_time_ns > self.max_image_age_ns:
                self._frame = None
                return Wait.STALE_FRAME
            if self._request_driven:
                assert self._request_time_ns is not None
                if frame.capture_time_ns < self._request_time_ns:
                    # Captured before the arm finished the last chunk; the next frame will show where it is.
                    return Wait.NO_FRAME
                self._request_time_ns = None
            self._frame = None
            return InferenceJob(frame=frame, instruction=self._instruction, generation=self._generation)
