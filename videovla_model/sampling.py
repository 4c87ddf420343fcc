"""Sampling: the denoising loop with classifier-free guidance that turns an observation and an instruction into
an imagined video and an action chunk (the "pipeline" half of the model, as diffusers separates pipelines from
models). `VideoVLAModel` gets it as its `sample` method through `SamplingMixin`.

Per call (B observations; with guidance the unconditional and conditional passes run as one batch of 2B):
    1. text: B instructions (+ B unconditional prompts) -> (2B, L, text width) embeddings, unconditional first;
    2. observation: (B, 3, H, W) -> (B, 1, C, h, w) latent, zero-padded over time to (B, F, C, h, w);
    3. denoising: video latents (B, F, C, h, w) and actions (B, R, D) stepped together from noise;
    4. readout: actions clamped to [-1, 1]; the video decoded only when asked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from videovla_model.configuration import GuidanceTarget, SamplerName
from videovla_model.diffusion import apply_guidance, build_scheduler, sample_loop
from videovla_model.rtc import ActionPrefix
from videovla_model.text import UNCONDITIONAL_PROMPT

if TYPE_CHECKING:
    from videovla_model.modeling import VideoVLAModel


@dataclass
class SampleOutput:
    """actions: (B, R, D) normalised to [-1, 1]; video_latents: (B, F, C, h, w) (VAE-scaled);
    video: (B, 3, T, H, W) in [-1, 1] or None; timings: seconds per stage."""

    actions: torch.Tensor
    video_latents: torch.Tensor
    video: torch.Tensor | None
    timings: dict[str, float] = field(default_factory=dict)


class SamplingMixin:
    """`sample` for `VideoVLAModel` (uses its encoders, transformer, config and normalisers)."""

    @torch.no_grad()
    def sample(
        self: VideoVLAModel,
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
        action_prefix: ActionPrefix | None = None,
    ) -> SampleOutput:
        """Imagines the future video and predicts one action chunk per observation.

        observation: (B, 3, H, W) in [-1, 1] at the config's image size. instructions: B strings.
        embodiment_ids: (B,) ints (None = all 0). Unset sampling options come from `config.diffusion`;
        guidance_scale 1 runs a single conditional pass. num_frames: imagined video frames (4k + 1), default
        `config.sample_num_frames`. action_prefix: normalised rows the chunk must start with (real-time chunking,
        videovla_model.rtc). Returns normalised actions (un-normalise with `self.normalizer`).
        """
        c = self.config
        diffusion = c.diffusion
        steps = num_inference_steps if num_inference_steps is not None else diffusion.num_inference_steps
        scale = guidance_scale if guidance_scale is not None else diffusion.guidance_scale
        target = guidance_target if guidance_target is not None else diffusion.guidance_target
        frames = num_frames if num_frames is not None else c.sample_num_frames
        size = self._check_sample_inputs(observation, instructions, steps, scale, target, frames)
        if action_prefix is not None:
            action_prefix.check(size, c.chunk_rows, c.action_dims)
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
            action_prefix,
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
        self: VideoVLAModel,
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
