"""Checkpoints and metrics of `videovla-train`: the checkpoint-<step>/ folders (written through accelerate's
save_state, with the model saved by the run's own hook), the checks before saving, pruning, and metrics.csv.

`CheckpointWriting` is the part of `train.TrainingRun` that writes them; it reads the run's accelerator, output
folder, config, model and (for LoRA runs) base reference.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from videovla_model.lora import BaseReference, save_adapter
from videovla_model.modeling import VideoVLAModel
from videovla_model.training_config import TrainingConfig
from videovla_model.training_setup import lora_settings, with_transformer_weights

logger = logging.getLogger("videovla.train")

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_NAME = "training_state.json"
FINAL_DIR = "final"
METRICS_NAME = "metrics.csv"
METRICS_FIELDS = ("step", "loss", "video_loss", "action_loss", "lr", "samples_per_s")


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder (one with training_state.json), else None."""
    state = path / TRAINING_STATE_NAME
    if not (path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and state.is_file()):
        return None
    return int(json.loads(state.read_text())["step"])


def complete_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint in `output`, oldest first."""
    found = [(checkpoint_step(p), p) for p in output.glob(f"{CHECKPOINT_PREFIX}*")] if output.is_dir() else []
    return sorted((step, path) for step, path in found if step is not None)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as floats (step as a whole number)."""
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


class CheckpointWriting:
    """Checkpoint saving of a training run (mixed into `train.TrainingRun`, which sets these attributes)."""

    config: TrainingConfig
    output: Path
    accelerator: Accelerator
    model: VideoVLAModel
    lora_base: BaseReference | None
    _loss_module: nn.Module

    def save_checkpoint(self, step: int) -> Path:
        """Writes output/checkpoint-<step>/ (model, optimizer, scheduler, RNG, step) on every process's behalf."""
        accelerator = self.accelerator
        self._check_processes_agree(step)
        folder = self.output / f"{CHECKPOINT_PREFIX}{step}"
        if accelerator.is_main_process and folder.exists():
            shutil.rmtree(folder)  # an incomplete leftover of an interrupted save
        accelerator.wait_for_everyone()
        accelerator.save_state(str(folder))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": step, "num_processes": accelerator.num_processes, "batch_size": self.config.batch_size}
            (folder / TRAINING_STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")
            self._prune_checkpoints()
        accelerator.wait_for_everyone()
        return folder

    def _check_processes_agree(self, step: int) -> None:
        """Raises RuntimeError when data-parallel processes hold different weights (a checkpoint saved from rank 0
        would silently drop the others' work)."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1 or accelerator.distributed_type == DistributedType.FSDP:
            return  # FSDP holds one sharded copy: there is nothing to compare
        digest = torch.stack([p.detach().double().sum() for p in self.model.trainable_parameters()])
        digests = accelerator.gather(digest[None]).cpu()
        differing = [rank for rank in range(1, len(digests)) if not torch.equal(digests[rank], digests[0])]
        if differing:
            raise RuntimeError(f"step {step}: processes {differing} hold different weights than process 0")
        if accelerator.is_main_process:
            logger.info("step %d: weights identical on all %d processes", step, accelerator.num_processes)

    def _save_model(self, folder: str | Path) -> None:
        """A plain checkpoint, or for LoRA runs an adapter folder (trained tensors + base reference), written by
        the main process. Every process calls it: under FSDP gathering the full weights takes all of them."""
        accelerator = self.accelerator
        if accelerator.distributed_type == DistributedType.FSDP:
            state = accelerator.get_state_dict(self._loss_module)
            model = with_transformer_weights(self.model, state) if accelerator.is_main_process else self.model
        else:
            model = self.model
        if not accelerator.is_main_process:
            return
        if self.lora_base is None:
            model.save_pretrained(folder)
        else:
            save_adapter(model, folder, lora_settings(self.config), self.lora_base)

    def _save_model_hook(self, models: list[nn.Module], weights: list[dict[str, torch.Tensor]], folder: str) -> None:
        self._save_model(folder)
        # Emptying `weights` stops accelerate from writing a second copy of the model.
        weights.clear()

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        if keep is None:
            return
        for _, folder in complete_checkpoints(self.output)[:-keep]:
            shutil.rmtree(folder)


def skip_model_loading(models: list[nn.Module], folder: str) -> None:
    # The resumed weights were loaded by from_pretrained before `prepare`; emptying `models` stops accelerate
    # from looking for its own model files.
    models.clear()


class MetricsWriter:
    """Appends rows to metrics.csv; a resumed run first drops rows logged after its checkpoint."""

    def __init__(self, path: Path, start_step: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        kept = [row for row in read_metrics(path) if row["step"] <= start_step] if path.is_file() else []
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRICS_FIELDS)
            for row in kept:
                writer.writerow([int(row["step"]), *(row[name] for name in METRICS_FIELDS[1:])])

    def write(
        self, step: int, loss: float, video_loss: float, action_loss: float, lr: float, samples_per_s: float
    ) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([step, loss, video_loss, action_loss, lr, samples_per_s])
