"""videovla-convert-sat on a tiny SAT / DeepSpeed checkpoint written here with the public key names.

The reference forward pass below is written from the SAT code's structure (dit_video_concat_withact.py: patch
embedding with text and action projections, learned positions, AdaLN blocks with query/key LayerNorm and rotary
positions on video tokens, final LayerNorm, video and action heads) and reads the SAT tensors directly, so it
checks the key mapping and the transformer together.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors import safe_open
from test_fidelity import sat_rotary
from test_modeling import _save_stock_cogvideox

from videovla_model.configuration import VideoVLAConfig
from videovla_model.convert_sat import (
    UnsafeCheckpointError,
    check_config,
    convert,
    load_model_states,
    main,
)
from videovla_model.modeling import VideoVLAModel
from videovla_model.normalization import ActionNormalizer
from videovla_model.weights import CheckpointMismatchError

TINY = VideoVLAConfig.preset("tiny")
# The tiny model shaped as the public VideoVLA (SAT LayerNorms use eps 1e-6 throughout).
CONFIG = dataclasses.replace(
    TINY,
    name="tiny-sat",
    num_embodiments=3,
    unconditional_text="zeros",
    transformer=dataclasses.replace(
        TINY.transformer,
        norm_eps=1e-6,
        learned_positional_embeddings=True,
        rotary_grid="integer",
        action_final_norm=True,
        action_norm_eps=1e-6,
    ),
)
PREFIX = "model.diffusion_model."
WIDTH, TIME, HEAD, TEXT, LAYERS = 32, 32, 16, 32, 2
CHANNELS, PATCH, ROWS, DIMS = 4, 2, 6, 7
FRAMES, GRID = 2, 4  # latent frames of a training clip, patches per side
TOKENS = FRAMES * GRID * GRID


def sat_shapes() -> dict[str, tuple[int, ...]]:
    """The public SAT key names with the tiny model's shapes."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, rows: int, columns: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (rows, columns), (rows,)

    def norm(name: str, width: int = WIDTH) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (width,), (width,)

    for i in range(LAYERS):
        layer = f"transformer.layers.{i}"
        norm(f"{layer}.input_layernorm")
        norm(f"{layer}.post_attention_layernorm")
        linear(f"{layer}.attention.query_key_value", 3 * WIDTH, WIDTH)
        linear(f"{layer}.attention.dense", WIDTH, WIDTH)
        linear(f"{layer}.mlp.dense_h_to_4h", 4 * WIDTH, WIDTH)
        linear(f"{layer}.mlp.dense_4h_to_h", WIDTH, 4 * WIDTH)
        linear(f"mixins.adaln_layer.adaLN_modulations.{i}.1", 12 * WIDTH, TIME)
        norm(f"mixins.adaln_layer.query_layernorm_list.{i}", HEAD)
        norm(f"mixins.adaln_layer.key_layernorm_list.{i}", HEAD)
    norm("transformer.final_layernorm")
    linear("time_embed.0", TIME, WIDTH)
    linear("time_embed.2", TIME, TIME)
    shapes["mixins.patch_embed.proj.weight"] = (WIDTH, 2 * CHANNELS, PATCH, PATCH)
    shapes["mixins.patch_embed.proj.bias"] = (WIDTH,)
    linear("mixins.patch_embed.text_proj", WIDTH, TEXT)
    linear("mixins.patch_embed.action_proj", WIDTH, DIMS)
    shapes["mixins.pos_embed.pos_embedding"] = (1, TEXT + TOKENS, WIDTH)
    shapes["mixins.pos_embed.action_pos_embedding"] = (1, ROWS, WIDTH)
    shapes["mixins.pos_embed.action_robotid_embedding.weight"] = (3, WIDTH)
    norm("mixins.final_layer.norm_final")
    linear("mixins.final_layer.linear", PATCH * PATCH * CHANNELS, WIDTH)
    linear("mixins.final_layer.adaLN_modulation.1", 2 * WIDTH, TIME)
    norm("mixins.final_layer.action_norm_final")
    linear("mixins.final_layer.action_linear", DIMS, WIDTH)
    linear("mixins.final_layer.action_adaLN_modulation.1", 2 * WIDTH, TIME)
    return shapes


