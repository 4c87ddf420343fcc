"""`videovla-eval-offline`: how closely a policy's chunks follow recorded demonstrations (open loop, no robot).

    videovla-eval-offline --checkpoint checkpoints/videovla-sim-small --dataset data/held_out --episodes 20

For every `--every`-th step of each episode the policy sees the recorded frame and instruction, and its chunk is
compared with the recorded actions that followed (rows past the episode's end are left out):

    executed_endpoint_error_mm   distance between where the executed rows (the checkpoint's execute_rows) move
                                 the end effector and where the recorded rows moved it
    chunk_endpoint_error_mm      the same over the whole chunk
    start_heading_cosine         at step 0 only: cosine between the predicted and recorded horizontal motion of
                                 the whole chunk; with several objects on the table it shows whether the policy
                                 heads for the object the instruction names
    gripper_accuracy             fraction of rows whose gripper command (0 closed / 1 open) matches
    mean_abs_error               per action dimension, in robot units
    mean_inference_s             the policy's own "total" timing

Open-loop errors do not predict closed-loop success exactly (a closed loop corrects small errors and compounds
others), but they are cheap, need no simulator or robot, and tell a broken checkpoint from a working one in
minutes. Run it on episodes the model was not trained on.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videovla_model.cli import parse
from videovla_model.contract import Observation, Policy
from videovla_model.episodes import Episode, EpisodeDataset

TRANSLATION_DIMS = ("dx", "dy", "dz")
HORIZONTAL_DIMS = ("dx", "dy")
MILLIMETRES_PER_METRE = 1000.0


@dataclass(frozen=True)
class OfflineReport:
    """Means over every compared window (see the module docstring); counts say what they are over."""

    windows: int
    episodes: int
    executed_endpoint_error_mm: float
    chunk_endpoint_error_mm: float
    start_heading_cosine: float
    gripper_accuracy: float
    mean_abs_error: dict[str, float]
    mean_inference_s: float

    def summary(self) -> str:
        per_dim = ", ".join(f"{name} {value:.4g}" for name, value in self.mean_abs_error.items())
        return "\n".join(
            [
                f"{self.windows} windows of {self.episodes} episodes",
                f"executed end-point error {self.executed_endpoint_error_mm:.1f} mm, "
                f"whole chunk {self.chunk_endpoint_error_mm:.1f} mm",
                f"start heading cosine {self.start_heading_cosine:.3f} (1 = same direction as the recording)",
                f"gripper agreement {100 * self.gripper_accuracy:.1f}%",
                f"mean abs error per dimension: {per_dim}",
                f"mean inference {self.mean_inference_s:.3f} s",
            ]
        )


def _column(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ValueError(f"the policy's action_dim_names {tuple(names)} lack {missing}")
    return [list(names).index(name) for name in wanted]


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 1e-12 else None


def evaluate_offline(policy: Policy, episodes: Sequence[Episode], every: int = 5) -> OfflineReport:
    """Compares `policy`'s chunks with the recorded actions of `episodes` (see the module docstring)."""
    if every < 1:
        raise ValueError(f"every must be >= 1 step, got {every}")
    metadata = policy.metadata
    names = metadata.action_dim_names
    translation, horizontal = _column(names, TRANSLATION_DIMS), _column(names, HORIZONTAL_DIMS)
    gripper = [i for i, name in enumerate(names) if "gripper" in name.lower()]
    executed_errors, chunk_errors, cosines, inference = [], [], [], []
    gripper_matches, gripper_rows = 0, 0
    abs_errors = np.zeros(len(names))
    rows_compared = 0
    for episode in episodes:
        if tuple(episode.metadata.action_dim_names) != tuple(names):
            raise ValueError(
                f"an episode ({episode.metadata.instruction!r}) has action_dim_names "
                f"{tuple(episode.metadata.action_dim_names)}, the policy {tuple(names)}"
            )
        steps = episode.metadata.num_steps
        for step in range(0, steps, every):
            answer = policy.infer(
                Observation(episode.frames[step], episode.metadata.instruction, episode.metadata.embodiment_id)
            )
            inference.append(answer.timings.get("total", math.nan))
            rows = min(metadata.chunk_rows, steps - step)
            predicted = np.asarray(answer.actions[:rows], dtype=float)
            recorded = np.asarray(episode.actions[step : step + rows], dtype=float)
            executed = min(metadata.execute_rows, rows)
            for errors, count in ((executed_errors, executed), (chunk_errors, rows)):
                offset = predicted[:count, translation].sum(axis=0) - recorded[:count, translation].sum(axis=0)
                errors.append(float(np.linalg.norm(offset)) * MILLIMETRES_PER_METRE)
            if step == 0:
                cosine = _cosine(predicted[:, horizontal].sum(axis=0), recorded[:, horizontal].sum(axis=0))
                if cosine is not None:
                    cosines.append(cosine)
            abs_errors += np.abs(predicted - recorded).sum(axis=0)
            rows_compared += rows
            if gripper:
                matches = np.round(predicted[:, gripper]) == np.round(recorded[:, gripper])
                gripper_matches += int(matches.sum())
                gripper_rows += matches.size
    if not executed_errors:
        raise ValueError("there are no episodes to evaluate")
    return OfflineReport(
        windows=len(executed_errors),
        episodes=len(episodes),
        executed_endpoint_error_mm=float(np.mean(executed_errors)),
        chunk_endpoint_error_mm=float(np.mean(chunk_errors)),
        start_heading_cosine=float(np.mean(cosines)) if cosines else math.nan,
        gripper_accuracy=gripper_matches / gripper_rows if gripper_rows else math.nan,
        mean_abs_error={name: float(v) for name, v in zip(names, abs_errors / rows_compared, strict=True)},
        mean_inference_s=float(np.nanmean(inference)),
    )


@dataclass(frozen=True)
class OfflineEvalConfig:
    """One `videovla-eval-offline` run; each field is a flag (`videovla-eval-offline --help`)."""

    checkpoint: str
    """a VideoVLA checkpoint folder"""
    dataset: str
    """an episode dataset the model was not trained on"""
    episodes: int = 0
    """use the first N episodes (0: all)"""
    every: int = 5
    """compare a chunk every N steps"""
    num_inference_steps: int | None = None
    """denoising steps (None: the checkpoint's)"""
    guidance_scale: float | None = None
    """classifier-free guidance (None: the checkpoint's)"""
    seed: int = 0
    """seed of the sampling noise"""
    output: str | None = None
    """also write the report as JSON to this file"""

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {self.episodes}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    config = parse(
        OfflineEvalConfig,
        argv,
        prog="videovla-eval-offline",
        description="Open-loop check of a VideoVLA checkpoint against recorded episodes (no robot, no simulator).",
    )
    from videovla_model.policy import load_policy

    try:
        dataset = EpisodeDataset(config.dataset)
        policy = load_policy(
            config.checkpoint,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            seed=config.seed,
        )
        count = len(dataset) if config.episodes == 0 else min(config.episodes, len(dataset))
        report = evaluate_offline(policy, [dataset[i] for i in range(count)], every=config.every)
    except (FileNotFoundError, ValueError) as error:
        print(f"videovla-eval-offline: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    if config.output is not None:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
