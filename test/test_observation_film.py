"""The instruction-conditioned image encoder (`config.observation_film`): FiLM convolutions on the observation pixels
whose output adds to the observation latent, so the tokens can carry "the named object is here" before the blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from videovla_model.batch import TrainingBatch
from videovla_model.configuration import VideoVLAConfig
from videovla_model.modeling import VideoVLAModel
from videovla_model.transformer import ObservationFilm

TINY = VideoVLAConfig.preset("tiny")
TINY_FILM = dataclasses.replace(TINY, observation_film=True)
INSTRUCTIONS = ["pick up the red cube", "pick up the blue cylinder"]


def perturb_film(model: VideoVLAModel, seed: int = 0) -> None:
    """Gives the encoder's zero-initialised FiLM and output layers weights, as training would."""
    film = model.transformer.observation_film
    assert film is not None
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (*film.films, film.out):
            layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=generator))


def test_the_flag_is_validated_and_the_encoder_reaches_the_latent_resolution():
    with pytest.raises(ValueError, match="observation_film"):
        dataclasses.replace(TINY, observation_film="yes")
    film = ObservationFilm(TINY_FILM)
    pixels = torch.rand(2, 3, *TINY.image_size) * 2 - 1
    out = film(pixels, torch.zeros(2, TINY.text.d_model))
    assert out.shape == (2, TINY.vae.latent_channels, TINY.latent_height, TINY.latent_width)


@torch.no_grad()
def test_the_encoder_starts_at_zero_then_reads_both_the_pixels_and_the_instruction():
    torch.manual_seed(0)
    model = VideoVLAModel(TINY_FILM).eval()
    pixels = torch.rand(2, 3, *TINY.image_size) * 2 - 1
    latents = torch.randn(2, 1, TINY.vae.latent_channels, TINY.latent_height, TINY.latent_width)
    red, blue = model.encode_prompts([INSTRUCTIONS[0]] * 2), model.encode_prompts([INSTRUCTIONS[1]] * 2)
    assert torch.equal(model.add_observation_film(latents, pixels, red), latents)
    perturb_film(model)
    under_red = model.add_observation_film(latents, pixels, red)
    assert not torch.allclose(under_red, latents)
    assert not torch.allclose(model.add_observation_film(latents, pixels, blue), under_red)
    assert not torch.allclose(model.add_observation_film(latents, pixels.flip(0), red), under_red)


def test_guidance_gives_the_unconditional_pass_its_own_encoding_and_sampling_matches_the_plain_model_at_init():
    torch.manual_seed(0)
    plain = VideoVLAModel(TINY).eval()
    with_film = plain.with_added_conditioning(["observation_film"])
    image = torch.rand(1, 3, *TINY.image_size) * 2 - 1

    def sample(model: VideoVLAModel, instruction: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return model.sample(image, [instruction], generator=generator, guidance_scale=3.0).actions

    assert torch.equal(sample(with_film, INSTRUCTIONS[0]), sample(plain, INSTRUCTIONS[0]))
    perturb_film(with_film)
    assert not torch.equal(sample(with_film, INSTRUCTIONS[0]), sample(plain, INSTRUCTIONS[0]))
    assert not torch.equal(sample(with_film, INSTRUCTIONS[0]), sample(with_film, INSTRUCTIONS[1]))


def test_the_training_loss_reaches_the_encoder_and_a_checkpoint_keeps_it(tmp_path):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY_FILM)
    perturb_film(model)
    size, frames = 2, TINY.train_num_frames
    batch = TrainingBatch(
        observation=torch.rand(size, 3, *TINY.image_size) * 2 - 1,
        video=torch.rand(size, 3, frames, *TINY.image_size) * 2 - 1,
        instructions=INSTRUCTIONS,
        actions=torch.rand(size, TINY.chunk_rows, TINY.action_dims) * 2 - 1,
        action_mask=torch.ones(size, TINY.chunk_rows, dtype=torch.bool),
        embodiment_ids=torch.zeros(size, dtype=torch.long),
    )
    model.compute_loss(batch, torch.Generator().manual_seed(0)).loss.backward()
    film = model.transformer.observation_film
    assert film is not None
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in film.parameters())
    loaded = VideoVLAModel.from_pretrained(model.save_pretrained(tmp_path / "film"))
    assert loaded.config.observation_film
    assert torch.equal(loaded.transformer.observation_film.out.weight, film.out.weight)
