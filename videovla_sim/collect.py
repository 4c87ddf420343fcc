"""Records scripted-expert demonstrations in the suite's episode format (`videovla-collect`).

Each step t: the camera frame is captured, the expert commands its next TCP target T_t, and the physics
runs for one action period. The stored action of step t is the per-step delta from the previous commanded
target T_{t-1} to T_t (see `videovla_model.action_convention`; T_{-1} is the home target the episode starts at) plus
the commanded gripper value, so it is exactly what a policy chunk row means: the target reached one step
after the frame it was predicted from.

Noise injection (`--position-noise`, DART): while the expert approaches and descends to the object, each
executed target is pushed sideways by Gaussian noise and the expert plans on from where it was pushed to.
The recorded action of such a step is the expert's own step (from the previous executed target to its
noise-free target), so the data shows how to recover from small errors without teaching the noise.

Example::

    videovla-collect --output data/sim --tasks pick place --episodes 50 --image-size 96
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
import tyro

from videovla_model.action_convention import pose_deltas, quaternion_to_matrix
from videovla_model.cli import parse
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.episodes import EpisodeWriter
from videovla_sim.controller import TargetRejectedError
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.expert import ExpertConfig, ScriptedExpert
from videovla_sim.scene import SceneConfig
from videovla_sim.tasks import TASK_FAMILIES, EpisodeSetup, InstructionError, ObjectRef, sample_episode

# Phases in which the expert corrects a sideways push on its next step; later phases hold or lift in place.
NOISY_PHASES = ("approach", "descend")
# Second element of the noise generator's seed, so its stream differs from the task's placement stream.
NOISE_STREAM = 0x5EED


def check_position_noise(position_noise: float) -> None:
    """Raises ValueError unless `position_noise` is a usable noise standard deviation [m]."""
    if not (math.isfinite(position_noise) and position_noise >= 0):
        raise ValueError(f"position_noise must be a finite number >= 0 m, got {position_noise}")


# Long enough for the slowest scripted place with two regrasps at 10 Hz, short enough to end a stuck episode.
DEFAULT_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Recording:
    """One expert episode."""

    setup: EpisodeSetup
    frames: np.ndarray | None
    """(T, H, W, 3) uint8 RGB, frame t captured before action t; None when recorded without rendering."""
    actions: np.ndarray
    """(T, 7) float32: dx, dy, dz, droll, dpitch, dyaw, gripper (DEFAULT_ACTION_DIM_NAMES)."""
    target_positions: np.ndarray
    """(T + 1, 3) commanded TCP positions, the starting target first [m]."""
    target_quaternions: np.ndarray
    """(T + 1, 4) commanded TCP orientations (w, x, y, z), the starting target first."""
    success: bool
    failure: str
    """Why the episode failed ("" on success)."""
    action_rate_hz: float
    seconds: float
    """Wall time the recording took."""
    position_noise: float = 0.0
    """Standard deviation of the injected sideways target noise [m per step] (0: none)."""

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    def extra(self) -> dict[str, object]:
        """What goes into the episode's `extra`: task, seed, placement, start target, outcome."""
        return {
            **self.setup.to_json(),
            "source": "videovla_sim scripted expert",
            "frame_id": "base_link",
            "start_target": {
                "position": self.target_positions[0].tolist(),
                "quaternion_wxyz": self.target_quaternions[0].tolist(),
            },
            "failure": self.failure,
            "position_noise": self.position_noise,
        }


def record_episode(
    env: TabletopEnv,
    task: str,
    seed: int,
    *,
    action_rate_hz: float = 10.0,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    expert_config: ExpertConfig | None = None,
    render: bool = True,
    position_noise: float = 0.0,
    target: ObjectRef | None = None,
) -> Recording:
    """Resets `env` to (task, seed) and lets the expert play it to the end (or `max_seconds`).

    position_noise: standard deviation [m] of the sideways noise added to each executed target while the
    expert approaches and descends (see the module docstring); 0 records the expert's own path.
    target: for pick, the object of the seeded layout to name and pick instead of the seed's own.
    """
    check_position_noise(position_noise)
    started = time.perf_counter()
    setup = env.reset(task, seed, target)
    time_step = 1.0 / action_rate_hz
    controller = env.controller
    expert = ScriptedExpert(
        setup, env.scene, controller.target_position, controller.target_quaternion, time_step, expert_config
    )
    noise = np.random.default_rng([seed, NOISE_STREAM])
    positions = [controller.target_position.copy()]
    expert_positions: list[np.ndarray] = []
    quaternions = [controller.target_quaternion.copy()]
    grippers: list[float] = []
    frames: list[np.ndarray] = []
    failure = ""
    for _step in range(round(max_seconds * action_rate_hz)):
        if expert.done:
            break
        if render:
            frames.append(env.render())
        target = expert.act()
        executed = target.position
        if position_noise > 0 and expert.phase in NOISY_PHASES:
            offset = np.array([*noise.normal(0.0, position_noise, 2), 0.0])
            expert.displace(offset)
            executed = target.position + offset
        try:
            controller.command_pose(executed, target.quaternion)
            controller.command_gripper(target.gripper)
        except TargetRejectedError as error:
            failure = f"controller refused the expert's target in phase {expert.phase}: {error}"
            if render:
                frames.pop()
            break
        positions.append(executed)
        expert_positions.append(target.position)
        quaternions.append(target.quaternion)
        grippers.append(target.gripper)
        env.advance(time_step)
    else:
        failure = f"the expert did not finish within {max_seconds} s (stuck in phase {expert.phase})"
    success = not failure and env.success()
    if not failure and not success:
        failure = "the expert finished but the task's success check failed"
    target_positions = np.array(positions)
    target_quaternions = np.array(quaternions)
    rotations = np.array([quaternion_to_matrix(q) for q in target_quaternions])
    deltas = pose_deltas(target_positions, rotations) if grippers else np.zeros((0, 6))
    if grippers:
        # The expert's own step from where it was, not the noise it was pushed by.
        deltas[:, :3] = np.array(expert_positions) - target_positions[:-1]
    actions = np.concatenate((deltas, np.array(grippers).reshape(-1, 1)), axis=1).astype(np.float32)
    return Recording(
        setup=setup,
        frames=np.stack(frames) if render and frames else None,
        actions=actions,
        target_positions=target_positions,
        target_quaternions=target_quaternions,
        success=bool(success),
        failure=failure,
        action_rate_hz=action_rate_hz,
        seconds=time.perf_counter() - started,
        position_noise=position_noise,
    )


