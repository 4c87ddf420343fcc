"""A scripted expert that solves the tasks from privileged simulator state, one TCP target per action step.

It plays a fixed script of phases (approach above the object, descend, close, lift, and for place/stack:
carry, lower, release, retreat), moving its commanded target toward each phase's goal at a bounded speed,
so consecutive targets are the small, smooth steps a policy is trained to predict. The gripper is always
top-down; only its yaw turns, to square the fingers with a cube's faces (or a stacked cube with the one
below). If the object is not between the fingers after the lift, it goes back and grasps again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from videovla_model.action_convention import matrix_to_quaternion, quaternion_to_matrix
from videovla_sim.scene import SHAPES, TOP_DOWN_QUATERNION
from videovla_sim.scene_state import SceneView
from videovla_sim.tasks import EpisodeSetup, object_yaw


@dataclass(frozen=True)
class ExpertConfig:
    max_speed: float = 0.15
    """TCP target speed [m/s]."""
    max_yaw_rate: float = 1.2
    """Gripper yaw rate [rad/s]."""
    approach_height: float = 0.09
    """Height above the grasp point where the descent starts [m]."""
    lift_height: float = 0.17
    """TCP height after lifting (pick) and while carrying (place, stack) [m]."""
    grasp_wait_steps: int = 4
    """Steps to hold still after closing, so the fingers settle on the object."""
    release_wait_steps: int = 3
    hold_steps: int = 3
    """Steps to hold at the end."""
    place_clearance: float = 0.006
    """The held object is lowered to this height above its resting place before release [m]."""
    max_regrasps: int = 2


@dataclass(frozen=True)
class ExpertTarget:
    position: np.ndarray
    """(3,) TCP target in base_link [m]."""
    quaternion: np.ndarray
    """(4,) w, x, y, z."""
    gripper: float
    """0 closed .. 1 open."""


@dataclass(frozen=True)
class _Phase:
    name: str
    goal: Callable[[], tuple[np.ndarray, float]]
    """Returns the TCP goal position (3,) and yaw [rad]."""
    gripper: float
    wait: int = 0


def top_down_yaw(quaternion: np.ndarray) -> float:
    """Yaw psi of a top-down TCP orientation Rz(psi) @ TOP_DOWN (w, x, y, z quaternion in)."""
    rotation = quaternion_to_matrix(quaternion)
    return math.atan2(-rotation[0, 1], rotation[1, 1])


def top_down_quaternion(yaw: float) -> np.ndarray:
    """Rz(yaw) @ TOP_DOWN as a (4,) w, x, y, z quaternion."""
    c, s = math.cos(yaw), math.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return matrix_to_quaternion(rz @ quaternion_to_matrix(np.array(TOP_DOWN_QUATERNION)))


def _nearest_square_yaw(face_yaw: float, reference: float) -> float:
    """The yaw face_yaw + k * pi/2 closest to `reference` (a cube looks the same every quarter turn)."""
    quarter = math.pi / 2
    return reference + (face_yaw - reference + quarter / 2) % quarter - quarter / 2


class ScriptedExpert:
    """Call `act()` once per action step; `done` turns true when the script has finished."""

    def __init__(
        self,
        setup: EpisodeSetup,
        scene: SceneView,
        start_position: np.ndarray,
        start_quaternion: np.ndarray,
        time_step: float,
        config: ExpertConfig | None = None,
    ) -> None:
        self.setup = setup
        self.scene = scene
        self.config = config or ExpertConfig()
        self._step_length = self.config.max_speed * time_step
        self._yaw_step = self.config.max_yaw_rate * time_step
        self._position = np.array(start_position, dtype=float)
        self._yaw = top_down_yaw(start_quaternion)
        self._gripper = 1.0
        self._target = setup.spec(setup.task.target)
        self._grasp_height = max(self._target.half_height, 0.02)
        self._regrasps = 0
        self._frozen: dict[str, tuple[np.ndarray, float]] = {}
        self._phases = self._script()
        self._index = 0
        self._waited = 0

    @property
    def done(self) -> bool:
        return self._index >= len(self._phases)

    @property
    def phase(self) -> str:
        return self._phases[self._index].name if not self.done else "done"

    def _object_xy(self, name: str) -> np.ndarray:
        return self.scene.object_pose(name)[0][:2]

    def _grasp_yaw(self) -> float:
        if self._target.kind == "cube":
            return _nearest_square_yaw(object_yaw(self.scene, self._target.name), self._yaw)
        return self._yaw

    def _once(self, key: str, compute: Callable[[], tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
        """A goal computed on the phase's first step and then kept (so it does not chase its own effects)."""
        if key not in self._frozen:
            self._frozen[key] = compute()
        return self._frozen[key]

    def _script(self) -> list[_Phase]:
        config, name = self.config, self._target.name

        def above_object() -> tuple[np.ndarray, float]:
            yaw = self._once("grasp_yaw", lambda: (np.zeros(3), self._grasp_yaw()))[1]
            x, y = self._object_xy(name)
            return np.array([x, y, self._grasp_height + config.approach_height]), yaw

        def at_object() -> tuple[np.ndarray, float]:
            x, y = self._object_xy(name)
            return np.array([x, y, self._grasp_height]), above_object()[1]

        def lifted() -> tuple[np.ndarray, float]:
            return self._once("lift", lambda: (np.array([*self._position[:2], config.lift_height]), self._yaw))

        phases = [
            _Phase("approach", above_object, 1.0),
            _Phase("descend", at_object, 1.0),
            _Phase(
                "close",
                lambda: self._once("close", lambda: (self._position.copy(), self._yaw)),
                0.0,
                config.grasp_wait_steps,
            ),
            _Phase("lift", lifted, 0.0, 1),
        ]
        destination = self.setup.task.destination
        if destination is None:
            phases.append(_Phase("hold", lifted, 0.0, config.hold_steps))
            return phases
        spec = self.setup.spec(destination)

        def above_destination() -> tuple[np.ndarray, float]:
            def aligned_yaw() -> tuple[np.ndarray, float]:
                if spec.kind == "cube" and self._target.kind in SHAPES:
                    return np.zeros(3), _nearest_square_yaw(object_yaw(self.scene, spec.name), self._yaw)
                return np.zeros(3), self._yaw

            yaw = self._once("place_yaw", aligned_yaw)[1]
            x, y = self._object_xy(spec.name)
            return np.array([x, y, config.lift_height]), yaw

        def placing() -> tuple[np.ndarray, float]:
            def compute() -> tuple[np.ndarray, float]:
                # How far the held object hangs below the TCP, measured now, sets the release height.
                tcp, _ = self.scene.tcp_pose()
                held = self.scene.object_pose(name)[0][2] - self._target.half_height
                support = self.scene.object_pose(spec.name)[0][2] + spec.half_height
                height = support + (tcp[2] - held) + config.place_clearance
                return np.array([*self._object_xy(spec.name), height]), above_destination()[1]

            return self._once("place", compute)

        def retreat() -> tuple[np.ndarray, float]:
            position, yaw = placing()
            return position + np.array([0.0, 0.0, 0.08]), yaw

        phases += [
            _Phase("carry", above_destination, 0.0),
            _Phase("lower", placing, 0.0),
            _Phase("release", placing, 1.0, config.release_wait_steps),
            _Phase("retreat", retreat, 1.0, config.hold_steps),
        ]
        return phases

    def _regrasp_needed(self) -> bool:
        return (
            self._phases[self._index].name == "lift"
            and not self.scene.fingers_touch(self._target.name)
            and self._regrasps < self.config.max_regrasps
        )

    def displace(self, offset: np.ndarray) -> None:
        """Moves the commanded target by `offset` (3,) [m]; the next `act()` steers on from there.

        Recording uses it to inject noise (DART, Laskey et al. 2017): the executed targets leave the expert's
        path and the recorded actions show how to get back, states a policy reaches after its own errors.
        """
        self._position = self._position + np.asarray(offset, dtype=float)

    def observe(self, scene: SceneView) -> None:
        """Plans on from a new snapshot of the scene, starting at its measured TCP pose.

        A policy wrapper calls it before each chunk: the deltas of a chunk are applied from the measured pose
        at the image's capture time, so the script must step from there rather than from its own last target.
        """
        self.scene = scene
        position, quaternion = scene.tcp_pose()
        self._position = np.array(position, dtype=float)
        self._yaw = top_down_yaw(quaternion)

    def act(self) -> ExpertTarget:
        """The next commanded target (after `done`, the last one again)."""
        if not self.done:
            phase = self._phases[self._index]
            goal, goal_yaw = phase.goal()
            offset = goal - self._position
            distance = float(np.linalg.norm(offset))
            if distance > self._step_length:
                offset *= self._step_length / distance
            self._position = self._position + offset
            yaw_offset = goal_yaw - self._yaw
            self._yaw += float(np.clip(yaw_offset, -self._yaw_step, self._yaw_step))
            self._gripper = phase.gripper
            if distance <= self._step_length and abs(yaw_offset) <= self._yaw_step:
                if self._waited >= phase.wait:
                    if self._regrasp_needed():
                        self._regrasps += 1
                        self._frozen.clear()
                        self._index = 0
                    else:
                        self._index += 1
                    self._waited = 0
                else:
                    self._waited += 1
        return ExpertTarget(self._position.copy(), top_down_quaternion(self._yaw), self._gripper)
