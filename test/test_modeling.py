"""VideoVLAModel on the tiny preset: loss, training, sampling, checkpoints and CogVideoX initialisation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from transformers import ByT5Tokenizer

from videovla_model.batch import TrainingBatch
from videovla_model.configuration import VideoVLAConfig
from videovla_model.modeling import VideoVLAModel, vae_kwargs
from videovla_model.text import build_text_encoder
from videovla_model.transformer import cogvideox_transformer_kwargs
from videovla_model.weights import CheckpointMismatchError, meta_tensor_names

TINY = VideoVLAConfig.preset("tiny")


def make_batch(config: VideoVLAConfig = TINY, size: int = 2, seed: int = 0) -> TrainingBatch:
    generator = torch.Generator().manual_seed(seed)
    h, w = config.image_size
    video = torch.rand(size, 3, config.train_num_frames, h, w, generator=generator) * 2 - 1
    return TrainingBatch(
        observation=video[:, :, 0].clone(),
        video=video,
        instructions=[("pick up the red cube", "open the drawer")[i % 2] for i in range(size)],
        actions=torch.rand(size, config.chunk_rows, config.action_dims, generator=generator) * 2 - 1,
        action_mask=torch.ones(size, config.chunk_rows, dtype=torch.bool),
        embodiment_ids=torch.zeros(size, dtype=torch.long),
    )


@pytest.fixture(scope="module")
def tiny_model() -> VideoVLAModel:
    torch.manual_seed(0)
    return VideoVLAModel(TINY).eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("tiny_checkpoint"))


def test_loss_output_has_grad_only_on_the_total(tiny_model):
    out = tiny_model.compute_loss(make_batch(), torch.Generator().manual_seed(0))
    assert out.loss.requires_grad and out.loss.ndim == 0
    assert not out.video_loss.requires_grad and not out.action_loss.requires_grad
    expected = TINY.loss.video_weight * out.video_loss + TINY.loss.action_weight * out.action_loss
    torch.testing.assert_close(out.loss.detach(), expected)


def test_frozen_parts_are_not_trainable(tiny_model):
    trainable = {id(p) for p in tiny_model.trainable_parameters()}
    assert trainable == {id(p) for p in tiny_model.transformer.parameters()}
    assert not any(p.requires_grad for p in tiny_model.vae.parameters())
    assert not any(p.requires_grad for p in tiny_model.text_encoder.parameters())
    tiny_model.train()
    assert not tiny_model.text_encoder.training and not tiny_model.vae.training
    tiny_model.eval()


def test_video_loss_ablation_drops_the_video_term():
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, loss=dataclasses.replace(TINY.loss, use_video_loss=False, action_weight=2.0))
    out = VideoVLAModel(config).compute_loss(make_batch(config), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.loss.detach(), 2.0 * out.action_loss)
    assert out.video_loss > 0


def test_fully_masked_actions_give_zero_action_loss(tiny_model):
    batch = make_batch()
    batch.action_mask[:] = False
    out = tiny_model.compute_loss(batch, torch.Generator().manual_seed(0))
    assert out.action_loss.item() == 0.0


def test_bad_batch_is_rejected_with_the_field_name(tiny_model):
    batch = make_batch()
    bad_actions = dataclasses.replace(batch, actions=torch.zeros(2, 5, 7))
    with pytest.raises(ValueError, match=r"batch.actions must have shape \(2, 6, 7\), got \(2, 5, 7\)"):
        tiny_model.compute_loss(bad_actions)
    bad_video = dataclasses.replace(batch, video=batch.video[:, :, :4])
    with pytest.raises(ValueError, match=r"batch.video must have shape \(2, 3, 4k\+1, 64, 64\)"):
        tiny_model.compute_loss(bad_video)
    bad_ids = dataclasses.replace(batch, embodiment_ids=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"batch.embodiment_ids must be in \[0, 1\), got \[0, 3\]"):
        tiny_model.compute_loss(bad_ids)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, loss=dataclasses.replace(TINY.loss, text_dropout_prob=0.0))
    model = VideoVLAModel(config).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3, weight_decay=1e-4)
    batch = make_batch(config)
    losses = []
    for _ in range(25):
        # The same noise every step: the loss is then a fixed function of the weights.
        out = model.compute_loss(batch, torch.Generator().manual_seed(123))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_trains(tiny_model):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY).train()
    model.enable_gradient_checkpointing()
    model.compute_loss(make_batch(), torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_sample_shapes_timings_and_prompt_cache(tiny_model):
    batch = make_batch()
    before = tiny_model.prompt_cache.misses
    out = tiny_model.sample(batch.observation, batch.instructions, generator=torch.Generator().manual_seed(0))
    again = tiny_model.sample(batch.observation, batch.instructions, generator=torch.Generator().manual_seed(0))
    assert tiny_model.prompt_cache.misses - before <= 3  # two instructions + "" at most, and only the first time
    assert out.actions.shape == (2, TINY.chunk_rows, TINY.action_dims)
    assert out.actions.abs().max() <= 1.0
    assert out.video_latents.shape == (2, TINY.sample_latent_frames, TINY.vae.latent_channels, 8, 8)
    assert out.video is None
    torch.testing.assert_close(out.actions, again.actions, rtol=0, atol=0)
    expected = {"text_encoding", "observation_encoding", "denoising", "denoising_step_mean", "action_readout"}
    assert expected | {"video_decoding", "total"} == set(out.timings)


def test_sample_decodes_video_in_range(tiny_model):
    batch = make_batch(size=1)
    out = tiny_model.sample(batch.observation, batch.instructions, decode_video=True, num_inference_steps=2)
    assert out.video is not None and out.video.shape[:2] == (1, 3) and out.video.shape[3:] == (64, 64)
    assert out.video.min() >= -1 and out.video.max() <= 1


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_samplers_and_guidance_settings(tiny_model, sampler, guidance_scale):
    batch = make_batch(size=1)
    out = tiny_model.sample(
        batch.observation,
        batch.instructions,
        sampler=sampler,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(out.actions).all() and torch.isfinite(out.video_latents).all()


def test_guidance_restricted_to_actions_leaves_causal_video_unguided():
    torch.manual_seed(0)
    model = VideoVLAModel(dataclasses.replace(TINY, attention_mode="causal")).eval()
    batch = make_batch(size=1)

    def run(scale: float, target: str) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.sample(
            batch.observation,
            batch.instructions,
            guidance_scale=scale,
            guidance_target=target,
            generator=torch.Generator().manual_seed(0),
        )
        return out.video_latents, out.actions

    plain_video, plain_actions = run(1.0, "video_and_actions")
    video, actions = run(4.0, "actions")
    torch.testing.assert_close(video, plain_video, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(actions, plain_actions)
    guided_video, _ = run(4.0, "video_and_actions")
    assert not torch.allclose(guided_video, plain_video)


def test_sample_rejects_bad_inputs(tiny_model):
    good = make_batch(size=1).observation
    with pytest.raises(ValueError, match=r"observation must have shape \(B, 3, 64, 64\), got \(1, 3, 32, 64\)"):
        tiny_model.sample(good[:, :, :32], ["x"])
    with pytest.raises(ValueError, match=r"observation must be a finite floating-point tensor"):
        tiny_model.sample(torch.full_like(good, float("nan")), ["x"])
    with pytest.raises(ValueError, match=r"instructions must be a list of 1 strings"):
        tiny_model.sample(good, ["a", "b"])
    with pytest.raises(ValueError, match=r"guidance_scale must be >= 1"):
        tiny_model.sample(good, ["x"], guidance_scale=0.5)
    with pytest.raises(ValueError, match=r"embodiment_ids must be 1 ints in \[0, 1\), got \[2\]"):
        tiny_model.sample(good, ["x"], embodiment_ids=[2])


def test_save_load_round_trip_gives_identical_samples(tiny_model, tiny_checkpoint):
    files = {p.relative_to(tiny_checkpoint).as_posix() for p in tiny_checkpoint.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "normalization.json"} <= files
    assert any(f.startswith("vae/") and f.endswith(".safetensors") for f in files)
    assert any(f.startswith("text_encoder/") and f.endswith(".safetensors") for f in files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    loaded = VideoVLAModel.from_pretrained(tiny_checkpoint)
    assert loaded.config == tiny_model.config
    assert loaded.normalizer == tiny_model.normalizer
    batch = make_batch(size=1)
    kwargs = {"decode_video": True, "num_inference_steps": 3}
    first = tiny_model.sample(
        batch.observation, batch.instructions, generator=torch.Generator().manual_seed(5), **kwargs
    )
    second = loaded.sample(batch.observation, batch.instructions, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(first.actions, second.actions)
    assert torch.equal(first.video_latents, second.video_latents)
    assert torch.equal(first.video, second.video)


def test_bfloat16_load_samples_finite_actions(tiny_checkpoint):
    model = VideoVLAModel.from_pretrained(tiny_checkpoint, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    batch = make_batch(size=1)
    out = model.sample(batch.observation, batch.instructions, num_inference_steps=2)
    assert torch.isfinite(out.actions).all()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"chunk_rows": 8}, r"action_pos_embed \(checkpoint \[6, 32\], model \[8, 32\]\)"),
        (
            {"transformer": {"num_layers": 3}},
            r"missing from checkpoint: backbone\.transformer_blocks\.2\.\S+ \[",
        ),
    ],
)
def test_mismatched_checkpoint_names_tensors(tiny_checkpoint, tmp_path, changes, pattern):
    target = tmp_path / "broken"
    target.mkdir()
    for item in tiny_checkpoint.iterdir():
        (target / item.name).symlink_to(item)
    data = json.loads((tiny_checkpoint / "config.json").read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointMismatchError, match=pattern):
        VideoVLAModel.from_pretrained(target)


def _save_stock_cogvideox(root: Path, config: VideoVLAConfig, **overrides: object) -> CogVideoXTransformer3DModel:
    """A tiny CogVideoX image-to-video directory laid out as diffusers ships it."""
    torch.manual_seed(1)
    kwargs = {**cogvideox_transformer_kwargs(config), **overrides}
    stock = CogVideoXTransformer3DModel(**kwargs)
    stock.save_pretrained(root / "transformer")
    AutoencoderKLCogVideoX(**vae_kwargs(config)).save_pretrained(root / "vae")
    build_text_encoder(config.text).save_pretrained(root / "text_encoder")
    ByT5Tokenizer().save_pretrained(root / "tokenizer")
    return stock


def test_from_cogvideox_loads_backbone_and_initialises_added_layers(tmp_path):
    # The stock I2V model carries a learned positional table; VideoVLA drops it (rotary positions only).
    stock = _save_stock_cogvideox(tmp_path, TINY, use_learned_positional_embeddings=True)
    model = VideoVLAModel.from_cogvideox(tmp_path, TINY)
    assert meta_tensor_names(model) == []
    backbone = model.transformer.backbone.state_dict()
    for name, tensor in stock.state_dict().items():
        if name != "patch_embed.pos_embedding":
            assert torch.equal(backbone[name], tensor), name
    for module in model.transformer.added_layers():
        for name, parameter in module.named_parameters():
            assert parameter.device.type == "cpu" and torch.isfinite(parameter).all(), name
    assert model.transformer.action_in.weight.abs().sum() > 0
    assert model.transformer.action_pos_embed.abs().sum() > 0
    out = model.compute_loss(make_batch(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_from_cogvideox_rejects_a_different_architecture(tmp_path):
    _save_stock_cogvideox(tmp_path, TINY, num_layers=3)
    with pytest.raises(ValueError, match=r"num_layers: checkpoint 3 vs config 2"):
        VideoVLAModel.from_cogvideox(tmp_path, TINY)


def test_from_cogvideox_requires_the_diffusers_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"transformer/ is missing"):
        VideoVLAModel.from_cogvideox(tmp_path, TINY)


def test_config_swap_allows_runtime_fields_only():
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    model.config = dataclasses.replace(TINY, time_step=0.05, attention_mode="causal", gripper_threshold=0.7)
    assert model.config.time_step == 0.05
    assert model.transformer.config.attention_mode == "causal"
    assert model.normalizer.gripper_threshold == 0.7
    with pytest.raises(ValueError, match=r"cannot change \['chunk_rows'\] on a built VideoVLAModel"):
        model.config = dataclasses.replace(TINY, chunk_rows=8, execute_rows=3)
    assert model.config.chunk_rows == TINY.chunk_rows
