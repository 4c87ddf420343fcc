"""The arm bridge's safety rules (pure; no ROS): every decision comes back with a reason string.

Rules: a workspace box for every target, a per-row clamp of translation and rotation steps, linear and
angular speed limits on the streamed command, a gripper range, a staleness / ordering / clock check of
chunk stamps, watchdogs for a silent policy and a silent robot, and an enable state machine with a latching
e-stop. The bridge logs each reason and counts it on /diagnostics.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transforms3d.euler import axangle2euler, euler2axangle

from videovla_ros.trajectory import NANOSECONDS_PER_SECOND, Pose, rotation_angle, slerp


def exceeding(value: float, limit: float, digits: int = 3) -> tuple[str, str]:
    """`value` and `limit` as text with at least `digits` significant digits and as many more as it takes to show
    them different, so that "x > limit" never reads as "0.250 > 0.25"."""
    for precision in range(digits, 18):
        shown_value, shown_limit = f"{value:.{precision}g}", f"{limit:.{precision}g}"
        if shown_value != shown_limit:
            return shown_value, f"{limit:g}" if float(f"{limit:g}") == limit else shown_limit
    return repr(value), repr(limit)


@dataclass(frozen=True)
class Decision:
    """Whether something is allowed, and why (always a specific, human-readable reason)."""

    allowed: bool
    reason: str

    @classmethod
    def allow(cls, reason: str = "ok") -> Decision:
        return cls(True, reason)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls(False, reason)


@dataclass(frozen=True)
class SafetyLimits:
    """All limits of the bridge; distances in m, angles in rad, times in s.

    max_step_translation / max_step_rotation bound one chunk row; the speed limits bound the streamed command;
    max_clock_skew is how far in the future a capture stamp may lie (clocks of two machines disagree a little).
    """

    workspace_min: tuple[float, float, float] = (-0.8, -0.8, 0.0)
    workspace_max: tuple[float, float, float] = (0.8, 0.8, 1.0)
    max_step_translation: float = 0.02
    max_step_rotation: float = 0.1
    max_linear_speed: float = 0.25
    max_angular_speed: float = 1.0
    max_chunk_age: float = 2.0
    max_clock_skew: float = 0.2
    chunk_watchdog: float = 3.0
    state_watchdog: float = 0.5
    gripper_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("workspace_min", "workspace_max"):
            value = getattr(self, name)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"{name} must be 3 finite numbers [x, y, z] in m, got {list(value)}")
        low, high = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if not np.all(low < high):
            raise ValueError(
                f"workspace_min {list(self.workspace_min)} must be below workspace_max {list(self.workspace_max)} "
                "on every axis"
            )
        positive = (
            "max_step_translation",
            "max_step_rotation",
            "max_linear_speed",
            "max_angular_speed",
            "max_chunk_age",
            "chunk_watchdog",
            "state_watchdog",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (math.isfinite(self.max_clock_skew) and self.max_clock_skew >= 0):
            raise ValueError(f"max_clock_skew must be >= 0 s, got {self.max_clock_skew}")
        if not 0.0 < self.gripper_threshold < 1.0:
            raise ValueError(f"gripper_threshold must be in (0, 1), got {self.gripper_threshold}")


def check_chunk_stamp(capture_ns: int, now_ns: int, previous_capture_ns: int | None, limits: SafetyLimits) -> Decision:
    """A chunk's capture stamp must be recent, not from the future and newer than the last accepted one."""
    age = (now_ns - capture_ns) / NANOSECONDS_PER_SECOND
    if age > limits.max_chunk_age:
        shown_age, shown_limit = exceeding(age, limits.max_chunk_age)
        return Decision.deny(f"stale: captured {shown_age} s ago (max_chunk_age {shown_limit} s)")
    if -age > limits.max_clock_skew:
        shown_skew, shown_limit = exceeding(-age, limits.max_clock_skew)
        return Decision.deny(
            f"capture stamp is {shown_skew} s in the future (max_clock_skew {shown_limit} s); "
            "are the policy's and the bridge's clocks synchronised?"
        )
    if previous_capture_ns is not None and capture_ns <= previous_capture_ns:
        return Decision.deny(
            f"out of order: capture stamp is {(previous_capture_ns - capture_ns) / 1e9:.3f} s older than or "
            "equal to the previously accepted chunk's"
        )
    return Decision.allow()


