"""`VideoVLAModel`: T5 + the CogVideoX VAE (both frozen) + the VideoVLA transformer + the joint diffusion loss.

The model holds the components, the encoders and the training loss; sampling (the denoising loop with guidance)
lives in `sampling.py` and checkpoint I/O (save, load, CogVideoX initialisation, growing layers) in
`checkpointing.py`, both mixed into `VideoVLAModel` so its methods stay where users look for them.

Image-to-video conventions follow diffusers' CogVideoX I2V pipeline: the observation is VAE-encoded as a
one-frame video, scaled by the VAE scaling factor, padded with zero latents over time and concatenated to the
noisy video latents on the channel axis. With `config.normalize_condition` the observation latent is first
standardised with training-set statistics (`condition_normalization`); with `config.normalize_text` so is the
instruction's T5 embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import AutoencoderKLCogVideoX
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from transformers import PreTrainedTokenizerBase, T5EncoderModel

from videovla_model.batch import TrainingBatch
from videovla_model.checkpointing import CheckpointMixin, load_transformer, resolve_dtype
from videovla_model.condition_normalization import ConditionNormalizer
from videovla_model.configuration import VideoVLAConfig
from videovla_model.diffusion import add_noise_pair, build_scheduler, rand
from videovla_model.normalization import ActionNormalizer
from videovla_model.sampling import SampleOutput, SamplingMixin
from videovla_model.text import (
    UNCONDITIONAL_PROMPT,
    PromptCache,
    build_text_encoder,
    build_tokenizer,
    check_text_encoder,
)
from videovla_model.transformer import VideoVLATransformer, rotary_embedding

# Names other modules import from here (the model's public surface predates the split into three files).
__all__ = [
    "LossOutput",
    "SampleOutput",
    "VideoVLAModel",
    "check_vae",
    "load_transformer",
    "resolve_dtype",
    "vae_kwargs",
]

# VideoVLAConfig fields the weights depend on (a built model's config may change everything else).
_ARCHITECTURE_FIELDS = (
    "image_height",
    "image_width",
    "chunk_rows",
    "action_dim_names",
    "num_embodiments",
    "normalize_condition",
    "normalize_text",
    "text_modulation",
    "instruction_mixes_observation",
    "observation_film",
    "unconditional_text",
    "transformer",
    "vae",
    "text",
)


@dataclass
class LossOutput:
    """loss: scalar with grad (what to backpropagate); video_loss / action_loss: detached scalars."""

    loss: torch.Tensor
    video_loss: torch.Tensor
    action_loss: torch.Tensor


def vae_kwargs(config: VideoVLAConfig) -> dict[str, object]:
    """Constructor arguments of the `AutoencoderKLCogVideoX` that `config` describes."""
    vae = config.vae
    blocks = len(vae.block_out_channels)
    return {
        "down_block_types": ("CogVideoXDownBlock3D",) * blocks,
        "up_block_types": ("CogVideoXUpBlock3D",) * blocks,
        "block_out_channels": vae.block_out_channels,
        "latent_channels": vae.latent_channels,
        "layers_per_block": vae.layers_per_block,
        "norm_num_groups": vae.norm_num_groups,
        "temporal_compression_ratio": vae.temporal_compression_ratio,
        "sample_height": config.image_height,
        "sample_width": config.image_width,
        "scaling_factor": vae.scaling_factor,
        "invert_scale_latents": vae.invert_scale_latents,
    }


def check_vae(vae: AutoencoderKLCogVideoX, config: VideoVLAConfig) -> None:
    """Raises ValueError naming each VAE setting that differs from `config`."""
    actual = vae.config
    pairs = {
        "latent_channels": (config.vae.latent_channels, actual.latent_channels),
        "block_out_channels": (tuple(config.vae.block_out_channels), tuple(actual.block_out_channels)),
        "temporal_compression_ratio": (config.vae.temporal_compression_ratio, actual.temporal_compression_ratio),
        "scaling_factor": (config.vae.scaling_factor, actual.scaling_factor),
        "invert_scale_latents": (config.vae.invert_scale_latents, actual.invert_scale_latents),
    }
    mismatches = [f"vae.{k}: config {want} vs weights {got}" for k, (want, got) in pairs.items() if want != got]
    if mismatches:
        raise ValueError("VAE does not match the config: " + "; ".join(mismatches))


class VideoVLAModel(CheckpointMixin, SamplingMixin, nn.Module):
    """The VideoVLA model. Build a fresh one with `VideoVLAModel(config)` (random weights), fine-tune from
    CogVideoX with `VideoVLAModel.from_cogvideox(dir, config)`, or load a checkpoint with `from_pretrained`.

    Components left as None are built from `config` with random weights (a "t5" tokenizer needs its files, so
    it stays None until loaded; text encoding then raises).
    """

    def __init__(
        self,
        config: VideoVLAConfig,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_encoder: T5EncoderModel | None = None,
        vae: AutoencoderKLCogVideoX | None = None,
        transformer: VideoVLATransformer | None = None,
        normalizer: ActionNormalizer | None = None,
        condition_normalizer: ConditionNormalizer | None = None,
        text_normalizer: ConditionNormalizer | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(config.text)
        self.text_encoder = text_encoder if text_encoder is not None else build_text_encoder(config.text)
        self.vae = vae if vae is not None else AutoencoderKLCogVideoX(**vae_kwargs(config))
        self.transformer = transformer if transformer is not None else VideoVLATransformer(config)
        _check_same_architecture(self.transformer.config, config, "transformer")
        self.transformer.config = config
        check_text_encoder(self.text_encoder, config.text)
        check_vae(self.vae, config)
        self.text_encoder.requires_grad_(False)
        self.vae.requires_grad_(False)
        self.text_encoder.eval()
        self.vae.eval()
        self.noise_scheduler = build_scheduler(config.diffusion)
        self.normalizer = normalizer if normalizer is not None else self.default_normalizer(config)
        self._check_normalizer(self.normalizer)
        self.condition_normalizer = ConditionNormalizer.identity(
            config.vae.latent_channels, config.latent_height, config.latent_width
        )
        if condition_normalizer is not None:
            self.set_condition_normalizer(condition_normalizer)
        self.text_normalizer = ConditionNormalizer.identity(config.text.max_length, config.text.d_model)
        if text_normalizer is not None:
            self.set_text_normalizer(text_normalizer)
        self.prompt_cache = PromptCache()

    @property
    def config(self) -> VideoVLAConfig:
        return self._config

    @config.setter
    def config(self, config: VideoVLAConfig) -> None:
        """Swaps in a config that differs only in fields the weights do not depend on (e.g. time_step, loss,
        diffusion, attention_mode); anything else raises ValueError naming the fields."""
        _check_same_architecture(self._config, config, "VideoVLAModel")
        self._config = config
        self.transformer.config = config
        self.noise_scheduler = build_scheduler(config.diffusion)
        if self.normalizer.gripper_threshold != config.gripper_threshold:
            self.normalizer = dataclasses.replace(self.normalizer, gripper_threshold=config.gripper_threshold)

    @staticmethod
    def default_normalizer(config: VideoVLAConfig) -> ActionNormalizer:
        """The identity map for a model not yet fitted to data (gripper dims 0..1)."""
        return ActionNormalizer.identity(config.action_dim_names, config.gripper_dims, config.gripper_threshold)

    def _check_normalizer(self, normalizer: ActionNormalizer) -> None:
        if normalizer.dim_names != self.config.action_dim_names:
            raise ValueError(
                f"normalizer.dim_names {normalizer.dim_names} must equal config.action_dim_names "
                f"{self.config.action_dim_names} (the dimension order is part of the checkpoint)"
            )
        if normalizer.gripper_threshold != self.config.gripper_threshold:
            raise ValueError(
                f"normalizer.gripper_threshold {normalizer.gripper_threshold} must equal config.gripper_threshold "
                f"{self.config.gripper_threshold}"
            )

    def set_normalizer(self, normalizer: ActionNormalizer) -> None:
        """Replaces the action statistics (e.g. after fitting them to a dataset), checking the dimension order."""
        self._check_normalizer(normalizer)
        self.normalizer = normalizer

    def set_condition_normalizer(self, condition_normalizer: ConditionNormalizer) -> None:
        """Replaces the observation-latent statistics (used only with `config.normalize_condition`)."""
        expected = (self.config.vae.latent_channels, self.config.latent_height, self.config.latent_width)
        _check_statistics_shape(
            condition_normalizer, expected, "condition", "latent_channels, latent_height, latent_width"
        )
        self.condition_normalizer = condition_normalizer

    def set_text_normalizer(self, text_normalizer: ConditionNormalizer) -> None:
        """Replaces the instruction-embedding statistics (used only with `config.normalize_text`)."""
        expected = (self.config.text.max_length, self.config.text.d_model)
        _check_statistics_shape(text_normalizer, expected, "text", "text.max_length, text.d_model")
        self.text_normalizer = text_normalizer

    # Housekeeping -------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def train(self, mode: bool = True) -> VideoVLAModel:
        """Frozen parts stay in eval mode (T5 dropout must never fire)."""
        super().train(mode)
        self.text_encoder.eval()
        self.vae.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The transformer's parameters, action layers included; VAE and T5 are frozen."""
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def _synchronize(self) -> Callable[[], None] | None:
        return torch.cuda.synchronize if self.device.type == "cuda" else None

    # Encoders -----------------------------------------------------------------------------------------------

    def raw_prompt_embeddings(self, instructions: Sequence[str]) -> torch.Tensor:
        """B instructions -> (B, max_length, text_width) T5 embeddings as T5 outputs them (cached)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "this model has no tokenizer: config.text.tokenizer='t5' needs the tokenizer files; build the model "
                "with VideoVLAModel.from_pretrained or VideoVLAModel.from_cogvideox"
            )
        return self.prompt_cache.get_or_encode(
            instructions, self.tokenizer, self.text_encoder, self.config.text.max_length
        )

    def encode_prompts(self, instructions: Sequence[str]) -> torch.Tensor:
        """B instructions -> (B, max_length, text_width) T5 embeddings in the transformer's dtype, standardised
        when `config.normalize_text` is on."""
        embeddings = self.raw_prompt_embeddings(instructions).to(device=self.device, dtype=self.dtype)
        if self.config.normalize_text:
            embeddings = self.text_normalizer.apply(embeddings)
        return embeddings

    def unconditional_prompt_embeddings(self, size: int) -> torch.Tensor:
        """(size, max_length, text_width): what the transformer sees without an instruction (`unconditional_text`):
        the embedding of "" or zeros."""
        if self.config.unconditional_text == "zeros":
            text = self.config.text
            return torch.zeros(size, text.max_length, text.d_model, device=self.device, dtype=self.dtype)
        return self.encode_prompts([UNCONDITIONAL_PROMPT] * size)

    def encode_prompts_with_dropout(self, instructions: Sequence[str], keep: torch.Tensor) -> torch.Tensor:
        """B instructions + (B,) bool `keep` -> (B, max_length, text_width) embeddings, the unconditional one where
        `keep` is False (training-time text dropout)."""
        if self.config.unconditional_text == "zeros":
            embeddings = self.encode_prompts(instructions)
            return embeddings * keep.to(device=embeddings.device, dtype=embeddings.dtype)[:, None, None]
        kept = keep.tolist()
        return self.encode_prompts(
            [text if k else UNCONDITIONAL_PROMPT for text, k in zip(instructions, kept, strict=True)]
        )

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled VAE latents -> the scaled space the transformer works in (any shape)."""
        factor = self.config.vae.scaling_factor
        return latents / factor if self.config.vae.invert_scale_latents else latents * factor

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, F', C, h, w) scaled latents (F' = (F - 1) / 4 + 1)."""
        vae_dtype = next(self.vae.parameters()).dtype
        posterior = self.vae.encode(video.to(device=self.device, dtype=vae_dtype)).latent_dist
        return self.sample_posterior(posterior.mean, posterior.std, generator)

    def sample_posterior(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """VAE posterior (mean, std), each (B, C, F', h, w) unscaled -> (B, F', C, h, w) scaled latent sample."""
        mean = mean.to(device=self.device, dtype=torch.float32)
        noise = randn_tensor(mean.shape, generator=generator, device=self.device, dtype=torch.float32)
        latents = mean + std.to(device=self.device, dtype=torch.float32) * noise
        return self.scale_latents(latents).permute(0, 2, 1, 3, 4).to(self.dtype)

    def encode_observation(self, observation: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, C, h, w) scaled latents of the single conditioning frame, standardised
        when `config.normalize_condition` is on."""
        latents = self.encode_video(observation.unsqueeze(2), generator)
        if self.config.normalize_condition:
            latents = self.condition_normalizer.apply(latents)
        return latents

    def add_observation_film(
        self, image_latents: torch.Tensor, observation: torch.Tensor, prompt_embeds: torch.Tensor
    ) -> torch.Tensor:
        """(B, 1, C, h, w) observation latents + the FiLM encoder's output for the (B, 3, H, W) observation under the
        (B, L, text width) instruction embeddings, with `config.observation_film`; the latents unchanged without."""
        film = self.transformer.observation_film
        if film is None:
            return image_latents
        residual = film(observation.to(device=self.device, dtype=self.dtype), prompt_embeds.mean(dim=1))
        return image_latents + residual.unsqueeze(1).to(image_latents.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) scaled latents -> (B, 3, T, H, W) video in [-1, 1].

        T is what diffusers' causal VAE decodes: 4(F - 1) + 1 frames for odd F (e.g. 13 latents -> 49 frames), but
        4F for even F, whose first latent is stretched over 4 frames (e.g. 4 latents -> 16 frames).
        """
        factor = self.config.vae.scaling_factor
        unscaled = latents * factor if self.config.vae.invert_scale_latents else latents / factor
        vae_dtype = next(self.vae.parameters()).dtype
        video = self.vae.decode(unscaled.permute(0, 2, 1, 3, 4).to(vae_dtype)).sample
        return video.clamp(-1.0, 1.0)

    @staticmethod
    def condition_latents(image_latents: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """(B, 1, C, h, w) observation latent -> (B, latent_frames, C, h, w), zero-padded over time (I2V)."""
        padding = image_latents.new_zeros((image_latents.shape[0], latent_frames - 1, *image_latents.shape[2:]))
        return torch.cat([image_latents, padding], dim=1)

    def rotary(self, latent_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary table for `latent_frames` frames at the config's latent resolution."""
        return rotary_embedding(
            self.config, latent_frames, self.config.latent_height, self.config.latent_width, self.device
        )

    # Training -----------------------------------------------------------------------------------------------

    def _check_batch(self, batch: TrainingBatch) -> None:
        c = self.config
        size = len(batch)
        h, w = c.image_size
        rows, dims = c.chunk_rows, c.action_dims
        checks = [
            ("observation", tuple(batch.observation.shape), (size, 3, h, w)),
            ("actions", tuple(batch.actions.shape), (size, rows, dims)),
            ("action_mask", tuple(batch.action_mask.shape), (size, rows)),
            ("embodiment_ids", tuple(batch.embodiment_ids.shape), (size,)),
        ]
        for name, got, want in checks:
            if got != want:
                raise ValueError(f"batch.{name} must have shape {want}, got {got}")
        if batch.video is not None:
            video = tuple(batch.video.shape)
            if len(video) != 5 or video[:2] != (size, 3) or video[3:] != (h, w) or (video[2] - 1) % 4 != 0:
                raise ValueError(f"batch.video must have shape ({size}, 3, 4k+1, {h}, {w}), got {video}")
        elif batch.latent_mean is None or batch.latent_std is None:
            raise ValueError("a batch needs batch.video or both batch.latent_mean and batch.latent_std")
        else:
            latent = (c.vae.latent_channels, c.latent_height, c.latent_width)
            for name in ("latent_mean", "latent_std"):
                got = tuple(getattr(batch, name).shape)
                if len(got) != 5 or got[:2] != (size, latent[0]) or got[3:] != latent[1:]:
                    raise ValueError(
                        f"batch.{name} must have shape ({size}, {latent[0]}, F', {latent[1]}, {latent[2]}), got {got}"
                    )
        ids = batch.embodiment_ids
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c.num_embodiments):
            raise ValueError(
                f"batch.embodiment_ids must be in [0, {c.num_embodiments}), got {sorted(set(ids.tolist()))}"
            )

    def compute_loss(self, batch: TrainingBatch, generator: torch.Generator | None = None) -> LossOutput:
        """The joint diffusion loss on one batch (see `LossOutput`).

        One timestep per sample noises both the video latents and the action chunk. Video loss: v-prediction
        MSE over all latent frames. Action loss: v-prediction MSE over rows where `batch.action_mask` is True.
        Instructions are dropped to the unconditional text with `loss.text_dropout_prob` and the conditioning image
        is noised / dropped as configured, which is what classifier-free guidance needs at inference.
        """
        self._check_batch(batch)
        c = self.config
        device = self.device
        size = len(batch)
        loss_config = c.loss

        keep_text = rand((size,), generator, device) >= loss_config.text_dropout_prob
        prompt_embeds = self.encode_prompts_with_dropout(batch.instructions, keep_text)

        with torch.no_grad():
            if batch.video is not None:
                video_latents = self.encode_video(batch.video, generator)
            else:
                assert batch.latent_mean is not None and batch.latent_std is not None  # _check_batch
                video_latents = self.sample_posterior(batch.latent_mean, batch.latent_std, generator)
            observation = batch.observation.to(device=device, dtype=torch.float32)
            log_sigma = loss_config.image_noise_log_mean + loss_config.image_noise_log_std * randn_tensor(
                (size,), generator=generator, device=device
            )
            noise = randn_tensor(observation.shape, generator=generator, device=device)
            noisy_observation = observation + log_sigma.exp()[:, None, None, None] * noise
            image_latents = self.encode_observation(noisy_observation, generator)
            keep_image = rand((size,), generator, device) >= loss_config.image_dropout_prob
        image_latents = self.add_observation_film(image_latents, noisy_observation, prompt_embeds)
        image_latents = image_latents * keep_image[:, None, None, None, None].to(image_latents.dtype)

        actions = batch.actions.to(device=device, dtype=self.dtype)
        noised = add_noise_pair(
            self.noise_scheduler,
            video_latents,
            actions,
            generator,
            loss_config.timestep_beta,
            loss_config.pure_noise_fraction,
        )
        conditions = self.condition_latents(image_latents, video_latents.shape[1])
        video_pred, action_pred = self.transformer(
            torch.cat([noised.noisy_video, conditions], dim=2),
            prompt_embeds,
            noised.timesteps,
            noisy_actions=noised.noisy_actions,
            embodiment_ids=batch.embodiment_ids.to(device),
            image_rotary_emb=self.rotary(video_latents.shape[1]),
        )
        assert action_pred is not None  # actions were given, so the transformer returns their prediction
        video_loss = F.mse_loss(video_pred.float(), noised.target_video.float())
        mask = batch.action_mask.to(device=device, dtype=torch.float32)[..., None]
        squared = (action_pred.float() - noised.target_actions.float()) ** 2 * mask
        action_loss = squared.sum() / (mask.sum() * c.action_dims).clamp_min(1.0)
        total = loss_config.action_weight * action_loss
        if loss_config.use_video_loss:
            total = total + loss_config.video_weight * video_loss
        return LossOutput(loss=total, video_loss=video_loss.detach(), action_loss=action_loss.detach())


def _check_statistics_shape(statistics: ConditionNormalizer, expected: tuple[int, ...], what: str, fields: str) -> None:
    """Raises ValueError naming the config `fields` whose sizes `statistics` do not match."""
    if statistics.shape != expected:
        raise ValueError(
            f"{what} statistics of shape {statistics.shape} do not fit this model: expected ({fields}) = {expected}"
        )


def _check_same_architecture(current: VideoVLAConfig, new: VideoVLAConfig, what: str) -> None:
    """Raises ValueError naming the config fields the weights depend on that differ."""
    changed = [name for name in _ARCHITECTURE_FIELDS if getattr(current, name) != getattr(new, name)]
    if changed:
        raise ValueError(f"cannot change {changed} on a built {what} (the weights depend on them); build a new model")
