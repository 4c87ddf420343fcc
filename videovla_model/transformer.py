"""The VideoVLA diffusion transformer: CogVideoX's DiT with action tokens joining its sequence.

The backbone is diffusers' stock `CogVideoXTransformer3DModel` (its patch embedding, timestep embedding,
blocks and video output head, unchanged, so CogVideoX weights load as they are). On top of it:

    action tokens = Linear(D -> width)(noisy actions) + learned chunk position embedding + embodiment embedding

are appended AFTER the video tokens and run through the same blocks, modulated by the same timestep embedding
(the blocks treat them as part of the video stream). The 3D rotary embedding covers video tokens only: action
tokens get the identity rotation (cos 1, sin 0), which leaves them exactly unchanged. A separate adaptive output
norm + Linear(width -> D) reads them out (after the backbone's final LayerNorm with
`transformer.action_final_norm`). With `transformer.learned_positional_embeddings` a learned table is added to the
text and video tokens before the blocks (the public VideoVLA and CogVideoX-5B-I2V). With no action tokens and
neither option the forward pass is exactly the stock one.

With `config.text_modulation` the instruction also enters through the timestep embedding:

    temb = time_embedding(t) + MLP(mean over tokens of the T5 embedding)      (the MLP's last layer starts at 0)

so every block's adaptive norms (video, text and action tokens alike) are modulated by the instruction.

With `config.instruction_mixes_observation` the instruction also mixes the observation latent's channels before
the patch embedding (C = latent channels, at every latent pixel of the conditioning frames):

    observation += reshape(MLP(mean over tokens of the T5 embedding), (C, C)) @ observation   (MLP output starts at 0)

Zero-padded frames and dropped images stay zero (there is no bias), and a model that has it starts out exactly
as the same model without it.

With `config.observation_film` an `ObservationFilm` encoder of the observation pixels adds to the observation latent
(`VideoVLAModel.add_observation_film`, before the latent is zero-padded over time or dropped); its output layer
starts at zero, so it too starts out as the model without it.

Sequence layout in every block: [text (L) | video (F * h/p * w/p) | actions (R)].
attention_mode "causal" masks text and video queries from action keys, so actions never influence the video.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.models.normalization import AdaLayerNorm
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid
from torch import nn
from torch.utils.checkpoint import checkpoint

from videovla_model.configuration import VideoVLAConfig

RotaryEmbedding = tuple[torch.Tensor, torch.Tensor]


def observation_film_channels(config: VideoVLAConfig) -> tuple[int, ...]:
    """Channels of `ObservationFilm`'s stride-2 convolutions, input first: 3, then 32, 64, 64, ... (one per factor
    of 2 of the VAE's spatial compression)."""
    compression = config.vae.spatial_compression
    if compression & (compression - 1):
        raise ValueError(f"observation_film needs a power-of-two vae spatial compression, got {compression}")
    return (3, *(min(64, 32 * 2**k) for k in range(compression.bit_length() - 1)))


