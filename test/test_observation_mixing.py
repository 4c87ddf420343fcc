"""What helps the model bind the instruction to the object: the instruction mixing the observation latent's channels
(`instruction_mixes_observation`), growing a trained model by conditioning layers that start at zero
(`VideoVLAModel.with_added_conditioning`, `videovla-train --add-conditioning`), and training timesteps that favour
noisy ones (`loss.timestep_beta`, `videovla-train --timestep-beta`) or the pure-noise one (`loss.pure_noise_fraction`,
`videovla-train --pure-noise-fraction`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_data import write_square_dataset
from test_text_conditioning import perturb_added_layer
from test_transformer_parity import _inputs

from videovla_model.configuration import LossConfig, VideoVLAConfig
from videovla_model.diffusion import add_noise_pair, training_timesteps
from videovla_model.modeling import VideoVLAModel
from videovla_model.train import main
from videovla_model.training_config import TrainingConfig
from videovla_model.transformer import VideoVLATransformer

TINY = VideoVLAConfig.preset("tiny")
TINY_MIXING = dataclasses.replace(TINY, instruction_mixes_observation=True)
INSTRUCTIONS = ["pick up the red cube", "pick up the blue cylinder"]


def test_the_flag_is_validated_and_cannot_be_switched_on_a_built_model():
    with pytest.raises(ValueError, match="instruction_mixes_observation"):
        dataclasses.replace(TINY, instruction_mixes_observation="yes")
    model = VideoVLAModel(TINY_MIXING)
    with pytest.raises(ValueError, match=r"cannot change \['instruction_mixes_observation'\]"):
        model.config = TINY


@torch.no_grad()
def test_the_mixing_starts_as_the_identity_then_mixes_only_the_observation_channels():
    torch.manual_seed(0)
    transformer = VideoVLATransformer(TINY_MIXING).eval()
    inputs = _inputs(TINY_MIXING)
    hidden, text = inputs["hidden_states"], inputs["encoder_hidden_states"]
    channels = TINY.vae.latent_channels
    pooled = text.mean(dim=1)
    assert torch.equal(transformer.mix_observation(hidden, pooled), hidden)

    perturb_added_layer(transformer, "observation_mixing")
    mixing = transformer.observation_mixing(pooled).reshape(-1, channels, channels)
    mixed = transformer.mix_observation(hidden, pooled)
    assert torch.equal(mixed[:, :, :channels], hidden[:, :, :channels])  # the noisy video is left alone
    observation = hidden[:, :, channels:]
    by_hand = observation + torch.einsum("bij,bfjhw->bfihw", mixing, observation)
    torch.testing.assert_close(mixed[:, :, channels:], by_hand)
    # Zero-padded frames (and dropped images) stay zero: there is no bias to light them up.
    padded = hidden.clone()
    padded[:, 1:, channels:] = 0.0
    assert torch.count_nonzero(transformer.mix_observation(padded, pooled)[:, 1:, channels:]) == 0


def test_a_grown_model_samples_exactly_as_the_trained_one_and_keeps_its_new_layers_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = VideoVLAModel(TINY).eval()
    grown = trained.with_added_conditioning(["instruction_mixes_observation", "text_modulation"])
    assert grown.config.instruction_mixes_observation and grown.config.text_modulation
    assert not grown.training
    image = torch.rand(1, 3, *TINY.image_size) * 2 - 1

    def sample(model: VideoVLAModel, instruction: str) -> torch.Tensor:
        return model.sample(image, [instruction], generator=torch.Generator().manual_seed(3)).actions

    assert torch.equal(sample(grown, INSTRUCTIONS[0]), sample(trained, INSTRUCTIONS[0]))
    perturb_added_layer(grown.transformer, "observation_mixing")
    loaded = VideoVLAModel.from_pretrained(grown.save_pretrained(tmp_path / "grown"))
    assert loaded.config.instruction_mixes_observation
    assert torch.equal(sample(loaded, INSTRUCTIONS[0]), sample(grown, INSTRUCTIONS[0]))
    assert not torch.equal(sample(loaded, INSTRUCTIONS[0]), sample(trained, INSTRUCTIONS[0]))


def test_growing_refuses_unknown_layers_and_layers_the_model_has():
    model = VideoVLAModel(TINY_MIXING)
    with pytest.raises(ValueError, match=r"cannot add \['instruction_mixes_observation'\]: this model has them"):
        model.with_added_conditioning(["instruction_mixes_observation"])
    with pytest.raises(ValueError, match=r"cannot add \['patch_size'\]: the conditioning layers that can be added"):
        model.with_added_conditioning(["patch_size"])


def test_the_training_config_adds_conditioning_only_to_a_checkpoint_and_only_known_layers():
    grown = TrainingConfig(
        dataset="d", output="o", init_from="ckpt", add_conditioning=["instruction_mixes_observation"]
    )
    assert grown.add_conditioning == ("instruction_mixes_observation",)
    assert TrainingConfig.from_dict(grown.to_dict()) == grown
    with pytest.raises(ValueError, match="add_conditioning needs init_from"):
        TrainingConfig(dataset="d", output="o", preset="tiny", add_conditioning=("text_modulation",))
    with pytest.raises(ValueError, match=r"add_conditioning must name layers among .*got \['vae'\]"):
        TrainingConfig(dataset="d", output="o", init_from="ckpt", add_conditioning=("vae",))


def test_videovla_train_grows_a_checkpoint_and_trains_the_new_layer(tmp_path):
    data = tmp_path / "data"
    write_square_dataset(data, lengths=(9, 12))
    common = ["--dataset", str(data), "--batch-size", "2", "--num-workers", "0", "--lr", "1e-3", "--steps", "2"]
    assert main([*common, "--output", str(tmp_path / "first"), "--preset", "tiny"]) == 0
    grown = tmp_path / "grown"
    first = str(tmp_path / "first" / "final")
    args = [
        *common,
        "--output",
        str(grown),
        "--init-from",
        first,
        "--add-conditioning",
        "instruction_mixes_observation",
    ]
    assert main(args) == 0
    model = VideoVLAModel.from_pretrained(grown / "final")
    assert model.config.instruction_mixes_observation and not model.config.text_modulation
    assert model.transformer.observation_mixing is not None
    assert torch.count_nonzero(model.transformer.observation_mixing[-1].weight) > 0  # trained away from zero
    assert TrainingConfig.load(grown).add_conditioning == ("instruction_mixes_observation",)


def test_training_timesteps_are_uniform_at_beta_1_and_favour_noisy_ones_above():
    generator = torch.Generator().manual_seed(0)
    uniform = training_timesteps(1000, 20_000, 1.0, generator, torch.device("cpu"))
    noisy = training_timesteps(1000, 20_000, 3.0, generator, torch.device("cpu"))
    for timesteps in (uniform, noisy):
        assert timesteps.dtype == torch.long and int(timesteps.min()) >= 0 and int(timesteps.max()) <= 999
    # Beta(a, 1): P(t >= 700) = 1 - 0.7 ** a, so 0.30 uniform and 0.657 at a = 3; the mean is a / (a + 1) of T.
    assert (uniform >= 700).float().mean().item() == pytest.approx(0.30, abs=0.015)
    assert (noisy >= 700).float().mean().item() == pytest.approx(1 - 0.7**3, abs=0.015)
    assert noisy.float().mean().item() == pytest.approx(750, abs=10)


def test_a_pure_noise_fraction_puts_that_share_of_samples_at_the_last_timestep_and_keeps_the_other_draws():
    cpu = torch.device("cpu")
    plain = training_timesteps(1000, 20_000, 3.0, torch.Generator().manual_seed(0), cpu)
    assert torch.equal(plain, training_timesteps(1000, 20_000, 3.0, torch.Generator().manual_seed(0), cpu, 0.0))
    mixed = training_timesteps(1000, 20_000, 3.0, torch.Generator().manual_seed(0), cpu, 0.4)
    # The Beta(3, 1) draws stay as they were; 40% of samples move to 999, where Beta(3, 1) alone puts 0.3%.
    moved = mixed != plain
    assert (mixed[moved] == 999).all() and torch.equal(mixed[~moved], plain[~moved])
    assert (mixed == 999).float().mean().item() == pytest.approx(0.4 + 0.6 * (1 - 0.999**3), abs=0.015)


def test_at_the_pure_noise_timestep_the_velocity_target_is_the_chunk_itself():
    scheduler = VideoVLAModel(TINY).noise_scheduler
    generator = torch.Generator().manual_seed(0)
    video, actions = torch.randn(64, 2, 4, 2, 2), torch.rand(64, 3, 7) * 2 - 1
    noised = add_noise_pair(scheduler, video, actions, generator, pure_noise_fraction=0.5)
    pure = noised.timesteps == 999
    assert 0 < int(pure.sum()) < 64
    # Zero SNR: the noised chunk holds nothing of the chunk, and v = -x0, so these samples regress the chunk.
    assert torch.allclose(noised.target_actions[pure], -actions[pure])
    assert torch.allclose(noised.target_video[pure], -video[pure])
    assert not torch.allclose(noised.target_actions[~pure], -actions[~pure])


def test_timestep_beta_and_pure_noise_fraction_are_validated_and_reach_the_trained_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"loss.timestep_beta.*a number >= 1"):
        LossConfig(timestep_beta=0.5)
    with pytest.raises(ValueError, match="timestep_beta must be a number >= 1"):
        TrainingConfig(dataset="d", output="o", preset="tiny", timestep_beta=float("nan"))
    with pytest.raises(ValueError, match=r"loss.pure_noise_fraction must be a probability in \[0, 1\), got 1.0"):
        LossConfig(pure_noise_fraction=1.0)
    with pytest.raises(ValueError, match="pure_noise_fraction must be a probability in"):
        TrainingConfig(dataset="d", output="o", preset="tiny", pure_noise_fraction=float("nan"))
    data = tmp_path / "data"
    write_square_dataset(data, lengths=(9,))
    args = ["--dataset", str(data), "--output", str(tmp_path / "run"), "--preset", "tiny", "--num-workers", "0"]
    assert (
        main([*args, "--batch-size", "2", "--steps", "1", "--timestep-beta", "3", "--pure-noise-fraction", "0.5"]) == 0
    )
    loss = VideoVLAModel.from_pretrained(tmp_path / "run" / "final").config.loss
    assert (loss.timestep_beta, loss.pure_noise_fraction) == (3.0, 0.5)
