"""The cogvideox-5b preset follows the public VideoVLA (SAT) code where it differs from diffusers' CogVideoX.

Each behaviour is a config field; here it is switched on in the tiny model and checked against a computation
written in the test from the public code's description, and shown to differ from diffusers' behaviour.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from test_modeling import _save_stock_cogvideox, make_batch

from videovla_model import sampling
from videovla_model.configuration import VideoVLAConfig
from videovla_model.diffusion import build_scheduler, dynamic_guidance_scale, sample_loop
from videovla_model.modeling import VideoVLAModel
from videovla_model.transformer import VideoVLATransformer, positional_table_length, rotary_embedding

TINY = VideoVLAConfig.preset("tiny")
FIVE_B = VideoVLAConfig.preset("cogvideox-5b")
# The tiny model with every public-VideoVLA behaviour of the 5B preset switched on.
FAITHFUL = dataclasses.replace(
    TINY,
    unconditional_text="zeros",
    transformer=dataclasses.replace(
        TINY.transformer,
        learned_positional_embeddings=True,
        rotary_grid="integer",
        action_final_norm=True,
        action_norm_eps=1e-6,
    ),
    diffusion=dataclasses.replace(TINY.diffusion, dynamic_guidance=True),
)
CPU = torch.device("cpu")


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _transformer_inputs(config: VideoVLAConfig, frames: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    h, w = config.latent_height, config.latent_width
    return {
        "hidden_states": torch.randn(2, frames, 2 * config.vae.latent_channels, h, w, generator=generator),
        "encoder_hidden_states": torch.randn(2, config.text.max_length, config.text.d_model, generator=generator),
        "timestep": torch.tensor([5, 900]),
        "noisy_actions": torch.randn(2, config.chunk_rows, config.action_dims, generator=generator),
        "embodiment_ids": torch.tensor([0, 0]),
        "image_rotary_emb": rotary_embedding(config, frames, h, w, CPU),
    }


def _block_inputs(model: VideoVLATransformer, block: int, inputs: dict[str, object]) -> dict[str, torch.Tensor]:
    """The keyword arguments the given transformer block is called with."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        seen.update(kwargs)

    handle = model.backbone.transformer_blocks[block].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    return seen


def test_the_5b_preset_follows_the_public_videovla_and_the_small_presets_keep_diffusers_behaviour():
    t = FIVE_B.transformer
    assert (t.learned_positional_embeddings, t.rotary_grid, t.action_final_norm, t.action_norm_eps) == (
        True,
        "integer",
        True,
        1e-6,
    )
    assert (FIVE_B.unconditional_text, FIVE_B.num_embodiments) == ("zeros", 100)
    assert (FIVE_B.diffusion.dynamic_guidance, FIVE_B.diffusion.guidance_scale) == (True, 6.0)
    assert FIVE_B.diffusion.dynamic_guidance_exponent == 5
    assert positional_table_length(FIVE_B) == 226 + 13 * 256  # the public table: (1, 226 + 13 * 256, 3072)
    for name in ("small", "tiny"):
        config = VideoVLAConfig.preset(name)
        t = config.transformer
        assert not (t.learned_positional_embeddings or t.action_final_norm or config.diffusion.dynamic_guidance)
        assert (t.rotary_grid, t.action_norm_eps, config.unconditional_text) == ("resized_crop", None, "empty_prompt")


