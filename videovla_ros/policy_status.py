"""What the policy node's /diagnostics status says: the first thing that keeps it from publishing chunks (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus

from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND
from videovla_ros.inference_scheduler import InferenceScheduler
from videovla_ros.metrics import RunningStats
from videovla_ros.policy_parameters import PolicyNodeParameters


@dataclass(frozen=True)
class PolicyActivity:
    """What a configured node knows at one instant; times are time.monotonic_ns().

    active_since_ns: when the node was activated (None while inactive).
    last_frame_ns: receipt of the newest camera image since activation (None: none yet).
    last_error: the last inference failure, cleared by the next published chunk.
    """

    active_since_ns: int | None
    instruction: str
    last_frame_ns: int | None
    last_error: str | None
    image_topic: str
    camera_silence: float
    waiting_for_request: bool

    @classmethod
    def of(
        cls,
        scheduler: InferenceScheduler,
        params: PolicyNodeParameters,
        active_since_ns: int | None,
        last_error: str | None,
    ) -> PolicyActivity:
        """The activity of a configured node: its scheduler and parameters, when it was activated, its last error."""
        return cls(
            active_since_ns=active_since_ns,
            instruction=scheduler.instruction,
            last_frame_ns=scheduler.last_frame_receipt_monotonic_ns,
            last_error=last_error,
            image_topic=params.image_topic,
            camera_silence=params.max_image_age,
            waiting_for_request=scheduler.waiting_for_request,
        )


def timing_gauges(inference: RunningStats, overhead: RunningStats, chunk_rate_hz: float) -> dict[str, float]:
    """The timing gauges of /diagnostics [s, Hz]; overhead is what ROS adds to inference (receipt to publish)."""
    return {
        "inference_time_last": inference.last,
        "inference_time_mean": inference.mean,
        "ros_overhead_last": overhead.last,
        "ros_overhead_mean": overhead.mean,
        "chunk_rate_hz": chunk_rate_hz,
    }


def policy_status(activity: PolicyActivity, now_ns: int) -> tuple[bytes, str]:
    """(DiagnosticStatus level, message) of a configured node naming what is missing: activation, camera images,
    an instruction, or nothing. camera_silence [s]: how long without an image counts as missing."""
    if activity.active_since_ns is None:
        return DiagnosticStatus.WARN, "inactive: activate the node to start inference"
    if activity.last_error is not None:
        return DiagnosticStatus.ERROR, f"inference failed: {activity.last_error}"
    since = activity.last_frame_ns if activity.last_frame_ns is not None else activity.active_since_ns
    silence = (now_ns - since) / NANOSECONDS_PER_SECOND
    if silence > activity.camera_silence:
        what = "no camera image" if activity.last_frame_ns is None else "no new camera image"
        return DiagnosticStatus.WARN, f"{what} on {activity.image_topic!r} for {silence:.1f} s"
    if not activity.instruction:
        return DiagnosticStatus.WARN, "no instruction: publish one on 'instruction' or send an execute_instruction goal"
    if activity.waiting_for_request:
        return DiagnosticStatus.OK, "waiting for a chunk request from the arm bridge (execution_mode sync or rtc)"
    return DiagnosticStatus.OK, "publishing chunks"