def sat_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random bfloat16 weights (as SAT trains them) under the SAT names; norms near 1, the rotary table exact."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sat_shapes().items():
        values = torch.randn(shape, generator=generator) * 0.2
        if ("norm" in name or "layernorm" in name) and name.endswith("weight"):
            values = values + 1.0
        tensors[name] = values.to(torch.bfloat16)
    cos, sin = sat_rotary(HEAD, FRAMES, GRID, GRID)
    tensors["mixins.pos_embed.freqs_cos"], tensors["mixins.pos_embed.freqs_sin"] = cos, sin
    return tensors


def write_sat_checkpoint(root: Path, tensors: dict[str, torch.Tensor], **extras: object) -> Path:
    """A SAT checkpoint folder: `latest` + <iteration>/mp_rank_00_model_states.pt with what DeepSpeed stores."""
    (root / "1000").mkdir(parents=True)
    (root / "latest").write_text("1000\n")
    module = {PREFIX + name: tensor for name, tensor in tensors.items()}
    payload = {
        "module": module,
        "buffer_names": [PREFIX + "mixins.pos_embed.freqs_sin", PREFIX + "mixins.pos_embed.freqs_cos"],
        "param_shapes": [collections.OrderedDict((name, t.shape) for name, t in module.items())],
        "sparse_tensor_module_names": set(),
        "global_steps": 1000,
        "dp_world_size": 8,
        "mp_world_size": 1,
        "ds_version": "0.14.4",
        "iteration": 1000,
        "args": argparse.Namespace(mode="finetune", lr=1e-5),
        "np_rng_state": np.random.RandomState(0).get_state(),
        **extras,
    }
    torch.save(payload, root / "1000" / "mp_rank_00_model_states.pt")
    return root


@pytest.fixture(scope="module")
def cogvideox_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("i2v")
    _save_stock_cogvideox(root, CONFIG)
    return root


# The reference forward pass, from the SAT tensors -------------------------------------------------------------


def _layer_norm(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-6)


