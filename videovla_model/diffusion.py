"""Joint video + action diffusion: the noise schedule, training targets and the sampling loop.

One v-prediction, zero-terminal-SNR schedule (diffusers' CogVideoX schedulers with the public CogVideoX
scheduler config) drives both modalities, and both share ONE timestep per sample: during training the same t
noises the video latents and the action chunk; during sampling both are stepped together. To guarantee the
latter, the scheduler steps a single packed tensor (B, N_video + N_action) holding both, in float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from videovla_model.component_configs import DiffusionConfig, SamplerName
from videovla_model.rtc import ActionPrefix, guide_action_velocity, pull_final

Scheduler = CogVideoXDDIMScheduler | CogVideoXDPMScheduler

# (video latents (B, F, C, h, w), actions (B, R, D), timestep (B,)) -> predicted velocities of the same shapes.
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_scheduler(config: DiffusionConfig, sampler: SamplerName | None = None) -> Scheduler:
    """A fresh scheduler ("ddim" or the multistep "dpm"); fresh because schedulers hold per-run state."""
    name = sampler or config.sampler
    classes: dict[str, type[Scheduler]] = {"ddim": CogVideoXDDIMScheduler, "dpm": CogVideoXDPMScheduler}
    if name not in classes:
        raise ValueError(f"sampler must be one of {sorted(classes)}, got {name!r}")
    return classes[name](
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=config.snr_shift_scale,
    )


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Integers in [0, high) drawn on the generator's device (a CPU generator may drive a GPU model)."""
    source = generator.device if generator is not None else device
    return torch.randint(0, high, shape, generator=generator, device=source, dtype=torch.long).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 drawn on the generator's device, returned on `device`."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


@dataclass
class NoisedPair:
    """Training inputs and v-prediction targets for one shared timestep per sample.

    noisy_video / target_video: (B, F, C, h, w); noisy_actions / target_actions: (B, R, D); timesteps: (B,).
    """

    noisy_video: torch.Tensor
    target_video: torch.Tensor
    noisy_actions: torch.Tensor
    target_actions: torch.Tensor
    timesteps: torch.Tensor


def training_timesteps(
    num_train_timesteps: int,
    batch: int,
    beta: float,
    generator: torch.Generator | None,
    device: torch.device,
    pure_noise_fraction: float = 0.0,
) -> torch.Tensor:
    """(batch,) long timesteps t = floor(T * u), u ~ Beta(beta, 1) (beta 1: uniform over 0..T-1); with chance
    `pure_noise_fraction` a sample takes the last timestep T - 1 instead (zero SNR: pure noise)."""
    if beta == 1.0:
        timesteps = randint(num_train_timesteps, (batch,), generator, device)
    else:
        # Beta(beta, 1) has CDF u ** beta, so a uniform draw to the power 1 / beta is a Beta draw.
        fractions = rand((batch,), generator, device).pow(1.0 / beta)
        timesteps = (fractions * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)
    if pure_noise_fraction > 0.0:  # no extra draw otherwise, so recipes without it keep their noise
        pure = rand((batch,), generator, device) < pure_noise_fraction
        timesteps = torch.where(pure, torch.full_like(timesteps, num_train_timesteps - 1), timesteps)
    return timesteps


def add_noise_pair(
    scheduler: Scheduler,
    video_latents: torch.Tensor,
    actions: torch.Tensor,
    generator: torch.Generator | None = None,
    timestep_beta: float = 1.0,
    pure_noise_fraction: float = 0.0,
) -> NoisedPair:
    """Draws one t per sample (`training_timesteps`) and noises video (B, F, C, h, w) and actions (B, R, D) with
    that same t."""
    batch = video_latents.shape[0]
    device = video_latents.device
    timesteps = training_timesteps(
        scheduler.config.num_train_timesteps, batch, timestep_beta, generator, device, pure_noise_fraction
    )
    video_noise = randn_tensor(video_latents.shape, generator=generator, device=device, dtype=video_latents.dtype)
    action_noise = randn_tensor(actions.shape, generator=generator, device=device, dtype=actions.dtype)
    return NoisedPair(
        noisy_video=scheduler.add_noise(video_latents, video_noise, timesteps),
        target_video=scheduler.get_velocity(video_latents, video_noise, timesteps),
        noisy_actions=scheduler.add_noise(actions, action_noise, timesteps),
        target_actions=scheduler.get_velocity(actions, action_noise, timesteps),
        timesteps=timesteps,
    )


