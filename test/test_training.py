"""`videovla-train` end to end on the tiny preset: CLI, checkpoints, metrics, exact resume, errors, two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from safetensors.torch import load_file
from test_data import square_episode, write_square_dataset
from transformers import ByT5Tokenizer

from videovla_model.configuration import VideoVLAConfig
from videovla_model.contract import Observation
from videovla_model.data import EpisodeWindowDataset, collate_samples, compute_action_statistics
from videovla_model.episodes import EpisodeDataset, EpisodeWriter
from videovla_model.modeling import VideoVLAModel, vae_kwargs
from videovla_model.policy import load_policy
from videovla_model.text import build_text_encoder
from videovla_model.train import main, read_metrics, step_generator, step_seed
from videovla_model.training_config import TrainingConfig
from videovla_model.transformer import cogvideox_transformer_kwargs

TINY = VideoVLAConfig.preset("tiny")
FAST = ["--preset", "tiny", "--batch-size", "2", "--num-workers", "0", "--lr", "1e-3"]


def train(dataset: Path, output: Path, *extra: str) -> int:
    return main(["--dataset", str(dataset), "--output", str(output), *FAST, *extra])


def transformer_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_cli_trains_and_writes_checkpoints_metrics_and_a_loadable_final_model(dataset_dir, tmp_path):
    output = tmp_path / "run"
    args = ["--steps", "4", "--save-every", "1", "--keep-checkpoints", "2", "--log-every", "1", "--warmup-steps", "2"]
    assert train(dataset_dir, output, *args) == 0

    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    state = json.loads((output / "checkpoint-4" / "training_state.json").read_text())
    assert state == {"step": 4, "num_processes": 1, "batch_size": 2}
    rows = read_metrics(output / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(np.isfinite([row["loss"], row["video_loss"], row["action_loss"]]).all() for row in rows)
    assert all(row["samples_per_s"] > 0 for row in rows)
    assert [row["lr"] for row in rows] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])  # linear warm-up, then constant
    saved = TrainingConfig.load(output)
    assert (saved.steps, saved.batch_size, saved.lr, saved.warmup_steps) == (4, 2, 1e-3, 2)

    # Optimizer and scheduler states load without unpickling arbitrary objects.
    torch.load(output / "checkpoint-4" / "optimizer.bin", weights_only=True)
    torch.load(output / "checkpoint-4" / "scheduler.bin", weights_only=True)
    final = transformer_weights(output / "final")
    assert all(torch.equal(final[k], v) for k, v in transformer_weights(output / "checkpoint-4").items())

    model = VideoVLAModel.from_pretrained(output / "final")
    assert model.normalizer == compute_action_statistics(EpisodeDataset(dataset_dir), TINY.action_dim_names)
    assert model.config.time_step == pytest.approx(0.1)  # the dataset's 10 Hz
    policy = load_policy(output / "final", num_inference_steps=2, seed=0)
    frames, _, instruction = square_episode("red", "right", 2, np.random.default_rng(0))
    answer = policy.infer(Observation(image=frames[0], instruction=instruction))
    assert answer.actions.shape == (TINY.chunk_rows, 7)
    assert set(answer.actions[:, 6].tolist()) <= {0.0, 1.0}


def test_resume_from_a_mid_run_checkpoint_is_bit_exact(dataset_dir, tmp_path):
    schedule = [
        "--steps",
        "6",
        "--save-every",
        "3",
        "--log-every",
        "1",
        "--warmup-steps",
        "2",
        "--lr-schedule",
        "cosine",
    ]
    straight = tmp_path / "straight"
    assert train(dataset_dir, straight, *schedule) == 0
    # A run that died after writing checkpoint-3: only that checkpoint and the run's settings survive.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copytree(straight / "checkpoint-3", crashed / "checkpoint-3")
    shutil.copy(straight / "training_config.json", crashed / "training_config.json")
    assert train(dataset_dir, crashed, *schedule, "--resume") == 0

    expected, resumed = transformer_weights(straight / "final"), transformer_weights(crashed / "final")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    # The weights really moved between the checkpoint and the end, so the comparison is not vacuous.
    middle = transformer_weights(straight / "checkpoint-3")
    assert not all(torch.equal(expected[name], middle[name]) for name in expected)
    straight_rows, resumed_rows = read_metrics(straight / "metrics.csv"), read_metrics(crashed / "metrics.csv")
    assert [row["step"] for row in resumed_rows] == [4, 5, 6]
    for row in (*straight_rows, *resumed_rows):
        del row["samples_per_s"]  # wall-clock
    assert resumed_rows == straight_rows[3:]


def test_without_video_loss_only_the_action_loss_trains(dataset_dir, tmp_path):
    output = tmp_path / "actions_only"
    assert train(dataset_dir, output, "--steps", "2", "--log-every", "1", "--no-video-loss") == 0
    rows = read_metrics(output / "metrics.csv")
    assert all(row["loss"] == pytest.approx(row["action_loss"]) for row in rows)
    assert all(row["video_loss"] > 0 for row in rows)  # still measured, just not trained on
    assert VideoVLAModel.from_pretrained(output / "final").config.loss.use_video_loss is False


def test_init_from_cogvideox_then_fine_tune_from_the_result(dataset_dir, tmp_path):
    # A tiny CogVideoX image-to-video folder laid out as diffusers ships it.
    stock = tmp_path / "cogvideox"
    torch.manual_seed(1)
    CogVideoXTransformer3DModel(**cogvideox_transformer_kwargs(TINY)).save_pretrained(stock / "transformer")
    AutoencoderKLCogVideoX(**vae_kwargs(TINY)).save_pretrained(stock / "vae")
    build_text_encoder(TINY.text).save_pretrained(stock / "text_encoder")
    ByT5Tokenizer().save_pretrained(stock / "tokenizer")
    first = tmp_path / "from_cogvideox"
    assert train(dataset_dir, first, "--init-cogvideox", str(stock), "--steps", "1") == 0
    vae = load_file(str(stock / "vae" / "diffusion_pytorch_model.safetensors"))
    trained_vae = load_file(str(first / "final" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(vae[name], trained_vae[name]) for name in vae)  # frozen, and really the stock one

    # Fine-tuning a trained model on new data keeps the statistics its actions were learnt with.
    other_data = write_square_dataset(tmp_path / "other", lengths=(15,), seed=7)
    second = tmp_path / "fine_tuned"
    args = ["--dataset", str(other_data.root), "--output", str(second), "--init-from", str(first / "final")]
    assert main([*args, "--batch-size", "2", "--num-workers", "0", "--steps", "1"]) == 0
    kept = VideoVLAModel.from_pretrained(second / "final").normalizer
    assert kept == VideoVLAModel.from_pretrained(first / "final").normalizer
    assert kept != compute_action_statistics(other_data, TINY.action_dim_names)


def test_loss_falls_on_a_fixed_batch(dataset_dir):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    episodes = EpisodeDataset(dataset_dir)
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    model.set_normalizer(normalizer)
    dataset = EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=1)
    batch = collate_samples([dataset[i] for i in (0, 5, 10, 20)])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        # The same noise every step makes the objective a fixed function of the weights.
        output = model.compute_loss(batch, generator=step_generator(0, 0, 0, torch.device("cpu")))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def test_step_seeds_differ_across_steps_and_processes():
    seeds = {step_seed(0, step, rank) for step in range(50) for rank in range(4)}
    assert len(seeds) == 200
    assert step_seed(0, 3, 1) == step_seed(0, 3, 1) != step_seed(1, 3, 1)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--init-cogvideox", "--resume", "--mixed-precision", "--frame-stride", "--no-video-loss"):
        assert option in text


def test_bad_dataset_fails_before_training_and_names_the_episode(tmp_path, capsys):
    frames, actions, text = square_episode("red", "left", 5, np.random.default_rng(0))
    names = ("droll", "dpitch", "dyaw", "dx", "dy", "dz", "gripper")
    folder = EpisodeWriter(tmp_path / "data").write(frames, actions, text, 10.0, action_dim_names=names)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path / "data", tmp_path / "run", "--steps", "2")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert folder.name in error and "same names in a different order" in error
    assert not (tmp_path / "run").exists()


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_used_folders(dataset_dir, tmp_path, capsys):
    output = tmp_path / "run"
    assert train(dataset_dir, output, "--steps", "2", "--save-every", "2") == 0
    with pytest.raises(SystemExit):
        train(dataset_dir, output, "--steps", "4", "--resume", "--lr", "2e-3")
    assert "lr: saved 0.001, now 0.002" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(dataset_dir, output, "--steps", "4")
    assert "already holds checkpoints (newest: checkpoint-2); pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(dataset_dir, output, "--steps", "4", "--resume", str(output / "checkpoint-9"))
    assert "not a complete checkpoint folder" in capsys.readouterr().err
    # A longer run may resume: it continues from step 2 and keeps the earlier metrics.
    assert train(dataset_dir, output, "--steps", "3", "--save-every", "2", "--log-every", "1", "--resume") == 0
    assert [row["step"] for row in read_metrics(output / "metrics.csv")] == [2, 3]


def test_processes_that_do_not_form_a_group_are_refused(dataset_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; accelerate on CPU only joins with ACCELERATE_USE_CPU
    with pytest.raises(SystemExit):
        train(dataset_dir, tmp_path / "run", "--steps", "1")
    assert "launched as 2 processes but accelerate joined 1" in capsys.readouterr().err


@pytest.mark.parametrize("video_loss", [True, False], ids=["joint_loss", "no_video_loss"])
def test_two_cpu_processes_train_one_model_with_gloo(dataset_dir, tmp_path, video_loss):
    output = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(20000 + os.getpid() % 20000),
        "-m",
        "videovla_model.train",
        "--dataset",
        str(dataset_dir),
        "--output",
        str(output),
        *FAST,
        "--steps",
        "4",
        "--save-every",
        "2",
        "--log-every",
        "2",
        *([] if video_loss else ["--no-video-loss"]),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "weights identical on all 2 processes" in result.stderr
    state = json.loads((output / "checkpoint-4" / "training_state.json").read_text())
    assert state["num_processes"] == 2
    assert (output / "checkpoint-4" / "random_states_1.pkl").is_file()
    rows = read_metrics(output / "metrics.csv")
    assert [row["step"] for row in rows] == [2, 4]  # one writer, not one per process
    assert VideoVLAModel.from_pretrained(output / "final").config.loss.use_video_loss is video_loss


def test_training_config_validates_fields_and_round_trips(tmp_path):
    config = TrainingConfig(dataset="d", output="o", preset="tiny", betas=(0.9, 0.95))
    config.save(tmp_path)
    assert TrainingConfig.load(tmp_path) == config
    for changes, message in [
        ({"preset": None}, "exactly one of preset, model_config, init_from"),
        ({"init_from": "ckpt"}, r"exactly one of .* got \['preset', 'init_from'\]"),
        ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be 'no', 'bf16' or 'fp16', got 'fp8'"),
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"lr_schedule": "step"}, "lr_schedule must be 'constant', 'linear' or 'cosine'"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainingConfig(**{**config.to_dict(), "betas": config.betas, **changes})
    with pytest.raises(ValueError, match=r"unknown training config keys \['learning_rate'\]"):
        TrainingConfig.from_dict({**config.to_dict(), "learning_rate": 1.0})


def test_memory_estimate_is_printed_and_a_run_over_the_limit_is_refused_before_loading(
    dataset_dir, tmp_path, capsys, caplog
):
    caplog.set_level("INFO", logger="videovla.train")
    assert train(dataset_dir, tmp_path / "fits", "--steps", "1", "--max-memory-gb", "64") == 0
    assert "total on device" in caplog.text and "optimizer state" in caplog.text
    with pytest.raises(SystemExit):
        train(dataset_dir, tmp_path / "too_big", "--steps", "1", "--max-memory-gb", "0.01")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "memory estimate" in error and "exceeds the 0.0 GB available on cpu (--max-memory-gb)" in error
    assert not (tmp_path / "too_big").exists()


def test_eight_bit_adamw_is_refused_on_cpu_and_fused_adamw_trains(dataset_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(dataset_dir, tmp_path / "eight_bit", "--steps", "1", "--optimizer", "adamw-8bit")
    assert "--optimizer adamw-8bit needs a CUDA device" in capsys.readouterr().err
    assert train(dataset_dir, tmp_path / "fused", "--steps", "1", "--optimizer", "adamw-fused") == 0


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; a run with other precision settings needs it reset (both ways)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_autocast_with_gradient_checkpointing_trains(dataset_dir, tmp_path, fresh_accelerator_state):
    output = tmp_path / "bf16"
    assert train(dataset_dir, output, "--steps", "2", "--mixed-precision", "bf16", "--gradient-checkpointing") == 0
    assert all(np.isfinite(row["loss"]) for row in read_metrics(output / "metrics.csv"))
    assert VideoVLAModel.from_pretrained(output / "final").dtype == torch.float32  # master weights stay float32


def test_gradient_checkpointing_defaults_on_for_the_5b_preset_only():
    from videovla_model.training_setup import uses_gradient_checkpointing

    big = TrainingConfig(dataset="d", output="o", preset="cogvideox-5b")
    assert uses_gradient_checkpointing(big, VideoVLAConfig.preset("cogvideox-5b"))
    assert not uses_gradient_checkpointing(TrainingConfig(dataset="d", output="o", preset="tiny"), TINY)
    explicit = TrainingConfig(dataset="d", output="o", preset="cogvideox-5b", gradient_checkpointing=False)
    assert not uses_gradient_checkpointing(explicit, VideoVLAConfig.preset("cogvideox-5b"))


def test_full_weights_gathered_by_fsdp_become_a_plain_checkpoint(tmp_path):
    from videovla_model.training_setup import with_transformer_weights

    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    # What accelerator.get_state_dict returns for the prepared loss module under FSDP.
    gathered = {f"transformer.{name}": tensor.clone() for name, tensor in model.transformer.state_dict().items()}
    with_transformer_weights(model, gathered).save_pretrained(tmp_path / "gathered")
    reloaded = transformer_weights(tmp_path / "gathered")
    assert reloaded.keys() == model.transformer.state_dict().keys()
    for name, tensor in model.transformer.state_dict().items():
        torch.testing.assert_close(reloaded[name], tensor, rtol=0, atol=0)