def _linear(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def _sat_attention(
    w: dict, i: int, x: torch.Tensor, video: slice, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    batch, length, _ = x.shape
    heads = WIDTH // HEAD
    q, k, v = (
        part.reshape(batch, length, heads, HEAD).transpose(1, 2)
        for part in _linear(x, w, f"transformer.layers.{i}.attention.query_key_value").chunk(3, dim=-1)
    )
    q = _layer_norm(q, w, f"mixins.adaln_layer.query_layernorm_list.{i}")
    k = _layer_norm(k, w, f"mixins.adaln_layer.key_layernorm_list.{i}")
    q, k = q.clone(), k.clone()
    q[:, :, video], k[:, :, video] = _rotate(q[:, :, video], cos, sin), _rotate(k[:, :, video], cos, sin)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, WIDTH)
    return _linear(out, w, f"transformer.layers.{i}.attention.dense")


def _sat_block(w: dict, i: int, h: torch.Tensor, emb: torch.Tensor, video: slice, rotary: tuple) -> torch.Tensor:
    layer = f"transformer.layers.{i}"
    mods = _linear(F.silu(emb), w, f"mixins.adaln_layer.adaLN_modulations.{i}.1").chunk(12, dim=1)
    text, image = h[:, :TEXT], h[:, TEXT:]  # the image stream carries the action tokens too
    attention_in = torch.cat(
        [
            _modulate(_layer_norm(text, w, f"{layer}.input_layernorm"), mods[6], mods[7]),
            _modulate(_layer_norm(image, w, f"{layer}.input_layernorm"), mods[0], mods[1]),
        ],
        dim=1,
    )
    attention = _sat_attention(w, i, attention_in, video, *rotary)
    image = image + mods[2][:, None] * attention[:, TEXT:]
    text = text + mods[8][:, None] * attention[:, :TEXT]
    mlp_in = torch.cat(
        [
            _modulate(_layer_norm(text, w, f"{layer}.post_attention_layernorm"), mods[9], mods[10]),
            _modulate(_layer_norm(image, w, f"{layer}.post_attention_layernorm"), mods[3], mods[4]),
        ],
        dim=1,
    )
    hidden = F.gelu(_linear(mlp_in, w, f"{layer}.mlp.dense_h_to_4h"), approximate="tanh")
    mlp = _linear(hidden, w, f"{layer}.mlp.dense_4h_to_h")
    image = image + mods[5][:, None] * mlp[:, TEXT:]
    text = text + mods[11][:, None] * mlp[:, :TEXT]
    return torch.cat([text, image], dim=1)


def sat_forward(
    w: dict[str, torch.Tensor],
    latents: torch.Tensor,
    context: torch.Tensor,
    timesteps: torch.Tensor,
    actions: torch.Tensor,
    robot_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """latents (B, F, 2C, h, w), context (B, L, text), timesteps (B,), actions (B, R, D), robot_ids (B,) ->
    (video (B, F, C, h, w), actions (B, R, D)) predicted by the SAT model."""
    w = {name: tensor.float() for name, tensor in w.items()}
    batch, frames = latents.shape[:2]
    half = WIDTH // 2
    angles = timesteps[:, None].float() * torch.exp(-math.log(10000) * torch.arange(half) / half)[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    emb = _linear(F.silu(_linear(emb, w, "time_embed.0")), w, "time_embed.2")

    patches = F.conv2d(
        latents.flatten(0, 1), w["mixins.patch_embed.proj.weight"], w["mixins.patch_embed.proj.bias"], stride=PATCH
    )
    patches = patches.reshape(batch, frames, WIDTH, -1).transpose(2, 3).reshape(batch, -1, WIDTH)
    tokens = patches.shape[1]
    h = torch.cat(
        [
            _linear(context, w, "mixins.patch_embed.text_proj"),
            patches,
            _linear(actions, w, "mixins.patch_embed.action_proj"),
        ],
        dim=1,
    )
    action_positions = (
        w["mixins.pos_embed.action_pos_embedding"]
        + w["mixins.pos_embed.action_robotid_embedding.weight"][robot_ids][:, None]
    )
    positions = w["mixins.pos_embed.pos_embedding"][:, : TEXT + tokens].expand(batch, -1, -1)
    h = h + torch.cat([positions, action_positions], dim=1)

    video = slice(TEXT, TEXT + tokens)
    rotary = (w["mixins.pos_embed.freqs_cos"][:tokens], w["mixins.pos_embed.freqs_sin"][:tokens])
    for i in range(LAYERS):
        h = _sat_block(w, i, h, emb, video, rotary)
    h = _layer_norm(h, w, "transformer.final_layernorm")

    shift, scale = _linear(F.silu(emb), w, "mixins.final_layer.adaLN_modulation.1").chunk(2, dim=1)
    x = _modulate(_layer_norm(h[:, video], w, "mixins.final_layer.norm_final"), shift, scale)
    x = _linear(x, w, "mixins.final_layer.linear")
    side = latents.shape[-1] // PATCH
    x = x.reshape(batch, frames, side, side, CHANNELS, PATCH, PATCH).permute(0, 1, 4, 2, 5, 3, 6)
    video_out = x.reshape(batch, frames, CHANNELS, side * PATCH, side * PATCH)

    shift, scale = _linear(F.silu(emb), w, "mixins.final_layer.action_adaLN_modulation.1").chunk(2, dim=1)
    a = _modulate(_layer_norm(h[:, -ROWS:], w, "mixins.final_layer.action_norm_final"), shift, scale)
    return video_out, _linear(a, w, "mixins.final_layer.action_linear")


# Tests --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_the_converted_checkpoint_predicts_what_the_sat_model_computes(tmp_path, cogvideox_dir, caplog):
    tensors = sat_tensors()
    sat = write_sat_checkpoint(tmp_path / "sat", tensors)
    config_file = CONFIG.save(tmp_path / "config")
    out = tmp_path / "converted"
    code = main([str(sat), str(out), "--cogvideox-i2v", str(cogvideox_dir), "--config", str(config_file)])
    assert code == 0
    assert "NO ACTION NORMALISATION STATISTICS" in caplog.text
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["num_embodiments"] == 3

    model = VideoVLAModel.from_pretrained(out).eval()
    assert model.normalizer.low == (-1.0,) * 6 + (0.0,)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, FRAMES, 2 * CHANNELS, 8, 8, generator=generator)
    context = torch.randn(2, TEXT, TEXT, generator=generator)
    actions = torch.randn(2, ROWS, DIMS, generator=generator)
    timesteps, robot_ids = torch.tensor([17, 901]), torch.tensor([2, 0])
    video, action_out = model.transformer(
        latents,
        context,
        timesteps,
        noisy_actions=actions,
        embodiment_ids=robot_ids,
        image_rotary_emb=model.rotary(FRAMES),
    )
    want_video, want_actions = sat_forward(tensors, latents, context, timesteps, actions, robot_ids)
    torch.testing.assert_close(video, want_video, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(action_out, want_actions, atol=1e-4, rtol=1e-4)


def test_the_normalization_file_is_written_and_a_foreign_one_refused(tmp_path, cogvideox_dir):
    sat = write_sat_checkpoint(tmp_path / "sat", sat_tensors())
    statistics = ActionNormalizer(CONFIG.action_dim_names, (-0.02,) * 6 + (0.0,), (0.02,) * 6 + (1.0,), (6,))
    statistics.save(tmp_path / "normalization.json")
    out = convert(sat, tmp_path / "out", cogvideox_dir, CONFIG, tmp_path / "normalization.json")
    assert ActionNormalizer.load(out / "normalization.json") == statistics
    other = ActionNormalizer(("a", "b"), (0.0, 0.0), (1.0, 1.0))
    other.save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"dim_names \['a', 'b'\] must equal the config's action_dim_names"):
        convert(sat, tmp_path / "out2", cogvideox_dir, CONFIG, tmp_path / "other.json")


def test_unknown_missing_and_misshaped_keys_are_refused_naming_each_with_both_shapes(tmp_path, cogvideox_dir, capsys):
    tensors = sat_tensors()
    del tensors["mixins.final_layer.action_linear.bias"]
    tensors["mixins.pos_embed.action_pos_embedding"] = torch.zeros(1, 8, WIDTH)
    tensors["mixins.pos_embed.vision_pos_embedding"] = torch.zeros(729, WIDTH)
    sat = write_sat_checkpoint(tmp_path / "sat", tensors)
    with pytest.raises(CheckpointMismatchError) as caught:
        convert(sat, tmp_path / "out", cogvideox_dir, CONFIG)
    message = str(caught.value)
    assert f"{PREFIX}mixins.pos_embed.action_pos_embedding (checkpoint [1, 8, 32], expected [1, 6, 32])" in message
    assert f"missing: {PREFIX}mixins.final_layer.action_linear.bias [7]" in message
    assert f"unknown: {PREFIX}mixins.pos_embed.vision_pos_embedding [729, 32]" in message
    assert not (tmp_path / "out").exists()
    config_file = CONFIG.save(tmp_path / "config")
    args = [str(sat), str(tmp_path / "out"), "--cogvideox-i2v", str(cogvideox_dir), "--config", str(config_file)]
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_pickle_holding_a_type_that_is_not_allow_listed_is_refused_naming_it(tmp_path, cogvideox_dir):
    sat = write_sat_checkpoint(tmp_path / "sat", sat_tensors(), save_dir=pathlib.PurePosixPath("/runs/videovla"))
    with pytest.raises(UnsafeCheckpointError, match=r"neither tensors nor allow-listed.*\['pathlib.PurePosixPath'\]"):
        convert(sat, tmp_path / "out", cogvideox_dir, CONFIG)
    assert not (tmp_path / "out").exists()
    # What DeepSpeed and SAT store (sets, OrderedDicts of sizes, argparse arguments, numpy RNG state) loads.
    clean = write_sat_checkpoint(tmp_path / "clean", sat_tensors())
    assert len(load_model_states(clean / "1000" / "mp_rank_00_model_states.pt")) == len(sat_shapes()) + 2


def test_a_rotary_table_on_another_grid_and_a_config_of_another_model_are_refused(tmp_path, cogvideox_dir):
    tensors = sat_tensors()
    tensors["mixins.pos_embed.freqs_cos"] = torch.ones(TOKENS, HEAD)
    sat = write_sat_checkpoint(tmp_path / "sat", tensors)
    with pytest.raises(ValueError, match=r"freqs_cos differs from the rotary table of transformer.rotary_grid"):
        convert(sat, tmp_path / "out", cogvideox_dir, CONFIG)
    with pytest.raises(ValueError, match=r"transformer.rotary_grid: 'resized_crop' \(the public VideoVLA: 'integer'\)"):
        check_config(TINY)
    check_config(VideoVLAConfig.preset("cogvideox-5b"))
