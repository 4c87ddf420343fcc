"""Real-time chunking (RTC, arXiv 2506.07339) for the v-prediction sampler: keep the rows that will execute
during inference fixed, so that a new chunk continues the one the arm is executing.

With asynchronous execution the arm keeps moving while the policy infers: the first d rows of the new chunk
(d = inference delay / time step) will already have been executed from the previous chunk when the answer
arrives, and the rows after them overlap what the previous chunk still planned. The caller passes those
planned rows (the "prefix", Y) and the sampler inpaints them:

  soft mask (paper, eq. 5)  W_i = 1                             for i < d       (surely executed)
                            W_i = c_i (e^{c_i} - 1) / (e - 1)   for d <= i < P  (overlap; c_i = (P - i) / (P - d + 1))
                            W_i = 0                             for i >= P      (free; P = rows of the prefix)

The paper guides a flow-matching policy with a vector-Jacobian product through the network (a second,
backward pass per step). Our model predicts v on a variance-preserving schedule (videovla_model.diffusion),
and we guide in x0 space instead, which costs nothing extra: at every step, with x_t = a x0 + s eps,
a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t),

  1. the clean estimate            x0 = a x_t - s v
  2. the pull towards the prefix   x0' = x0 + lam_i (Y - x0),  lam_i = min(1, W_i * w_t)
  3. the velocity that yields x0'  v' = (a x_t - x0') / s = v - (x0' - x0) / s

and the scheduler re-noises x0' to the next timestep as usual. w_t = min(beta, 1 / (a s)) is the paper's
clipped guidance weight (1 - tau) / (tau r_tau^2) written in VP variables (tau = a / (a + s), r_tau^2 = s^2);
it is >= 2, so rows with W = 1 are replaced outright (inpainting); rows with W = 0 are untouched by the
correction (they still see the prefix through attention, which is the point: the free rows are generated to
continue it). The schedulers' last step lands on timestep 0, not on the clean sample (a little noise is
left), so the result gets the same pull once more (`pull_final`) and equals Y where W = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_MAX_GUIDANCE = 5.0
"""beta, the clip of the guidance weight (the paper's default)."""


def prefix_weights(prefix_rows: int, delay_rows: int) -> np.ndarray:
    """(prefix_rows,) float32 soft-mask weights: 1 for the first `delay_rows` rows, then exponentially decaying
    towards 0 over the rest of the prefix (rows after the prefix have weight 0 and are not listed)."""
    if prefix_rows < 0:
        raise ValueError(f"prefix_rows must be >= 0, got {prefix_rows}")
    if not 0 <= delay_rows <= prefix_rows:
        raise ValueError(f"delay_rows must be in [0, prefix_rows={prefix_rows}], got {delay_rows}")
    rows = np.arange(prefix_rows, dtype=np.float64)
    c = (prefix_rows - rows) / (prefix_rows - delay_rows + 1)
    decaying = c * np.expm1(c) / math.expm1(1.0)
    return np.where(rows < delay_rows, 1.0, decaying).astype(np.float32)


@dataclass(frozen=True)
class ActionPrefix:
    """The rows to inpaint, in the sampler's normalised action space.

    actions: (B, P, D) normalised actions Y for the first P rows of the chunk (P <= chunk rows).
    weights: (B, P) soft-mask weights in [0, 1] (`prefix_weights`); rows after P are free.
    max_guidance: beta, the clip of the guidance weight.
    """

    actions: torch.Tensor
    weights: torch.Tensor
    max_guidance: float = DEFAULT_MAX_GUIDANCE

    def check(self, batch: int, chunk_rows: int, action_dims: int) -> None:
        """Raises ValueError naming the field when the prefix does not fit a (batch, chunk_rows, action_dims) chunk."""
        actions, weights = self.actions, self.weights
        if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[2] != action_dims:
            raise ValueError(
                f"action_prefix.actions must be (B={batch}, P, D={action_dims}), got {tuple(actions.shape)}"
            )
        if actions.shape[1] > chunk_rows:
            raise ValueError(f"action_prefix.actions has {actions.shape[1]} rows, the chunk only {chunk_rows}")
        if tuple(weights.shape) != tuple(actions.shape[:2]):
            raise ValueError(
                f"action_prefix.weights must be (B, P) = {tuple(actions.shape[:2])}, got {tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(actions).all()):
            raise ValueError("action_prefix.actions must be finite")
        if not bool(((weights >= 0) & (weights <= 1)).all()):
            raise ValueError("action_prefix.weights must lie in [0, 1]")
        if not self.max_guidance > 0:
            raise ValueError(f"action_prefix.max_guidance must be > 0, got {self.max_guidance}")

    def padded(self, chunk_rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, chunk_rows, D) targets and (B, chunk_rows, 1) weights in float32, zero beyond the prefix."""
        batch, rows, dims = self.actions.shape
        targets = torch.zeros(batch, chunk_rows, dims, device=device)
        weights = torch.zeros(batch, chunk_rows, 1, device=device)
        targets[:, :rows] = self.actions.to(device=device, dtype=torch.float32)
        weights[:, :rows, 0] = self.weights.to(device=device, dtype=torch.float32)
        return targets, weights


def guidance_weight(alpha_bar: float, max_guidance: float = DEFAULT_MAX_GUIDANCE) -> float:
    """w_t = min(beta, 1 / (a s)) with a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar); beta where a s = 0."""
    product = math.sqrt(alpha_bar * (1.0 - alpha_bar))
    return max_guidance if product <= 1.0 / max_guidance else 1.0 / product


def guide_action_velocity(
    noisy_actions: torch.Tensor, velocity: torch.Tensor, alpha_bar: float, prefix: ActionPrefix
) -> torch.Tensor:
    """The v-prediction whose clean estimate is pulled towards the prefix (steps 1-3 of the module docstring).

    noisy_actions x_t and velocity v: (B, R, D) at a timestep with cumulative alpha `alpha_bar` (< 1).
    Returns v' (B, R, D) float32; rows with weight 0 are returned unchanged.
    """
    if not 0.0 <= alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must be in [0, 1) at a sampling timestep, got {alpha_bar}")
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    x_t, v = noisy_actions.float(), velocity.float()
    targets, weights = prefix.padded(v.shape[1], v.device)
    x0 = a * x_t - s * v
    pull = (weights * guidance_weight(alpha_bar, prefix.max_guidance)).clamp(max=1.0)
    return v - pull * (targets - x0) / s


def pull_final(actions: torch.Tensor, prefix: ActionPrefix) -> torch.Tensor:
    """The sampled actions (B, R, D) pulled towards the prefix with the clipped weight beta: rows with W = 1 become
    the prefix, rows with W = 0 are unchanged."""
    targets, weights = prefix.padded(actions.shape[1], actions.device)
    pull = (weights * prefix.max_guidance).clamp(max=1.0)
    return (actions.float() + pull * (targets - actions.float())).to(actions.dtype)
