"""Standardising what conditions the transformer, element by element: the observation latent and the instruction.

A fixed camera sees mostly the same table, wall and arm base in every frame: on the simulated tabletop about
97% of the observation latent's variance is the same static scene, and what a policy must read (where the
gripper and the named object are) is the remaining few percent. A transformer trained from scratch learns to
read such a small signal slowly (the `small` preset had not learnt to condition its actions on the image after
3,000 steps), so with `VideoVLAConfig.normalize_condition` the conditioning latent becomes

    (latent - mean) / max(std, std_floor)         per channel and latent pixel, statistics of the training set

which removes the static scene and scales what changes to unit variance (the floor keeps pixels that never
change from being amplified into noise). A robot's instructions share most of their words too ("pick up the
..."), and a random, frozen T5 (the `small` preset's) gives the words that differ no reason to stand out, so with
`VideoVLAConfig.normalize_text` the T5 embedding is standardised per token position and channel with the
statistics of the training instructions.

`videovla-train` fits the statistics once, when it starts from weights that have none, and they are saved
beside the weights (`condition_normalization.safetensors`, `text_normalization.safetensors`) so inference
applies exactly the same map. Pre-trained CogVideoX backbones condition on the raw latent and raw T5 embeddings,
so both flags are off in the `cogvideox-5b` preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONDITION_NORMALIZATION_NAME = "condition_normalization.safetensors"
TEXT_NORMALIZATION_NAME = "text_normalization.safetensors"
DEFAULT_STD_FLOOR = 0.1


@dataclass(frozen=True)
class ConditionNormalizer:
    """mean, std: float32 tensors of one shape, (C, h, w) for the observation latent or (L, d_model) for the
    instruction embedding; std is already floored (> 0 everywhere)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.ndim == 0 or self.mean.shape != self.std.shape:
            raise ValueError(
                "condition statistics must be two tensors of one shape, got mean "
                f"{tuple(self.mean.shape)} and std {tuple(self.std.shape)}"
            )
        if not bool(torch.isfinite(self.mean).all() and torch.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError("condition statistics must be finite, with std > 0 everywhere")

    @classmethod
    def identity(cls, *shape: int) -> ConditionNormalizer:
        """Leaves values unchanged (mean 0, std 1): a model whose statistics are not fitted yet."""
        return cls(torch.zeros(shape), torch.ones(shape))

    @classmethod
    def fit(cls, samples: torch.Tensor, std_floor: float = DEFAULT_STD_FLOOR) -> ConditionNormalizer:
        """Statistics of (N, *shape) samples (population std, raised to at least `std_floor`)."""
        if samples.ndim < 2 or samples.shape[0] < 1:
            raise ValueError(f"fitting needs (N >= 1, ...) samples, got shape {tuple(samples.shape)}")
        if not std_floor > 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        values = samples.detach().to(device="cpu", dtype=torch.float64)
        return cls(values.mean(dim=0).float(), values.std(dim=0, correction=0).clamp_min(std_floor).float())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    @property
    def is_identity(self) -> bool:
        return bool((self.mean == 0).all() and (self.std == 1).all())

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """(..., *shape) -> the same shape and dtype, standardised element by element."""
        if tuple(values.shape[-len(self.shape) :]) != self.shape:
            raise ValueError(
                f"values of shape {tuple(values.shape)} do not match the condition statistics: expected "
                f"(..., {', '.join(map(str, self.shape))})"
            )
        mean = self.mean.to(device=values.device, dtype=values.dtype)
        std = self.std.to(device=values.device, dtype=values.dtype)
        return (values - mean) / std

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConditionNormalizer:
        tensors = load_file(str(path))
        missing = sorted({"mean", "std"} - set(tensors))
        if missing:
            raise ValueError(f"{path} lacks the tensors {missing} (expected 'mean' and 'std' of one shape)")
        return cls(tensors["mean"].float(), tensors["std"].float())