@dataclass(frozen=True)
class CollectConfig:
    """One `videovla-collect` run; each field is a flag (`videovla-collect --help`)."""

    output: str
    """dataset folder (created; episodes are appended)"""
    tasks: tuple[str, ...] = TASK_FAMILIES
    """task families or full instructions in quotes"""
    episodes: int = 10
    """seeded episodes per task"""
    seed: int = 0
    """seed of each task's first episode"""
    image_size: Annotated[tuple[int, ...], tyro.conf.arg(metavar="SIZE|HEIGHT WIDTH")] = (96,)
    """camera image size [px]: SIZE or HEIGHT WIDTH"""
    action_rate: float = 10.0
    """actions (and frames) per second"""
    max_seconds: float = DEFAULT_MAX_SECONDS
    """episode time limit [s]"""
    position_noise: float = 0.0
    """std of sideways noise on executed targets while approaching [m] (DART; 0: none)"""
    keep_failures: bool = False
    """also store failed episodes (success=false)"""
    embodiment_id: int = 0
    """embodiment id stored with every episode"""
    name_each_object: bool = False
    """pick: record each seeded layout once per object in it, naming each in turn (same scene, other chunks)"""

    def __post_init__(self) -> None:
        if self.name_each_object and set(self.tasks) != {"pick"}:
            raise ValueError(f"name_each_object needs tasks pick only, got {list(self.tasks)}")
        if len(self.image_size) not in (1, 2):
            raise ValueError(f"image_size takes SIZE or HEIGHT WIDTH, got {list(self.image_size)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not self.action_rate > 0:
            raise ValueError(f"action_rate must be > 0 Hz, got {self.action_rate}")
        check_position_noise(self.position_noise)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) [px]."""
        height, width = (self.image_size * 2)[:2]
        return height, width


def episode_targets(task: str, seed: int, env: TabletopEnv, name_each_object: bool) -> list[ObjectRef | None]:
    """What each recording of (task, seed) names: the seed's own target, or every object of its layout."""
    if not name_each_object:
        return [None]
    setup = sample_episode(task, seed, env.config.placement)
    return [ObjectRef(spec.colour, spec.kind) for spec in setup.objects]


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code (1 when a task had no successful episode)."""
    config = parse(
        CollectConfig,
        argv,
        prog="videovla-collect",
        description="Record scripted-expert demonstrations of the simulated arm.",
    )
    height, width = config.image_shape
    try:
        scene_config = SceneConfig(image_height=height, image_width=width)
    except ValueError as error:
        print(f"videovla-collect: {error}", file=sys.stderr)
        return 2
    env = TabletopEnv(replace(EnvConfig(), scene=scene_config))
    writer = EpisodeWriter(config.output)
    exit_code = 0
    try:
        for task in config.tasks:
            successes, steps, seconds = 0, [], 0.0
            runs = [
                (seed, target)
                for seed in range(config.seed, config.seed + config.episodes)
                for target in episode_targets(task, seed, env, config.name_each_object)
            ]
            for seed, target in runs:
                try:
                    recording = record_episode(
                        env,
                        task,
                        seed,
                        action_rate_hz=config.action_rate,
                        max_seconds=config.max_seconds,
                        position_noise=config.position_noise,
                        target=target,
                    )
                except InstructionError as error:  # an unknown task: no other seed would work either
                    print(f"videovla-collect: task {task!r}: {error}", file=sys.stderr)
                    return 2
                seconds += recording.seconds
                successes += recording.success
                if recording.success:
                    steps.append(recording.num_steps)
                else:
                    print(f"  {task} seed {seed}: failed: {recording.failure}")
                if (recording.success or config.keep_failures) and recording.frames is not None:
                    writer.write(
                        recording.frames,
                        recording.actions,
                        recording.setup.instruction,
                        recording.action_rate_hz,
                        embodiment_id=config.embodiment_id,
                        action_dim_names=DEFAULT_ACTION_DIM_NAMES,
                        success=recording.success,
                        extra=recording.extra(),
                    )
            mean_steps = float(np.mean(steps)) if steps else 0.0
            print(
                f"{task}: {successes}/{len(runs)} successful, mean length {mean_steps:.1f} steps, "
                f"{seconds / len(runs):.2f} s per episode"
            )
            if successes == 0:
                exit_code = 1
    finally:
        env.close()
    print(f"wrote episodes to {config.output}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