class ObservationFilm(nn.Module):
    """The instruction-conditioned image encoder of `config.observation_film` (FiLM, as in RT-1):

        h = pixels;  for each stride-2 conv k:  h = SiLU(conv_k(h) * (1 + scale_k(text)) + shift_k(text))
        out = Conv1x1(h) -> latent channels           (scale_k, shift_k: Linear of the pooled instruction)

    (B, 3, H, W) pixels in [-1, 1] + (B, text width) pooled instruction -> (B, C, H / s, W / s), s the VAE's
    spatial compression (one stride-2 convolution per factor of 2). FiLM layers and the output start at zero, so
    the output is zero until trained.
    """

    def __init__(self, config: VideoVLAConfig) -> None:
        super().__init__()
        channels = observation_film_channels(config)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 4, stride=2, padding=1) for c_in, c_out in itertools.pairwise(channels)
        )
        self.films = nn.ModuleList(nn.Linear(config.text.d_model, 2 * c_out) for c_out in channels[1:])
        self.out = nn.Conv2d(channels[-1], config.vae.latent_channels, 1)

    def forward(self, pixels: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        hidden = pixels
        for conv, film in zip(self.convs, self.films, strict=True):
            scale, shift = film(pooled_text).chunk(2, dim=-1)
            hidden = nn.functional.silu(conv(hidden) * (1 + scale[..., None, None]) + shift[..., None, None])
        return self.out(hidden)


def cogvideox_transformer_kwargs(config: VideoVLAConfig) -> dict[str, Any]:
    """Constructor arguments of the stock `CogVideoXTransformer3DModel` that `config` describes.

    Image-to-video layout: the patch embedding takes 2 * latent channels (noisy video latents concatenated with
    the observation latent padded over time) and predicts latent channels. CogVideoX 1.0: no temporal patching,
    no ofs embedding, rotary positions only.
    """
    t = config.transformer
    return {
        "num_attention_heads": t.num_attention_heads,
        "attention_head_dim": t.attention_head_dim,
        "in_channels": 2 * config.vae.latent_channels,
        "out_channels": config.vae.latent_channels,
        "time_embed_dim": t.time_embed_dim,
        "text_embed_dim": config.text.d_model,
        "num_layers": t.num_layers,
        "attention_bias": t.attention_bias,
        "sample_width": t.sample_width,
        "sample_height": t.sample_height,
        "sample_frames": config.train_num_frames,
        "patch_size": t.patch_size,
        "temporal_compression_ratio": config.vae.temporal_compression_ratio,
        "max_text_seq_length": config.text.max_length,
        "activation_fn": t.activation_fn,
        "timestep_activation_fn": t.timestep_activation_fn,
        "norm_eps": t.norm_eps,
        "spatial_interpolation_scale": t.spatial_interpolation_scale,
        "temporal_interpolation_scale": t.temporal_interpolation_scale,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": False,
    }


def rotary_embedding(
    config: VideoVLAConfig, latent_frames: int, latent_height: int, latent_width: int, device: torch.device
) -> RotaryEmbedding:
    """(cos, sin), each (latent_frames * h/p * w/p, head_dim): the 3D rotary table for a latent video.

    rotary_grid "resized_crop": the grid is placed on the backbone's training grid (sample_height x sample_width
    latents) exactly as diffusers' CogVideoX pipelines do. "integer": positions 0..N-1 along each axis, as the
    public VideoVLA computes them.
    """
    t = config.transformer
    grid_height = latent_height // t.patch_size
    grid_width = latent_width // t.patch_size
    if t.rotary_grid == "integer":
        crops = ((0, 0), (grid_height, grid_width))
    else:
        crops = get_resize_crop_region_for_grid(
            (grid_height, grid_width), t.sample_width // t.patch_size, t.sample_height // t.patch_size
        )
    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=t.attention_head_dim,
        crops_coords=crops,
        grid_size=(grid_height, grid_width),
        temporal_size=latent_frames,
        device=device,
    )
    return cos, sin


