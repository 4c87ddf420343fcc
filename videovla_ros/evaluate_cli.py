"""The command lines `videovla-eval` and `videovla-demo` (see `videovla_ros.evaluate` for what they run)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from videovla_ros.eval_config import DEFAULT_CHECKPOINT, EvalConfig
from videovla_ros.evaluate import demo, evaluate
from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.policy_factory import POLICY_SOURCES
from videovla_sim.tasks import TASK_FAMILIES


def _common_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    defaults = EvalConfig(checkpoint="-")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="policy checkpoint directory")
    parser.add_argument(
        "--policy",
        choices=POLICY_SOURCES,
        default=defaults.policy,
        help="checkpoint: the VideoVLA checkpoint; expert: the scripted expert reading the simulator's state "
        "(the ceiling of the loop, apart from learning)",
    )
    parser.add_argument("--mode", choices=tuple(EXECUTION_MODES), default=defaults.mode, help="bridge execution mode")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the first episode")
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit, help="seconds per episode")
    parser.add_argument("--output", default=output, help="folder for the report and videos")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="sim camera size [px]")
    parser.add_argument("--namespace", default=defaults.namespace, help="namespace of all nodes")
    parser.add_argument("--params-file", default="", help="YAML keyed by node name (default: config/realman.yaml)")
    parser.add_argument("--num-inference-steps", type=int, default=0, help="denoising steps (0 = checkpoint's)")
    parser.add_argument("--guidance-scale", type=float, default=-1.0, help="guidance (< 0 = checkpoint's)")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument(
        "--imagination-every",
        type=int,
        default=defaults.imagination_every,
        help="in recorded episodes, decode the imagination of every N-th chunk (decoding costs seconds on a CPU)",
    )


def _config(args: argparse.Namespace, **extra: Any) -> EvalConfig:
    return EvalConfig(
        checkpoint=args.checkpoint,
        policy=args.policy,
        mode=args.mode,
        seed=args.seed,
        time_limit=args.time_limit,
        output=args.output,
        image_size=args.image_size,
        namespace=args.namespace,
        params_file=args.params_file,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        real_time_factor=args.real_time_factor,
        imagination_every=args.imagination_every,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`videovla-eval`: exit code 0 after a complete evaluation, 2 for bad arguments or a failed start."""
    parser = argparse.ArgumentParser(
        prog="videovla-eval", description="Closed-loop evaluation of a VideoVLA checkpoint on the simulated arm."
    )
    _common_arguments(parser, "outputs/eval")
    parser.add_argument(
        "--tasks", nargs="+", default=["pick"], help=f"task families ({', '.join(TASK_FAMILIES)}) or instructions"
    )
    parser.add_argument("--episodes", type=int, default=50, help="seeded episodes per task")
    parser.add_argument("--videos", type=int, default=3, help="episodes per task saved as imagined|actual GIFs")
    args = parser.parse_args(argv)
    try:
        config = _config(args, tasks=tuple(args.tasks), episodes=args.episodes, videos=args.videos)
        evaluate(config)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`videovla-demo`: exit code 0 on success, 1 on failure, 2 for bad arguments or a failed start."""
    parser = argparse.ArgumentParser(
        prog="videovla-demo",
        description="One episode: the simulated arm, the VideoVLA policy node and the arm bridge, driven by an "
        "instruction; prints progress and writes imagined|actual frames to a GIF.",
    )
    _common_arguments(parser, "outputs/demo")
    parser.add_argument("--instruction", default="pick up the red cube", help="what to ask the robot")
    args = parser.parse_args(argv)
    try:
        config = _config(args, tasks=(args.instruction,), episodes=1)
        result = demo(config, args.instruction)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
