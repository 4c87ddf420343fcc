"""Does the policy go for the object the instruction names? Prints where its first chunk heads, per checkpoint.

On recorded simulator pick episodes (`videovla-collect`, which stores every object's colour, kind and position in
`episode.json`), the policy sees each episode's first frame and instruction; the sum of its chunk's x/y deltas
is the direction it heads in. For each sample the script finds the object whose direction from the start pose is
closest to that heading and prints:

- named: how often that object is the one the instruction names (chance is 1 / objects in the scene),
- cos(named): the mean cosine between the heading and the direction to the named object,
- cos(best): the mean cosine to the best-aligned object, whichever it is (does it head for *an* object at all?),
- |xy|: the mean planar length of the chunk against the expert's first rows.

    scripts/with_env.sh python benchmarks/instruction_binding.py --dataset held_out_demos \\
        --checkpoint checkpoints/videovla-sim-small --checkpoint runs/other/final
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from videovla_model.contract import Observation
from videovla_model.episodes import EpisodeDataset
from videovla_model.policy import VideoVLAPolicy
from videovla_sim.tasks import parse_instruction


@dataclass(frozen=True)
class Heading:
    named_is_best: bool
    cos_named: float
    cos_best: float
    planar_length: float
    expert_planar_length: float
    chance: float


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def headings(policy: VideoVLAPolicy, dataset: EpisodeDataset, episodes: int, samples: int) -> list[Heading]:
    results = []
    for index in range(min(episodes, len(dataset))):
        episode = dataset[index]
        extra = episode.metadata.extra
        if extra.get("task") != "pick":
            continue
        start = np.asarray(extra["start_target"]["position"][:2])
        objects = extra["objects"]
        named = parse_instruction(episode.metadata.instruction).target
        directions = [unit(np.array([o["x"], o["y"]]) - start) for o in objects]
        named_index = next(i for i, o in enumerate(objects) if (o["colour"], o["kind"]) == (named.colour, named.kind))
        rows = policy.metadata.chunk_rows
        expert = float(np.linalg.norm(episode.actions[:rows, :2].sum(axis=0)))
        for _ in range(samples):
            actions = policy.infer(Observation(episode.frames[0], episode.metadata.instruction)).actions
            planar = actions[:, :2].sum(axis=0)
            cosines = np.array([direction @ unit(planar) for direction in directions])
            results.append(
                Heading(
                    named_is_best=int(cosines.argmax()) == named_index,
                    cos_named=float(cosines[named_index]),
                    cos_best=float(cosines.max()),
                    planar_length=float(np.linalg.norm(planar)),
                    expert_planar_length=expert,
                    chance=1.0 / len(objects),
                )
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="recorded sim pick episodes (videovla-collect output)")
    parser.add_argument("--checkpoint", action="append", required=True, help="a checkpoint folder (repeatable)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes to use (the first N)")
    parser.add_argument("--samples", type=int, default=3, help="policy samples per episode")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the checkpoint's)")
    parser.add_argument("--num-inference-steps", type=int, help="sampler steps (default: the checkpoint's)")
    args = parser.parse_args(argv)
    dataset = EpisodeDataset(args.dataset)
    print(f"{'checkpoint':50s} {'named':>14s} {'chance':>7s} {'cos(named)':>10s} {'cos(best)':>9s} {'|xy| mm':>12s}")
    for checkpoint in args.checkpoint:
        policy = VideoVLAPolicy.from_pretrained(
            checkpoint, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, seed=args.seed
        )
        results = headings(policy, dataset, args.episodes, args.samples)
        if not results:
            print(f"{args.dataset} has no pick episodes with object positions", file=sys.stderr)
            return 2
        named = sum(r.named_is_best for r in results)

        def mean(values: list[float]) -> float:
            return float(np.mean(values))

        chance = mean([r.chance for r in results])
        length = 1000 * mean([r.planar_length for r in results])
        expert = 1000 * mean([r.expert_planar_length for r in results])
        print(
            f"{checkpoint:50s} {named:>5d}/{len(results):<4d}{100 * named / len(results):4.0f}% {100 * chance:6.0f}% "
            f"{mean([r.cos_named for r in results]):10.2f} {mean([r.cos_best for r in results]):9.2f} "
            f"{length:5.0f} / {expert:<4.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
