"""The training batch: what the data pipeline hands the model's loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainingBatch:
    """One batch of training samples.

    observation: (B, 3, H, W) float in [-1, 1], the current camera frame (the conditioning image).
    video: (B, 3, F, H, W) float in [-1, 1], the clip whose latents are denoised; frame 0 is the observation
        itself, frames 1.. the future (CogVideoX image-to-video convention; F = 4k + 1 for the causal VAE).
        None when the clip's VAE posterior comes precomputed in latent_mean / latent_std instead.
    latent_mean, latent_std: (B, C, F', h, w) float, the frozen VAE's posterior of `video` (unscaled, diffusers'
        layout), from a `latent_cache.LatentCache`; None when `video` is given.
    instructions: B language instructions.
    actions: (B, R, D) float, normalised to [-1, 1]; row 0 is the action taken right after the observation.
    action_mask: (B, R) bool, False for rows padded past an episode's end (left out of the action loss).
    embodiment_ids: (B,) int64.
    """

    observation: torch.Tensor
    video: torch.Tensor | None
    instructions: list[str]
    actions: torch.Tensor
    action_mask: torch.Tensor
    embodiment_ids: torch.Tensor
    latent_mean: torch.Tensor | None = None
    latent_std: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TrainingBatch:
        """The batch on `device`; floating tensors also cast to `dtype` when given."""

        def move(tensor: torch.Tensor) -> torch.Tensor:
            if dtype is not None and tensor.is_floating_point():
                return tensor.to(device=device, dtype=dtype)
            return tensor.to(device=device)

        def move_optional(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else move(tensor)

        return TrainingBatch(
            observation=move(self.observation),
            video=move_optional(self.video),
            instructions=list(self.instructions),
            actions=move(self.actions),
            action_mask=move(self.action_mask),
            embodiment_ids=move(self.embodiment_ids),
            latent_mean=move_optional(self.latent_mean),
            latent_std=move_optional(self.latent_std),
        )

    def __len__(self) -> int:
        return len(self.instructions)
