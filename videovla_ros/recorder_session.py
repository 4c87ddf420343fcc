"""The recorder node's decisions, without ROS: episode start/stop/discard, which frames to keep, stream faults.

`RecorderSession` is fed stamped samples (camera frames, arm poses, gripper values) in arrival order and keeps
one `videovla_model.recording.LiveRecording` while an episode runs. It keeps only the frames the resampling rule
will use (`TickSelector`), ends an episode whose camera or pose stream went silent (marked in the episode, never
padded), and marks pose jumps. All times are ROS time in ns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videovla_model.recording import LiveRecording, RecordingError, StreamNames
from videovla_model.resampling import NANOSECONDS_PER_SECOND, ResampleError, ResampleLimits, TickSelector

S = NANOSECONDS_PER_SECOND
MAX_LATENCY_SAMPLES = 200_000
"""Latency samples kept per stream and episode (an hour of 50 Hz poses), so memory stays bounded."""


def latency_summary(latencies: dict[str, list[float]]) -> dict[str, float]:
    """Median and maximum arrival - stamp [s] per stream (0 for a stream without samples)."""
    summary = {}
    for stream, values in latencies.items():
        summary[f"{stream}_median_s"] = round(float(np.median(values)), 4) if values else 0.0
        summary[f"{stream}_max_s"] = round(max(values), 4) if values else 0.0
    return summary


@dataclass(frozen=True)
class SessionConfig:
    dataset: Path
    action_rate_hz: float
    min_steps: int
    limits: ResampleLimits
    min_free_bytes: int
    embodiment_id: int
    stream_names: StreamNames
    has_gripper: bool


@dataclass(frozen=True)
class Outcome:
    """What a start/stop/discard/stream check did, for the service reply and the log."""

    ok: bool
    message: str
    episode: Path | None = None


@dataclass(frozen=True)
class Status:
    state: str
    """"idle" or "recording"."""
    episode: int
    """Episodes kept in this session (the running one is number episode + 1)."""
    seconds: float
    frames: int
    dropped_frames: int
    instruction: str
    last_outcome: str
    has_pose: bool
    """Whether an arm pose has been received (~/start needs one)."""
    tick_origin_ns: int
    """Stamp of the episode's tick 0 (ticks follow every 1 / action_rate_hz), 0 before the first frame."""


