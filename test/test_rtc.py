"""Real-time chunking in the sampler (videovla_model.rtc): the soft mask, the per-step correction, the sampling
loop with the real schedulers, the tiny model and the policy contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videovla_model.configuration import VideoVLAConfig
from videovla_model.contract import Observation
from videovla_model.diffusion import build_scheduler, sample_loop
from videovla_model.modeling import VideoVLAModel
from videovla_model.normalization import ActionNormalizer
from videovla_model.policy import VideoVLAPolicy
from videovla_model.rtc import ActionPrefix, guidance_weight, guide_action_velocity, prefix_weights

TINY = VideoVLAConfig.preset("tiny")


def test_prefix_weights_follow_the_papers_soft_mask():
    weights = prefix_weights(5, 2)
    assert weights.dtype == np.float32 and weights.shape == (5,)
    np.testing.assert_array_equal(weights[:2], 1.0)
    c = np.array([3, 2, 1]) / 4.0  # (P - i) / (P - d + 1) for i = 2, 3, 4
    np.testing.assert_allclose(weights[2:], c * np.expm1(c) / math.expm1(1.0), rtol=1e-6)
    assert np.all(np.diff(weights[2:]) < 0) and 0 < weights[-1] < weights[2] < 1
    np.testing.assert_array_equal(prefix_weights(3, 3), 1.0)
    assert prefix_weights(0, 0).shape == (0,)


@pytest.mark.parametrize(("rows", "delay", "match"), [(-1, 0, "prefix_rows"), (3, 4, "delay_rows"), (3, -1, "delay")])
def test_prefix_weights_refuse_impossible_counts(rows, delay, match):
    with pytest.raises(ValueError, match=match):
        prefix_weights(rows, delay)


def test_guidance_weight_is_the_clipped_pigdm_weight():
    assert guidance_weight(0.0) == 5.0 and guidance_weight(0.999) == 5.0
    assert guidance_weight(0.5) == pytest.approx(2.0)  # 1 / (a s) is smallest (2) at alpha_bar = 0.5
    assert guidance_weight(0.5, max_guidance=1.5) == 1.5


def make_prefix(rows: int, delay: int, dims: int = 7, seed: int = 0) -> ActionPrefix:
    actions = torch.from_numpy(np.random.default_rng(seed).uniform(-0.8, 0.8, (1, rows, dims)).astype(np.float32))
    return ActionPrefix(actions=actions, weights=torch.from_numpy(prefix_weights(rows, delay))[None])


def test_correction_pins_weight_one_rows_and_leaves_free_rows_alone():
    x_t, v = torch.randn(1, 6, 7), torch.randn(1, 6, 7)
    prefix = make_prefix(rows=4, delay=2)
    for alpha_bar in (0.0, 0.3, 0.5, 0.97):
        guided = guide_action_velocity(x_t, v, alpha_bar, prefix)
        a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x0 = a * x_t - s * guided
        torch.testing.assert_close(x0[:, :2], prefix.actions[:, :2], atol=1e-5, rtol=0)
        assert torch.equal(guided[:, 4:], v[:, 4:])
        unguided_x0 = a * x_t - s * v
        # Soft rows move towards the prefix, never past it.
        before = (unguided_x0[:, 2:4] - prefix.actions[:, 2:4]).abs()
        after = (x0[:, 2:4] - prefix.actions[:, 2:4]).abs()
        assert torch.all(after <= before + 1e-6)


def rowwise_denoise(video: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A denoiser with no interaction between action rows (v = 0.3 x + sin(x)), so free rows can be compared."""
    return 0.3 * video + torch.sin(video), 0.3 * actions + torch.sin(actions)


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_sample_loop_inpaints_the_prefix_with_the_real_schedulers(sampler):
    shapes = ((1, 2, 4, 2, 2), (1, 6, 7))
    prefix = make_prefix(rows=4, delay=2)

    def run(action_prefix: ActionPrefix | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        scheduler = build_scheduler(TINY.diffusion, sampler)
        result = sample_loop(
            rowwise_denoise, scheduler, *shapes, 6, torch.device("cpu"), torch.float32, generator, None, action_prefix
        )
        return result.actions

    free, guided = run(None), run(prefix)
    torch.testing.assert_close(guided[:, :2], prefix.actions[:, :2], atol=1e-4, rtol=0)
    torch.testing.assert_close(guided[:, 4:], free[:, 4:], atol=0, rtol=0)
    # The overlap rows end between the free sample and the prefix.
    assert torch.all((guided[:, 2:4] - prefix.actions[:, 2:4]).abs() <= (free[:, 2:4] - prefix.actions[:, 2:4]).abs())


@pytest.fixture(scope="module")
def tiny_model() -> VideoVLAModel:
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    actions = np.random.default_rng(0).normal(0, 0.01, size=(500, 7))
    actions[:, 6] = np.random.default_rng(1).integers(0, 2, 500)
    model.set_normalizer(ActionNormalizer.fit(actions, TINY.action_dim_names))
    return model.eval()


def test_tiny_model_sample_keeps_the_prefix_rows(tiny_model):
    observation = torch.rand(1, 3, *TINY.image_size) * 2 - 1
    prefix = make_prefix(rows=3, delay=2, seed=5)
    out = tiny_model.sample(
        observation, ["pick"], num_inference_steps=3, generator=torch.Generator().manual_seed(0), action_prefix=prefix
    )
    torch.testing.assert_close(out.actions[:, :2], prefix.actions[:, :2], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"action_prefix.actions has 7 rows, the chunk only 6"):
        tiny_model.sample(observation, ["pick"], action_prefix=make_prefix(rows=7, delay=1))


def test_policy_answer_starts_with_the_prefix_in_robot_units(tiny_model):
    policy = VideoVLAPolicy(tiny_model, num_inference_steps=3, seed=0)
    prefix = np.array([[0.004, -0.002, 0.001, 0.0, 0.01, -0.01, 1.0], [0.005, -0.001, 0.0, 0.0, 0.0, 0.01, 1.0]])
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = policy.infer(Observation(image, "pick", action_prefix=prefix, inference_delay_rows=2))
    np.testing.assert_allclose(out.actions[:2], prefix, atol=1e-5)
    with pytest.raises(ValueError, match=r"inference_delay_rows must be in \[0, 2\]"):
        policy.infer(Observation(image, "pick", action_prefix=prefix, inference_delay_rows=3))
    with pytest.raises(ValueError, match=r"action_prefix must be a \(rows, 7\) array"):
        policy.infer(Observation(image, "pick", action_prefix=prefix[:, :6]))
