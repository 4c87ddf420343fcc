"""VideoVLAPolicy behind the numpy contract, on a tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videovla_model.configuration import VideoVLAConfig
from videovla_model.contract import Observation, Policy, PolicyOutput, validate_output
from videovla_model.modeling import VideoVLAModel
from videovla_model.normalization import ActionNormalizer
from videovla_model.policy import VideoVLAPolicy, choose_dtype, load_policy

TINY = VideoVLAConfig.preset("tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    rng = np.random.default_rng(0)
    actions = rng.normal(0, 0.02, size=(500, 7))
    actions[:, 6] = rng.integers(0, 2, 500)
    model.set_normalizer(ActionNormalizer.fit(actions, TINY.action_dim_names))
    return model.save_pretrained(tmp_path_factory.mktemp("policy_checkpoint"))


@pytest.fixture(scope="module")
def policy(checkpoint) -> VideoVLAPolicy:
    return load_policy(checkpoint, num_inference_steps=3, seed=0)


def camera_image(height: int = 120, width: int = 160) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_policy_satisfies_the_contract(policy):
    assert isinstance(policy, Policy)
    meta = policy.metadata
    assert meta.action_dim_names == TINY.action_dim_names
    assert (meta.chunk_rows, meta.execute_rows, meta.time_step) == (6, 3, TINY.time_step)
    assert meta.image_size == (64, 64) and meta.embodiment_ids == (0,)
    assert meta.imagined_frame_period == TINY.video_frame_period


def test_infer_returns_a_thresholded_float32_chunk(policy):
    out = policy.infer(Observation(camera_image(), "pick up the red cube"))
    validate_output(out, policy.metadata)
    assert out.actions.shape == (6, 7) and out.actions.dtype == np.float32
    assert np.all(np.isfinite(out.actions))
    assert set(np.unique(out.actions[:, 6])) <= {0.0, 1.0}
    assert out.imagination is None and policy.decode_imagination(out) is None
    keys = {"text_encoding", "observation_encoding", "denoising", "denoising_step_mean", "action_readout", "total"}
    assert keys <= set(out.timings)
    assert out.timings["total"] >= out.timings["denoising"] > 0


def test_imagination_is_decoded_in_a_second_call_after_the_chunk(policy, monkeypatch):
    decoded: list[int] = []
    decode = policy.model.decode_latents
    monkeypatch.setattr(policy.model, "decode_latents", lambda latents: decoded.append(1) or decode(latents))
    out = policy.infer(Observation(camera_image(48, 48), "open the drawer"), imagine=True)
    assert not decoded and out.imagination is not None  # the chunk came back with nothing decoded
    validate_output(out, policy.metadata)
    frames = policy.decode_imagination(out)
    assert decoded == [1]
    assert frames is not None and frames.dtype == np.uint8
    assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.shape[0] >= TINY.sample_num_frames


def test_a_foreign_imagination_handle_is_refused(policy):
    out = PolicyOutput(actions=np.zeros((6, 7), np.float32), imagination="latents of another policy")
    with pytest.raises(ValueError, match="was not made by a VideoVLAPolicy, got str"):
        policy.decode_imagination(out)


@pytest.mark.parametrize(
    ("requested", "device_type", "bf16", "expected"),
    [
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda", False, "float32"),
        ("auto", "cpu", False, "float32"),
        ("float16", "cuda", False, "float16"),
        ("bfloat16", "cpu", False, "bfloat16"),
    ],
)
def test_dtype_auto_is_bf16_on_cuda_with_support_and_float32_elsewhere(requested, device_type, bf16, expected):
    assert choose_dtype(requested, device_type, bf16) == expected


def test_bf16_on_a_gpu_without_it_and_unknown_dtypes_are_refused_in_one_line():
    with pytest.raises(ValueError, match="needs a GPU with bfloat16 support") as raised:
        choose_dtype("bfloat16", "cuda", bf16_supported=False)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="dtype must be one of"):
        choose_dtype("fp8", "cpu", bf16_supported=False)


def test_load_policy_defaults_to_float32_on_cpu(policy):
    assert policy.model.dtype == torch.float32


def test_same_seed_reproduces_the_answers(checkpoint):
    image = camera_image()
    first = load_policy(checkpoint, num_inference_steps=2, seed=7)
    second = load_policy(checkpoint, num_inference_steps=2, seed=7)
    for _ in range(2):
        a = first.infer(Observation(image, "stack the blocks")).actions
        b = second.infer(Observation(image, "stack the blocks")).actions
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("observation", "pattern"),
    [
        (Observation(np.zeros((64, 64, 3), np.float32), "go"), r"observation.image must have dtype uint8"),
        (Observation(np.full((64, 64, 3), np.nan, np.float32), "go"), r"observation.image must have dtype uint8"),
        (Observation(np.zeros((64, 64, 4), np.uint8), "go"), r"observation.image must have shape \(H, W, 3\)"),
        (Observation(np.zeros((64, 64, 3), np.uint8), "  "), r"observation.instruction must be a non-empty string"),
        (Observation(np.zeros((64, 64, 3), np.uint8), "go", 3), r"observation.embodiment_id must be one of \(0,\)"),
    ],
)
def test_bad_observations_raise_value_errors(policy, observation, pattern):
    with pytest.raises(ValueError, match=pattern):
        policy.infer(observation)
    # The policy keeps working after a rejected input.
    assert policy.infer(Observation(camera_image(), "go")).actions.shape == (6, 7)


def test_bad_sampling_options_are_rejected(checkpoint):
    with pytest.raises(ValueError, match=r"num_inference_steps must be >= 1, got 0"):
        VideoVLAPolicy.from_pretrained(checkpoint, num_inference_steps=0)
    with pytest.raises(ValueError, match=r"guidance_scale must be >= 1"):
        VideoVLAPolicy.from_pretrained(checkpoint, guidance_scale=0.0)
    with pytest.raises(FileNotFoundError, match=r"no VideoVLA checkpoint directory"):
        load_policy(checkpoint / "missing")


def test_importing_the_policy_module_does_not_import_torch():
    code = "import sys, videovla_model.policy; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_policy_on_cuda_runs_bf16_by_default_where_the_gpu_has_it(checkpoint):
    on_gpu = load_policy(checkpoint, device="cuda", num_inference_steps=2, seed=0)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    assert on_gpu.model.dtype == expected
    out = on_gpu.infer(Observation(camera_image(), "pick up the red cube"), imagine=True)
    validate_output(out, on_gpu.metadata)
    frames = on_gpu.decode_imagination(out)
    assert frames is not None and frames.dtype == np.uint8
