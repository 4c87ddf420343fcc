"""`VideoVLAModel`: T5 + the CogVideoX VAE (both frozen) + the VideoVLA transformer + the joint diffusion.

Checkpoint layout (`save_pretrained` / `from_pretrained`; safetensors and JSON only, never pickle):

    config.json             VideoVLAConfig
    model.safetensors       the transformer (CogVideoX backbone under "backbone." + the action layers)
    normalization.json      ActionNormalizer statistics, with the action dimension names
    condition_normalization.safetensors
                            observation-latent statistics (only with config.normalize_condition)
    text_normalization.safetensors
                            instruction-embedding statistics (only with config.normalize_text)
    vae/                    AutoencoderKLCogVideoX (diffusers save_pretrained)
    text_encoder/           T5EncoderModel (transformers save_pretrained)
    tokenizer/              the T5 tokenizer

Image-to-video conventions follow diffusers' CogVideoX I2V pipeline: the observation is VAE-encoded as a
one-frame video, scaled by the VAE scaling factor, padded with zero latents over time and concatenated to the
noisy video latents on the channel axis. With `config.normalize_condition` the observation latent is first
standardised with training-set statistics (`condition_normalization`); with `config.normalize_text` so is the
instruction's T5 embedding.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import AutoencoderKLCogVideoX
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase, T5EncoderModel

from videovla_model.batch import TrainingBatch
from videovla_model.condition_normalization import (
    CONDITION_NORMALIZATION_NAME,
    TEXT_NORMALIZATION_NAME,
    ConditionNormalizer,
)
from videovla_model.configuration import ADDABLE_CONDITIONING, GuidanceTarget, SamplerName, VideoVLAConfig
from videovla_model.diffusion import add_noise_pair, apply_guidance, build_scheduler, rand, sample_loop
from videovla_model.normalization import NORMALIZATION_NAME, ActionNormalizer
from videovla_model.text import (
    UNCONDITIONAL_PROMPT,
    PromptCache,
    build_text_encoder,
    build_tokenizer,
    check_text_encoder,
)
from videovla_model.transformer import VideoVLATransformer, cogvideox_transformer_kwargs, rotary_embedding
from videovla_model.weights import assert_materialized, check_state_dict, load_safetensors

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "text_encoder"
TOKENIZER_DIR = "tokenizer"

# Stock CogVideoX config fields that must agree with the VideoVLA config for the weights to mean the same thing
# (sample_height / sample_width set the base grid of the rotary positions the backbone was trained with).
_BACKBONE_FIELDS = (
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "time_embed_dim",
    "text_embed_dim",
    "num_layers",
    "attention_bias",
    "patch_size",
    "activation_fn",
    "timestep_activation_fn",
    "norm_eps",
    "sample_height",
    "sample_width",
)

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


@dataclass
class SampleOutput:
    """actions: (B, R, D) normalised to [-1, 1]; video_latents: (B, F, C, h, w) (VAE-scaled);
    video: (B, 3, T, H, W) in [-1, 1] or None; timings: seconds per stage."""

    actions: torch.Tensor
    video_latents: torch.Tensor
    video: torch.Tensor | None
    timings: dict[str, float] = field(default_factory=dict)


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


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "float32" / "bfloat16" / "float16" (or a torch.dtype) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


class VideoVLAModel(nn.Module):
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
        Instructions are dropped to "" with `loss.text_dropout_prob` and the conditioning image is noised /
        dropped as configured, which is what classifier-free guidance needs at inference.
        """
        self._check_batch(batch)
        c = self.config
        device = self.device
        size = len(batch)
        loss_config = c.loss

        keep_text = rand((size,), generator, device) >= loss_config.text_dropout_prob
        kept = keep_text.tolist()
        instructions = [
            text if keep else UNCONDITIONAL_PROMPT for text, keep in zip(batch.instructions, kept, strict=True)
        ]
        prompt_embeds = self.encode_prompts(instructions)

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
            image_latents = image_latents * keep_image[:, None, None, None, None].to(image_latents.dtype)

        actions = batch.actions.to(device=device, dtype=self.dtype)
        noised = add_noise_pair(self.noise_scheduler, video_latents, actions, generator, loss_config.timestep_beta)
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

    # Sampling -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        observation: torch.Tensor,
        instructions: Sequence[str],
        embodiment_ids: torch.Tensor | Sequence[int] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        decode_video: bool = False,
        sampler: SamplerName | None = None,
        guidance_target: GuidanceTarget | None = None,
        num_frames: int | None = None,
    ) -> SampleOutput:
        """Imagines the future video and predicts one action chunk per observation.

        observation: (B, 3, H, W) in [-1, 1] at the config's image size. instructions: B strings.
        embodiment_ids: (B,) ints (None = all 0). Unset sampling options come from `config.diffusion`;
        guidance_scale 1 runs a single conditional pass. num_frames: imagined video frames (4k + 1), default
        `config.sample_num_frames`. Returns normalised actions (un-normalise with `self.normalizer`).
        """
        c = self.config
        diffusion = c.diffusion
        steps = num_inference_steps if num_inference_steps is not None else diffusion.num_inference_steps
        scale = guidance_scale if guidance_scale is not None else diffusion.guidance_scale
        target = guidance_target if guidance_target is not None else diffusion.guidance_target
        frames = num_frames if num_frames is not None else c.sample_num_frames
        size = self._check_sample_inputs(observation, instructions, steps, scale, target, frames)
        device, dtype = self.device, self.dtype
        ids = torch.zeros(size, dtype=torch.long) if embodiment_ids is None else torch.as_tensor(embodiment_ids)
        if ids.shape != (size,) or int(ids.min()) < 0 or int(ids.max()) >= c.num_embodiments:
            raise ValueError(f"embodiment_ids must be {size} ints in [0, {c.num_embodiments}), got {ids.tolist()}")
        ids = ids.to(device=device, dtype=torch.long)
        synchronize = self._synchronize()
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            if synchronize is not None:
                synchronize()
            now = time.perf_counter()
            timings[name] = now - since
            return now

        start = mark = time.perf_counter()
        use_cfg = scale > 1.0
        prompts = list(instructions) + ([UNCONDITIONAL_PROMPT] * size if use_cfg else [])
        embeds = self.encode_prompts(prompts)
        if use_cfg:
            # Unconditional first, as in diffusers' CogVideoX pipelines.
            embeds = torch.cat([embeds[size:], embeds[:size]])
        mark = lap("text_encoding", mark)

        latent_frames = c.latent_frames(frames)
        image_latents = self.encode_observation(observation.to(device=device, dtype=torch.float32), generator)
        conditions = self.condition_latents(image_latents, latent_frames)
        rotary = self.rotary(latent_frames)
        mark = lap("observation_encoding", mark)

        repeat = 2 if use_cfg else 1
        conditions_in = conditions.repeat(repeat, 1, 1, 1, 1)
        ids_in = ids.repeat(repeat)
        guide_video = use_cfg and target in ("video_and_actions", "video")
        guide_actions = use_cfg and target in ("video_and_actions", "actions")

        def denoise(video: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            video_out, action_out = self.transformer(
                torch.cat([video.repeat(repeat, 1, 1, 1, 1), conditions_in], dim=2),
                embeds,
                t.repeat(repeat),
                noisy_actions=actions.repeat(repeat, 1, 1),
                embodiment_ids=ids_in,
                image_rotary_emb=rotary,
            )
            assert action_out is not None  # actions were given, so the transformer returns their prediction
            if not use_cfg:
                return video_out, action_out
            video_uncond, video_cond = video_out.chunk(2)
            action_uncond, action_cond = action_out.chunk(2)
            return (
                apply_guidance(video_cond, video_uncond, scale, guide_video),
                apply_guidance(action_cond, action_uncond, scale, guide_actions),
            )

        latent_shape = (size, latent_frames, c.vae.latent_channels, c.latent_height, c.latent_width)
        result = sample_loop(
            denoise,
            build_scheduler(diffusion, sampler),
            latent_shape,
            (size, c.chunk_rows, c.action_dims),
            steps,
            device,
            dtype,
            generator,
            synchronize,
        )
        mark = lap("denoising", mark)
        timings["denoising_step_mean"] = sum(result.step_seconds) / len(result.step_seconds)

        actions = result.actions.float().clamp(-1.0, 1.0)
        mark = lap("action_readout", mark)
        video = self.decode_latents(result.video_latents) if decode_video else None
        lap("video_decoding", mark)
        timings["total"] = time.perf_counter() - start
        return SampleOutput(actions=actions, video_latents=result.video_latents, video=video, timings=timings)

    def _check_sample_inputs(
        self,
        observation: torch.Tensor,
        instructions: Sequence[str],
        steps: int,
        scale: float,
        target: str,
        frames: int,
    ) -> int:
        h, w = self.config.image_size
        if observation.ndim != 4 or tuple(observation.shape[1:]) != (3, h, w):
            raise ValueError(f"observation must have shape (B, 3, {h}, {w}), got {tuple(observation.shape)}")
        if not observation.is_floating_point() or not torch.isfinite(observation).all():
            raise ValueError("observation must be a finite floating-point tensor in [-1, 1]")
        size = observation.shape[0]
        if isinstance(instructions, str) or len(instructions) != size:
            raise ValueError(f"instructions must be a list of {size} strings (one per observation)")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if not scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables guidance), got {scale}")
        if target not in ("video_and_actions", "actions", "video"):
            raise ValueError(f"guidance_target must be 'video_and_actions', 'actions' or 'video', got {target!r}")
        if frames < 1 or (frames - 1) % 4 != 0:
            raise ValueError(f"num_frames must be 4k + 1 video frames (e.g. 5, 13), got {frames}")
        return size

    # Checkpoints --------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes the checkpoint layout in the module doc; returns the directory."""
        if self.tokenizer is None:
            raise RuntimeError("cannot save a model without a tokenizer (config.text.tokenizer='t5' needs one)")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.config.save(root)
        state = {name: tensor.detach().contiguous() for name, tensor in self.transformer.state_dict().items()}
        save_file(state, str(root / WEIGHTS_NAME), metadata={"format": "pt", "config_name": self.config.name})
        self.vae.save_pretrained(str(root / VAE_DIR), safe_serialization=True)
        self.text_encoder.save_pretrained(str(root / TEXT_ENCODER_DIR))
        self.tokenizer.save_pretrained(str(root / TOKENIZER_DIR))
        self.normalizer.save(root / NORMALIZATION_NAME)
        if self.config.normalize_condition:
            self.condition_normalizer.save(root / CONDITION_NORMALIZATION_NAME)
        if self.config.normalize_text:
            self.text_normalizer.save(root / TEXT_NORMALIZATION_NAME)
        return root

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> VideoVLAModel:
        """Loads a checkpoint written by `save_pretrained`, in eval mode on `device` in `dtype`.

        Raises CheckpointMismatchError naming tensors when the weights do not fit the saved config.
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"no VideoVLA checkpoint directory at {root}")
        config = VideoVLAConfig.load(root)
        torch_dtype = resolve_dtype(dtype)
        tokenizer = build_tokenizer(config.text, root / TOKENIZER_DIR)
        text_encoder = T5EncoderModel.from_pretrained(str(root / TEXT_ENCODER_DIR), dtype=torch_dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(str(root / VAE_DIR), torch_dtype=torch_dtype)
        transformer = load_transformer(config, root / WEIGHTS_NAME)
        normalizer = ActionNormalizer.load(root / NORMALIZATION_NAME)
        model = cls(
            config,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            normalizer=normalizer,
            condition_normalizer=_load_statistics(
                root,
                config.normalize_condition,
                "normalize_condition",
                CONDITION_NORMALIZATION_NAME,
                "observation latent",
            ),
            text_normalizer=_load_statistics(
                root, config.normalize_text, "normalize_text", TEXT_NORMALIZATION_NAME, "instruction embedding"
            ),
        )
        return model.to(device=device, dtype=torch_dtype).eval()

    def with_added_conditioning(self, flags: Sequence[str]) -> VideoVLAModel:
        """This model with the conditioning layers `flags` names (any of `ADDABLE_CONDITIONING`, each off now)
        switched on. The new layers' outputs start at zero, so the new model samples exactly as this one until it
        is trained; it shares every other module and statistic with this one."""
        unknown = [flag for flag in flags if flag not in ADDABLE_CONDITIONING]
        if unknown:
            raise ValueError(
                f"cannot add {unknown}: the conditioning layers that can be added are {ADDABLE_CONDITIONING}"
            )
        already = [flag for flag in flags if getattr(self.config, flag)]
        if already:
            raise ValueError(f"cannot add {already}: this model has them already")
        config = dataclasses.replace(self.config, **dict.fromkeys(flags, True))
        with torch.device("meta"):
            transformer = VideoVLATransformer(config)
        # Every added layer gets its initialisation; the ones this model has are then replaced by copies of its own.
        initialise_added_layers(transformer)
        trained = {name: tensor.detach().clone() for name, tensor in self.transformer.state_dict().items()}
        missing, unexpected = transformer.load_state_dict(trained, strict=False, assign=True)
        added = {name for name in transformer.state_dict() if name not in trained}
        assert not unexpected and set(missing) == added, (missing, unexpected)
        assert_materialized(transformer, f"VideoVLA transformer grown by {list(flags)}")
        transformer = transformer.to(device=self.device, dtype=self.dtype)
        return VideoVLAModel(
            config,
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=transformer,
            normalizer=self.normalizer,
            condition_normalizer=self.condition_normalizer if config.normalize_condition else None,
            text_normalizer=self.text_normalizer if config.normalize_text else None,
        ).train(self.training)

    @classmethod
    def from_cogvideox(
        cls,
        cogvideox_dir: str | Path,
        config: VideoVLAConfig,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> VideoVLAModel:
        """A VideoVLA model whose backbone, VAE, T5 and tokenizer come from a local diffusers-format CogVideoX
        image-to-video directory (transformer/, vae/, text_encoder/, tokenizer/); the action layers are new.

        The I2V checkpoint's learned positional table (fixed to 480 x 720 frames) is not used: VideoVLA works at
        other resolutions and relies on the 3D rotary positions alone.
        """
        root = Path(cogvideox_dir)
        for sub in ("transformer", VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root} is not a diffusers CogVideoX directory: {sub}/ is missing")
        _check_backbone_config(root / "transformer", config)
        torch_dtype = resolve_dtype(dtype)
        tokenizer = build_tokenizer(config.text, root / TOKENIZER_DIR)
        text_encoder = T5EncoderModel.from_pretrained(str(root / TEXT_ENCODER_DIR), dtype=torch_dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(str(root / VAE_DIR), torch_dtype=torch_dtype)

        stock = load_safetensors(root / "transformer")
        if stock.pop("patch_embed.pos_embedding", None) is not None:
            logger.info("from_cogvideox: dropped the I2V learned positional table; positions are 3D rotary only")
        with torch.device("meta"):
            transformer = VideoVLATransformer(config)
        added_names = [name for name in transformer.state_dict() if not name.startswith("backbone.")]
        state = {f"backbone.{name}": tensor for name, tensor in stock.items()}
        check_state_dict(transformer, state, f"CogVideoX transformer weights in {root / 'transformer'}", added_names)
        transformer.load_state_dict(state, strict=False, assign=True)
        initialise_added_layers(transformer)  # they were never loaded
        assert_materialized(transformer, "VideoVLA transformer from CogVideoX")
        model = cls(config, tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer)
        return model.to(device=device, dtype=torch_dtype)


def initialise_added_layers(transformer: VideoVLATransformer) -> None:
    """Gives a transformer built on the meta device real (CPU) storage for the layers VideoVLA adds to CogVideoX,
    then their initialisation; the backbone is left as it is."""
    for module in transformer.added_layers():
        module.to_empty(device="cpu")
    transformer.action_pos_embed = nn.Parameter(torch.empty(transformer.action_pos_embed.shape))
    transformer.init_added_layers()


def _check_statistics_shape(statistics: ConditionNormalizer, expected: tuple[int, ...], what: str, fields: str) -> None:
    """Raises ValueError naming the config `fields` whose sizes `statistics` do not match."""
    if statistics.shape != expected:
        raise ValueError(
            f"{what} statistics of shape {statistics.shape} do not fit this model: expected ({fields}) = {expected}"
        )


def _load_statistics(root: Path, enabled: bool, flag: str, file_name: str, what: str) -> ConditionNormalizer | None:
    """The standardisation statistics a checkpoint saved for `flag`; None (with a warning when the flag is on but
    the file is missing, e.g. a first-stage VAE checkpoint) leaves the model's identity map in place."""
    if not enabled:
        return None
    path = root / file_name
    if path.is_file():
        return ConditionNormalizer.load(path)
    logger.warning(
        "%s has %s on but no %s: the %s stays unstandardised until videovla-train fits the statistics",
        root,
        flag,
        file_name,
        what,
    )
    return None