def positional_table_length(config: VideoVLAConfig) -> int:
    """Rows of the learned positional table: text tokens + video tokens of a training clip."""
    patch = config.transformer.patch_size
    video = config.train_latent_frames * (config.latent_height // patch) * (config.latent_width // patch)
    return config.text.max_length + video


class VideoVLATransformer(nn.Module):
    """CogVideoX DiT + action tokens. `backbone` holds the stock model; the rest are the action layers.

    forward:
        hidden_states: (B, F, 2C, h, w) noisy video latents concatenated on channels with the observation latent.
        encoder_hidden_states: (B, L, text_width) T5 embeddings.
        timestep: (B,) diffusion timesteps, shared by video and actions.
        noisy_actions: (B, R, D) noisy normalised actions, or None for a video-only (stock CogVideoX) pass.
        embodiment_ids: (B,) int64 robot ids in [0, num_embodiments); None means embodiment 0.
        image_rotary_emb: (cos, sin), each (F * h/p * w/p, head_dim), from `rotary_embedding`.
        returns (video_out (B, F, C, h, w), action_out (B, R, D) or None).
    """

    def __init__(self, config: VideoVLAConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = CogVideoXTransformer3DModel(**cogvideox_transformer_kwargs(config))
        width = config.transformer.width
        dims = config.action_dims
        self.action_in = nn.Linear(dims, width)
        self.action_pos_embed = nn.Parameter(torch.empty(config.chunk_rows, width))
        self.embodiment_embed = nn.Embedding(config.num_embodiments, width)
        # A from-scratch table starts as distinct small vectors (as ViT's does) so every position is told apart from
        # the first step; pre-trained ones are loaded over it.
        self.positional_embedding = (
            nn.Parameter(torch.randn(1, positional_table_length(config), width) * 0.02)
            if config.transformer.learned_positional_embeddings
            else None
        )
        # Same adaptive-norm head as the video output, but its own weights: action tokens live in another space.
        action_norm_eps = config.transformer.action_norm_eps
        self.action_norm_out = AdaLayerNorm(
            embedding_dim=config.transformer.time_embed_dim,
            output_dim=2 * width,
            norm_elementwise_affine=True,
            norm_eps=action_norm_eps if action_norm_eps is not None else config.transformer.norm_eps,
            chunk_dim=1,
        )
        self.action_proj_out = nn.Linear(width, dims)
        time_width = config.transformer.time_embed_dim
        self.text_modulation = (
            nn.Sequential(nn.Linear(config.text.d_model, time_width), nn.SiLU(), nn.Linear(time_width, time_width))
            if config.text_modulation
            else None
        )
        latent_channels = config.vae.latent_channels
        self.observation_mixing = (
            nn.Sequential(
                nn.Linear(config.text.d_model, time_width), nn.SiLU(), nn.Linear(time_width, latent_channels**2)
            )
            if config.instruction_mixes_observation
            else None
        )
        self.observation_film = ObservationFilm(config) if config.observation_film else None
        self.gradient_checkpointing = False
        self.init_added_layers()

    def added_layers(self) -> list[nn.Module]:
        """The modules VideoVLA adds to CogVideoX (the position embedding is a parameter of `self`)."""
        layers: list[nn.Module] = [self.action_in, self.embodiment_embed, self.action_norm_out, self.action_proj_out]
        if self.text_modulation is not None:
            layers.append(self.text_modulation)
        if self.observation_mixing is not None:
            layers.append(self.observation_mixing)
        if self.observation_film is not None:
            layers.append(self.observation_film)
        return layers

    @torch.no_grad()
    def init_added_layers(self) -> None:
        """(Re-)initialises the layers VideoVLA adds; the backbone is left alone.

        The adaptive norm's modulation and the text modulation's output start at zero (plain LayerNorm and the
        stock timestep embedding at first, as DiT output heads do), so new layers do not disturb a pre-trained
        backbone's statistics at the first steps of fine-tuning.
        """
        nn.init.xavier_uniform_(self.action_in.weight)
        nn.init.zeros_(self.action_in.bias)
        nn.init.normal_(self.action_pos_embed, std=0.02)
        nn.init.normal_(self.embodiment_embed.weight, std=0.02)
        nn.init.zeros_(self.action_norm_out.linear.weight)
        nn.init.zeros_(self.action_norm_out.linear.bias)
        nn.init.ones_(self.action_norm_out.norm.weight)
        nn.init.zeros_(self.action_norm_out.norm.bias)
        nn.init.xavier_uniform_(self.action_proj_out.weight)
        nn.init.zeros_(self.action_proj_out.bias)
        for mlp in (self.text_modulation, self.observation_mixing):
            if mlp is not None:
                first, _, last = mlp
                nn.init.xavier_uniform_(first.weight)
                nn.init.zeros_(first.bias)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        if self.observation_film is not None:
            for layer in (*self.observation_film.convs, self.observation_film.out, *self.observation_film.films):
                layer.reset_parameters()
            for layer in (*self.observation_film.films, self.observation_film.out):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    def embed_actions(self, noisy_actions: torch.Tensor, embodiment_ids: torch.Tensor | None) -> torch.Tensor:
        """(B, R, D) noisy actions + (B,) embodiment ids -> (B, R, width) action tokens."""
        batch, rows, dims = noisy_actions.shape
        if (rows, dims) != (self.config.chunk_rows, self.config.action_dims):
            raise ValueError(
                f"noisy_actions must have shape (B, {self.config.chunk_rows}, {self.config.action_dims}), "
                f"got {tuple(noisy_actions.shape)}"
            )
        if embodiment_ids is None:
            embodiment_ids = torch.zeros(batch, dtype=torch.long, device=noisy_actions.device)
        if embodiment_ids.shape != (batch,):
            raise ValueError(f"embodiment_ids must have shape ({batch},), got {tuple(embodiment_ids.shape)}")
        tokens = self.action_in(noisy_actions) + self.action_pos_embed[None].to(noisy_actions.dtype)
        return tokens + self.embodiment_embed(embodiment_ids)[:, None, :]

    def positional_slice(self, sequence_length: int) -> torch.Tensor:
        """(1, sequence_length, width): the learned table's rows for [text | video] tokens (video frame-major)."""
        assert self.positional_embedding is not None  # only called when the config has the table
        available = self.positional_embedding.shape[1]
        if sequence_length > available:
            raise ValueError(
                f"the learned positional table covers {available} text + video tokens (text.max_length + "
                f"train latent frames * h/p * w/p), got {sequence_length}: sample at most train_num_frames="
                f"{self.config.train_num_frames} frames at {self.config.image_height} x {self.config.image_width}"
            )
        return self.positional_embedding[:, :sequence_length]

    def mix_observation(self, hidden_states: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        """(B, F, 2C, h, w) [noisy video | observation] + (B, text width) -> the same with the observation half
        replaced by observation + M(instruction) @ observation (see the module docstring)."""
        assert self.observation_mixing is not None  # only called when the config asks for it
        channels = hidden_states.shape[2] // 2
        mixing = self.observation_mixing(pooled_text).reshape(-1, channels, channels)
        noisy, observation = hidden_states.split(channels, dim=2)
        mixed = observation + torch.einsum("bij,bfjhw->bfihw", mixing.to(observation.dtype), observation)
        return torch.cat([noisy, mixed], dim=2)

    def causal_attention_mask(
        self, text_tokens: int, video_tokens: int, action_tokens: int, device: torch.device
    ) -> torch.Tensor:
        """(S, S) bool, True = may attend: text and video queries cannot see action keys; actions see all."""
        total = text_tokens + video_tokens + action_tokens
        mask = torch.ones(total, total, dtype=torch.bool, device=device)
        mask[: text_tokens + video_tokens, text_tokens + video_tokens :] = False
        return mask

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        noisy_actions: torch.Tensor | None = None,
        embodiment_ids: torch.Tensor | None = None,
        image_rotary_emb: RotaryEmbedding | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        backbone = self.backbone
        batch, _, channels, _, _ = hidden_states.shape
        if channels != backbone.config.in_channels:
            raise ValueError(
                f"hidden_states must have {backbone.config.in_channels} channels (noisy video latents + observation "
                f"latent), got shape {tuple(hidden_states.shape)}"
            )

        # 1. Timestep embedding (+ instruction modulation) and instruction mixing of the observation.
        temb = backbone.time_embedding(backbone.time_proj(timestep).to(dtype=hidden_states.dtype))
        pooled_text = encoder_hidden_states.mean(dim=1)
        if self.text_modulation is not None:
            temb = temb + self.text_modulation(pooled_text)
        if self.observation_mixing is not None:
            hidden_states = self.mix_observation(hidden_states, pooled_text)

        # 2. Text and video tokens (+ the learned positional table), then the action tokens after the video.
        tokens = backbone.patch_embed(encoder_hidden_states, hidden_states)
        if self.positional_embedding is not None:
            tokens = tokens + self.positional_slice(tokens.shape[1]).to(tokens.dtype)
        tokens = backbone.embedding_dropout(tokens)
        text_length = encoder_hidden_states.shape[1]
        text, stream = tokens[:, :text_length], tokens[:, text_length:]
        video_length = stream.shape[1]
        attention_kwargs: dict[str, Any] | None = None
        rotary = image_rotary_emb
        if noisy_actions is not None:
            actions = self.embed_actions(noisy_actions.to(stream.dtype), embodiment_ids)
            stream = torch.cat([stream, actions], dim=1)
            if rotary is not None:
                rotary = _extend_with_identity(rotary, actions.shape[1])
            if self.config.attention_mode == "causal":
                mask = self.causal_attention_mask(text_length, video_length, actions.shape[1], stream.device)
                attention_kwargs = {"attention_mask": mask.expand(batch, -1, -1)}

        # 3. The blocks.
        for block in backbone.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                stream, text = checkpoint(block, stream, text, temb, rotary, attention_kwargs, use_reentrant=False)
            else:
                stream, text = block(
                    hidden_states=stream,
                    encoder_hidden_states=text,
                    temb=temb,
                    image_rotary_emb=rotary,
                    attention_kwargs=attention_kwargs,
                )

        # 4. The video and action heads.
        return self.read_out(stream, video_length, temb, hidden_states.shape, noisy_actions is not None)

    def read_out(
        self,
        stream: torch.Tensor,
        video_length: int,
        temb: torch.Tensor,
        hidden_shape: torch.Size,
        with_actions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, video_length [+ R], width) tokens after the blocks -> (video (B, F, C, h, w), actions (B, R, D) or
        None), `hidden_shape` being the input (B, F, 2C, h, w)."""
        backbone = self.backbone
        action_final_norm = self.config.transformer.action_final_norm
        # LayerNorm is per token: normalising the video tokens alone or the whole stream gives the same video tokens.
        final = backbone.norm_final(stream if action_final_norm else stream[:, :video_length])
        video = backbone.proj_out(backbone.norm_out(final[:, :video_length], temb=temb))
        batch, frames, _, height, width = hidden_shape
        patch = backbone.config.patch_size
        video = video.reshape(batch, frames, height // patch, width // patch, -1, patch, patch)
        video = video.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        if not with_actions:
            return video, None
        action_tokens = (final if action_final_norm else stream)[:, video_length:]
        return video, self.action_proj_out(self.action_norm_out(action_tokens, temb=temb))


def _extend_with_identity(rotary: RotaryEmbedding, extra_tokens: int) -> RotaryEmbedding:
    """Appends `extra_tokens` rows of the identity rotation (cos 1, sin 0) to a (cos, sin) table."""
    cos, sin = rotary
    ones = torch.ones(extra_tokens, cos.shape[1], dtype=cos.dtype, device=cos.device)
    zeros = torch.zeros(extra_tokens, sin.shape[1], dtype=sin.dtype, device=sin.device)
    return torch.cat([cos, ones]), torch.cat([sin, zeros])