def pack(video: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(B, F, C, h, w) + (B, R, D) -> (B, F*C*h*w + R*D)."""
    return torch.cat([video.flatten(1), actions.flatten(1).to(video.dtype)], dim=1)


def unpack(
    packed: torch.Tensor, video_shape: torch.Size | tuple[int, ...], action_shape: torch.Size | tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack`."""
    video_numel = int(torch.Size(video_shape[1:]).numel())
    video = packed[:, :video_numel].reshape(video_shape)
    actions = packed[:, video_numel:].reshape(action_shape)
    return video, actions


@dataclass
class SamplingResult:
    """video_latents: (B, F, C, h, w); actions: (B, R, D) normalised; both float32. step_seconds: one per step."""

    video_latents: torch.Tensor
    actions: torch.Tensor
    step_seconds: list[float]


def sample_loop(
    denoise: DenoiseFn,
    scheduler: Scheduler,
    video_shape: tuple[int, ...],
    action_shape: tuple[int, ...],
    num_inference_steps: int,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
    synchronize: Callable[[], None] | None = None,
    action_prefix: ActionPrefix | None = None,
) -> SamplingResult:
    """Denoises video latents and actions jointly from pure noise with `num_inference_steps` scheduler steps.

    The sampler state stays float32 between steps (a bfloat16 state would round the small updates of late steps
    away); `denoise` sees it cast to `dtype` and returns the (already guided) velocity predictions. `synchronize`
    makes per-step timings honest on asynchronous devices. `action_prefix` inpaints the first action rows
    (real-time chunking, videovla_model.rtc). The result is float32.
    """
    scheduler.set_timesteps(num_inference_steps, device=device)
    video = randn_tensor(video_shape, generator=generator, device=device, dtype=torch.float32)
    actions = randn_tensor(action_shape, generator=generator, device=device, dtype=torch.float32)
    sample = pack(video, actions) * scheduler.init_noise_sigma
    is_dpm = isinstance(scheduler, CogVideoXDPMScheduler)
    previous_x0: torch.Tensor | None = None
    step_seconds: list[float] = []
    timesteps = scheduler.timesteps
    for index, t in enumerate(timesteps):
        start = time.perf_counter()
        video, actions = unpack(scheduler.scale_model_input(sample, t).to(dtype), video_shape, action_shape)
        timestep = t.expand(video_shape[0]).to(device)
        video_velocity, action_velocity = denoise(video, actions, timestep)
        if action_prefix is not None:
            alpha_bar = float(scheduler.alphas_cumprod[int(t)])
            state_actions = unpack(sample, video_shape, action_shape)[1]  # the float32 state, not the cast input
            action_velocity = guide_action_velocity(state_actions, action_velocity, alpha_bar, action_prefix)
        velocity = pack(video_velocity.float(), action_velocity.float())
        if is_dpm:
            previous_t = timesteps[index - 1] if index > 0 else None
            sample, previous_x0 = scheduler.step(
                velocity, previous_x0, t, previous_t, sample, generator=generator, return_dict=False
            )
        else:
            sample = scheduler.step(velocity, t, sample, generator=generator, return_dict=False)[0]
        if synchronize is not None:
            synchronize()
        step_seconds.append(time.perf_counter() - start)
    video, actions = unpack(sample, video_shape, action_shape)
    if action_prefix is not None:
        actions = pull_final(actions, action_prefix)
    return SamplingResult(video_latents=video, actions=actions, step_seconds=step_seconds)


def dynamic_guidance_scale(scale: float, timestep: int, num_inference_steps: int, exponent: int) -> float:
    """The guidance scale of the public CogVideoX / VideoVLA samplers' dynamic classifier-free guidance at one step:

        1 + scale * (1 - cos(pi * ((num_inference_steps - timestep) / num_inference_steps) ** exponent)) / 2

    timestep is the scheduler's training timestep (0 .. num_train_timesteps - 1), as both diffusers' CogVideoX
    pipelines (`use_dynamic_cfg`) and the SAT sampler (`step_index = num_steps - timestep`) pass it. For timesteps
    above num_inference_steps the base is negative and large, so the scale jumps between 1 and 1 + scale from one
    step to the next rather than rising smoothly; it is kept exactly so, because the public weights were sampled
    with it. The result always lies in [1, 1 + scale].
    """
    base = (num_inference_steps - timestep) / num_inference_steps
    return 1.0 + scale * (1.0 - math.cos(math.pi * base**exponent)) / 2.0


def apply_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float, enabled: bool) -> torch.Tensor:
    """Classifier-free guidance uncond + scale * (cond - uncond) when enabled; else the conditional prediction."""
    if not enabled:
        return conditional
    return unconditional + scale * (conditional - unconditional)
