"""The optimizers `videovla-train --optimizer` offers: AdamW, fused AdamW, 8-bit AdamW (bitsandbytes, CUDA only).

8-bit AdamW keeps both moments in block-wise quantised 8 bits (2 bytes per trained value instead of 8), which is
what lets a full fine-tune of the 5B transformer fit one 80 GB GPU (see `videovla_model.memory`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from videovla_model.memory import OPTIMIZERS


def check_optimizer_runs_on(name: str, device: torch.device) -> None:
    """Raises ValueError (one line) when optimizer `name` cannot run on `device` or its library is missing."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if name != "adamw-8bit":
        return
    if device.type != "cuda":
        raise ValueError(
            f"--optimizer adamw-8bit needs a CUDA device (bitsandbytes' 8-bit AdamW), this run is on {device}: use "
            "adamw or adamw-fused"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError(f"--optimizer adamw-8bit needs bitsandbytes (pip install bitsandbytes): {error}") from error


def build_optimizer(
    name: str,
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    device: torch.device,
) -> torch.optim.Optimizer:
    """The optimizer `name` over `parameters` (checked with `check_optimizer_runs_on` first)."""
    check_optimizer_runs_on(name, device)
    settings = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
    if name == "adamw-8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(list(parameters), **settings)
    return torch.optim.AdamW(list(parameters), fused=name == "adamw-fused", **settings)
