"""The `videovla-train` command line: generated from `TrainingConfig` (`videovla_model.cli`), plus `--resume`.

Every field of `TrainingConfig` is a flag under its own name (`model_config` is `--config`); `--resume` is how
this run starts, not one of its settings, so it is not saved with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import tyro

from videovla_model.cli import checked, optional_value, parse, unchecked
from videovla_model.training_config import TrainingConfig

LATEST = "latest"
"""`--resume` without a folder: the newest complete checkpoint in the output folder."""
_Settings = unchecked(TrainingConfig)


def videovla_train(
    config: Annotated[_Settings, tyro.conf.OmitArgPrefixes],
    resume: Annotated[str | None, optional_value(LATEST, "CHECKPOINT")] = None,
) -> tuple[TrainingConfig, str | None]:
    """Fine-tune VideoVLA (joint video + action diffusion) on a videovla episode dataset. Runs on CPU, one GPU, or
    many via `accelerate launch -m videovla_model.train ...`.

    Args:
        config: the run's settings, saved as training_config.json in the output folder
        resume: continue from a checkpoint folder, or (no value) from the newest complete one in the output
            folder (a fresh start when there is none)
    """
    return checked(config), resume


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainingConfig, str | None]:
    """The run's settings and its `--resume` value (None: a fresh run); exits 2 naming the field on bad input."""
    return parse(videovla_train, argv, prog="videovla-train")
