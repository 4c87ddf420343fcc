"""How much device memory a `videovla-train` run needs, estimated from the config before anything is built.

`videovla-train` prints the estimate as a table before the first step and refuses a run whose estimate exceeds
the device's memory (CUDA: the free memory `torch.cuda.mem_get_info` reports; any device: `--max-memory-gb`).

What is counted (GB = 1e9 bytes):

    transformer weights   full fine-tune: float32 master weights of every parameter (autocast computes in bf16
                          but the weights stay float32); LoRA: the frozen backbone in bf16 under bf16 autocast
                          (float32 otherwise) plus the float32 trained tensors
    gradients             float32, trained tensors only
    optimizer state       AdamW's two moments: 8 bytes per trained value, 2 with 8-bit AdamW (bitsandbytes)
    activations           what backward keeps per sample (below) x batch size
    VAE                   its weights plus the working memory of encoding one batch (observation frames only with a
                          latent cache, whole clips without)
    T5                    none on the device: instruction embeddings are cached and the encoder stays on the host
    runtime               CUDA context, allocator fragmentation, temporary buffers (a fixed allowance)

Sharding (FSDP over N processes) divides weights, gradients and optimizer state by N.

Activations: each transformer block keeps about `BLOCK_SAVED_VALUES` values per token and unit of width for its
backward pass (adaptive-norm inputs and outputs, q/k/v before and after the qk-norm and rotation, the attention
output, the feed-forward's 4x-wide input and GELU output, gated residuals), with memory-efficient attention that
stores no (S x S) matrix. Gradient checkpointing keeps only each block's two inputs (video/action and text
streams) and recomputes one block at a time during backward.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from videovla_model.configuration import VideoVLAConfig

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OPTIMIZERS = ("adamw", "adamw-fused", "adamw-8bit")
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw-fused": 8, "adamw-8bit": 2}
# The attention projections of every DiT block that LoRA adapts (diffusers' CogVideoX attention module names).
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
BLOCK_SAVED_VALUES = 26
CHECKPOINTED_BLOCK_VALUES = 2
# Outside the blocks: patch embedding output, final norm, output head and loss inputs, per token and width.
HEAD_SAVED_VALUES = 6
# diffusers' CogVideoX VAE encodes 8 frames at a time (plus its causal cache); ~3 live maps of the widest level.
VAE_FRAMES_PER_PASS = 9
VAE_LIVE_MAPS = 3
RUNTIME_ALLOWANCE_GB = 1.5
T5_RELATIVE_ATTENTION_BUCKETS = 32
LARGE_MODEL_PARAMETERS = 1_000_000_000


# Parameter counts --------------------------------------------------------------------------------------------


def backbone_parameter_count(config: VideoVLAConfig, in_channels: int | None = None) -> int:
    """Parameters of the stock `CogVideoXTransformer3DModel` that `config` describes (counted, not built).

    in_channels: the patch embedding's input channels; default 2 x latent channels (image-to-video: noisy video
    concatenated with the observation latent), latent channels for a text-to-video backbone.
    """
    t = config.transformer
    width = t.width
    time_width = t.time_embed_dim
    latent = config.vae.latent_channels
    patch = t.patch_size
    channels = 2 * latent if in_channels is None else in_channels
    patch_embed = (channels * patch * patch + 1) * width + (config.text.d_model + 1) * width
    time_embedding = (width + 1) * time_width + (time_width + 1) * time_width
    adaptive_norm = (time_width + 1) * 6 * width + 2 * width
    attention = 4 * (width * width + width) + 4 * t.attention_head_dim
    feed_forward = (width + 1) * 4 * width + (4 * width + 1) * width
    block = 2 * adaptive_norm + attention + feed_forward
    head = 2 * width + (time_width + 1) * 2 * width + 2 * width + (width + 1) * patch * patch * latent
    return patch_embed + time_embedding + t.num_layers * block + head


def action_layer_parameter_count(config: VideoVLAConfig) -> int:
    """Parameters VideoVLA adds to the backbone (action embedding, chunk positions, embodiments, action head and
    the optional conditioning MLPs): the layers LoRA fine-tuning trains in full."""
    width = config.transformer.width
    time_width = config.transformer.time_embed_dim
    dims = config.action_dims
    count = (dims + 1) * width + config.chunk_rows * width + config.num_embodiments * width
    count += (time_width + 1) * 2 * width + 2 * width + (width + 1) * dims
    text_width = config.text.d_model
    if config.text_modulation:
        count += (text_width + 1) * time_width + (time_width + 1) * time_width
    if config.instruction_mixes_observation:
        count += (text_width + 1) * time_width + (time_width + 1) * config.vae.latent_channels**2
    if config.observation_film:
        count += observation_film_parameter_count(config)
    return count


def observation_film_parameter_count(config: VideoVLAConfig) -> int:
    """Parameters of `transformer.ObservationFilm(config)`: 4 x 4 stride-2 convolutions, their FiLM linears and the
    1 x 1 output convolution."""
    from videovla_model.transformer import observation_film_channels

    channels = observation_film_channels(config)
    count = sum((16 * c_in + 1) * c_out for c_in, c_out in itertools.pairwise(channels))
    count += sum((config.text.d_model + 1) * 2 * c_out for c_out in channels[1:])
    return count + (channels[-1] + 1) * config.vae.latent_channels


def transformer_parameter_count(config: VideoVLAConfig) -> int:
    """Parameters of `VideoVLATransformer(config)`: backbone + the learned positional table (the public 5B's) +
    action layers."""
    from videovla_model.transformer import positional_table_length

    table = positional_table_length(config) * config.transformer.width
    learned = table if config.transformer.learned_positional_embeddings else 0
    return backbone_parameter_count(config) + learned + action_layer_parameter_count(config)


def lora_parameter_count(config: VideoVLAConfig, rank: int) -> int:
    """LoRA A and B matrices on every block's q, k, v and output projections (each width x width)."""
    width = config.transformer.width
    return config.transformer.num_layers * len(LORA_TARGET_MODULES) * rank * 2 * width


def t5_parameter_count(config: VideoVLAConfig) -> int:
    """Parameters of the T5 encoder (embedding, layers with relative position bias in the first, final norm)."""
    text = config.text
    inner = text.num_heads * text.d_kv
    gated = text.feed_forward_proj.startswith("gated")
    feed_forward = (2 if gated else 1) * text.d_model * text.d_ff + text.d_ff * text.d_model
    layer = 4 * text.d_model * inner + feed_forward + 2 * text.d_model
    return (
        text.vocab_size * text.d_model
        + text.num_layers * layer
        + T5_RELATIVE_ATTENTION_BUCKETS * text.num_heads
        + (text.d_model)
    )


def vae_parameter_count(config: VideoVLAConfig) -> int:
    """Parameters of the CogVideoX VAE `config` describes, counted on the meta device (nothing is allocated)."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    from videovla_model.modeling import vae_kwargs

    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX(**vae_kwargs(config))
    return sum(p.numel() for p in vae.parameters())


# The estimate ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingMemoryRequest:
    """The settings of a run that decide its memory.

    mixed_precision: "no" | "bf16" | "fp16". optimizer: one of `OPTIMIZERS`. lora_rank: None = full fine-tune.
    shards: processes FSDP shards weights, gradients and optimizer state over (1 = no sharding).
    latent_cache: training clips come as cached VAE posteriors (only observations are encoded per step).
    """

    config: VideoVLAConfig
    batch_size: int
    mixed_precision: str = "no"
    optimizer: str = "adamw"
    lora_rank: int | None = None
    gradient_checkpointing: bool = False
    latent_cache: bool = False
    shards: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        for name in ("batch_size", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1 or None, got {self.lora_rank}")


@dataclass(frozen=True)
class MemoryLine:
    """One row of the estimate: what, where it lives, bytes."""

    component: str
    detail: str
    bytes: float
    on_device: bool = True


@dataclass(frozen=True)
class MemoryEstimate:
    lines: tuple[MemoryLine, ...]

    @property
    def device_bytes(self) -> float:
        return sum(line.bytes for line in self.lines if line.on_device)

    def table(self) -> str:
        """A small fixed-width table (GB), device total last."""
        rows = [("component", "detail", "GB")]
        rows += [
            (line.component, line.detail, f"{line.bytes / GB:.2f}" if line.on_device else f"({line.bytes / GB:.2f})")
            for line in self.lines
        ]
        rows.append(("total on device", "", f"{self.device_bytes / GB:.2f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)


def tokens_per_sample(config: VideoVLAConfig, num_frames: int) -> int:
    """Sequence length of one training sample: text + video patches + action rows."""
    patch = config.transformer.patch_size
    video = config.latent_frames(num_frames) * (config.latent_height // patch) * (config.latent_width // patch)
    return config.text.max_length + video + config.chunk_rows


def activation_bytes_per_sample(config: VideoVLAConfig, mixed_precision: str, gradient_checkpointing: bool) -> float:
    """Bytes the transformer keeps for backward for one training sample (see the module docstring)."""
    tokens = tokens_per_sample(config, config.train_num_frames)
    width = config.transformer.width
    value_bytes = 2 if mixed_precision in ("bf16", "fp16") else 4
    layers = config.transformer.num_layers
    per_block = BLOCK_SAVED_VALUES * tokens * width
    if gradient_checkpointing:
        blocks = layers * CHECKPOINTED_BLOCK_VALUES * tokens * width + per_block
    else:
        blocks = layers * per_block
    return float((blocks + HEAD_SAVED_VALUES * tokens * width) * value_bytes)


def vae_working_bytes(config: VideoVLAConfig, batch_size: int, latent_cache: bool) -> float:
    """Peak float32 working memory of encoding one batch with the frozen VAE (no gradients)."""
    frames = 1 if latent_cache else min(config.train_num_frames, VAE_FRAMES_PER_PASS)
    widest = max(config.vae.block_out_channels[:1]) * config.image_height * config.image_width
    return float(batch_size * frames * widest * VAE_LIVE_MAPS * 4)


def estimate_training_memory(request: TrainingMemoryRequest) -> MemoryEstimate:
    """The per-device memory of one training process (see the module docstring for what each line counts)."""
    config = request.config
    total = transformer_parameter_count(config)
    bf16_frozen = request.mixed_precision in ("bf16", "fp16")
    if request.lora_rank is None:
        trainable = total
        weights = total * 4
        weight_detail = f"{total / 1e9:.3f}B float32"
        mode = "full fine-tune"
    else:
        trainable = lora_parameter_count(config, request.lora_rank) + action_layer_parameter_count(config)
        frozen = total - action_layer_parameter_count(config)
        weights = frozen * (2 if bf16_frozen else 4) + trainable * 4
        frozen_dtype = "bf16" if bf16_frozen else "float32"
        weight_detail = f"{frozen / 1e9:.3f}B frozen {frozen_dtype} + {trainable / 1e6:.1f}M trained"
        mode = f"LoRA rank {request.lora_rank}"
    shards = request.shards
    sharded = f" / {shards} shards" if shards > 1 else ""
    activations = activation_bytes_per_sample(config, request.mixed_precision, request.gradient_checkpointing)
    checkpointing = "checkpointed" if request.gradient_checkpointing else "no checkpointing"
    precision = "bf16" if request.mixed_precision == "bf16" else request.mixed_precision.replace("no", "float32")
    vae = vae_parameter_count(config)
    t5 = t5_parameter_count(config)
    lines = (
        MemoryLine("transformer weights", weight_detail + sharded, weights / shards),
        MemoryLine("gradients", f"{mode}, float32" + sharded, trainable * 4 / shards),
        MemoryLine(
            "optimizer state",
            f"{request.optimizer}" + sharded,
            trainable * OPTIMIZER_STATE_BYTES[request.optimizer] / shards,
        ),
        MemoryLine(
            "activations",
            f"{request.batch_size} x {activations / GB:.2f} GB ({precision}, {checkpointing})",
            request.batch_size * activations,
        ),
        MemoryLine(
            "VAE",
            "weights + encoding" + (" (latent cache)" if request.latent_cache else ""),
            vae * 4 + vae_working_bytes(config, request.batch_size, request.latent_cache),
        ),
        MemoryLine("T5 encoder", "on the host: embeddings cached", t5 * 4, on_device=False),
        MemoryLine("runtime", "CUDA context, fragmentation", RUNTIME_ALLOWANCE_GB * GB),
    )
    return MemoryEstimate(lines=lines)


def check_fits(estimate: MemoryEstimate, available_bytes: float, where: str) -> None:
    """Raises MemoryError with one line when the estimate exceeds `available_bytes` on `where`."""
    needed = estimate.device_bytes
    if needed > available_bytes:
        raise MemoryError(
            f"memory estimate {needed / GB:.1f} GB exceeds the {available_bytes / GB:.1f} GB available on {where}; "
            "try --lora-rank, --optimizer adamw-8bit, --mixed-precision bf16, --gradient-checkpointing, a smaller "
            "--batch-size, --latent-cache, or FSDP over several GPUs (accelerate launch --use_fsdp)"
        )


def available_device_bytes(device_type: str, device_index: int | None, max_memory_gb: float | None) -> float | None:
    """The memory a run may use: `max_memory_gb` when given, else CUDA's free memory, else None (not checked)."""
    if max_memory_gb is not None:
        return max_memory_gb * GB
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device_index)
        return float(free)
    return None
