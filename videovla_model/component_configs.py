"""The parts of a VideoVLA model configuration: transformer, VAE, text encoder, diffusion and loss settings.

`VideoVLAConfig` (configuration.py) holds one of each; every field is validated in `__post_init__` with an error
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SamplerName = Literal["ddim", "dpm"]
GuidanceTarget = Literal["video_and_actions", "actions", "video"]
TokenizerKind = Literal["t5", "byt5"]
RotaryGrid = Literal["resized_crop", "integer"]


def require(condition: bool, field_name: str, value: object, allowed: str) -> None:
    """Raises ValueError naming the field, the value and what is allowed unless `condition` holds."""
    if not condition:
        raise ValueError(f"{field_name} must be {allowed}, got {value!r}")


def require_positive_int(field_name: str, value: object) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, field_name, value, "an int >= 1")


@dataclass(frozen=True)
class TransformerConfig:
    """The CogVideoX diffusion transformer (1.0 layout: patch_size_t is None, no ofs embedding).

    sample_height / sample_width are in latent pixels and only set the base grid of the 3D rotary table
    (CogVideoX-5B was trained at 60 x 90 latents; other grids are mapped onto it as diffusers' pipeline does).

    The public VideoVLA (SAT code) differs from diffusers' CogVideoX in four places, each a field here (the
    defaults are diffusers' behaviour; the "cogvideox-5b" preset follows VideoVLA):
    learned_positional_embeddings: a learned table (1, text length + train latent frames * h/p * w/p, width) is
        added to the text and video tokens before the blocks (diffusers' `use_learned_positional_embeddings` of
        the image-to-video model), sliced to the sequence length.
    rotary_grid: "resized_crop" places the latent grid on the sample_height x sample_width grid as diffusers'
        pipelines do (rows at 0, 1.875, ... for 16 rows on 30); "integer" uses positions 0..N-1 as VideoVLA does.
    action_final_norm: the action tokens also pass the backbone's final LayerNorm (as every token does in
        VideoVLA) before the action head's own adaptive norm.
    action_norm_eps: epsilon of the action head's norm; None uses norm_eps (VideoVLA: 1e-6).
    """

    num_layers: int = 42
    num_attention_heads: int = 48
    attention_head_dim: int = 64
    time_embed_dim: int = 512
    patch_size: int = 2
    sample_height: int = 60
    sample_width: int = 90
    attention_bias: bool = True
    norm_eps: float = 1e-5
    activation_fn: str = "gelu-approximate"
    timestep_activation_fn: str = "silu"
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0
    learned_positional_embeddings: bool = False
    rotary_grid: RotaryGrid = "resized_crop"
    action_final_norm: bool = False
    action_norm_eps: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_attention_heads", "attention_head_dim", "time_embed_dim", "patch_size"):
            require_positive_int(f"transformer.{name}", getattr(self, name))
        require_positive_int("transformer.sample_height", self.sample_height)
        require_positive_int("transformer.sample_width", self.sample_width)
        # The 3D rotary table splits each head into t / h / w parts of head_dim/4, 3*head_dim/8, 3*head_dim/8.
        require(
            self.attention_head_dim % 16 == 0,
            "transformer.attention_head_dim",
            self.attention_head_dim,
            "a multiple of 16 (the 3D rotary table splits it into time/height/width parts)",
        )
        for name in ("learned_positional_embeddings", "action_final_norm"):
            require(isinstance(getattr(self, name), bool), f"transformer.{name}", getattr(self, name), "true or false")
        require(
            self.rotary_grid in ("resized_crop", "integer"),
            "transformer.rotary_grid",
            self.rotary_grid,
            "'resized_crop' or 'integer'",
        )
        require(
            self.action_norm_eps is None or (isinstance(self.action_norm_eps, float) and 0 < self.action_norm_eps < 1),
            "transformer.action_norm_eps",
            self.action_norm_eps,
            "null (use norm_eps) or a number in (0, 1)",
        )

    @property
    def width(self) -> int:
        """Hidden size = num_attention_heads * attention_head_dim."""
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class VAEConfig:
    """The CogVideoX causal 3D VAE (`AutoencoderKLCogVideoX`)."""

    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    layers_per_block: int = 3
    latent_channels: int = 16
    norm_num_groups: int = 32
    temporal_compression_ratio: int = 4
    scaling_factor: float = 0.7
    invert_scale_latents: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        require(
            len(self.block_out_channels) >= 2 and all(isinstance(c, int) and c >= 1 for c in self.block_out_channels),
            "vae.block_out_channels",
            self.block_out_channels,
            "at least two positive ints",
        )
        require_positive_int("vae.layers_per_block", self.layers_per_block)
        require_positive_int("vae.latent_channels", self.latent_channels)
        require_positive_int("vae.norm_num_groups", self.norm_num_groups)
        require(
            all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            "vae.block_out_channels",
            self.block_out_channels,
            f"all divisible by vae.norm_num_groups={self.norm_num_groups}",
        )
        require(
            self.temporal_compression_ratio == 4,
            "vae.temporal_compression_ratio",
            self.temporal_compression_ratio,
            "4 (the CogVideoX causal VAE)",
        )
        require(
            math.isfinite(self.scaling_factor) and self.scaling_factor > 0,
            "vae.scaling_factor",
            self.scaling_factor,
            "a positive number",
        )

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent pixel along height and width."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class TextConfig:
    """The frozen T5 encoder and its tokenizer.

    tokenizer "t5" loads the sentencepiece tokenizer saved with the weights; "byt5" needs no files (tiny models).
    """

    tokenizer: TokenizerKind = "t5"
    max_length: int = 226
    d_model: int = 4096
    num_layers: int = 24
    num_heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    vocab_size: int = 32128
    feed_forward_proj: str = "gated-gelu"

    def __post_init__(self) -> None:
        require(self.tokenizer in ("t5", "byt5"), "text.tokenizer", self.tokenizer, "'t5' or 'byt5'")
        for name in ("max_length", "d_model", "num_layers", "num_heads", "d_kv", "d_ff", "vocab_size"):
            require_positive_int(f"text.{name}", getattr(self, name))


@dataclass(frozen=True)
class DiffusionConfig:
    """The v-prediction, zero-terminal-SNR schedule (CogVideoX's public scheduler config) and sampling defaults.

    guidance_target: which outputs classifier-free guidance applies to; the other uses the conditional pass.
    dynamic_guidance: the guidance scale follows the public CogVideoX / VideoVLA schedule
        (`diffusion.dynamic_guidance_scale`, exponent dynamic_guidance_exponent) instead of staying constant.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    snr_shift_scale: float = 1.0
    sampler: SamplerName = "ddim"
    num_inference_steps: int = 10
    guidance_scale: float = 6.0
    guidance_target: GuidanceTarget = "video_and_actions"
    dynamic_guidance: bool = False
    dynamic_guidance_exponent: int = 5

    def __post_init__(self) -> None:
        require_positive_int("diffusion.num_train_timesteps", self.num_train_timesteps)
        require(
            isinstance(self.dynamic_guidance, bool),
            "diffusion.dynamic_guidance",
            self.dynamic_guidance,
            "true or false",
        )
        # An integer exponent keeps the schedule real for the negative bases it meets (see dynamic_guidance_scale).
        require_positive_int("diffusion.dynamic_guidance_exponent", self.dynamic_guidance_exponent)
        require(
            0 < self.beta_start < self.beta_end < 1,
            "diffusion.beta_start/beta_end",
            (self.beta_start, self.beta_end),
            "0 < beta_start < beta_end < 1",
        )
        require(self.sampler in ("ddim", "dpm"), "diffusion.sampler", self.sampler, "'ddim' or 'dpm'")
        require_positive_int("diffusion.num_inference_steps", self.num_inference_steps)
        require(
            self.num_inference_steps <= self.num_train_timesteps,
            "diffusion.num_inference_steps",
            self.num_inference_steps,
            f"<= diffusion.num_train_timesteps={self.num_train_timesteps}",
        )
        require(
            math.isfinite(self.guidance_scale) and self.guidance_scale >= 1.0,
            "diffusion.guidance_scale",
            self.guidance_scale,
            "a number >= 1 (1 disables classifier-free guidance)",
        )
        require(
            self.guidance_target in ("video_and_actions", "actions", "video"),
            "diffusion.guidance_target",
            self.guidance_target,
            "'video_and_actions', 'actions' or 'video'",
        )


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and the training-time corruptions that make inference-time guidance possible.

    text_dropout_prob: chance an instruction is replaced by the unconditional text (`unconditional_text`), which is
        what guidance contrasts with.
    image_dropout_prob: chance the conditioning image latent is zeroed.
    image_noise_log_mean / image_noise_log_std: the conditioning image gets Gaussian noise whose sigma is
        exp(N(mean, std)) (CogVideoX image-to-video training), so the model does not copy it pixel for pixel.
    timestep_beta: training timesteps are t = floor(T * u) with u ~ Beta(timestep_beta, 1): 1 is uniform, larger
        values train more on noisy timesteps, where little of the chunk is left in its noised copy and the
        observation and instruction alone must decide where it goes (pi0 samples its flow time from a Beta that
        favours noisy times for the same reason).
    pure_noise_fraction: chance a training sample takes the last timestep instead, where the noised chunk and
        video are pure noise: there the target is the chunk itself, so those samples train the model as a
        one-pass regressor of the chunk (and the next video) from the observation and instruction alone. In
        `benchmarks/ladder.py` diffusion learnt which object to go for only from these samples (the checkpoint
        README's fifth pass); the sampler's first step starts from their prediction.
    """

    video_weight: float = 1.0
    action_weight: float = 1.0
    use_video_loss: bool = True
    text_dropout_prob: float = 0.1
    image_dropout_prob: float = 0.05
    image_noise_log_mean: float = -3.0
    image_noise_log_std: float = 0.5
    timestep_beta: float = 1.0
    pure_noise_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("video_weight", "action_weight"):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0, f"loss.{name}", value, "a number >= 0")
        for name in ("text_dropout_prob", "image_dropout_prob"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"loss.{name}", value, "a probability in [0, 1)")
        require(self.image_noise_log_std >= 0, "loss.image_noise_log_std", self.image_noise_log_std, ">= 0")
        require(
            math.isfinite(self.timestep_beta) and self.timestep_beta >= 1.0,
            "loss.timestep_beta",
            self.timestep_beta,
            "a number >= 1 (1 samples timesteps uniformly)",
        )
        require(
            0.0 <= self.pure_noise_fraction < 1.0,
            "loss.pure_noise_fraction",
            self.pure_noise_fraction,
            "a probability in [0, 1)",
        )
        require(
            self.action_weight > 0 or (self.use_video_loss and self.video_weight > 0),
            "loss.action_weight",
            self.action_weight,
            "> 0 when the video loss is off or has weight 0 (otherwise nothing is trained)",
        )
