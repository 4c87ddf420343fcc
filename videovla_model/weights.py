"""Reading weights safely: safetensors only, and loud, specific errors when tensors do not fit the model.

A checkpoint that does not match its config must never load half-way: `check_state_dict` lists every
missing, unexpected and mis-shaped tensor by name and shape before anything is copied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

_MAX_LISTED = 20


class CheckpointMismatchError(ValueError):
    """Tensors in a checkpoint do not match the model built from its config."""


def _describe(names: list[str], shapes: Mapping[str, tuple[int, ...]]) -> str:
    shown = [f"{name} {list(shapes[name])}" for name in names[:_MAX_LISTED]]
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    allowed_missing: Iterable[str] = (),
) -> None:
    """Raises CheckpointMismatchError naming every tensor whose name or shape differs between both sides.

    allowed_missing: model tensors the checkpoint may lack (e.g. layers that get a fresh initialisation).
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state_dict.items()}
    allowed = set(allowed_missing)
    missing = sorted(set(expected) - set(found) - allowed)
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(name for name in set(expected) & set(found) if expected[name] != found[name])
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        shown = [f"{n} (checkpoint {list(found[n])}, model {list(expected[n])})" for n in mismatched[:_MAX_LISTED]]
        more = f" ... and {len(mismatched) - _MAX_LISTED} more" if len(mismatched) > _MAX_LISTED else ""
        parts.append("shape mismatches: " + ", ".join(shown) + more)
    if missing:
        parts.append("missing from checkpoint: " + _describe(missing, expected))
    if unexpected:
        parts.append("not in model: " + _describe(unexpected, found))
    raise CheckpointMismatchError(f"{source} does not match the model built from its config; " + "; ".join(parts))


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file, or of a directory's (possibly sharded) diffusers/transformers weights."""
    path = Path(path)
    if path.is_file():
        return load_file(str(path), device=str(device))
    if not path.is_dir():
        raise FileNotFoundError(f"no weights at {path}")
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if indexes:
        shard_names = sorted(set(json.loads(indexes[0].read_text())["weight_map"].values()))
        files = [path / name for name in shard_names]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        hint = f" (found {pickled}; convert them to safetensors: pickle files are never loaded)" if pickled else ""
        raise FileNotFoundError(f"no .safetensors weights in {path}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file), device=str(device)))
    return tensors


def meta_tensor_names(module: nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (i.e. never initialised or loaded)."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, tensor in named if tensor.is_meta]


def assert_materialized(module: nn.Module, what: str) -> None:
    """Raises RuntimeError naming tensors left on the meta device or holding NaN / inf."""
    on_meta = meta_tensor_names(module)
    if on_meta:
        raise RuntimeError(f"{what}: tensors left uninitialised on the meta device: {on_meta[:_MAX_LISTED]}")
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"{what}: parameters with NaN or inf values: {bad[:_MAX_LISTED]}")