@torch.no_grad()
def test_the_learned_positional_table_is_added_to_text_and_video_tokens_only():
    torch.manual_seed(0)
    model = VideoVLATransformer(FAITHFUL).eval()
    patches = (FAITHFUL.latent_height // 2) * (FAITHFUL.latent_width // 2)
    text = FAITHFUL.text.max_length
    assert model.positional_embedding is not None
    assert tuple(model.positional_embedding.shape) == (1, text + FAITHFUL.train_latent_frames * patches, 32)
    table = torch.randn(model.positional_embedding.shape, generator=torch.Generator().manual_seed(1))
    model.positional_embedding.copy_(table)
    # Imagining fewer frames than a training clip uses the first rows of the table (the SAT code slices it).
    for frames in (FAITHFUL.train_latent_frames, 1):
        inputs = _transformer_inputs(FAITHFUL, frames)
        seen = _block_inputs(model, 0, inputs)
        stock_tokens = model.backbone.patch_embed(inputs["encoder_hidden_states"], inputs["hidden_states"])
        rows = table[:, : text + frames * patches]
        torch.testing.assert_close(seen["encoder_hidden_states"], stock_tokens[:, :text] + rows[:, :text])
        video = seen["hidden_states"][:, : frames * patches]
        torch.testing.assert_close(video, stock_tokens[:, text:] + rows[:, text:])
        actions = model.embed_actions(inputs["noisy_actions"], inputs["embodiment_ids"])
        torch.testing.assert_close(seen["hidden_states"][:, frames * patches :], actions)
    too_long = _transformer_inputs(FAITHFUL, FAITHFUL.train_latent_frames + 1)
    with pytest.raises(ValueError, match=r"learned positional table covers 64 text \+ video tokens.*got 80"):
        model(**too_long)


def _save_i2v_with_table(root, config: VideoVLAConfig, **overrides: object) -> torch.Tensor:
    """A tiny CogVideoX I2V directory whose learned positional table holds random values; returns the table."""
    stock = _save_stock_cogvideox(root, config, use_learned_positional_embeddings=True, **overrides)
    table = torch.randn(stock.patch_embed.pos_embedding.shape, generator=torch.Generator().manual_seed(2))
    stock.patch_embed.pos_embedding.copy_(table)
    stock.save_pretrained(root / "transformer")
    return table


def test_from_cogvideox_keeps_the_i2v_positional_table_cut_to_the_config_grid(tmp_path):
    # The stock model's grid: 3 latent frames of 4 x 4 patches; the config's: 2 frames of 2 x 3 patches.
    config = dataclasses.replace(FAITHFUL, image_height=32, image_width=48)
    table = _save_i2v_with_table(tmp_path, config, sample_frames=9)
    model = VideoVLAModel.from_cogvideox(tmp_path, config)
    text, width = config.text.max_length, config.transformer.width
    video = table[0, text:].reshape(3, 4, 4, width)[:2, :2, :3].reshape(-1, width)
    expected = torch.cat([table[0, :text], video])[None]
    assert torch.equal(model.transformer.positional_embedding.detach(), expected)
    # The tiny preset (diffusers' behaviour) drops it.
    plain = VideoVLAModel.from_cogvideox(tmp_path, dataclasses.replace(TINY, image_height=32, image_width=48))
    assert plain.transformer.positional_embedding is None
    assert "positional_embedding" not in plain.transformer.state_dict()


def test_from_cogvideox_without_a_table_starts_it_at_zero_with_a_warning_and_refuses_a_bigger_grid(tmp_path, caplog):
    _save_stock_cogvideox(tmp_path / "plain", FAITHFUL)
    caplog.set_level(logging.WARNING, logger="videovla_model.checkpointing")
    model = VideoVLAModel.from_cogvideox(tmp_path / "plain", FAITHFUL)
    assert not model.transformer.positional_embedding.any()
    assert "has no learned positional table" in caplog.text
    _save_i2v_with_table(tmp_path / "small_grid", FAITHFUL, sample_frames=1)
    with pytest.raises(ValueError, match=r"latent grid \(frames, rows, columns\) \[2, 4, 4\] exceeds .* \[1, 4, 4\]"):
        VideoVLAModel.from_cogvideox(tmp_path / "small_grid", FAITHFUL)


def sat_rotary(head_dim: int, frames: int, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The public VideoVLA rotary table: integer positions per axis, theta 10000, a quarter of each head for time
    and three eighths each for rows and columns, every frequency used for two neighbouring channels."""

    def axis(count: int, dims: int) -> torch.Tensor:
        frequencies = 1.0 / 10000 ** (torch.arange(0, dims, 2).float() / dims)
        return (torch.arange(count).float()[:, None] * frequencies).repeat_interleave(2, dim=1)

    t, h, w = axis(frames, head_dim // 4), axis(rows, head_dim // 8 * 3), axis(columns, head_dim // 8 * 3)
    grid = (frames, rows, columns)
    angles = torch.cat(
        [
            t[:, None, None].expand(*grid, -1),
            h[None, :, None].expand(*grid, -1),
            w[None, None, :].expand(*grid, -1),
        ],
        dim=-1,
    ).reshape(-1, head_dim)
    return angles.cos(), angles.sin()


def test_the_5b_rotary_positions_are_the_public_integer_grid_not_diffusers_resized_crop():
    cos, sin = rotary_embedding(FIVE_B, 13, FIVE_B.latent_height, FIVE_B.latent_width, CPU)
    assert cos.shape == (13 * 16 * 16, 64)
    want_cos, want_sin = sat_rotary(64, 13, 16, 16)
    torch.testing.assert_close(cos, want_cos, atol=1e-5, rtol=0)
    torch.testing.assert_close(sin, want_sin, atol=1e-5, rtol=0)
    cropped = dataclasses.replace(
        FIVE_B, transformer=dataclasses.replace(FIVE_B.transformer, rotary_grid="resized_crop")
    )
    crop_cos, _ = rotary_embedding(cropped, 13, cropped.latent_height, cropped.latent_width, CPU)
    assert (crop_cos - want_cos).abs().max() > 1.9


@torch.no_grad()
def test_action_tokens_pass_the_final_layernorm_before_the_action_head():
    torch.manual_seed(0)
    model = VideoVLATransformer(FAITHFUL).eval()
    for module in (model.backbone.norm_final, model.action_norm_out, model.action_proj_out):
        _randomise(module, seed=3)
    assert model.action_norm_out.norm.eps == 1e-6
    inputs = _transformer_inputs(FAITHFUL, FAITHFUL.train_latent_frames)
    captured: dict[str, torch.Tensor] = {}
    last = model.backbone.transformer_blocks[-1]

    def capture(_module: torch.nn.Module, _args: tuple, kwargs: dict, out: tuple) -> None:
        captured.update(stream=out[0], temb=kwargs["temb"])

    handle = last.register_forward_hook(capture, with_kwargs=True)
    _, actions = model(**inputs)
    handle.remove()
    tokens = captured["stream"][:, -FAITHFUL.chunk_rows :]
    final = model.backbone.norm_final
    tokens = F.layer_norm(tokens, (32,), final.weight, final.bias, final.eps)
    head = model.action_norm_out
    shift, scale = head.linear(F.silu(captured["temb"])).chunk(2, dim=1)
    tokens = F.layer_norm(tokens, (32,), head.norm.weight, head.norm.bias, 1e-6) * (1 + scale[:, None]) + shift[:, None]
    expected = tokens @ model.action_proj_out.weight.T + model.action_proj_out.bias
    torch.testing.assert_close(actions, expected, atol=1e-5, rtol=1e-5)
    # Without the field (diffusers-style head) the same weights give another chunk.
    skipping = dataclasses.replace(
        FAITHFUL, transformer=dataclasses.replace(FAITHFUL.transformer, action_final_norm=False)
    )
    model.config = skipping
    assert not torch.allclose(model(**inputs)[1], expected, atol=1e-3)


def _transformer_text_inputs(model: VideoVLAModel, run: Callable[[], object]) -> list[torch.Tensor]:
    """The instruction embeddings the transformer was called with during `run()`."""
    seen: list[torch.Tensor] = []
    handle = model.transformer.register_forward_hook(lambda _m, args, _out: seen.append(args[1].clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_the_unconditional_text_is_a_zero_embedding_in_guidance_and_in_training_dropout():
    torch.manual_seed(0)
    model = VideoVLAModel(FAITHFUL).eval()
    image = torch.zeros(1, 3, *FAITHFUL.image_size)
    seen = _transformer_text_inputs(model, lambda: model.sample(image, ["pick up the red cube"], num_inference_steps=1))
    unconditional, conditional = seen[0].chunk(2)
    assert not unconditional.any()
    torch.testing.assert_close(conditional, model.encode_prompts(["pick up the red cube"]))

    dropping = dataclasses.replace(FAITHFUL, loss=dataclasses.replace(FAITHFUL.loss, text_dropout_prob=0.9))
    model.config = dropping
    batch = make_batch(dropping, size=4)
    seen = _transformer_text_inputs(model, lambda: model.compute_loss(batch, torch.Generator().manual_seed(0)))
    encoded = model.encode_prompts(batch.instructions)
    dropped = [not row.any() for row in seen[0]]
    assert any(dropped)
    for row, was_dropped, instruction in zip(seen[0], dropped, encoded, strict=True):
        assert was_dropped or torch.equal(row, instruction)

    # diffusers' convention (the tiny preset): T5("").
    plain = VideoVLAModel(TINY).eval()
    seen = _transformer_text_inputs(plain, lambda: plain.sample(image, ["open the drawer"], num_inference_steps=1))
    torch.testing.assert_close(seen[0].chunk(2)[0], plain.encode_prompts([""]))


def test_dynamic_guidance_scale_is_the_public_schedule():
    # diffusers' CogVideoX pipelines with use_dynamic_cfg, written out: t is the training timestep.
    def public(scale: float, t: int, steps: int) -> float:
        return 1 + scale * ((1 - math.cos(math.pi * ((steps - t) / steps) ** 5.0)) / 2)

    for t in (0, 1, 25, 49, 50, 999, 899, 499):
        assert dynamic_guidance_scale(6.0, t, 50, 5) == pytest.approx(public(6.0, t, 50), abs=1e-12)
    assert dynamic_guidance_scale(6.0, 50, 50, 5) == 1.0
    assert dynamic_guidance_scale(6.0, 0, 50, 5) == pytest.approx(7.0)
    assert dynamic_guidance_scale(6.0, 25, 50, 5) == pytest.approx(1 + 3 * (1 - math.cos(math.pi / 32)))
    assert all(1.0 <= dynamic_guidance_scale(6.0, t, 10, 5) <= 7.0 for t in range(1000))


def test_sampling_applies_the_dynamic_scale_at_each_step(monkeypatch):
    torch.manual_seed(0)
    model = VideoVLAModel(FAITHFUL).eval()
    used: list[float] = []
    original = sampling.apply_guidance

    def recording(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float, enabled: bool) -> torch.Tensor:
        used.append(scale)
        return original(conditional, unconditional, scale, enabled)

    monkeypatch.setattr(sampling, "apply_guidance", recording)
    model.sample(torch.zeros(1, 3, *FAITHFUL.image_size), ["open the drawer"], num_inference_steps=4, guidance_scale=6)
    scheduler = build_scheduler(FAITHFUL.diffusion)
    scheduler.set_timesteps(4)
    expected = [dynamic_guidance_scale(6.0, int(t), 4, 5) for t in scheduler.timesteps]
    assert used == [scale for scale in expected for _ in ("video", "actions")]
    assert len(set(expected)) > 1


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_the_sampler_state_stays_float32_when_the_model_runs_in_bfloat16(sampler):
    def denoise(video: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A model that sees bfloat16 inputs whatever the loop's dtype.
        video, actions = video.to(torch.bfloat16).float(), actions.to(torch.bfloat16).float()
        return -0.3 * video + 1e-3 * t[:, None, None, None, None], 0.2 * actions

    shapes = ((1, 2, 4, 3, 3), (1, 6, 7))

    def run(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        scheduler = build_scheduler(TINY.diffusion, sampler)
        generator = torch.Generator().manual_seed(0)
        result = sample_loop(denoise, scheduler, *shapes, 10, CPU, dtype, generator)
        return result.video_latents, result.actions

    in_bfloat16, reference = run(torch.bfloat16), run(torch.float32)
    assert in_bfloat16[0].dtype == in_bfloat16[1].dtype == torch.float32
    assert torch.equal(in_bfloat16[0], reference[0]) and torch.equal(in_bfloat16[1], reference[1])


def test_a_compiled_transformer_samples_as_the_eager_one_and_keeps_its_checkpoint_names(tmp_path):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY).eval()
    image = torch.zeros(1, 3, *TINY.image_size)
    eager = model.sample(image, ["open the drawer"], generator=torch.Generator().manual_seed(0))
    names = list(model.state_dict())
    # The "eager" backend runs TorchDynamo's capture without a C++ toolchain; on a GPU the default is inductor.
    model.speed_up_inference(compile_transformer=True, compile_backend="eager")
    compiled = model.sample(image, ["open the drawer"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(compiled.actions, eager.actions)
    assert list(model.state_dict()) == names
    reloaded = VideoVLAModel.from_pretrained(model.save_pretrained(tmp_path / "compiled"))
    assert list(reloaded.state_dict()) == names


def test_tf32_is_switched_on_process_wide_only_when_asked():
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    model = VideoVLAModel(TINY)
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        model.speed_up_inference()
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        model.speed_up_inference(tf32=True)
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("tf32",) * 2
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
