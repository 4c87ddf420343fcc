"""The command lines `videovla-eval` and `videovla-demo`, generated from `EvalConfig` and `DemoConfig`.

Every field is a flag under its own name (`time_limit` is `--time-limit`); see `videovla_ros.evaluate` for what
the runs do.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from videovla_model.cli import parse
from videovla_ros.eval_config import DemoConfig, EvalConfig
from videovla_ros.evaluate import demo, evaluate


def main(argv: Sequence[str] | None = None) -> int:
    """`videovla-eval`: exit code 0 after a complete evaluation, 2 for bad arguments or a failed start."""
    config = parse(
        EvalConfig,
        argv,
        prog="videovla-eval",
        description="Closed-loop evaluation of a VideoVLA checkpoint on the simulated arm, through the ROS nodes.",
    )
    try:
        evaluate(config)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`videovla-demo`: exit code 0 on success, 1 on failure, 2 for bad arguments or a failed start."""
    config = parse(
        DemoConfig,
        argv,
        prog="videovla-demo",
        description="One episode: the simulated arm, the VideoVLA policy node and the arm bridge, driven by an "
        "instruction; prints progress and writes imagined|actual frames to a GIF.",
    )
    try:
        result = demo(config, config.instruction)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
