"""VideoVLAConfig: presets, validation messages, JSON round trips, and the 5B parameter count on meta."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from videovla_model.configuration import PRESETS, TransformerConfig, VAEConfig, VideoVLAConfig
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.transformer import VideoVLATransformer, cogvideox_transformer_kwargs

COGVIDEOX_5B_PARAMETERS = 5_570_283_072


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    config = VideoVLAConfig.preset(name)
    assert VideoVLAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    config.save(tmp_path)
    assert VideoVLAConfig.load(tmp_path) == config
    assert config.action_dim_names == DEFAULT_ACTION_DIM_NAMES
    assert config.gripper_dims == (6,)


def test_paper_preset_values():
    config = VideoVLAConfig.preset("cogvideox-5b")
    t = config.transformer
    assert (t.num_layers, t.num_attention_heads, t.attention_head_dim, t.width, t.patch_size) == (42, 48, 64, 3072, 2)
    assert (config.text.d_model, config.text.max_length) == (4096, 226)
    assert (config.vae.latent_channels, config.vae.spatial_compression, config.vae.scaling_factor) == (16, 8, 0.7)
    assert (config.chunk_rows, config.action_dims, config.execute_rows) == (6, 7, 3)
    assert config.image_size == (256, 256)
    assert (config.train_num_frames, config.train_latent_frames) == (49, 13)
    assert (config.sample_num_frames, config.sample_latent_frames) == (13, 4)
    assert (config.diffusion.num_inference_steps, config.diffusion.guidance_scale) == (10, 6.0)
    assert config.attention_mode == "bidirectional"
    assert cogvideox_transformer_kwargs(config)["in_channels"] == 32


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown VideoVLAConfig preset 'huge'.*tiny"):
        VideoVLAConfig.preset("huge")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"train_num_frames": 6}, r"train_num_frames must be 4k \+ 1 video frames.*got 6"),
        ({"sample_num_frames": 0}, r"sample_num_frames must be an int >= 1, got 0"),
        ({"image_height": 60}, r"image_height must be divisible by .* = 16, got 60"),
        ({"execute_rows": 7}, r"execute_rows must be <= chunk_rows=6, got 7"),
        ({"num_embodiments": 0}, r"num_embodiments must be an int >= 1, got 0"),
        ({"attention_mode": "sideways"}, r"attention_mode must be 'bidirectional' or 'causal', got 'sideways'"),
        ({"time_step": 0.0}, r"time_step must be a positive number, got 0.0"),
        ({"gripper_threshold": 1.5}, r"gripper_threshold must be in \(0, 1\), got 1.5"),
        ({"action_dim_names": ("x", "x")}, r"action_dim_names must be unique names"),
    ],
)
def test_invalid_fields_name_field_value_and_rule(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(VideoVLAConfig.preset("tiny"), **changes)


def test_nested_validation_names_the_nested_field():
    with pytest.raises(ValueError, match=r"transformer.attention_head_dim must be a multiple of 16"):
        TransformerConfig(attention_head_dim=24)
    with pytest.raises(ValueError, match=r"vae.block_out_channels must be all divisible by vae.norm_num_groups=4"):
        VAEConfig(block_out_channels=(8, 6), norm_num_groups=4)


def test_replace_keeps_a_valid_config():
    config = dataclasses.replace(VideoVLAConfig.preset("tiny"), attention_mode="causal", num_embodiments=3)
    assert config.attention_mode == "causal"
    assert config.num_embodiments == 3


def test_from_dict_rejects_unknown_keys():
    data = VideoVLAConfig.preset("tiny").to_dict()
    data["loss"]["vidoe_weight"] = 2.0
    with pytest.raises(ValueError, match=r"unknown loss config keys \['vidoe_weight'\]"):
        VideoVLAConfig.from_dict(data)


def test_5b_parameter_count_on_meta_device():
    config = VideoVLAConfig.preset("cogvideox-5b")
    with torch.device("meta"):
        text_to_video = CogVideoXTransformer3DModel(**{**cogvideox_transformer_kwargs(config), "in_channels": 16})
        model = VideoVLATransformer(config)
    assert sum(p.numel() for p in text_to_video.parameters()) == COGVIDEOX_5B_PARAMETERS
    backbone = sum(p.numel() for p in model.backbone.parameters())
    # Image-to-video: the patch embedding also reads the 16 observation-latent channels (2 x 2 patches).
    assert backbone == COGVIDEOX_5B_PARAMETERS + 16 * 2 * 2 * 3072
    width, dims, rows, time_dim = 3072, 7, 6, 512
    action_layers = (
        (dims * width + width)  # action_in
        + rows * width  # chunk position embedding
        + 100 * width  # the public checkpoint's embodiment table
        + (time_dim * 2 * width + 2 * width)  # adaptive output norm modulation
        + 2 * width  # output LayerNorm affine
        + (width * dims + dims)  # action_proj_out
    )
    positional_table = (226 + 13 * 16 * 16) * width  # text + 13 latent frames of 16 x 16 patches
    total = sum(p.numel() for p in model.parameters())
    assert total - backbone == action_layers + positional_table == 3_529_735 + 10_917_888
    assert total == 5_584_927_303
