"""Closed loop without ROS: a contract policy drives the simulated arm in lockstep simulated time.

For the ladder of issue 12: does a model that heads for the named object also grasp it and lift it? Each
chunk is executed as the arm bridge does in sync mode, in one process and without the bridge's 25 Hz
interpolation (the simulated controller's joint-speed limit smooths the motion):

1. render the camera frame and read the measured TCP pose (the chunk's T_-1, as the bridge anchors it);
2. ask the policy; clamp each row's step to the bridge's default `SafetyLimits` (translation and rotation);
3. integrate the first `execute_rows` rows from that pose (`action_convention.integrate_deltas`) and command
   them one `time_step` apart, the gripper column through the bridge's `safety.gripper_command` (0 closed, 1 open);
4. stop on the task's success check or at the time limit (simulated seconds).

A target the simulated controller refuses (outside its workspace, no IK solution) keeps the previous one and is
counted. The policy's thinking time costs no simulated time, so the results do not depend on the machine's load.
The targets of issue 12 are measured by `videovla-eval` through the ROS nodes; this loop is the quick probe
(about 1 s of wall time per simulated second for the small checkpoints on one core).

    OMP_NUM_THREADS=1 scripts/with_env.sh python benchmarks/closed_loop.py --checkpoint runs/x/final --episodes 20
    OMP_NUM_THREADS=1 scripts/with_env.sh python benchmarks/closed_loop.py --policy expert --episodes 20
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from transforms3d.quaternions import mat2quat

from videovla_model.action_convention import integrate_deltas, quaternion_to_matrix
from videovla_model.contract import Observation, Policy
from videovla_ros.evaluation_report import wilson_interval
from videovla_ros.safety import SafetyLimits, clamp_steps, gripper_command
from videovla_sim.controller import TargetRejectedError
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.expert_policy import ExpertPolicy
from videovla_sim.scene import SceneConfig
from videovla_sim.scene_state import SceneState


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    sim_seconds: float
    chunks: int
    held_named: bool
    """The named object was pinched off the table at some point."""
    held_other: bool
    """Another object was pinched off the table at some point."""
    rejected_targets: int
    clamped_rows: int
    closes: int
    """How often the gripper was commanded from open to closed (grasp attempts)."""
    close_offset_mm: float
    """At the first close: horizontal distance from the TCP to the named object (nan: never closed)."""
    close_height_mm: float
    """At the first close: TCP height above the named object's centre (nan: never closed)."""


def run_episode(
    env: TabletopEnv, policy: Policy, task: str, seed: int, time_limit: float, limits: SafetyLimits
) -> EpisodeResult:
    """One episode of `task` (family or instruction) from `seed`; see the module docstring for the steps."""
    setup = env.reset(task, seed)
    metadata = policy.metadata
    gripper = metadata.action_dim_names.index("gripper")
    named = setup.spec(setup.task.target).name
    held: set[str] = set()
    chunks = rejected = clamped = closes = 0
    close_offset = close_height = math.nan
    was_open = True
    success = False
    while not success and env.time < time_limit - 1e-9:
        # 1. frame and anchor pose at the same instant
        frame = env.render()
        position, quaternion = env.scene.tcp_pose()
        # 2. the chunk, clamped as the bridge clamps it
        actions = policy.infer(Observation(image=frame, instruction=setup.instruction)).actions
        rows = actions[: metadata.execute_rows]
        deltas, reasons = clamp_steps(rows[:, :6], limits)
        clamped += len(reasons)
        chunks += 1
        # 3. execute the rows one time step apart
        positions, rotations = integrate_deltas(position, quaternion_to_matrix(quaternion), deltas)
        for target_position, rotation, opening in zip(positions, rotations, rows[:, gripper], strict=True):
            try:
                env.controller.command_pose(target_position, mat2quat(rotation))
            except TargetRejectedError:
                rejected += 1
            opening, _ = gripper_command(float(opening), limits)
            env.controller.command_gripper(opening)
            if was_open and opening == 0.0:
                closes += 1
                if closes == 1:
                    close_offset, close_height = _offset_mm(env, named)
            was_open = opening == 1.0
            env.advance(metadata.time_step)
            held.update(env.grasped_objects())
            # 4. stop at success
            success = env.success()
            if success or env.time >= time_limit - 1e-9:
                break
    return EpisodeResult(
        seed=seed,
        instruction=setup.instruction,
        success=success,
        sim_seconds=env.time,
        chunks=chunks,
        held_named=named in held,
        held_other=bool(held - {named}),
        rejected_targets=rejected,
        clamped_rows=clamped,
        closes=closes,
        close_offset_mm=close_offset,
        close_height_mm=close_height,
    )


