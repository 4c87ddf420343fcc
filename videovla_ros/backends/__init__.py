"""Arm backends of the bridge: how streamed end-effector targets reach a particular arm.

  pose_stream  PoseStamped target_pose + Float64 gripper_command; state from ee_pose (sim arm, custom drivers)
  realman      RealMan rm_driver pose passthrough (needs rm_ros_interfaces)
  servo        MoveIt Servo pose or twist commands
  moveit_py    MoveItPy plan-and-execute to the newest target (needs moveit_py)
Backends that need packages outside this suite import them only when chosen, and fail with an error naming
the package and how to install it.
"""

from __future__ import annotations

from rclpy.node import Node

from videovla_ros.backend_names import BACKENDS
from videovla_ros.backends.base import (
    ArmBackend,
    BackendConfigError,
    BackendParams,
    BackendUnavailableError,
    MoveItPyParams,
    RealmanParams,
    ServoParams,
    StateCallback,
)
from videovla_ros.backends.moveit_py import MoveItPyBackend
from videovla_ros.backends.pose_stream import PoseStreamBackend
from videovla_ros.backends.realman import RealmanBackend
from videovla_ros.backends.servo import ServoBackend

_BACKEND_CLASSES: dict[str, type[ArmBackend]] = {
    "pose_stream": PoseStreamBackend,
    "realman": RealmanBackend,
    "servo": ServoBackend,
    "moveit_py": MoveItPyBackend,
}

__all__ = [
    "BACKENDS",
    "ArmBackend",
    "BackendConfigError",
    "BackendParams",
    "BackendUnavailableError",
    "MoveItPyParams",
    "RealmanParams",
    "ServoParams",
    "StateCallback",
    "make_backend",
]


def make_backend(name: str, node: Node, params: BackendParams) -> ArmBackend:
    """Creates backend `name` on `node` (its publishers and subscriptions live there).

    Raises BackendConfigError for an unknown name or a bad parameter, BackendUnavailableError when the
    backend's external package (rm_ros_interfaces, moveit_py) is not installed.
    """
    if name not in _BACKEND_CLASSES:
        raise BackendConfigError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    return _BACKEND_CLASSES[name](node, params)
