"""The arm bridge's parameters: declared once (BridgeParameters, videovla_ros.parameters), turned into the frozen
BridgeConfig the node uses (pure).

Back-end options are nested under the back-end's name (`realman.prefix`, `servo.command`, ...); in a params file:

    /**/arm_bridge:
      ros__parameters:
        backend: realman
        realman:
          prefix: /rm_driver
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from videovla_ros.backends import BACKENDS
from videovla_ros.backends.base import (
    BackendParams,
    MoveItPyParams,
    RealmanParams,
    ServoParams,
)
from videovla_ros.execution_mode import DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, EXECUTION_MODES
from videovla_ros.parameters import Spec, check_fields, from_values, group, parameter, specs
from videovla_ros.safety import SafetyLimits

_LIMITS = SafetyLimits()


@dataclass(frozen=True)
class BridgeParameters:
    """The bridge's ROS parameters as declared (videovla_ros.parameters); `BridgeConfig` is what the node uses."""

    backend: str = parameter("pose_stream", "arm backend", choices=BACKENDS)
    execution_mode: str = parameter(DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, choices=EXECUTION_MODES)
    stream_rate_hz: float = parameter(
        100.0, "rate of the streamed end-effector targets [Hz] (realman: at most 500)", above=0.0
    )
    dry_run: bool = parameter(False, "log the targets (and publish ~/target_pose) instead of commanding the arm")
    frame_id: str = parameter(BackendParams().frame_id, "base frame of chunks, targets and robot state", non_empty=True)
    workspace_min: tuple[float, float, float] = parameter(
        _LIMITS.workspace_min, "workspace box lower corner [x, y, z] in m"
    )
    workspace_max: tuple[float, float, float] = parameter(
        _LIMITS.workspace_max, "workspace box upper corner [x, y, z] in m"
    )
    max_step_translation: float = parameter(
        _LIMITS.max_step_translation, "largest translation of one chunk row [m]", above=0
    )
    max_step_rotation: float = parameter(_LIMITS.max_step_rotation, "largest rotation of one chunk row [rad]", above=0)
    max_linear_speed: float = parameter(_LIMITS.max_linear_speed, "largest speed of the streamed target [m/s]", above=0)
    max_angular_speed: float = parameter(
        _LIMITS.max_angular_speed, "largest angular speed of the target [rad/s]", above=0
    )
    max_chunk_age: float = parameter(_LIMITS.max_chunk_age, "chunks captured longer ago are rejected [s]", above=0)
    max_clock_skew: float = parameter(
        _LIMITS.max_clock_skew, "chunks stamped further in the future are rejected [s]", low=0
    )
    chunk_watchdog: float = parameter(
        _LIMITS.chunk_watchdog, "hold (sync: and request again) after this long without a chunk [s]", above=0
    )
    state_watchdog: float = parameter(
        _LIMITS.state_watchdog, "stop and disable after this long without robot state [s]", above=0
    )
    blend_duration: float = parameter(
        0.15, "time over which a new chunk's motion is blended into the current one [s]", low=0
    )
    latency_compensation: float = parameter(
        0.0, "async: delay every row's due time by this much [s] (slow policies)", low=0
    )
    history_duration: float = parameter(
        5.0, "robot state kept to look up the pose at a chunk's capture stamp [s]", above=0
    )
    gripper_threshold: float = parameter(
        _LIMITS.gripper_threshold, "gripper values at or above it open, below close", above=0, high=1
    )
    realman: RealmanParams = group(RealmanParams)
    servo: ServoParams = group(ServoParams)
    moveit_py: MoveItPyParams = group(MoveItPyParams)

    def __post_init__(self) -> None:
        check_fields(self)


BRIDGE_PARAMETERS: tuple[Spec, ...] = specs(BridgeParameters)
_LIMIT_NAMES = tuple(field.name for field in dataclasses.fields(SafetyLimits))


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

    @classmethod
    def from_parameters(cls, params: BridgeParameters) -> BridgeConfig:
        """The config of the declared parameters; raises ValueError naming the parameter a rule across several
        of them (workspace corners, history vs. chunk age) finds wrong."""
        try:
            limits = SafetyLimits(**{name: getattr(params, name) for name in _LIMIT_NAMES})
        except ValueError as error:
            raise ValueError(f"parameter {error}") from error
        backend_params = BackendParams(
            frame_id=params.frame_id,
            stream_period=1.0 / params.stream_rate_hz,
            realman=params.realman,
            servo=params.servo,
            moveit_py=params.moveit_py,
        )
        return cls(
            backend=params.backend,
            execution_mode=params.execution_mode,
            stream_rate_hz=params.stream_rate_hz,
            dry_run=params.dry_run,
            blend_duration=params.blend_duration,
            latency_compensation=params.latency_compensation,
            history_duration=params.history_duration,
            limits=limits,
            backend_params=backend_params,
        )


def bridge_config(values: Mapping[str, object]) -> BridgeConfig:
    """BridgeConfig from parameter values named as in BRIDGE_PARAMETERS (missing ones take their default);
    raises ValueError naming the parameter that is wrong."""
    return BridgeConfig.from_parameters(from_values(BridgeParameters, values))
