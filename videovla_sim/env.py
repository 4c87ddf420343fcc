"""The simulated arm as one object: scene + controller + task, reset per episode from (task, seed).

The ROS node, the recorder and evaluation scripts all drive the simulation through `TabletopEnv`, so they
see the same physics, the same controller and the same success check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from videovla_sim.controller import ArmController, ControllerConfig
from videovla_sim.scene import Scene, SceneConfig
from videovla_sim.tasks import (
    EpisodeSetup,
    ObjectRef,
    PlacementConfig,
    check_success,
    grasped_objects,
    sample_episode,
    with_target,
)


@dataclass(frozen=True)
class EnvConfig:
    scene: SceneConfig = field(default_factory=SceneConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)


class TabletopEnv:
    """One simulated arm; `reset(task, seed)` starts an episode, `advance(seconds)` runs the physics.

    Not thread-safe: one thread resets, commands, advances and renders.
    """

    def __init__(self, config: EnvConfig | None = None) -> None:
        self.config = config or EnvConfig()
        self._scene: Scene | None = None
        self._controller: ArmController | None = None
        self._setup: EpisodeSetup | None = None

    @property
    def scene(self) -> Scene:
        if self._scene is None:
            raise RuntimeError("TabletopEnv.reset(task, seed) must be called before using the scene")
        return self._scene

    @property
    def controller(self) -> ArmController:
        if self._controller is None:
            raise RuntimeError("TabletopEnv.reset(task, seed) must be called before using the controller")
        return self._controller

    @property
    def setup(self) -> EpisodeSetup:
        if self._setup is None:
            raise RuntimeError("TabletopEnv.reset(task, seed) must be called before asking for the episode")
        return self._setup

    def reset(self, task: str, seed: int, target: ObjectRef | None = None) -> EpisodeSetup:
        """Starts an episode: objects placed from (task, seed), arm at home holding, gripper open.

        task: a family name ("pick", "place", "stack") or a full instruction ("pick up the red cube").
        target: for pick, name this object of the seeded layout instead of the seed's own (`tasks.with_target`).
        Raises tasks.InstructionError for a task it does not know; the previous episode then stays.
        """
        setup = sample_episode(task, seed, self.config.placement)
        if target is not None:
            setup = with_target(setup, target)
        self.close()
        self._scene = Scene(setup.objects, self.config.scene)
        self._controller = ArmController(self._scene, self.config.controller)
        self._setup = setup
        return setup

    @property
    def time(self) -> float:
        """Simulated seconds since the episode started."""
        return self.scene.time

    def advance(self, seconds: float) -> int:
        """Runs the physics under the controller for `seconds` (rounded to whole steps); returns the steps."""
        steps = round(seconds / self.scene.model.opt.timestep)
        self.controller.step(steps)
        return steps

    def success(self) -> bool:
        return check_success(self.setup, self.scene)

    def grasped_objects(self) -> tuple[str, ...]:
        """Names of the objects the gripper holds off the table (see `tasks.grasped_objects`)."""
        return grasped_objects(self.setup, self.scene)

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB camera image."""
        return self.scene.render()

    def close(self) -> None:
        if self._scene is not None:
            self._scene.close()
