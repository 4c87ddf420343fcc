"""The simulated arm's own end-effector controller, in the manner of a Realman arm controller.

It takes an absolute TCP pose target in base_link plus a gripper opening 0..1, and does the inverse
kinematics itself: damped least squares on the TCP site's Jacobian, joint limits enforced at every
iteration. A target outside the controller's workspace box, or one the arm cannot reach in the commanded
orientation, is refused with `TargetRejectedError` naming the reason, and the arm keeps holding the last
accepted target (a real controller answers an unreachable pose the same way).

Accepted targets are approached in joint space at a bounded joint speed (all joints arriving together),
so a streamed pose sequence is followed closely and a far jump becomes a smooth move rather than a snap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from videovla_sim.scene import FINGER_TRAVEL, HOME_SEED, TOP_DOWN_QUATERNION, Scene


class TargetRejectedError(ValueError):
    """A pose or gripper command the controller refused; the arm holds its previous target."""


WORKSPACE_SLACK = 1e-6
"""[m] A target on the box's edge, clamped there by the bridge, must not be refused for a rounding error."""


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box in base_link [m] the TCP target must lie in (like a controller's user workspace)."""

    x: tuple[float, float] = (0.12, 0.62)
    y: tuple[float, float] = (-0.45, 0.45)
    z: tuple[float, float] = (0.015, 0.55)
    """The lower bound keeps the fingertips, 1.5 cm below the TCP, off the table."""

    def __post_init__(self) -> None:
        for axis in ("x", "y", "z"):
            low, high = getattr(self, axis)
            if not low < high:
                raise ValueError(f"Workspace.{axis} must be (low, high) with low < high, got {(low, high)}")

    def violation(self, position: np.ndarray) -> str | None:
        """Why `position` (3,) is outside the box, or None when it is inside."""
        for index, axis in enumerate(("x", "y", "z")):
            low, high = getattr(self, axis)
            value = float(position[index])
            if not low - WORKSPACE_SLACK <= value <= high + WORKSPACE_SLACK:
                return f"target {axis}={value:.3f} m is outside the workspace {axis} range [{low}, {high}] m"
        return None


@dataclass(frozen=True)
class ControllerConfig:
    workspace: Workspace = field(default_factory=Workspace)
    max_joint_speed: float = 2.0
    """Fastest joint speed of the setpoint [rad/s] (the RM65 is rated at about 3 rad/s)."""
    position_tolerance: float = 0.001
    """IK must reach the target position within this [m], or the target is refused."""
    orientation_tolerance: float = 0.01
    """IK must reach the target orientation within this [rad], or the target is refused."""
    ik_iterations: int = 100
    ik_damping: float = 0.02
    ik_max_step: float = 0.3
    """Largest joint change per IK iteration [rad]; keeps the solver on the branch it starts on."""

    def __post_init__(self) -> None:
        if not self.max_joint_speed > 0:
            raise ValueError(f"ControllerConfig.max_joint_speed must be > 0 rad/s, got {self.max_joint_speed}")
        if not (self.position_tolerance > 0 and self.orientation_tolerance > 0):
            raise ValueError("ControllerConfig tolerances must be > 0")
        if self.ik_iterations < 1:
            raise ValueError(f"ControllerConfig.ik_iterations must be >= 1, got {self.ik_iterations}")


def quaternion_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle [rad] between two unit quaternions (4,) w, x, y, z."""
    return 2.0 * math.acos(min(1.0, abs(float(np.dot(a, b)))))


class ArmController:
    """Drives a `Scene`'s arm to absolute TCP pose targets; call `apply()` before every physics step."""

    def __init__(self, scene: Scene, config: ControllerConfig | None = None) -> None:
        self.scene = scene
        self.config = config or ControllerConfig()
        # IK runs on its own data so solving never disturbs the simulation state.
        self._ik_data = mujoco.MjData(scene.model)
        self._jacobian_position = np.zeros((3, scene.model.nv))
        self._jacobian_rotation = np.zeros((3, scene.model.nv))
        self.home_quaternion = np.array(TOP_DOWN_QUATERNION)
        self._ik_data.qpos[scene.arm_qpos_addresses] = HOME_SEED
        mujoco.mj_kinematics(scene.model, self._ik_data)
        self.home_position = np.round(self._ik_data.site_xpos[scene.tcp_site], 3)
        self._home, error = self._solve_ik(self.home_position, self.home_quaternion, np.array(HOME_SEED))
        if error is not None:
            raise RuntimeError(f"the home pose has no IK solution: {error}")
        scene.set_home(self._home)
        self.reset()

    def reset(self) -> None:
        """Takes the arm's current joints as the setpoint and targets the home pose, gripper open.

        Right after `Scene.reset()` the arm is at home already, so this holds it there with the exact home
        pose (`home_position`, `home_quaternion`) as the commanded target.
        """
        self._goal = self.scene.arm_qpos()
        self._setpoint = self._goal.copy()
        self.command_pose(self.home_position, self.home_quaternion)
        self.gripper = 1.0

    def command_pose(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        """Sets a new TCP target: position (3,) [m] and quaternion (4,) w, x, y, z in base_link.

        Raises TargetRejectedError (and keeps the previous target) when the target is malformed, outside
        the workspace, or not reachable in that orientation within the joint limits.
        """
        position = np.asarray(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise TargetRejectedError(f"target position must be 3 finite numbers, got {position.tolist()}")
        if quaternion.shape != (4,) or not np.all(np.isfinite(quaternion)):
            raise TargetRejectedError(f"target orientation must be 4 finite numbers, got {quaternion.tolist()}")
        norm = float(np.linalg.norm(quaternion))
        if not 0.9 < norm < 1.1:
            raise TargetRejectedError(f"target orientation must be a unit quaternion, got norm {norm:.3f}")
        quaternion = quaternion / norm
        reason = self.config.workspace.violation(position)
        if reason is not None:
            raise TargetRejectedError(reason)
        solution, error = self._solve_ik(position, quaternion, self._goal)
        if error is not None:
            # Streaming from the previous goal keeps the arm's branch; a jump may need a fresh start.
            solution, error = self._solve_ik(position, quaternion, self._home)
        if error is not None:
            raise TargetRejectedError(f"target {np.round(position, 3).tolist()} is not reachable: {error}")
        self._goal = solution
        self.target_position, self.target_quaternion = position, quaternion

    def command_gripper(self, opening: float) -> None:
        """Sets the gripper opening, 0.0 = closed .. 1.0 = fully open (8 cm)."""
        if not (math.isfinite(opening) and 0.0 <= opening <= 1.0):
            raise TargetRejectedError(f"gripper opening must be in [0, 1] (0 closed .. 1 open), got {opening}")
        self.gripper = float(opening)

    def apply(self) -> None:
        """Moves the joint setpoint one physics step toward the goal and writes the actuator controls."""
        step = self._goal - self._setpoint
        largest = float(np.max(np.abs(step)))
        allowed = self.config.max_joint_speed * self.scene.model.opt.timestep
        if largest > allowed:
            step *= allowed / largest
        self._setpoint += step
        data = self.scene.data
        data.ctrl[self.scene.arm_actuators] = self._setpoint
        data.ctrl[self.scene.finger_actuators] = self.gripper * FINGER_TRAVEL

    def step(self, count: int = 1) -> None:
        """Advances the physics by `count` steps under this controller."""
        for _ in range(count):
            self.apply()
            self.scene.step()

    def _solve_ik(
        self, position: np.ndarray, quaternion: np.ndarray, seed: np.ndarray
    ) -> tuple[np.ndarray, str | None]:
        """Joint angles (6,) reaching the pose from `seed`, and None, or the best try and why it failed."""
        model, data, scene, config = self.scene.model, self._ik_data, self.scene, self.config
        low, high = scene.arm_joint_limits[:, 0], scene.arm_joint_limits[:, 1]
        joints = np.clip(np.array(seed, dtype=float), low, high)
        current_quaternion = np.empty(4)
        conjugate = np.empty(4)
        difference = np.empty(4)
        rotation_error = np.empty(3)
        damping = config.ik_damping**2 * np.eye(6)
        position_error = np.zeros(3)
        for _ in range(config.ik_iterations):
            data.qpos[scene.arm_qpos_addresses] = joints
            mujoco.mj_kinematics(model, data)
            position_error = position - data.site_xpos[scene.tcp_site]
            mujoco.mju_mat2Quat(current_quaternion, data.site_xmat[scene.tcp_site])
            mujoco.mju_negQuat(conjugate, current_quaternion)
            mujoco.mju_mulQuat(difference, quaternion, conjugate)
            mujoco.mju_quat2Vel(rotation_error, difference, 1.0)
            if (
                np.linalg.norm(position_error) < config.position_tolerance
                and np.linalg.norm(rotation_error) < config.orientation_tolerance
            ):
                return joints, None
            mujoco.mj_comPos(model, data)
            mujoco.mj_jacSite(model, data, self._jacobian_position, self._jacobian_rotation, scene.tcp_site)
            jacobian = np.vstack(
                (
                    self._jacobian_position[:, scene.arm_dof_addresses],
                    self._jacobian_rotation[:, scene.arm_dof_addresses],
                )
            )
            error = np.concatenate((position_error, rotation_error))
            delta = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping, error)
            largest = float(np.max(np.abs(delta)))
            if largest > config.ik_max_step:
                delta *= config.ik_max_step / largest
            joints = np.clip(joints + delta, low, high)
        return joints, (
            f"no joint solution within the joint limits (closest: position error "
            f"{1000 * np.linalg.norm(position_error):.1f} mm, orientation error "
            f"{math.degrees(np.linalg.norm(rotation_error)):.1f} deg)"
        )
