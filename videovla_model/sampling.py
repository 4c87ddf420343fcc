"""Sampling: the denoising loop with classifier-free guidance that turns an observation and an instruction into
an imagined video and an action chunk (the "pipeline" half of the model, as diffusers separates pipelines from
models). `VideoVLAModel` gets it as its `sample` method through `SamplingMixin`.

Per call (B observations; with guidance the unconditional and conditional passes run as one batch of 2B):
    1. text: B instructions (+ B unconditional embeddings) -> (2B, L, text width), unconditional first;
    2. observation: (B, 3, H, W) -> (B, 1, C, h, w) latent, zero-padded over time to (B, F, C, h, w);
    3. denoising: video latents (B, F, C, h, w) and actions (B, R, D) stepped together from noise, the sampler
       state in float32, guidance constant or on the public dynamic schedule (`diffusion.dynamic_guidance`);
    4. readout: actions clamped to [-1, 1]; the video decoded only when asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from videovla_model.component_configs import GuidanceTarget, SamplerName
from videovla_model.diffusion import DenoiseFn, apply_guidance, build_scheduler, dynamic_guidance_scale, sample_loop
from videovla_model.rtc import ActionPrefix

if TYPE_CHECKING:
    from videovla_model.modeling import VideoVLAModel


@dataclass
class SampleOutput:
    """actions: (B, R, D) normalised to [-1, 1]; video_latents: (B, F, C, h, w) (VAE-scaled, float32);
    video: (B, 3, T, H, W) in [-1, 1] or None; timings: seconds per stage."""

    actions: torch.Tensor
    video_latents: torch.Tensor
    video: torch.Tensor | None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance for one `sample` call.

    scale: the guidance scale (1 = a single conditional pass); video / actions: which outputs it applies to;
    dynamic_exponent: None for a constant scale, else the exponent of `dynamic_guidance_scale` over `steps`.
    """

    scale: float
    video: bool
    actions: bool
    steps: int
    dynamic_exponent: int | None = None

    @property
    def enabled(self) -> bool:
        return self.scale > 1.0

    def scale_at(self, timestep: torch.Tensor) -> float:
        """The scale used at the step of training timestep `timestep` (a 0-d or (B,) tensor of one value); only the
        dynamic schedule reads it, so a constant scale never waits for the device."""
        if self.dynamic_exponent is None:
            return self.scale
        return dynamic_guidance_scale(self.scale, int(timestep.flatten()[0]), self.steps, self.dynamic_exponent)


