"""Random-weight VideoVLA models for the benchmarks, built on the device they run on (no download, and a 5B model
never passes through CPU memory). Imports no OpenCV, so the GPU check runs where only torch, transformers,
accelerate, peft and diffusers are installed."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLCogVideoX
from torch import nn
from transformers import ByT5Tokenizer

from videovla_model.configuration import VideoVLAConfig
from videovla_model.modeling import VideoVLAModel, vae_kwargs
from videovla_model.text import build_text_encoder, build_tokenizer
from videovla_model.transformer import VideoVLATransformer


def build_model(config: VideoVLAConfig, device: torch.device, dtype: torch.dtype) -> VideoVLAModel:
    """Random weights allocated on `device` from the start, each part cast to `dtype` as soon as it exists (so
    float32 copies of all parts never coexist). A "t5" preset gets a byte-level tokenizer, which needs no files:
    prompts are padded to the same max_length, so T5 does the same work."""
    tokenizer = ByT5Tokenizer() if config.text.tokenizer == "t5" else build_tokenizer(config.text)

    def cast(module: nn.Module) -> nn.Module:
        return module if dtype == torch.float32 else module.to(dtype)

    with torch.device(device):
        text_encoder = cast(build_text_encoder(config.text))
        vae = cast(AutoencoderKLCogVideoX(**vae_kwargs(config)))
        transformer = cast(VideoVLATransformer(config))
    model = VideoVLAModel(config, tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer)
    return model.eval()
