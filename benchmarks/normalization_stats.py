"""Time to fit the action normalisation of a dataset: reads actions.npy files only, never the frames.

    scripts/with_env.sh python benchmarks/normalization_stats.py [--episodes 1000] [--steps 100]

Writes --episodes synthetic episodes of --steps steps (random 7-D actions, 8x8 frames: their size does not
matter, they are never opened) into a temporary folder and prints the seconds `videovla-train` spends on
`compute_action_statistics` (best and median of --repeats runs, files in the page cache as after recording).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.data import compute_action_statistics
from videovla_model.episodes import EpisodeDataset, EpisodeWriter


def write_episodes(root: Path, episodes: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(root)
    frames = np.zeros((steps, 8, 8, 3), np.uint8)
    for _ in range(episodes):
        actions = rng.normal(0.0, 0.01, (steps, len(DEFAULT_ACTION_DIM_NAMES))).astype(np.float32)
        actions[:, -1] = rng.integers(0, 2, steps)
        writer.write(frames, actions, "pick up the red cube", 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_episodes(Path(folder), args.episodes, args.steps)
        print(f"wrote {args.episodes} episodes x {args.steps} steps in {time.perf_counter() - started:.1f} s")
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            compute_action_statistics(EpisodeDataset(folder), DEFAULT_ACTION_DIM_NAMES)
            seconds.append(time.perf_counter() - started)
    print(
        f"action statistics for {args.episodes} episodes ({args.episodes * args.steps} steps): "
        f"best {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s"
    )


if __name__ == "__main__":
    main()
