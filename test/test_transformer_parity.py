"""VideoVLATransformer against diffusers' stock CogVideoXTransformer3DModel, and its attention modes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from videovla_model.configuration import VideoVLAConfig
from videovla_model.transformer import VideoVLATransformer, cogvideox_transformer_kwargs, rotary_embedding

TINY = VideoVLAConfig.preset("tiny")


def _inputs(config: VideoVLAConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor | tuple]:
    generator = torch.Generator().manual_seed(seed)
    frames, channels = config.train_latent_frames, 2 * config.vae.latent_channels
    h, w = config.latent_height, config.latent_width
    return {
        "hidden_states": torch.randn(batch, frames, channels, h, w, generator=generator),
        "encoder_hidden_states": torch.randn(batch, config.text.max_length, config.text.d_model, generator=generator),
        "timestep": torch.tensor([3, 870])[:batch],
        "image_rotary_emb": rotary_embedding(config, frames, h, w, torch.device("cpu")),
    }


def _actions(config: VideoVLAConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.chunk_rows, config.action_dims, generator=generator)


@torch.no_grad()
def test_video_only_pass_equals_stock_cogvideox():
    torch.manual_seed(0)
    stock = CogVideoXTransformer3DModel(**cogvideox_transformer_kwargs(TINY)).eval()
    model = VideoVLATransformer(TINY).eval()
    model.backbone.load_state_dict(stock.state_dict())
    inputs = _inputs(TINY)
    expected = stock(**inputs, return_dict=False)[0]
    video, actions = model(**inputs)
    assert actions is None
    assert video.shape == expected.shape == (2, TINY.train_latent_frames, TINY.vae.latent_channels, 8, 8)
    torch.testing.assert_close(video, expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_action_pass_shapes_and_rotary_left_to_video():
    torch.manual_seed(0)
    model = VideoVLATransformer(TINY).eval()
    inputs = _inputs(TINY)
    video, actions = model(**inputs, noisy_actions=_actions(TINY), embodiment_ids=torch.tensor([0, 0]))
    assert video.shape == (2, TINY.train_latent_frames, TINY.vae.latent_channels, 8, 8)
    assert actions is not None and actions.shape == (2, TINY.chunk_rows, TINY.action_dims)
    assert torch.isfinite(actions).all()


@torch.no_grad()
@pytest.mark.parametrize(("mode", "video_depends_on_actions"), [("bidirectional", True), ("causal", False)])
def test_causal_mode_hides_actions_from_video(mode, video_depends_on_actions):
    torch.manual_seed(0)
    model = VideoVLATransformer(dataclasses.replace(TINY, attention_mode=mode)).eval()
    # Non-zero output modulation so every path carries signal.
    torch.nn.init.normal_(model.action_norm_out.linear.weight, std=0.1)
    inputs = _inputs(TINY)
    video_a, actions_a = model(**inputs, noisy_actions=_actions(TINY, seed=1))
    video_b, actions_b = model(**inputs, noisy_actions=_actions(TINY, seed=2))
    assert not torch.allclose(actions_a, actions_b)
    assert torch.equal(video_a, video_b) is not video_depends_on_actions
    if not video_depends_on_actions:
        # In causal mode the video is exactly what it would be without action tokens at all.
        torch.testing.assert_close(video_a, model(**inputs)[0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_embodiment_changes_actions():
    config = dataclasses.replace(TINY, num_embodiments=2)
    torch.manual_seed(0)
    model = VideoVLATransformer(config).eval()
    inputs = _inputs(config)
    noisy = _actions(config)
    _, first = model(**inputs, noisy_actions=noisy, embodiment_ids=torch.tensor([0, 0]))
    _, second = model(**inputs, noisy_actions=noisy, embodiment_ids=torch.tensor([1, 1]))
    assert not torch.allclose(first, second)


def test_bad_action_shape_is_named():
    model = VideoVLATransformer(TINY)
    with pytest.raises(ValueError, match=r"noisy_actions must have shape \(B, 6, 7\), got \(2, 5, 7\)"):
        model(**_inputs(TINY), noisy_actions=torch.zeros(2, 5, 7))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VideoVLATransformer(TINY)
    inputs = _inputs(TINY)
    noisy = _actions(TINY)

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        video, actions = model(**inputs, noisy_actions=noisy)
        (video.square().mean() + actions.square().mean()).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = gradients()
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
