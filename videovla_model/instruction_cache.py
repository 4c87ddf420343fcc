"""The frozen T5's embedding of every training instruction, computed once, so T5 never sits on the training device.

A dataset holds a handful of distinct instructions, and T5 (T5-XXL: 4.8B parameters, 19 GB in float32) does not
train, so its output per instruction never changes during a run. `videovla-train` encodes every distinct
instruction (and the unconditional prompt) once, keeps the embeddings in a cache folder, installs them as the
model's prompt table, and leaves T5 on the host: training steps never run it.

Cache folder (`--instruction-cache`, default <output>/instruction_cache)::

    instruction_embeddings.safetensors   one (max_length, d_model) float32 tensor per instruction, keyed "0", "1", ...
    cache.json                           the fingerprint: instructions (in key order), max_length, T5 weights hash
                                         (written last: marks the cache complete)

A cache is reused only when its fingerprint equals the current one, as the latent cache does.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from videovla_model.latent_cache import FINGERPRINT_NAME, read_matching_fingerprint, sampled_weights_hash

logger = logging.getLogger("videovla.instruction_cache")

EMBEDDINGS_NAME = "instruction_embeddings.safetensors"
FORMAT_VERSION = 1
# Instructions are echoed in errors; a long one is cut so a log line stays bounded.
SHOWN_CHARACTERS = 80


def instruction_fingerprint(instructions: Sequence[str], max_length: int, text_encoder: nn.Module) -> dict[str, Any]:
    """What a cache's embeddings depend on, as a JSON-ready dict (instructions sorted, duplicates dropped)."""
    return {
        "format_version": FORMAT_VERSION,
        "instructions": sorted(set(instructions)),
        "max_length": max_length,
        "text_encoder_sha256": sampled_weights_hash(text_encoder),
    }


class InstructionTable:
    """Precomputed instruction embeddings behind `PromptCache.get_or_encode`'s interface, so installed as a
    model's `prompt_cache` they answer every prompt without touching the tokenizer or T5."""

    def __init__(self, embeddings: dict[str, torch.Tensor]) -> None:
        shapes = {tuple(e.shape) for e in embeddings.values()}
        if len(shapes) > 1:
            raise ValueError(f"instruction embeddings must share one (max_length, d_model) shape, got {shapes}")
        self._embeddings = embeddings

    def __len__(self) -> int:
        return len(self._embeddings)

    @property
    def instructions(self) -> list[str]:
        return sorted(self._embeddings)

    def to(self, device: torch.device | str) -> InstructionTable:
        """The table with its embeddings on `device` (a few MB: they travel to the GPU, T5 does not)."""
        return InstructionTable({prompt: e.to(device) for prompt, e in self._embeddings.items()})

    def get_or_encode(
        self, prompts: Sequence[str], tokenizer: object, text_encoder: object, max_length: int
    ) -> torch.Tensor:
        """(B, max_length, d_model) embeddings of `prompts`; raises KeyError naming a prompt not in the table."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            shown = ", ".join(repr(p[:SHOWN_CHARACTERS]) for p in missing[:3])
            raise KeyError(
                f"{len(missing)} instruction(s) not in the instruction cache ({shown}); it holds the dataset's "
                f"{len(self)} instructions"
            )
        return torch.stack([self._embeddings[p] for p in prompts])


def open_cache(folder: str | Path, fingerprint: dict[str, Any]) -> InstructionTable | None:
    """The table in `folder` if it is complete and was built for `fingerprint`, else None (logged why)."""
    folder = Path(folder)
    saved = read_matching_fingerprint(folder, fingerprint, "instruction cache")
    if saved is None:
        return None
    tensors = load_file(str(folder / EMBEDDINGS_NAME))
    return InstructionTable({prompt: tensors[str(i)] for i, prompt in enumerate(saved["instructions"])})


def build_cache(
    folder: str | Path, fingerprint: dict[str, Any], encode: Callable[[list[str]], torch.Tensor], batch_size: int = 16
) -> InstructionTable:
    """Encodes the fingerprint's instructions with `encode` (B prompts -> (B, L, D)) into `folder`, replacing
    anything there."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    instructions: list[str] = fingerprint["instructions"]
    if not instructions:
        raise ValueError(f"instruction cache {folder}: there are no instructions to encode")
    rows: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(instructions), batch_size):
            rows.extend(encode(instructions[start : start + batch_size]).to("cpu", torch.float32))
    save_file({str(i): row.contiguous() for i, row in enumerate(rows)}, str(folder / EMBEDDINGS_NAME))
    (folder / FINGERPRINT_NAME).write_text(json.dumps(fingerprint) + "\n")
    return InstructionTable(dict(zip(instructions, rows, strict=True)))
