"""The fine-tuning run's settings: a frozen dataclass saved as `training_config.json` in the output folder.

Model settings live in `VideoVLAConfig` (saved beside the weights); this holds where the data and the initial
weights come from and how the optimiser runs. Every field is validated at construction with an error naming
the field, its value and what is allowed. A resumed run must agree with the saved file on every field that
shapes the trajectory (`TRAJECTORY_FIELDS`), so a resumed run continues the one it resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from videovla_model.cli import choices
from videovla_model.configuration import ADDABLE_CONDITIONING, PRESETS
from videovla_model.memory import OPTIMIZERS

TRAINING_CONFIG_NAME = "training_config.json"

MixedPrecision = Literal["no", "bf16", "fp16"]
Schedule = Literal["constant", "linear", "cosine"]

# Fields a resumed run may change: where it lives, logging, saving, speed or its length, not the updates
# made so far. (A longer run under a decaying schedule does change the learning rates of later steps.)
RESUMABLE_CHANGES = frozenset(
    {
        "output",
        "steps",
        "save_every",
        "log_every",
        "num_workers",
        "keep_checkpoints",
        "latent_cache",
        "instruction_cache",
        "max_memory_gb",
        # Recomputing activations changes memory and speed, not the updates.
        "gradient_checkpointing",
    }
)


@dataclass(frozen=True)
class TrainingConfig:
    """One `videovla-train` run; each field is a flag of that command (`videovla-train --help`).

    Exactly one of `preset`, `model_config`, `init_from` says what model is trained; `init_cogvideox` may add
    pre-trained CogVideoX weights to a `preset` or `model_config`; `add_conditioning` grows an `init_from`
    checkpoint by layers that start at zero (`VideoVLAModel.with_added_conditioning`). `frame_stride` sets the
    saved model's `video_frame_period`. `lora_rank` trains LoRA on the DiT attention (q, k, v, out) plus the
    action layers in full (`videovla_model.lora`); its checkpoints hold only the trained tensors (merge with
    `videovla-merge-lora`). `latent_cache` is reused by later runs with the same data and VAE and rebuilt
    otherwise (`videovla_model.latent_cache`). A resumed run must agree with the saved one on every field
    outside `RESUMABLE_CHANGES`.
    """

    dataset: str
    """episode dataset folder (videovla_model.episodes format)"""
    output: str
    """run folder: checkpoints, metrics.csv, final/"""
    preset: Annotated[str | None, choices(sorted(PRESETS))] = None
    """a VideoVLAConfig preset (one of preset, config, init-from)"""
    model_config: Annotated[str | None, tyro.conf.arg(name="config")] = None
    """a VideoVLAConfig JSON file (one of preset, config, init-from)"""
    init_from: str | None = None
    """a VideoVLA checkpoint folder: weights and normalisation statistics (one of preset, config, init-from)"""
    init_cogvideox: str | None = None
    """a diffusers CogVideoX image-to-video folder to initialise backbone, VAE and T5 from (with preset/config)"""
    add_conditioning: Annotated[tuple[str, ...], choices(ADDABLE_CONDITIONING)] = ()
    """with init-from: grow the checkpoint by these conditioning layers, which start at zero"""
    steps: int = 15_000
    """optimizer steps in total"""
    batch_size: int = 8
    """samples per process and step (the global batch is batch_size x processes)"""
    lr: float = 1e-5
    """AdamW peak learning rate"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas"""
    adam_epsilon: float = 1e-8
    """AdamW epsilon"""
    warmup_steps: int = 500
    """linear warm-up steps"""
    lr_schedule: Schedule = "constant"
    """learning rate after warm-up (linear and cosine decay to 0 at the last step)"""
    grad_clip: float = 1.0
    """max gradient norm; 0 = off"""
    mixed_precision: MixedPrecision = "no"
    """autocast precision (fp16 needs CUDA); weights and optimizer state stay float32"""
    gradient_checkpointing: tyro.conf.DisallowNone[bool | None] = None
    """recompute activations in backward to save memory; None: on for transformers of 1B parameters or more"""
    optimizer: Annotated[str, choices(OPTIMIZERS)] = "adamw"
    """AdamW, fused AdamW, or 8-bit AdamW (bitsandbytes, CUDA only; 2 instead of 8 bytes per weight)"""
    lora_rank: int | None = None
    """rank-R LoRA on the DiT attention (needs init-from or init-cogvideox); None: train every weight"""
    lora_alpha: float | None = None
    """LoRA scale alpha (None: the rank)"""
    max_memory_gb: float | None = None
    """refuse to start when the memory estimate exceeds this; None: the CUDA device's free memory"""
    instruction_cache: str | None = None
    """folder of the instructions' T5 embeddings (encoded once); None: OUTPUT/instruction_cache"""
    save_every: int = 1000
    """steps between checkpoints"""
    keep_checkpoints: int | None = None
    """keep only the newest N checkpoints (None: all)"""
    log_every: int = 10
    """steps between metrics.csv rows"""
    seed: int = 0
    """seed of weights, data order and noise"""
    num_workers: int = 2
    """dataloader worker processes"""
    video_loss: bool = True
    """train on the video loss beside the action loss (--no-video-loss: the action-only ablation)"""
    timestep_beta: float | None = None
    """training timesteps ~ T * Beta(value, 1): 1 is uniform, more is noisier; None: the model config's"""
    pure_noise_fraction: float | None = None
    """chance a training sample takes the last, pure-noise timestep; None: the model config's"""
    frame_stride: int | None = None
    """recorded steps between video frames; None: the model's video_frame_period x the dataset's action rate"""
    latent_cache: str | None = None
    """folder of the frozen VAE's posteriors of every clip, encoded once; None: encode clips at every step"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.dataset:
            raise ValueError("dataset must be a dataset folder, got ''")
        if not self.output:
            raise ValueError("output must be an output folder, got ''")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        sources = [name for name in ("preset", "model_config", "init_from") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"exactly one of preset, model_config, init_from must say which model to train, got {sources or 'none'}"
            )
        if self.init_from is not None and self.init_cogvideox is not None:
            raise ValueError("init_cogvideox cannot be combined with init_from (the checkpoint already has weights)")
        object.__setattr__(self, "add_conditioning", tuple(self.add_conditioning))
        if self.add_conditioning and self.init_from is None:
            raise ValueError(
                "add_conditioning needs init_from (a preset or model config switches conditioning layers on itself), "
                f"got add_conditioning={list(self.add_conditioning)}"
            )
        unknown = [name for name in self.add_conditioning if name not in ADDABLE_CONDITIONING]
        if unknown:
            raise ValueError(f"add_conditioning must name layers among {ADDABLE_CONDITIONING}, got {unknown}")
        if self.timestep_beta is not None and not (math.isfinite(self.timestep_beta) and self.timestep_beta >= 1.0):
            raise ValueError(f"timestep_beta must be a number >= 1 (1 is uniform) or None, got {self.timestep_beta!r}")
        if self.pure_noise_fraction is not None and not 0.0 <= self.pure_noise_fraction < 1.0:
            raise ValueError(
                f"pure_noise_fraction must be a probability in [0, 1) or None, got {self.pure_noise_fraction!r}"
            )
        for name in ("steps", "batch_size", "save_every", "log_every"):
            _positive_int(name, getattr(self, name))
        if self.keep_checkpoints is not None:
            _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.frame_stride is not None:
            _positive_int("frame_stride", self.frame_stride)
        if self.latent_cache == "":
            raise ValueError("latent_cache must be a folder or None, got ''")
        for name in ("warmup_steps", "num_workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (math.isfinite(self.adam_epsilon) and self.adam_epsilon > 0):
            raise ValueError(f"adam_epsilon must be a positive number, got {self.adam_epsilon!r}")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'linear' or 'cosine', got {self.lr_schedule!r}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be a number >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lora_rank is not None:
            _positive_int("lora_rank", self.lora_rank)
            if self.init_from is None and self.init_cogvideox is None:
                raise ValueError(
                    "lora_rank needs pre-trained weights to adapt: give init_from (a videovla checkpoint) or "
                    "init_cogvideox (a diffusers CogVideoX folder)"
                )
        if self.lora_alpha is not None and (self.lora_rank is None or not self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be a positive number and needs lora_rank, got {self.lora_alpha!r}")
        if self.max_memory_gb is not None and not (math.isfinite(self.max_memory_gb) and self.max_memory_gb > 0):
            raise ValueError(f"max_memory_gb must be a positive number of GB or None, got {self.max_memory_gb!r}")
        if self.instruction_cache == "":
            raise ValueError("instruction_cache must be a folder or None, got ''")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; allowed: {sorted(known)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def save(self, directory: str | Path) -> Path:
        """Writes `training_config.json` into `directory`; returns the file's path."""
        path = Path(directory) / TRAINING_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainingConfig:
        """Reads `training_config.json` from `directory`."""
        path = Path(directory) / TRAINING_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no training config at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def check_resumable_from(self, saved: TrainingConfig) -> None:
        """Raises ValueError listing each field where this run differs from the run it resumes in a way that
        would change the updates (everything outside `RESUMABLE_CHANGES`)."""
        differences = [
            f"{field.name}: saved {getattr(saved, field.name)!r}, now {getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.name not in RESUMABLE_CHANGES and getattr(saved, field.name) != getattr(self, field.name)
        ]
        if differences:
            raise ValueError(
                "cannot resume: these settings differ from the run being resumed (start a new output folder, or "
                "pass the saved values): " + "; ".join(differences)
            )


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