def _check_same_architecture(current: VideoVLAConfig, new: VideoVLAConfig, what: str) -> None:
    """Raises ValueError naming the config fields the weights depend on that differ."""
    changed = [name for name in _ARCHITECTURE_FIELDS if getattr(current, name) != getattr(new, name)]
    if changed:
        raise ValueError(f"cannot change {changed} on a built {what} (the weights depend on them); build a new model")


def load_transformer(config: VideoVLAConfig, weights: Path) -> VideoVLATransformer:
    """The transformer for `config` with the tensors in `weights`; nothing is allocated twice (meta init)."""
    if not weights.is_file():
        raise FileNotFoundError(f"no transformer weights at {weights}")
    state = load_safetensors(weights)
    with torch.device("meta"):
        transformer = VideoVLATransformer(config)
    check_state_dict(transformer, state, str(weights))
    transformer.load_state_dict(state, strict=True, assign=True)
    assert_materialized(transformer, f"VideoVLA transformer from {weights}")
    return transformer


def _check_backbone_config(transformer_dir: Path, config: VideoVLAConfig) -> None:
    """Raises ValueError naming each stock CogVideoX setting that disagrees with `config`."""
    path = transformer_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no CogVideoX transformer config at {path}")
    stock = json.loads(path.read_text())
    expected = cogvideox_transformer_kwargs(config)
    mismatches = [
        f"{name}: checkpoint {stock.get(name)!r} vs config {expected[name]!r}"
        for name in _BACKBONE_FIELDS
        if stock.get(name, expected[name]) != expected[name]
    ]
    if stock.get("patch_size_t") is not None:
        mismatches.append(f"patch_size_t: checkpoint {stock['patch_size_t']!r} vs None (CogVideoX 1.0 layout)")
    if stock.get("ofs_embed_dim"):
        mismatches.append(f"ofs_embed_dim: checkpoint {stock['ofs_embed_dim']!r} vs None (CogVideoX 1.0 layout)")
    if not stock.get("use_rotary_positional_embeddings", False):
        mismatches.append("use_rotary_positional_embeddings: checkpoint False vs True")
    if mismatches:
        raise ValueError(f"CogVideoX checkpoint {transformer_dir} does not match the config: " + "; ".join(mismatches))