def clamp_steps(deltas: np.ndarray, limits: SafetyLimits) -> tuple[np.ndarray, list[str]]:
    """Clamps each row's translation norm and rotation angle, keeping directions.

    deltas: (rows, 6) [dx, dy, dz, droll, dpitch, dyaw] (rotation as extrinsic XYZ Euler angles).
    Returns the clamped (rows, 6) copy and one reason per clamped row.
    """
    clamped = np.array(deltas, dtype=np.float64, copy=True)
    reasons = []
    for row, values in enumerate(clamped):
        translation = float(np.linalg.norm(values[:3]))
        if translation > limits.max_step_translation:
            values[:3] *= limits.max_step_translation / translation
            shown, limit = exceeding(translation, limits.max_step_translation)
            reasons.append(f"row {row}: translation step {shown} m clamped to max_step_translation {limit} m")
        axis, angle = euler2axangle(*values[3:6], "sxyz")
        if angle > math.pi:  # the same rotation the short way round
            axis, angle = -axis, 2.0 * math.pi - angle
        if angle > limits.max_step_rotation:
            values[3:6] = axangle2euler(axis, limits.max_step_rotation, "sxyz")
            shown, limit = exceeding(angle, limits.max_step_rotation)
            reasons.append(f"row {row}: rotation step {shown} rad clamped to max_step_rotation {limit} rad")
    return clamped, reasons


def in_workspace(position: Sequence[float], limits: SafetyLimits) -> Decision:
    p = np.asarray(position, dtype=np.float64)
    low, high = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    if np.all(p >= low) and np.all(p <= high):
        return Decision.allow()
    return Decision.deny(
        f"position {np.round(p, 4).tolist()} m is outside the workspace box "
        f"[{list(limits.workspace_min)}, {list(limits.workspace_max)}]"
    )


def clamp_to_workspace(pose: Pose, limits: SafetyLimits) -> tuple[Pose, str | None]:
    """Projects the position into the workspace box (orientation unchanged); reason when it moved."""
    inside = in_workspace(pose.position, limits)
    if inside.allowed:
        return pose, None
    clipped = np.clip(pose.position, limits.workspace_min, limits.workspace_max)
    return Pose.make(clipped, pose.quaternion), f"{inside.reason}; clamped to {np.round(clipped, 4).tolist()}"


def limit_speed(previous: Pose, target: Pose, dt: float, limits: SafetyLimits) -> tuple[Pose, str | None]:
    """Moves from `previous` towards `target` no faster than the linear and angular speed limits over dt [s]."""
    if dt <= 0:
        return previous, f"non-positive time step {dt} s; holding the previous command"
    step = target.position - previous.position
    distance = float(np.linalg.norm(step))
    angle = rotation_angle(previous.quaternion, target.quaternion)
    max_distance, max_angle = limits.max_linear_speed * dt, limits.max_angular_speed * dt
    reasons = []
    position, quaternion = target.position, target.quaternion
    if distance > max_distance:
        position = previous.position + step * (max_distance / distance)
        speed, limit = exceeding(distance / dt, limits.max_linear_speed)
        reasons.append(f"linear speed {speed} m/s > max_linear_speed {limit} m/s")
    if angle > max_angle:
        quaternion = slerp(previous.quaternion, target.quaternion, max_angle / angle)
        speed, limit = exceeding(angle / dt, limits.max_angular_speed)
        reasons.append(f"angular speed {speed} rad/s > max_angular_speed {limit} rad/s")
    if not reasons:
        return target, None
    return Pose.make(position, quaternion), "; ".join(reasons)


def stream_command(
    previous: Pose | None, target: Pose, dt: float, limits: SafetyLimits
) -> tuple[Pose, str | None, bool]:
    """The command to stream for `target` after `previous` (None: the first command): speed-limited over dt [s],
    the reason when it was limited, and whether it stands still (idle). A held pose (the same object again) is
    answered without arithmetic: a held arm is streamed to 100 times a second."""
    if previous is None:
        return target, None, False
    if target is previous:
        return target, None, True
    command, reason = limit_speed(previous, target, dt, limits)
    idle = (
        float(np.linalg.norm(command.position - previous.position)) < 1e-7
        and rotation_angle(command.quaternion, previous.quaternion) < 1e-6
    )
    return command, reason, idle


def gripper_command(value: float, limits: SafetyLimits) -> tuple[float, str | None]:
    """Binary gripper command (0 closed, 1 open) from a policy value; out-of-range values are reported."""
    reason = None
    if not 0.0 <= value <= 1.0:
        reason = f"gripper value {value:.4f} outside [0, 1]; clipped"
        value = min(1.0, max(0.0, value))
    return (1.0 if value >= limits.gripper_threshold else 0.0), reason


# Checked on every stream tick: one shared (immutable) answer instead of a new one 100 times a second.
_HEARD = Decision.allow()