def _offset_mm(env: TabletopEnv, name: str) -> tuple[float, float]:
    """(horizontal distance, height) of the TCP from the object `name`'s centre, in mm."""
    tcp, _ = env.scene.tcp_pose()
    centre, _ = env.scene.object_pose(name)
    return 1000 * float(np.hypot(*(tcp[:2] - centre[:2]))), 1000 * float(tcp[2] - centre[2])


def expert_in_process(env: TabletopEnv, task: str) -> ExpertPolicy:
    """The scripted expert reading the live scene (the ceiling of this loop, as `videovla-eval --policy expert`)."""
    return ExpertPolicy(lambda: SceneState.capture(env.scene, env.setup, task, round(env.time * 1e9)))


def episode_row(result: EpisodeResult) -> str:
    """One episode: outcome, what was held, where the gripper first closed, what the safety layers changed."""
    return (
        f"  seed {result.seed:3d} {'SUCCESS' if result.success else 'failure'} {result.sim_seconds:5.1f} s "
        f"held named {result.held_named!s:5} other {result.held_other!s:5} closes {result.closes} "
        f"first at {result.close_offset_mm:.0f} mm, {result.close_height_mm:+.0f} mm "
        f"rejected {result.rejected_targets} clamped {result.clamped_rows}  {result.instruction!r}"
    )


def summary(label: str, results: list[EpisodeResult], wall_seconds: float) -> str:
    """One row: successes with the 95% interval, how often the named / another object was held, timing."""
    wins = sum(r.success for r in results)
    low, high = wilson_interval(wins, len(results))
    named = sum(r.held_named for r in results)
    other = sum(r.held_other for r in results)
    return (
        f"{label}: {wins}/{len(results)} success ({100 * low:.0f}-{100 * high:.0f}%), held named {named}, "
        f"held another {other}, {wall_seconds / max(len(results), 1):.1f} s wall per episode"
    )


def evaluate(
    make_policy: Callable[[TabletopEnv], Policy],
    task: str,
    seeds: range,
    time_limit: float,
    image_size: int,
    verbose: bool = True,
) -> list[EpisodeResult]:
    """Runs `seeds`; `make_policy(env)` returns the policy (the expert needs the env, a model does not)."""
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=image_size, image_width=image_size)))
    limits = SafetyLimits()
    results = []
    try:
        policy = make_policy(env)
        for seed in seeds:
            result = run_episode(env, policy, task, seed, time_limit, limits)
            results.append(result)
            if verbose:
                print(episode_row(result), flush=True)
    finally:
        env.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="VideoVLA checkpoint folder")
    source.add_argument("--policy", choices=("expert",), help="the scripted expert instead of a checkpoint")
    parser.add_argument("--task", default="pick", help="task family or instruction")
    parser.add_argument("--episodes", type=int, default=20, help="episodes, seeds --seed .. --seed + N - 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=30.0, help="simulated seconds per episode")
    parser.add_argument("--image-size", type=int, default=64, help="camera size [px] (videovla-eval's default)")
    parser.add_argument("--num-inference-steps", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=None)
    args = parser.parse_args(argv)
    if args.policy == "expert":
        label = "expert"

        def make_policy(env: TabletopEnv) -> Policy:
            return expert_in_process(env, args.task)
    else:
        from videovla_model.policy import load_policy

        label = args.checkpoint

        def make_policy(env: TabletopEnv) -> Policy:
            del env
            return load_policy(
                args.checkpoint,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
                seed=0,
            )

    started = time.monotonic()
    results = evaluate(
        make_policy, args.task, range(args.seed, args.seed + args.episodes), args.time_limit, args.image_size
    )
    print(summary(label, results, time.monotonic() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
