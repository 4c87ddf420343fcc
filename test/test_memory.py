"""The training memory estimate: parameter counts against models built on the meta device, and the table."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from transformers import T5EncoderModel

from videovla_model import memory
from videovla_model.configuration import VideoVLAConfig
from videovla_model.text import t5_config
from videovla_model.transformer import VideoVLATransformer, cogvideox_transformer_kwargs

# CogVideoX-5B (text-to-video, 16 input channels) as diffusers builds it.
COGVIDEOX_5B_PARAMETERS = 5_570_283_072


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_5b_counts_match_the_models_built_on_the_meta_device() -> None:
    config = VideoVLAConfig.preset("cogvideox-5b")
    latent = config.vae.latent_channels
    with torch.device("meta"):
        text_to_video = CogVideoXTransformer3DModel(**{**cogvideox_transformer_kwargs(config), "in_channels": latent})
        transformer = VideoVLATransformer(config)
        t5 = T5EncoderModel(t5_config(config.text))
    assert _count(text_to_video) == COGVIDEOX_5B_PARAMETERS
    assert memory.backbone_parameter_count(config, in_channels=latent) == COGVIDEOX_5B_PARAMETERS
    assert memory.backbone_parameter_count(config) == _count(transformer.backbone)
    assert memory.transformer_parameter_count(config) == _count(transformer)
    added = sum(_count(layer) for layer in transformer.added_layers()) + transformer.action_pos_embed.numel()
    assert memory.action_layer_parameter_count(config) == added
    assert memory.t5_parameter_count(config) == _count(t5)


@pytest.mark.parametrize(
    "flags", [{}, {"text_modulation": True, "instruction_mixes_observation": True, "observation_film": True}]
)
def test_tiny_counts_and_lora_counts_match_built_models(flags: dict[str, bool]) -> None:
    from videovla_model.lora import LoraSettings, add_lora

    config = dataclasses.replace(VideoVLAConfig.preset("tiny"), **flags)
    transformer = VideoVLATransformer(config)
    assert memory.transformer_parameter_count(config) == _count(transformer)
    add_lora(transformer, LoraSettings(rank=4))
    trained = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    assert trained == memory.lora_parameter_count(config, 4) + memory.action_layer_parameter_count(config)


def test_estimate_of_the_5b_fine_tunes_follows_the_settings() -> None:
    config = VideoVLAConfig.preset("cogvideox-5b")
    base = memory.TrainingMemoryRequest(config, batch_size=1, mixed_precision="bf16", gradient_checkpointing=True)
    full = memory.estimate_training_memory(base)
    eight_bit = memory.estimate_training_memory(dataclasses.replace(base, optimizer="adamw-8bit", latent_cache=True))
    lora = memory.estimate_training_memory(dataclasses.replace(base, lora_rank=64, latent_cache=True))
    unchecked = memory.estimate_training_memory(dataclasses.replace(base, gradient_checkpointing=False))
    # float32 weights + gradients + two float32 moments of 5.57B parameters alone exceed 80 GB.
    assert full.device_bytes > 80 * memory.GB
    assert eight_bit.device_bytes < 80 * memory.GB
    assert lora.device_bytes < 24 * memory.GB
    assert unchecked.device_bytes > full.device_bytes + 10 * memory.GB
    table = lora.table()
    for component in ("transformer weights", "gradients", "optimizer state", "activations", "VAE", "T5 encoder"):
        assert component in table
    assert table.splitlines()[-1].startswith("total on device")


def test_check_fits_refuses_in_one_line() -> None:
    estimate = memory.estimate_training_memory(
        memory.TrainingMemoryRequest(VideoVLAConfig.preset("cogvideox-5b"), batch_size=1)
    )
    with pytest.raises(MemoryError) as raised:
        memory.check_fits(estimate, 80 * memory.GB, "cuda:0")
    message = str(raised.value)
    assert "\n" not in message and "80.0 GB available on cuda:0" in message
    memory.check_fits(estimate, estimate.device_bytes + 1, "cuda:0")


def test_request_names_bad_fields() -> None:
    config = VideoVLAConfig.preset("tiny")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        memory.TrainingMemoryRequest(config, batch_size=1, optimizer="sgd")
    with pytest.raises(ValueError, match="lora_rank must be >= 1"):
        memory.TrainingMemoryRequest(config, batch_size=1, lora_rank=0)