class Watchdog:
    """Trips once when `feed` has not been called for `timeout_s` while armed; re-arms on the next feed.

    `restart` re-arms the timer without ending the silence (e.g. after asking the silent source again), so
    `silences` counts the trips since the source was last heard: a caller logs the first and counts the rest.
    """

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self._timeout_ns = round(timeout_s * NANOSECONDS_PER_SECOND)
        self._last_ns: int | None = None
        self._tripped = False
        self.silences = 0

    def feed(self, now_ns: int) -> None:
        """The source was heard: re-arms and ends the silence."""
        self.restart(now_ns)
        self.silences = 0

    def restart(self, now_ns: int) -> None:
        """Re-arms the timer from `now_ns`; a silence in progress goes on."""
        self._last_ns = now_ns
        self._tripped = False

    def disarm(self) -> None:
        self._last_ns = None
        self._tripped = False
        self.silences = 0

    @property
    def tripped(self) -> bool:
        return self._tripped

    def check(self, now_ns: int) -> Decision:
        """Denies exactly once per silence (the edge); allows otherwise, including while already tripped."""
        if self._last_ns is None or self._tripped:
            return _HEARD
        silence = now_ns - self._last_ns
        if silence <= self._timeout_ns:
            return _HEARD
        self._tripped = True
        self.silences += 1
        shown, limit = exceeding(silence / NANOSECONDS_PER_SECOND, self._timeout_ns / NANOSECONDS_PER_SECOND)
        return Decision.deny(f"{self.name}: silent for {shown} s (limit {limit} s)")


def enable_preconditions(
    latest: tuple[int, Pose] | None, now_ns: int, limits: SafetyLimits, state_topic: str
) -> list[Decision]:
    """What enabling needs: a robot state sample on `state_topic` (latest: (stamp ns, pose) or None), no older
    than state_watchdog, with the end-effector inside the workspace."""
    if latest is None:
        return [Decision.deny(f"no robot state received yet on {state_topic!r}")]
    stamp_ns, pose = latest
    age = (now_ns - stamp_ns) / NANOSECONDS_PER_SECOND
    if age > limits.state_watchdog:
        shown, limit = exceeding(age, limits.state_watchdog)
        return [Decision.deny(f"robot state on {state_topic!r} is {shown} s old (state_watchdog {limit} s)")]
    inside = in_workspace(pose.position, limits)
    return [Decision(inside.allowed, f"end-effector {inside.reason}")]


class ArmState(enum.Enum):
    DISABLED = "disabled"
    ENABLED = "enabled"
    ESTOPPED = "estopped"


class EnableStateMachine:
    """DISABLED (at start) -> ENABLED only by an explicit enable; any fault or e-stop leaves ENABLED.

    The e-stop latches: ESTOPPED stays until the e-stop is released (estop data=false) AND enable is requested.
    """

    def __init__(self) -> None:
        self.state = ArmState.DISABLED
        self.estop_asserted = False
        self.reason = "disabled at start; call ~/enable with data=true"

    @property
    def enabled(self) -> bool:
        return self.state is ArmState.ENABLED

    def request_enable(self, preconditions: Sequence[Decision]) -> Decision:
        """Enables when every precondition (fresh robot state, pose in the workspace, ...) allows it."""
        if self.estop_asserted:
            return Decision.deny("e-stop is asserted (last estop message data=true); release it with data=false first")
        for precondition in preconditions:
            if not precondition.allowed:
                return Decision.deny(f"cannot enable: {precondition.reason}")
        if self.state is ArmState.ENABLED:
            return Decision.allow("already enabled")
        previous = self.state
        self.state, self.reason = ArmState.ENABLED, "enabled"
        return Decision.allow(f"enabled (was {previous.value})")

    def disable(self, reason: str) -> Decision:
        """Leaves ENABLED (an e-stop latch stays ESTOPPED); the decision says what happened."""
        if self.state is ArmState.ESTOPPED:
            return Decision.allow(f"already e-stopped ({self.reason})")
        was_enabled = self.enabled
        self.state, self.reason = ArmState.DISABLED, reason
        return Decision.allow(f"disabled: {reason}" if was_enabled else f"already disabled ({reason})")

    def estop(self, asserted: bool) -> Decision:
        """An estop message; data=true latches ESTOPPED, data=false only releases the button."""
        self.estop_asserted = asserted
        if asserted:
            self.state, self.reason = ArmState.ESTOPPED, "e-stop asserted"
            return Decision.deny("e-stop asserted: arm stopped and latched until released and re-enabled")
        return Decision.allow(
            "e-stop released; call ~/enable with data=true to resume"
            if self.state is ArmState.ESTOPPED
            else "e-stop released"
        )
