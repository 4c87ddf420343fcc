"""The frozen T5 text encoder, its tokenizer, and a cache of instruction embeddings.

Prompts are encoded the CogVideoX way: padded to `max_length` tokens and encoded without an attention mask, so
the pre-trained transformer sees the padding embeddings it was trained with. The unconditional prompt of
classifier-free guidance and training-time text dropout is the empty string (as in diffusers' CogVideoX
pipelines), or a zero embedding with `VideoVLAConfig.unconditional_text="zeros"` (the public VideoVLA; see
`VideoVLAModel.unconditional_prompt_embeddings`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from videovla_model.configuration import TextConfig

UNCONDITIONAL_PROMPT = ""


def t5_config(config: TextConfig) -> T5Config:
    """The `transformers` config of a T5 encoder with the sizes in `config`."""
    return T5Config(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        feed_forward_proj=config.feed_forward_proj,
        is_encoder_decoder=False,
        use_cache=False,
    )


def build_text_encoder(config: TextConfig) -> T5EncoderModel:
    """A randomly initialised T5 encoder (real weights come from `from_pretrained` / `from_cogvideox`)."""
    return T5EncoderModel(t5_config(config))


def build_tokenizer(config: TextConfig, directory: str | Path | None = None) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in `directory`, or for "byt5" one that needs no files; None when it needs files.

    A "t5" folder holding only the sentencepiece model (`spiece.model`, no tokenizer_config.json, as some copies
    of the T5 / CogVideoX tokenizer come) loads as T5's tokenizer with its default 100 sentinel ids.
    """
    if directory is not None:
        folder = Path(directory)
        if config.tokenizer == "t5" and _holds_only_sentencepiece(folder):
            return T5Tokenizer.from_pretrained(str(folder))
        return AutoTokenizer.from_pretrained(str(folder))
    if config.tokenizer == "byt5":
        return ByT5Tokenizer()
    return None


def _holds_only_sentencepiece(folder: Path) -> bool:
    """True when `folder` has `spiece.model` but nothing that tells AutoTokenizer which class to build."""
    described = any((folder / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json", "config.json"))
    return (folder / "spiece.model").is_file() and not described


def check_text_encoder(encoder: T5EncoderModel, config: TextConfig) -> None:
    """Raises ValueError naming each size where a loaded T5 encoder differs from `config`."""
    actual = encoder.config
    mismatches = [
        f"text.{name}: config {getattr(config, name)} vs encoder {getattr(actual, name)}"
        for name in ("d_model", "num_layers", "num_heads", "d_kv", "d_ff", "vocab_size")
        if getattr(actual, name) != getattr(config, name)
    ]
    if mismatches:
        raise ValueError("text encoder does not match the config: " + "; ".join(mismatches))


@torch.no_grad()
def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: T5EncoderModel,
    prompts: Sequence[str],
    max_length: int,
) -> torch.Tensor:
    """B prompts -> (B, max_length, d_model) T5 embeddings on the encoder's device and dtype."""
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    return text_encoder(tokens.input_ids.to(device))[0]


class PromptCache:
    """LRU cache of single-prompt embeddings (max_length, d_model), keyed by prompt, device and dtype.

    A robot repeats one instruction for a whole episode; caching skips T5 (the largest model) on every re-plan.
    Thread-safe, because a policy may be called from a ROS executor thread.
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"PromptCache.max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, torch.dtype], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get_or_encode(
        self,
        prompts: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: T5EncoderModel,
        max_length: int,
    ) -> torch.Tensor:
        """(B, max_length, d_model) embeddings; only prompts not cached go through T5 (in one batch)."""
        parameter = next(text_encoder.parameters())
        device, dtype = str(parameter.device), parameter.dtype
        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if (p, device, dtype) not in self._entries))
        if missing:
            encoded = encode_prompts(tokenizer, text_encoder, missing, max_length)
            with self._lock:
                for prompt, embedding in zip(missing, encoded, strict=True):
                    self._entries[(prompt, device, dtype)] = embedding
                self.misses += len(missing)
        with self._lock:
            rows = []
            for prompt in prompts:
                key = (prompt, device, dtype)
                self._entries.move_to_end(key)
                rows.append(self._entries[key])
            self.hits += len(prompts) - len(missing)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return torch.stack(rows)