class _Stopwatch:
    """Seconds per named stage, synchronising the device first so asynchronous work is counted where it runs."""

    def __init__(self, synchronize: Callable[[], None] | None) -> None:
        self.synchronize = synchronize
        self.timings: dict[str, float] = {}
        self.start = self.mark = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.synchronize is not None:
            self.synchronize()
        now = time.perf_counter()
        self.timings[name] = now - self.mark
        self.mark = now


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
        ids = self._check_embodiment_ids(embodiment_ids, size)
        guidance = Guidance(
            scale=scale,
            video=target in ("video_and_actions", "video"),
            actions=target in ("video_and_actions", "actions"),
            steps=steps,
            dynamic_exponent=diffusion.dynamic_guidance_exponent if diffusion.dynamic_guidance else None,
        )
        clock = _Stopwatch(self._synchronize())

        # 1. Text: unconditional first, as in diffusers' CogVideoX pipelines.
        embeds = self.encode_prompts(instructions)
        if guidance.enabled:
            embeds = torch.cat([self.unconditional_prompt_embeddings(size), embeds])
        clock.lap("text_encoding")

        # 2. Observation latent per prompt (the FiLM encoder reads the instruction), zero-padded over time.
        latent_frames = c.latent_frames(frames)
        pixels = observation.to(device=self.device, dtype=torch.float32)
        image_latents = self.encode_observation(pixels, generator)
        per_prompt = embeds.shape[0] // size
        image_latents = self.add_observation_film(
            image_latents.repeat(per_prompt, 1, 1, 1, 1), pixels.repeat(per_prompt, 1, 1, 1), embeds
        )
        conditions = self.condition_latents(image_latents, latent_frames)
        clock.lap("observation_encoding")

        # 3. Joint denoising of video latents and actions.
        denoise = self._guided_denoiser(embeds, conditions, ids, self.rotary(latent_frames), guidance)
        latent_shape = (size, latent_frames, c.vae.latent_channels, c.latent_height, c.latent_width)
        action_shape = (size, c.chunk_rows, c.action_dims)
        scheduler = build_scheduler(diffusion, sampler)
        result = sample_loop(
            denoise,
            scheduler,
            latent_shape,
            action_shape,
            steps,
            self.device,
            self.dtype,
            generator,
            clock.synchronize,
            action_prefix,
        )
        clock.lap("denoising")

        # 4. Readout; the video is decoded only when asked (control never needs it).
        actions = result.actions.float().clamp(-1.0, 1.0)
        clock.lap("action_readout")
        video = self.decode_latents(result.video_latents) if decode_video else None
        clock.lap("video_decoding")
        timings = clock.timings
        timings["denoising_step_mean"] = sum(result.step_seconds) / len(result.step_seconds)
        timings["total"] = time.perf_counter() - clock.start
        return SampleOutput(actions=actions, video_latents=result.video_latents, video=video, timings=timings)

    def speed_up_inference(
        self: VideoVLAModel, compile_transformer: bool = False, tf32: bool = False, compile_backend: str = "inductor"
    ) -> None:
        """Opt-in speed-ups for sampling on a GPU.

        compile_transformer: `torch.compile` the transformer's forward in place (its weights and state-dict names
            stay as they are, so checkpoints are unaffected); the first chunk then takes the compile time (tens of
            seconds for the 5B model), later ones run faster. Changing the batch, frames or guidance recompiles.
        tf32: float32 matrix products and convolutions on CUDA use TF32 tensor cores (Ampere and newer). This is
            process-wide (`torch.backends`), and only matters for float32 models; bfloat16 ones are unaffected.
        """
        if tf32:
            torch.backends.cuda.matmul.fp32_precision = "tf32"
            torch.backends.cudnn.conv.fp32_precision = "tf32"
        if compile_transformer:
            self.transformer.compile(backend=compile_backend, dynamic=False)

    def _guided_denoiser(
        self: VideoVLAModel,
        embeds: torch.Tensor,
        conditions: torch.Tensor,
        ids: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        guidance: Guidance,
    ) -> DenoiseFn:
        """The velocity predictor for `sample_loop`: one transformer pass per step over B (or, with guidance, 2B:
        unconditional then conditional) inputs, guided as `guidance` says.

        embeds: (B or 2B, L, text width); conditions: (B or 2B, F, C, h, w) observation latents, one per prompt;
        ids: (B,) embodiments.
        """
        repeat = 2 if guidance.enabled else 1
        ids_in = ids.repeat(repeat)

        def denoise(video: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            video_out, action_out = self.transformer(
                torch.cat([video.repeat(repeat, 1, 1, 1, 1), conditions], dim=2),
                embeds,
                t.repeat(repeat),
                noisy_actions=actions.repeat(repeat, 1, 1),
                embodiment_ids=ids_in,
                image_rotary_emb=rotary,
            )
            assert action_out is not None  # actions were given, so the transformer returns their prediction
            if not guidance.enabled:
                return video_out, action_out
            scale = guidance.scale_at(t)
            video_uncond, video_cond = video_out.chunk(2)
            action_uncond, action_cond = action_out.chunk(2)
            return (
                apply_guidance(video_cond, video_uncond, scale, guidance.video),
                apply_guidance(action_cond, action_uncond, scale, guidance.actions),
            )

        return denoise

    def _check_embodiment_ids(
        self: VideoVLAModel, embodiment_ids: torch.Tensor | Sequence[int] | None, size: int
    ) -> torch.Tensor:
        """(size,) int64 ids on the model's device; None means embodiment 0 for all."""
        limit = self.config.num_embodiments
        ids = torch.zeros(size, dtype=torch.long) if embodiment_ids is None else torch.as_tensor(embodiment_ids)
        if ids.shape != (size,) or int(ids.min()) < 0 or int(ids.max()) >= limit:
            raise ValueError(f"embodiment_ids must be {size} ints in [0, {limit}), got {ids.tolist()[:16]}")
        return ids.to(device=self.device, dtype=torch.long)

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
