"""Privileged simulator state: what the scripted expert reads and a learned policy must never see.

A `SceneState` is a snapshot of one simulated instant (the episode's task and seed, every object's pose, the
TCP pose, which objects the finger pads pinch) that can travel as JSON. The simulated arm node publishes one
with every camera frame on `sim_arm/scene_state`, stamped like the frame, so a scripted expert in another
process plans from the same instant the policy node's image shows. It offers the read-only part of
`videovla_sim.scene.Scene` that `ScriptedExpert` and `tasks.object_yaw` use (`SceneView`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from videovla_sim.scene import SHAPES
from videovla_sim.tasks import EpisodeSetup

MAX_STATE_CHARS = 16_384
"""A scene state message longer than this is refused unread (a few objects need well under 2 kB)."""


class SceneView(Protocol):
    """The read-only scene queries a scripted expert needs (a live `Scene` or a `SceneState`)."""

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]: ...

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...

    def fingers_touch(self, name: str) -> bool: ...


@dataclass(frozen=True)
class SceneState:
    """One simulated instant. Positions in base_link [m], quaternions (w, x, y, z)."""

    stamp_ns: int
    """ROS time of the instant (the camera frame published with it carries the same stamp)."""
    task: str
    """The node's task parameter (a family or an instruction), so `sample_episode(task, seed)` rebuilds the setup."""
    seed: int
    instruction: str
    tcp: tuple[tuple[float, ...], tuple[float, ...]]
    objects: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]
    touching: tuple[str, ...]
    """Objects both finger pads touch."""

    @classmethod
    def capture(cls, scene: Any, setup: EpisodeSetup, task: str, stamp_ns: int) -> SceneState:
        """Snapshot of a live `videovla_sim.scene.Scene` playing `setup`."""
        position, quaternion = scene.tcp_pose()
        objects = {}
        for spec in setup.objects:
            object_position, object_quaternion = scene.object_pose(spec.name)
            objects[spec.name] = (tuple(map(float, object_position)), tuple(map(float, object_quaternion)))
        touching = tuple(s.name for s in setup.objects if s.kind in SHAPES and scene.fingers_touch(s.name))
        return cls(
            stamp_ns=int(stamp_ns),
            task=task,
            seed=setup.seed,
            instruction=setup.instruction,
            tcp=(tuple(map(float, position)), tuple(map(float, quaternion))),
            objects=objects,
            touching=touching,
        )

    # ---- SceneView ---------------------------------------------------------------------------------------
    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.tcp[0]), np.array(self.tcp[1])

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.objects:
            raise KeyError(f"scene state has no object {name!r}; it has {sorted(self.objects)}")
        position, quaternion = self.objects[name]
        return np.array(position), np.array(quaternion)

    def fingers_touch(self, name: str) -> bool:
        return name in self.touching

    # ---- JSON --------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "stamp_ns": self.stamp_ns,
                "task": self.task,
                "seed": self.seed,
                "instruction": self.instruction,
                "tcp": self.tcp,
                "objects": self.objects,
                "touching": self.touching,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SceneState:
        """Parses `to_json`'s output; raises ValueError naming the field that is missing or malformed."""
        if len(text) > MAX_STATE_CHARS:
            raise ValueError(f"scene state must be at most {MAX_STATE_CHARS} characters, got {len(text)}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"scene state is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"scene state must be a JSON object, got {type(data).__name__}")
        try:
            return cls(
                stamp_ns=_integer(data, "stamp_ns"),
                task=_text(data, "task"),
                seed=_integer(data, "seed"),
                instruction=_text(data, "instruction"),
                tcp=_pose(data["tcp"], "tcp"),
                objects={str(name): _pose(pose, f"objects.{name}") for name, pose in dict(data["objects"]).items()},
                touching=tuple(str(name) for name in data["touching"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"scene state field {error} is missing or of the wrong type") from error


def _integer(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"scene state field {name} must be an integer, got {str(value)[:40]!r}")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"scene state field {name} must be a non-empty string, got {str(value)[:40]!r}")
    return value


def _pose(value: Any, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """[[x, y, z], [w, x, y, z]] with finite numbers."""
    try:
        position, quaternion = (tuple(float(v) for v in part) for part in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scene state field {name} must be [[x, y, z], [w, x, y, z]]: {error}") from error
    if len(position) != 3 or len(quaternion) != 4 or not all(map(math.isfinite, position + quaternion)):
        raise ValueError(f"scene state field {name} must be [[x, y, z], [w, x, y, z]] of finite numbers")
    return position, quaternion