class RecorderSession:
    """See the module docstring. Not thread-safe: the node calls it from one callback group."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.recording: LiveRecording | None = None
        self.kept = 0
        self.last_outcome = ""
        self._selector: TickSelector | None = None
        self._latest_pose: tuple[int, np.ndarray, np.ndarray] | None = None
        self._latest_gripper: tuple[int, float] | None = None
        self._last_frame_arrival_ns: int | None = None
        self._last_pose_arrival_ns: int | None = None
        self._started_ns = 0
        self._first_frame_ns: int | None = None
        self._last_frame_ns = 0
        self._rejected_frames = 0
        self._latency_s: dict[str, list[float]] = {"camera": [], "pose": []}
        """arrival - capture stamp of every sample per stream in this episode (a late or lagging source)."""
        self.pose_jumps = 0

    # ---- episodes ---------------------------------------------------------------------------------------

    def start(self, instruction: str, now_ns: int) -> Outcome:
        if self.recording is not None:
            return Outcome(False, f"already recording episode {self.kept + 1}: call ~/stop or ~/discard first")
        if self._latest_pose is None:
            return Outcome(False, f"no arm pose received on {self.config.stream_names.poses!r} yet: is the arm up?")
        c = self.config
        try:
            self.recording = LiveRecording.start(
                c.dataset,
                instruction,
                c.action_rate_hz,
                min_free_bytes=c.min_free_bytes,
                embodiment_id=c.embodiment_id,
                stream_names=c.stream_names,
                has_gripper=c.has_gripper,
            )
        except (RecordingError, ValueError, OSError) as error:
            return Outcome(False, f"cannot start: {error}")
        # The newest samples before the start make the pose and gripper known from the first frame on.
        self.recording.add_pose(*self._latest_pose)
        if c.has_gripper and self._latest_gripper is not None:
            self.recording.add_gripper(*self._latest_gripper)
        self._selector = TickSelector(c.action_rate_hz)
        self._started_ns, self._first_frame_ns, self._last_frame_ns = now_ns, None, 0
        self._last_frame_arrival_ns = self._last_pose_arrival_ns = now_ns
        self._rejected_frames = 0
        self._latency_s = {"camera": [], "pose": []}
        return self._done(Outcome(True, f"recording episode {self.kept + 1}: {instruction[:200]!r}"))

    def stop(self, success: bool | None = None) -> Outcome:
        """Keeps the episode; when it cannot become one (too short, bad streams) it goes on recording."""
        if self.recording is None or self._selector is None:
            return self._done(Outcome(False, "not recording"))
        self.recording.mark("stream latency", **latency_summary(self._latency_s))
        pending = self._selector.flush()
        for stamp_ns, rgb in pending:
            self.recording.add_frame(stamp_ns, rgb)  # type: ignore[arg-type]
        try:
            episode = self.recording.finalise(
                min_steps=self.config.min_steps, limits=self.config.limits, success=success
            )
        except (RecordingError, ResampleError) as error:
            # The flushed frame stays on disk: no later tick can pick it over a newer frame, so it is harmless.
            return self._done(Outcome(False, f"episode not kept, still recording: {error}"))
        self.recording, self._selector = None, None
        self.kept += 1
        return self._done(Outcome(True, f"kept episode {self.kept} as {episode}", episode))

    def discard(self) -> Outcome:
        if self.recording is None:
            return self._done(Outcome(False, "not recording"))
        self.recording.discard()
        self.recording, self._selector = None, None
        return self._done(Outcome(True, f"discarded episode {self.kept + 1}"))

    def end_on_fault(self, reason: str) -> Outcome:
        """Ends the episode where a stream failed: kept (marked) when long enough, else discarded with the reason."""
        assert self.recording is not None
        self.recording.mark(reason)
        outcome = self.stop()
        if outcome.ok:
            return self._done(Outcome(True, f"{reason}: episode ended and marked; {outcome.message}", outcome.episode))
        self.discard()
        return self._done(Outcome(False, f"{reason}: episode discarded ({outcome.message.split(': ', 1)[-1]})"))

    def _done(self, outcome: Outcome) -> Outcome:
        self.last_outcome = outcome.message[:300]
        return outcome

    # ---- samples ----------------------------------------------------------------------------------------

    def on_frame(self, stamp_ns: int, arrival_ns: int, rgb: np.ndarray) -> None:
        self._last_frame_arrival_ns = arrival_ns
        if self.recording is None or self._selector is None:
            return
        if stamp_ns < self._started_ns:
            return  # captured before ~/start: not part of this episode
        self._note_latency("camera", stamp_ns, arrival_ns)
        for kept_stamp, kept_rgb in self._selector.offer(stamp_ns, rgb):
            try:
                self.recording.add_frame(kept_stamp, kept_rgb)  # type: ignore[arg-type]
            except RecordingError:
                self._rejected_frames += 1
                continue
            if self._first_frame_ns is None:
                self._first_frame_ns = kept_stamp
            self._last_frame_ns = kept_stamp

    def on_pose(self, stamp_ns: int, arrival_ns: int, position: np.ndarray, quaternion_wxyz: np.ndarray) -> str:
        """Returns a pose-jump mark ("" when none)."""
        mark = ""
        if self._latest_pose is not None and stamp_ns <= self._latest_pose[0]:
            return ""  # an older or repeated sample: the stream's order is by stamp
        if self.recording is not None and self._latest_pose is not None:
            jump = float(np.linalg.norm(position - self._latest_pose[1]))
            if jump > self.config.limits.max_pose_jump_m:
                self.pose_jumps += 1
                mark = f"pose jumped {jump:.3f} m at t={(stamp_ns - self._started_ns) / S:.3f} s"
                self.recording.mark(mark)
        self._latest_pose = (stamp_ns, position, quaternion_wxyz)
        self._last_pose_arrival_ns = arrival_ns
        if self.recording is not None:
            self.recording.add_pose(stamp_ns, position, quaternion_wxyz)
            self._note_latency("pose", stamp_ns, arrival_ns)
        return mark

    def _note_latency(self, stream: str, stamp_ns: int, arrival_ns: int) -> None:
        if len(self._latency_s[stream]) < MAX_LATENCY_SAMPLES:
            self._latency_s[stream].append((arrival_ns - stamp_ns) / S)

    def on_gripper(self, stamp_ns: int, value: float) -> None:
        """value: 0 (closed) .. 1 (open); the node refuses others before calling."""
        if self._latest_gripper is not None and stamp_ns <= self._latest_gripper[0]:
            return
        self._latest_gripper = (stamp_ns, value)
        if self.recording is not None:
            self.recording.add_gripper(stamp_ns, value)

    def check_streams(self, now_ns: int) -> Outcome | None:
        """Ends the episode when the camera or the pose stream has been silent longer than max_gap_s."""
        if self.recording is None:
            return None
        limit_ns = round(self.config.limits.max_gap_s * S)
        t = (now_ns - self._started_ns) / S
        for name, last in (
            (self.config.stream_names.frames, self._last_frame_arrival_ns),
            (self.config.stream_names.poses, self._last_pose_arrival_ns),
        ):
            if last is not None and now_ns - last > limit_ns:
                return self.end_on_fault(f"stream {name!r} stopped at t={t - (now_ns - last) / S:.3f} s")
        return None

    def status(self, now_ns: int) -> Status:
        recording = self.recording
        selector = self._selector
        dropped = self._rejected_frames + (selector.repeated_ticks + selector.out_of_order if selector else 0)
        seconds = 0.0
        if recording is not None and self._first_frame_ns is not None:
            seconds = (self._last_frame_ns - self._first_frame_ns) / S
        return Status(
            state="recording" if recording is not None else "idle",
            episode=self.kept,
            seconds=seconds,
            frames=recording.frames if recording is not None else 0,
            dropped_frames=dropped,
            instruction=recording.journal.instruction[:200] if recording is not None else "",
            last_outcome=self.last_outcome,
            has_pose=self._latest_pose is not None,
            tick_origin_ns=(selector.origin_ns or 0) if selector is not None else 0,
        )


def min_free_bytes(megabytes: float) -> int:
    if not (math.isfinite(megabytes) and megabytes >= 0):
        raise ValueError(f"parameter min_free_disk_mb must be a number >= 0, got {megabytes!r}")
    return round(megabytes * 1e6)
