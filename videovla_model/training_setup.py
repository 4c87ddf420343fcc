"""Set-up steps of `videovla-train` that run before the first step: the memory check, the instruction table
that keeps T5 off the device, and LoRA. Each takes the model (or its config) as an argument."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from videovla_model.configuration import PRESETS, VideoVLAConfig
from videovla_model.instruction_cache import InstructionTable, build_cache, instruction_fingerprint, open_cache
from videovla_model.lora import AdapterConfig, BaseReference, LoraSettings, add_lora, base_fingerprint, is_adapter
from videovla_model.memory import (
    LARGE_MODEL_PARAMETERS,
    MemoryEstimate,
    TrainingMemoryRequest,
    available_device_bytes,
    check_fits,
    estimate_training_memory,
    transformer_parameter_count,
)
from videovla_model.modeling import VideoVLAModel
from videovla_model.text import UNCONDITIONAL_PROMPT
from videovla_model.training_config import TrainingConfig
from videovla_model.transformer import VideoVLATransformer

logger = logging.getLogger("videovla.train")

INSTRUCTION_CACHE_DIR = "instruction_cache"


def planned_model_config(config: TrainingConfig, resume_from: Path | None) -> VideoVLAConfig:
    """The model config a run will train, read from JSON only (nothing is built), for the memory estimate."""
    if resume_from is not None:
        return VideoVLAConfig.load(resume_from)
    if config.init_from is not None:
        loaded = VideoVLAConfig.load(config.init_from)
        return dataclasses.replace(loaded, **dict.fromkeys(config.add_conditioning, True))
    if config.preset is not None:
        return PRESETS[config.preset]
    assert config.model_config is not None  # TrainingConfig requires one source
    return VideoVLAConfig.load(config.model_config)


def uses_gradient_checkpointing(config: TrainingConfig, model_config: VideoVLAConfig) -> bool:
    """The setting, or when unset: on for transformers of a billion parameters or more (the 5B preset)."""
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    return transformer_parameter_count(model_config) >= LARGE_MODEL_PARAMETERS


def check_memory(
    config: TrainingConfig, model_config: VideoVLAConfig, device: torch.device, shards: int, log: bool = True
) -> MemoryEstimate:
    """Logs the memory estimate as a table and raises MemoryError (one line) when it cannot fit the device."""
    estimate = estimate_training_memory(
        TrainingMemoryRequest(
            model_config,
            batch_size=config.batch_size,
            mixed_precision=config.mixed_precision,
            optimizer=config.optimizer,
            lora_rank=config.lora_rank,
            gradient_checkpointing=uses_gradient_checkpointing(config, model_config),
            latent_cache=config.latent_cache is not None,
            shards=shards,
        )
    )
    if log:
        logger.info("memory estimate per process (GB; host memory in parentheses):\n%s", estimate.table())
    available = available_device_bytes(device.type, device.index, config.max_memory_gb)
    if available is not None:
        where = f"{device} (--max-memory-gb)" if config.max_memory_gb is not None else f"{device} (free memory)"
        check_fits(estimate, available, where)
    return estimate


def install_instruction_table(
    model: VideoVLAModel, instructions: list[str], folder: Path, device: torch.device, build: bool
) -> InstructionTable | None:
    """Encodes `instructions` + the unconditional prompt once (T5 on `device` only while encoding, then back on
    the host) into the cache `folder` when `build` and no matching cache exists there; installs the table as the
    model's prompt cache. With `build` False (the non-main processes), only opens a matching cache (None if absent).
    """
    fingerprint = instruction_fingerprint(
        [*instructions, UNCONDITIONAL_PROMPT], model.config.text.max_length, model.text_encoder
    )
    table = open_cache(folder, fingerprint)
    if table is None and build:
        host = next(model.text_encoder.parameters()).device
        model.text_encoder.to(device)
        try:
            table = build_cache(folder, fingerprint, model.raw_prompt_embeddings)
        finally:
            model.text_encoder.to(host)
            model.prompt_cache.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        logger.info("instruction cache: encoded %d instructions into %s", len(table), folder)
    if table is not None:
        model.prompt_cache = table.to(device)
    return table


def apply_lora(model: VideoVLAModel, config: TrainingConfig, resumed_adapter: AdapterConfig | None) -> BaseReference:
    """LoRA on `model`'s transformer (already applied when resuming an adapter), frozen weights stored as
    `store_frozen_weights_for` says. Returns the base the adapters name."""
    assert config.lora_rank is not None  # called for LoRA runs only
    if resumed_adapter is not None:
        base = resumed_adapter.base
    else:
        base = BaseReference(
            init_from=str(Path(config.init_from).resolve()) if config.init_from else None,
            init_cogvideox=str(Path(config.init_cogvideox).resolve()) if config.init_cogvideox else None,
            add_conditioning=config.add_conditioning,
            fingerprint=base_fingerprint(model.transformer),
        )
        add_lora(model.transformer, lora_settings(config))
    store_frozen_weights_for(model.transformer, config.mixed_precision)
    return base


def store_frozen_weights_for(transformer: torch.nn.Module, mixed_precision: str) -> None:
    """Under bf16/fp16 autocast, frozen weight matrices (nearly all the weight) are stored in that dtype: autocast
    casts them for matmuls and convolutions anyway. Norm weights stay float32, as autocast runs norms in float32."""
    frozen_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if frozen_dtype is None:
        return
    for parameter in transformer.parameters():
        if not parameter.requires_grad and parameter.ndim >= 2:
            parameter.data = parameter.data.to(frozen_dtype)


def lora_settings(config: TrainingConfig) -> LoraSettings:
    assert config.lora_rank is not None  # called for LoRA runs only
    return LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)


def with_transformer_weights(model: VideoVLAModel, state: dict[str, torch.Tensor]) -> VideoVLAModel:
    """A model sharing `model`'s VAE, T5, tokenizer and statistics, with a transformer holding `state` (the full
    weights FSDP gathered, keyed as the prepared module names them: "transformer.<name>")."""
    prefix = "transformer."
    weights = {name.removeprefix(prefix): tensor for name, tensor in state.items()}
    with torch.device("meta"):
        transformer = VideoVLATransformer(model.config)
    transformer.load_state_dict(weights, assign=True)
    config = model.config
    return VideoVLAModel(
        config,
        tokenizer=model.tokenizer,
        text_encoder=model.text_encoder,
        vae=model.vae,
        transformer=transformer,
        normalizer=model.normalizer,
        condition_normalizer=model.condition_normalizer if config.normalize_condition else None,
        text_normalizer=model.text_normalizer if config.normalize_text else None,
    )


def resumed_is_adapter(resume_from: Path | None) -> bool:
    return resume_from is not None and is_adapter(resume_from)
