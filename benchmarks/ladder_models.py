"""The deterministic rungs of `benchmarks/ladder.py`: one-pass regressors of the first action chunk.

- `FilmCNN` (rung 1): a small CNN on the 64 px frame, FiLM-modulated by learned word embeddings.
- `DiTRegressor` (rung 2): the shipped `small` VideoVLA transformer and conditioning path (VAE observation latent
  in the conditioning channels, instruction tokens through the text stream, timestep embedding, action tokens)
  called once at a fixed timestep on zero video latents and zero action tokens, trained by MSE: no noise and no
  diffusion. Its levers swap one component each: learned word embeddings for the frozen random T5 (`text="words"`),
  a learned pixel stem for the VAE latent (`observation="pixels"`).

- `DiTDiffusion` (rung 3): rung 2 with diffusion on the actions only: v-prediction on noised action tokens at a
  uniform training timestep (or one drawn from Beta(timestep_beta, 1), favouring noisy ones, as `videovla-train
  --timestep-beta`; with chance pure_noise_fraction the last, pure-noise timestep, as `--pure-noise-fraction`),
  sampled with the checkpoint's scheduler from noise (the video stream stays zero, so it differs from rung 2 only
  by the diffusion).

All map (images (B, 3, H, W) in [-1, 1], instructions) to (B, R, D) normalised actions; `loss` gives the
training loss of a batch.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import torch
from torch import nn

from videovla_model.configuration import VideoVLAConfig
from videovla_model.diffusion import add_noise_pair, build_scheduler, sample_loop
from videovla_model.modeling import VideoVLAModel
from videovla_model.transformer import ObservationFilm, VideoVLATransformer, rotary_embedding

PAD, UNKNOWN = 0, 1


class WordVocabulary:
    """Whitespace words of the training instructions -> ids (0 = padding, 1 = a word never seen in training)."""

    def __init__(self, instructions: Sequence[str], max_words: int = 8) -> None:
        words = sorted({word for text in instructions for word in text.lower().split()})
        self.ids = {word: index + 2 for index, word in enumerate(words)}
        self.max_words = max_words

    def __len__(self) -> int:
        return len(self.ids) + 2

    def encode(self, instructions: Sequence[str]) -> torch.Tensor:
        """B instructions -> (B, max_words) long ids, padded with PAD."""
        rows = []
        for text in instructions:
            ids = [self.ids.get(word, UNKNOWN) for word in text.lower().split()][: self.max_words]
            rows.append(ids + [PAD] * (self.max_words - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


class FilmCNN(nn.Module):
    """Rung 1: conv trunk (3 stride-2 layers, each FiLM-modulated by the mean word embedding) + MLP head."""

    def __init__(self, vocabulary: WordVocabulary, rows: int, dims: int, image_size: int, use_text: bool = True):
        super().__init__()
        self.vocabulary, self.rows, self.dims, self.use_text = vocabulary, rows, dims, use_text
        self.words = nn.Embedding(len(vocabulary), 32, padding_idx=PAD)
        channels = (3, 32, 64, 64)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in itertools.pairwise(channels))
        self.films = nn.ModuleList(nn.Linear(32, 2 * b) for b in channels[1:])
        for film in self.films:  # start as the identity modulation
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        cells = (image_size // 8) ** 2 * channels[-1]
        self.head = nn.Sequential(nn.Linear(cells, 256), nn.SiLU(), nn.Linear(256, rows * dims))

    def forward(self, images: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        ids = self.vocabulary.encode(instructions).to(images.device)
        present = (ids != PAD).float()[..., None]
        text = (self.words(ids) * present).sum(1) / present.sum(1).clamp_min(1.0)
        if not self.use_text:
            text = torch.zeros_like(text)
        hidden = images
        for conv, film in zip(self.convs, self.films, strict=True):
            scale, shift = film(text).chunk(2, dim=-1)
            hidden = torch.nn.functional.silu(conv(hidden) * (1 + scale[..., None, None]) + shift[..., None, None])
        return self.head(hidden.flatten(1)).reshape(-1, self.rows, self.dims)


def pixel_film(config: VideoVLAConfig) -> ObservationFilm:
    """The model's `ObservationFilm` encoder (`config.observation_film`) as a replacement for the VAE latent:
    (B, 3, H, W) pixels -> (B, C, H/8, W/8). Its FiLM layers start at zero (the identity modulation) as in the
    model, but its output layer keeps its default initialisation: here it replaces the latent instead of adding to
    it, as the recorded rows did."""
    film = ObservationFilm(config)
    for layer in film.films:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return film


class LatentFilm(nn.Module):
    """The VAE latent plus a residual from two 3 x 3 convolutions at the latent's resolution, each FiLM-modulated
    by the pooled instruction: (B, C, h, w) -> (B, C, h, w). FiLM layers and the output layer start at zero, so it
    starts as the plain latent."""

    def __init__(self, latent_channels: int, text_width: int, width: int = 64) -> None:
        super().__init__()
        channels = (latent_channels, width, width)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 1, 1) for a, b in itertools.pairwise(channels))
        self.films = nn.ModuleList(nn.Linear(text_width, 2 * b) for b in channels[1:])
        self.out = nn.Conv2d(width, latent_channels, 1)
        for layer in (*self.films, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, latents: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        hidden = latents
        for conv, film in zip(self.convs, self.films, strict=True):
            scale, shift = film(pooled_text).chunk(2, dim=-1)
            hidden = torch.nn.functional.silu(conv(hidden) * (1 + scale[..., None, None]) + shift[..., None, None])
        return latents + self.out(hidden)


class DiTRegressor(nn.Module):
    """Rung 2: a fresh `small` transformer called once (see the module docstring); VAE and T5 frozen.

    text: "t5" (the checkpoint's frozen random T5, standardised as the checkpoint does) or "words" (learned word
    embeddings of the T5's width). observation: "vae" (the checkpoint's VAE latent, standardised) or "pixels"
    (a learned stride-8 conv stem with the latent's shape); "film-pixels" (`pixel_film`, the model's FiLM pixel
    encoder, in place of the latent) / "film-latent" (`LatentFilm` on the VAE latent), modulated by the mean
    instruction token.
    """

    def __init__(
        self,
        frozen: VideoVLAModel,
        vocabulary: WordVocabulary,
        text: str = "t5",
        observation: str = "vae",
        timestep: int = 999,
        absolute_positions: bool = False,
        mix_observation: bool = False,
    ) -> None:
        super().__init__()
        config = dataclasses.replace(
            frozen.config,
            transformer=dataclasses.replace(
                frozen.config.transformer, learned_positional_embeddings=absolute_positions
            ),
            instruction_mixes_observation=mix_observation,
        )
        self.frozen = [frozen]  # a list keeps the frozen model out of this module's parameters
        self.transformer = VideoVLATransformer(config)
        if absolute_positions:
            # Drawn again, as when fresh tables started at zero, so the recorded ladder rows reproduce from their seed.
            nn.init.normal_(self.transformer.positional_embedding, std=0.02)
        self.text, self.observation, self.timestep, self.vocabulary = text, observation, timestep, vocabulary
        self.words = nn.Embedding(len(vocabulary), config.text.d_model, padding_idx=PAD) if text == "words" else None
        channels = config.vae.latent_channels
        self.stem = (
            nn.Sequential(
                nn.Conv2d(3, 32, 4, 2, 1),
                nn.SiLU(),
                nn.Conv2d(32, 64, 4, 2, 1),
                nn.SiLU(),
                nn.Conv2d(64, channels, 4, 2, 1),
            )
            if observation == "pixels"
            else None
        )
        self.film: ObservationFilm | LatentFilm | None = None
        if observation == "film-pixels":
            self.film = pixel_film(config)
        elif observation == "film-latent":
            self.film = LatentFilm(channels, config.text.d_model)
        self.register_buffer(
            "_rotary_cos",
            rotary_embedding(config, 1, config.latent_height, config.latent_width, torch.device("cpu"))[0],
        )
        self.register_buffer(
            "_rotary_sin",
            rotary_embedding(config, 1, config.latent_height, config.latent_width, torch.device("cpu"))[1],
        )
        self._prompts: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def vae_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, C, h, w) standardised posterior-mean latents (deterministic)."""
        model = self.frozen[0]
        mean = model.vae.encode(images.unsqueeze(2)).latent_dist.mean
        latents = model.scale_latents(mean).permute(0, 2, 1, 3, 4)
        return model.condition_normalizer.apply(latents) if model.config.normalize_condition else latents

    def conditioning(
        self, images: torch.Tensor, instructions: Sequence[str], latents: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 2C, h, w) [zero video | observation] and (B, L, text width) instruction tokens."""
        if self.words is not None:
            prompt = self.words(self.vocabulary.encode(instructions).to(images.device))
        else:
            prompt = torch.stack([self.prompt(text) for text in instructions])
        if self.stem is not None:
            condition = self.stem(images).unsqueeze(1)
        elif isinstance(self.film, ObservationFilm):
            condition = self.film(images, prompt.mean(1)).unsqueeze(1)
        else:
            condition = latents if latents is not None else self.vae_latents(images)
            if self.film is not None:
                condition = self.film(condition[:, 0], prompt.mean(1)).unsqueeze(1)
        return torch.cat([torch.zeros_like(condition), condition], dim=2), prompt

    @torch.no_grad()
    def prompt(self, instruction: str) -> torch.Tensor:
        """(L, text width) standardised T5 embedding of one instruction, encoded once."""
        if instruction not in self._prompts:
            self._prompts[instruction] = self.frozen[0].encode_prompts([instruction])[0]
        return self._prompts[instruction]

    def run(
        self, hidden: torch.Tensor, prompt: torch.Tensor, timesteps: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """One transformer pass; returns the (B, R, D) action output."""
        _, out = self.transformer(
            hidden, prompt, timesteps, noisy_actions=actions, image_rotary_emb=(self._rotary_cos, self._rotary_sin)
        )
        assert out is not None
        return out

    def forward(
        self, images: torch.Tensor, instructions: Sequence[str], latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """latents: the precomputed `vae_latents(images)` (the VAE is the slow part), used with observation="vae"."""
        hidden, prompt = self.conditioning(images, instructions, latents)
        config = self.frozen[0].config
        batch = images.shape[0]
        zeros = torch.zeros(batch, config.chunk_rows, config.action_dims, device=images.device)
        return self.run(hidden, prompt, torch.full((batch,), self.timestep, dtype=torch.long), zeros)

    def loss(
        self, images: torch.Tensor, instructions: Sequence[str], latents: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) of one training batch: the chunk itself for the regressor."""
        return self(images, instructions, latents), targets


