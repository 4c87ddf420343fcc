"""Speed of the simulated arm and the quality of its scripted expert.

    scripts/with_env.sh python benchmarks/sim_speed.py [--seeds 50] [--sizes 64 96 128]

Printed:
    render fps         camera frames per second at each image size (offscreen, MUJOCO_GL=egl)
    physics steps/s    MuJoCo steps per second with the arm moving under its controller (2 ms steps)
    ik solves/s        inverse-kinematics solutions per second for streamed targets
    expert             per task family: success rate over --seeds seeds, episode length in steps (10 Hz),
                       wall seconds per episode without and with rendering at 96x96
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from videovla_sim.collect import record_episode
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.scene import SceneConfig
from videovla_sim.tasks import TASK_FAMILIES


def render_fps(size: int, frames: int = 200) -> float:
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=size, image_width=size)))
    env.reset("place", 0)
    env.render()  # the first frame sets up the GL context
    started = time.perf_counter()
    for _ in range(frames):
        env.render()
    elapsed = time.perf_counter() - started
    env.close()
    return frames / elapsed


def physics_and_ik_rates(seconds: float = 4.0) -> tuple[float, float]:
    env = TabletopEnv()
    env.reset("place", 0)
    controller = env.controller
    home = controller.home_position
    steps, solves = 0, 0
    solve_time = 0.0
    started = time.perf_counter()
    for i in range(round(seconds * 10)):
        target = home + 0.05 * np.array([np.sin(i / 5), np.cos(i / 5), -0.5 + 0.5 * np.sin(i / 7)])
        solve_started = time.perf_counter()
        controller.command_pose(target, controller.home_quaternion)
        solve_time += time.perf_counter() - solve_started
        solves += 1
        steps += env.advance(0.1)
    elapsed = time.perf_counter() - started - solve_time
    env.close()
    return steps / elapsed, solves / solve_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    args = parser.parse_args()
    for size in args.sizes:
        print(f"render fps at {size}x{size}: {render_fps(size):.0f}")
    steps_per_second, solves_per_second = physics_and_ik_rates()
    print(
        f"physics steps/s (arm moving, 2 ms steps): {steps_per_second:.0f} ({steps_per_second * 0.002:.0f}x real time)"
    )
    print(f"ik solves/s: {solves_per_second:.0f}")
    env = TabletopEnv()
    for family in TASK_FAMILIES:
        recordings = [record_episode(env, family, seed, render=False) for seed in range(args.seeds)]
        lengths = np.array([r.num_steps for r in recordings if r.success])
        rate = np.mean([r.success for r in recordings])
        seconds = np.mean([r.seconds for r in recordings])
        rendered = np.mean([record_episode(env, family, seed).seconds for seed in range(5)])
        print(
            f"expert {family}: success {rate:.0%} over {args.seeds} seeds; length {lengths.mean():.1f} steps "
            f"(min {lengths.min()}, max {lengths.max()}); {seconds:.2f} s/episode without rendering, "
            f"{rendered:.2f} s with 96x96 frames"
        )
    env.close()


if __name__ == "__main__":
    main()
