"""Standardising the observation latent, element by element, before it conditions the transformer.

A fixed camera sees mostly the same table, wall and arm base in every frame: on the simulated tabletop about
97% of the observation latent's variance is the same static scene, and what a policy must read (where the
gripper and the named object are) is the remaining few percent. A transformer trained from scratch learns to
read such a small signal slowly (the `small` preset had not learnt to condition its actions on the image after
3,000 steps), so with `VideoVLAConfig.normalize_condition` the conditioning latent becomes

    (latent - mean) / max(std, std_floor)         per channel and latent pixel, statistics of the training set

which removes the static scene and scales what changes to unit variance (the floor keeps pixels that never
change from being amplified into noise). `videovla-train` fits the statistics once, when it starts from weights
that have none, and they are saved beside the weights (`condition_normalization.safetensors`) so inference
applies exactly the same map. Pre-trained CogVideoX backbones condition on the raw latent, so the flag is off
in the `cogvideox-5b` preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONDITION_NORMALIZATION_NAME = "condition_normalization.safetensors"
DEFAULT_STD_FLOOR = 0.1


@dataclass(frozen=True)
class ConditionNormalizer:
    """mean, std: (C, h, w) float32 in the scaled latent space; std is already floored (> 0 everywhere)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.ndim != 3 or self.mean.shape != self.std.shape:
            raise ValueError(
                "condition statistics must be two (C, h, w) tensors of one shape, got mean "
                f"{tuple(self.mean.shape)} and std {tuple(self.std.shape)}"
            )
        if not bool(torch.isfinite(self.mean).all() and torch.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError("condition statistics must be finite, with std > 0 everywhere")

    @classmethod
    def identity(cls, channels: int, height: int, width: int) -> ConditionNormalizer:
        """Leaves latents unchanged (mean 0, std 1): a model whose statistics are not fitted yet."""
        return cls(torch.zeros(channels, height, width), torch.ones(channels, height, width))

    @classmethod
    def fit(cls, latents: torch.Tensor, std_floor: float = DEFAULT_STD_FLOOR) -> ConditionNormalizer:
        """Statistics of (N, C, h, w) scaled observation latents; std is raised to at least `std_floor`."""
        if latents.ndim != 4 or latents.shape[0] < 2:
            raise ValueError(f"fitting needs (N >= 2, C, h, w) latents, got shape {tuple(latents.shape)}")
        if not std_floor > 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        values = latents.detach().to(device="cpu", dtype=torch.float64)
        return cls(values.mean(dim=0).float(), values.std(dim=0).clamp_min(std_floor).float())

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, h, w)."""
        channels, height, width = self.mean.shape
        return (channels, height, width)

    @property
    def is_identity(self) -> bool:
        return bool((self.mean == 0).all() and (self.std == 1).all())

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) scaled latents -> the same shape and dtype, standardised per channel and latent pixel."""
        if latents.ndim != 5 or tuple(latents.shape[2:]) != self.shape:
            raise ValueError(
                f"latents of shape {tuple(latents.shape)} do not match the condition statistics: expected "
                f"(B, F, C, h, w) with (C, h, w) = {self.shape}"
            )
        mean = self.mean.to(device=latents.device, dtype=latents.dtype)
        std = self.std.to(device=latents.device, dtype=latents.dtype)
        return (latents - mean) / std

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConditionNormalizer:
        tensors = load_file(str(path))
        missing = sorted({"mean", "std"} - set(tensors))
        if missing:
            raise ValueError(f"{path} lacks the tensors {missing} (expected 'mean' and 'std', each (C, h, w))")
        return cls(tensors["mean"].float(), tensors["std"].float())