class DiTDiffusion(DiTRegressor):
    """Rung 3 (see the module docstring); `forward` samples with `steps` scheduler steps, guidance 1."""

    def __init__(
        self,
        frozen: VideoVLAModel,
        vocabulary: WordVocabulary,
        steps: int = 10,
        text: str = "t5",
        observation: str = "vae",
        absolute_positions: bool = False,
        timestep_beta: float = 1.0,
        pure_noise_fraction: float = 0.0,
    ) -> None:
        super().__init__(frozen, vocabulary, text=text, observation=observation, absolute_positions=absolute_positions)
        self.steps, self.timestep_beta, self.pure_noise_fraction = steps, timestep_beta, pure_noise_fraction

    def loss(
        self, images: torch.Tensor, instructions: Sequence[str], latents: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(velocity prediction, velocity target) at one uniform timestep per sample."""
        hidden, prompt = self.conditioning(images, instructions, latents)
        noised = add_noise_pair(
            self.frozen[0].noise_scheduler,
            hidden[:, :, :1],
            targets,
            timestep_beta=self.timestep_beta,
            pure_noise_fraction=self.pure_noise_fraction,
        )
        return self.run(hidden, prompt, noised.timesteps, noised.noisy_actions), noised.target_actions

    def forward(
        self, images: torch.Tensor, instructions: Sequence[str], latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden, prompt = self.conditioning(images, instructions, latents)
        config = self.frozen[0].config
        batch = images.shape[0]

        def denoise(video: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.zeros_like(video), self.run(hidden, prompt, t, actions)

        result = sample_loop(
            denoise,
            build_scheduler(config.diffusion),
            (batch, 1, 1, 1, 1),
            (batch, config.chunk_rows, config.action_dims),
            self.steps,
            images.device,
            torch.float32,
        )
        return result.actions
