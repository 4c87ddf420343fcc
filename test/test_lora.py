"""LoRA fine-tuning on the tiny preset: adapter files, merging, resuming, and refusing another base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videovla_model.configuration import VideoVLAConfig
from videovla_model.lora import (
    ADAPTER_WEIGHTS_NAME,
    AdapterMismatchError,
    fully_trained_names,
    load_adapter_model,
    merge_adapter,
)
from videovla_model.lora import main as merge_main
from videovla_model.modeling import VideoVLAModel
from videovla_model.train import main

TINY = VideoVLAConfig.preset("tiny")
FAST = ["--batch-size", "2", "--num-workers", "0", "--lr", "1e-2", "--warmup-steps", "0"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return VideoVLAModel(TINY).save_pretrained(tmp_path_factory.mktemp("base") / "base")


@pytest.fixture(scope="module")
def lora_run(dataset_dir, base_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("lora") / "run"
    args = ["--dataset", str(dataset_dir), "--output", str(output), "--init-from", str(base_dir), *FAST]
    assert main([*args, "--steps", "2", "--lora-rank", "4", "--lora-alpha", "8"]) == 0
    return output


def _transformer_outputs(model: VideoVLAModel) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    c = model.config
    latents = torch.randn(1, 2, 2 * c.vae.latent_channels, c.latent_height, c.latent_width, generator=generator)
    text = torch.randn(1, c.text.max_length, c.text.d_model, generator=generator)
    actions = torch.randn(1, c.chunk_rows, c.action_dims, generator=generator)
    with torch.no_grad():
        video, action = model.transformer(
            latents, text, torch.tensor([500]), noisy_actions=actions, image_rotary_emb=model.rotary(2)
        )
    assert action is not None
    return video, action


def test_adapter_holds_only_the_trained_tensors(lora_run, base_dir):
    final = lora_run / "final"
    assert not (final / "model.safetensors").exists()
    tensors = load_file(str(final / ADAPTER_WEIGHTS_NAME))
    lora_names = [name for name in tensors if ".lora_A." in name or ".lora_B." in name]
    base = VideoVLAModel.from_pretrained(base_dir)
    action_layers = fully_trained_names(base.transformer)
    assert set(tensors) == set(lora_names) | action_layers
    # q, k, v, out of each of the 2 blocks, an A and a B each.
    assert len(lora_names) == TINY.transformer.num_layers * 4 * 2
    assert any(tensors[name].abs().max() > 0 for name in lora_names if ".lora_B." in name)  # B starts at 0


def test_merged_checkpoint_computes_what_the_adapter_applied_model_computes(lora_run, base_dir, tmp_path):
    merged_dir = tmp_path / "merged"
    assert merge_main([str(lora_run / "final"), str(merged_dir)]) == 0
    applied, _ = load_adapter_model(lora_run / "final")
    merged = VideoVLAModel.from_pretrained(merged_dir)
    base = VideoVLAModel.from_pretrained(base_dir)
    applied_video, applied_action = _transformer_outputs(applied.eval())
    merged_video, merged_action = _transformer_outputs(merged)
    base_video, _ = _transformer_outputs(base)
    torch.testing.assert_close(merged_video, applied_video, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged_action, applied_action, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged_video, base_video, atol=1e-4)  # the adapter changed the model
    assert merged.normalizer == applied.normalizer != VideoVLAModel.default_normalizer(merged.config)


def test_an_adapter_for_another_base_is_refused_in_one_line(lora_run, base_dir, tmp_path):
    other = VideoVLAModel.from_pretrained(base_dir)
    weight = other.transformer.backbone.transformer_blocks[0].attn1.to_q.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.01)
    # Same path, other weights: the adapter names the base by path and checks its fingerprint.
    other.save_pretrained(base_dir)
    try:
        with pytest.raises(AdapterMismatchError) as raised:
            merge_adapter(lora_run / "final", tmp_path / "merged")
        assert "\n" not in str(raised.value) and "trained on another base" in str(raised.value)
    finally:
        with torch.no_grad():
            weight.copy_(original)
        other.save_pretrained(base_dir)


def test_lora_run_resumes_from_its_adapter_checkpoint(dataset_dir, base_dir, tmp_path):
    def run(output: Path, steps: str, *extra: str) -> None:
        args = ["--dataset", str(dataset_dir), "--output", str(output), "--init-from", str(base_dir), *FAST]
        assert main([*args, "--lora-rank", "4", "--steps", steps, "--save-every", "1", *extra]) == 0

    run(tmp_path / "straight", "2")
    run(tmp_path / "resumed", "1")
    run(tmp_path / "resumed", "2", "--resume")
    straight = load_file(str(tmp_path / "straight" / "final" / ADAPTER_WEIGHTS_NAME))
    resumed = load_file(str(tmp_path / "resumed" / "final" / ADAPTER_WEIGHTS_NAME))
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)


def test_lora_without_pretrained_weights_is_refused(dataset_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", str(dataset_dir), "--output", str(tmp_path / "run"), "--preset", "tiny", "--lora-rank", "4"])
    assert "lora_rank needs pre-trained weights" in capsys.readouterr().err


def test_lora_under_bf16_autocast_keeps_the_frozen_weights_in_bf16_and_the_adapter_in_float32(
    dataset_dir, base_dir, tmp_path
):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    output = tmp_path / "bf16"
    args = ["--dataset", str(dataset_dir), "--output", str(output), "--init-from", str(base_dir), *FAST]
    try:
        assert main([*args, "--steps", "1", "--lora-rank", "4", "--mixed-precision", "bf16"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    tensors = load_file(str(output / "final" / ADAPTER_WEIGHTS_NAME))
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_load_policy_opens_an_adapter_folder_merged(lora_run, tmp_path):
    from videovla_model.contract import Observation
    from videovla_model.policy import load_policy

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    merged_dir = tmp_path / "merged"
    merge_adapter(lora_run / "final", merged_dir)
    from_adapter = load_policy(lora_run / "final", num_inference_steps=2, seed=3)
    from_merged = load_policy(merged_dir, num_inference_steps=2, seed=3)
    observation = Observation(image, "pick up the red cube")
    np.testing.assert_allclose(from_adapter.infer(observation).actions, from_merged.infer(observation).actions)
