"""The arm bridge's parameters: declared once (BRIDGE_PARAMETERS), read into a frozen BridgeConfig (pure).

Back-end options are nested under the back-end's name (`realman.prefix`, `servo.command`, ...); in a params file:

    /**/arm_bridge:
      ros__parameters:
        backend: realman
        realman:
          prefix: /rm_driver
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videovla_ros.backends import BACKENDS
from videovla_ros.backends.base import (
    SERVO_COMMANDS,
    STOP_MESSAGE_TYPES,
    BackendParams,
    MoveItPyParams,
    RealmanParams,
    ServoParams,
)
from videovla_ros.execution_mode import DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, EXECUTION_MODES
from videovla_ros.parameters import Spec, check_values
from videovla_ros.safety import SafetyLimits

_LIMITS = SafetyLimits()
_REALMAN, _SERVO, _MOVEIT = RealmanParams(), ServoParams(), MoveItPyParams()

BRIDGE_PARAMETERS: tuple[Spec, ...] = (
    Spec("backend", "pose_stream", "arm backend", choices=BACKENDS),
    Spec("execution_mode", DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, choices=EXECUTION_MODES),
    Spec("stream_rate_hz", 100.0, "rate of the streamed end-effector targets [Hz] (realman: at most 500)", above=0.0),
    Spec("dry_run", False, "log the targets (and publish ~/target_pose) instead of commanding the arm"),
    Spec("frame_id", BackendParams().frame_id, "base frame of chunks, targets and robot state"),
    Spec("workspace_min", _LIMITS.workspace_min, "workspace box lower corner [x, y, z] in m"),
    Spec("workspace_max", _LIMITS.workspace_max, "workspace box upper corner [x, y, z] in m"),
    Spec("max_step_translation", _LIMITS.max_step_translation, "largest translation of one chunk row [m]", above=0),
    Spec("max_step_rotation", _LIMITS.max_step_rotation, "largest rotation of one chunk row [rad]", above=0),
    Spec("max_linear_speed", _LIMITS.max_linear_speed, "largest speed of the streamed target [m/s]", above=0),
    Spec("max_angular_speed", _LIMITS.max_angular_speed, "largest angular speed of the target [rad/s]", above=0),
    Spec("max_chunk_age", _LIMITS.max_chunk_age, "chunks captured longer ago are rejected [s]", above=0),
    Spec("max_clock_skew", _LIMITS.max_clock_skew, "chunks stamped further in the future are rejected [s]", low=0),
    Spec(
        "chunk_watchdog",
        _LIMITS.chunk_watchdog,
        "hold (sync: and request again) after this long without a chunk [s]",
        above=0,
    ),
    Spec("state_watchdog", _LIMITS.state_watchdog, "stop and disable after this long without robot state [s]", above=0),
    Spec("blend_duration", 0.15, "time over which a new chunk's motion is blended into the current one [s]", low=0),
    Spec("latency_compensation", 0.0, "async: delay every row's due time by this much [s] (slow policies)", low=0),
    Spec("history_duration", 5.0, "robot state kept to look up the pose at a chunk's capture stamp [s]", above=0),
    Spec(
        "gripper_threshold",
        _LIMITS.gripper_threshold,
        "gripper values at or above it open, below close",
        above=0,
        high=1,
    ),
    Spec("realman.prefix", _REALMAN.prefix, "realman: rm_driver topic prefix"),
    Spec("realman.follow", _REALMAN.follow, "realman: Cartepos.follow (true = high-follow mode)"),
    Spec(
        "realman.stop_message_type",
        _REALMAN.stop_message_type,
        "realman: move_stop_cmd type, bool (driver 1.1) or empty (1.1.6)",
        choices=STOP_MESSAGE_TYPES,
    ),
    Spec("servo.node", _SERVO.node, "servo: MoveIt Servo node name (prefix of its command topics)"),
    Spec("servo.command", _SERVO.command, "servo: twist (delta_twist_cmds) or pose (pose_cmd)", choices=SERVO_COMMANDS),
    Spec("moveit_py.planning_group", _MOVEIT.planning_group, "moveit_py: planning group"),
    Spec("moveit_py.pose_link", _MOVEIT.pose_link, "moveit_py: link the pose goal is for"),
    Spec("moveit_py.replan_period", _MOVEIT.replan_period, "moveit_py: least time between plans [s]", above=0),
)


@dataclass(frozen=True)
class BridgeConfig:
    """The bridge's parameters, checked; durations in s."""

    backend: str
    execution_mode: str
    stream_rate_hz: float
    dry_run: bool
    blend_duration: float
    latency_compensation: float
    history_duration: float
    limits: SafetyLimits
    backend_params: BackendParams

    def __post_init__(self) -> None:
        if not self.history_duration > self.limits.max_chunk_age:
            raise ValueError(
                f"parameter history_duration ({self.history_duration} s) must exceed max_chunk_age "
                f"({self.limits.max_chunk_age} s), or fresh chunks could not be anchored"
            )


def bridge_config(values: Mapping[str, object]) -> BridgeConfig:
    """BridgeConfig from parameter values named as in BRIDGE_PARAMETERS (missing ones take their default);
    raises ValueError naming the parameter that is wrong."""
    v: dict[str, Any] = check_values(BRIDGE_PARAMETERS, values)
    limit_names = (
        "workspace_min",
        "workspace_max",
        "max_step_translation",
        "max_step_rotation",
        "max_linear_speed",
        "max_angular_speed",
        "max_chunk_age",
        "max_clock_skew",
        "chunk_watchdog",
        "state_watchdog",
        "gripper_threshold",
    )
    try:
        limits = SafetyLimits(**{name: v[name] for name in limit_names})
    except ValueError as error:
        raise ValueError(f"parameter {error}") from error
    backend_params = BackendParams(
        frame_id=v["frame_id"],
        stream_period=1.0 / v["stream_rate_hz"],
        realman=RealmanParams(
            prefix=v["realman.prefix"],
            follow=v["realman.follow"],
            stop_message_type=v["realman.stop_message_type"],
        ),
        servo=ServoParams(node=v["servo.node"], command=v["servo.command"]),
        moveit_py=MoveItPyParams(
            planning_group=v["moveit_py.planning_group"],
            pose_link=v["moveit_py.pose_link"],
            replan_period=v["moveit_py.replan_period"],
        ),
    )
    return BridgeConfig(
        backend=v["backend"],
        execution_mode=v["execution_mode"],
        stream_rate_hz=v["stream_rate_hz"],
        dry_run=v["dry_run"],
        blend_duration=v["blend_duration"],
        latency_compensation=v["latency_compensation"],
        history_duration=v["history_duration"],
        limits=limits,
        backend_params=backend_params,
    )
