"""Per-chunk latency of the VideoVLA policy, stage by stage, and its peak memory.

    python benchmarks/model_latency.py --preset tiny                  # CPU, the tiny test model
    python benchmarks/model_latency.py --preset cogvideox-5b          # CUDA: the paper's deployment setting

Weights are random (nothing is downloaded) and built directly on the target device, then cast to --dtype:
latency does not depend on the weight values. The "cogvideox-5b" preset has no tokenizer files here, so it uses
a byte-level tokenizer that needs none; prompts are padded to the same 226 tokens, so T5 does the same work.

Each setting (guidance on, then off) runs through `VideoVLAPolicy.infer`, the path the ROS policy node takes:
one first call on a fresh prompt cache (text encoding uncached), then --repeats calls (text encoding cached).
Denoising steps are timed per transformer forward (device-synchronised); "denoising" also counts the scheduler.
"total (control)" is one chunk: `infer` returns it before anything is decoded; decoding the imagination is the
second call (`decode_imagination`) the policy node makes after publishing the chunk, listed apart.
Peak memory is torch.cuda.max_memory_allocated on CUDA and the process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from random_models import build_model  # benchmarks/ (the script's folder) is on sys.path
from torch import nn

from videovla_model.configuration import PRESETS, VideoVLAConfig
from videovla_model.contract import Observation
from videovla_model.modeling import VideoVLAModel, resolve_dtype
from videovla_model.policy import VideoVLAPolicy

STAGES = ("text_encoding", "observation_encoding", "denoising", "action_readout", "video_decoding")


@dataclass
class SettingResult:
    """Seconds per stage: `first` from the first call, `repeated` one list per stage over the repeated calls."""

    guidance_scale: float
    first: dict[str, float]
    repeated: dict[str, list[float]] = field(default_factory=dict)
    forward_seconds: list[float] = field(default_factory=list)
    """Every transformer forward of the repeated calls (one per denoising step)."""
    peak_memory_bytes: int = 0


class ForwardTimer:
    """Times each forward of a module, synchronising the device so GPU work is counted where it happens."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.seconds: list[float] = []
        self._start = 0.0
        self._sync = torch.cuda.synchronize if device.type == "cuda" else None
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, module: nn.Module, args: tuple[object, ...]) -> None:
        if self._sync is not None:
            self._sync()
        self._start = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if self._sync is not None:
            self._sync()
        self.seconds.append(time.perf_counter() - self._start)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


@contextmanager
def fresh_peak(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield


def observation_for(config: VideoVLAConfig, seed: int) -> Observation:
    """A camera-sized frame (4:3, larger than the model's input, so preparation does real work)."""
    height = config.image_height * 2
    image = np.random.default_rng(seed).integers(0, 256, (height, height * 4 // 3, 3), dtype=np.uint8)
    return Observation(image=image, instruction="pick up the red cube and put it in the bowl")


def chunk_then_imagination(policy: VideoVLAPolicy, observation: Observation) -> dict[str, float]:
    """Timings of one chunk ("total (control)") and of decoding its imagination afterwards ("video_decoding");
    "total" covers both."""
    output = policy.infer(observation, imagine=True)
    start = time.perf_counter()
    policy.decode_imagination(output)
    timings = dict(output.timings)
    timings["total (control)"] = timings["total"]
    timings["video_decoding"] = time.perf_counter() - start
    timings["total"] += timings["video_decoding"]
    return timings


def run_setting(
    model: VideoVLAModel,
    timer: ForwardTimer,
    guidance_scale: float,
    steps: int,
    repeats: int,
    device: torch.device,
) -> SettingResult:
    policy = VideoVLAPolicy(model, num_inference_steps=steps, guidance_scale=guidance_scale, seed=0)
    observation = observation_for(model.config, 0)
    model.prompt_cache.clear()
    with fresh_peak(device):
        first = chunk_then_imagination(policy, observation)
        timer.seconds.clear()
        repeated: dict[str, list[float]] = {}
        for _ in range(repeats):
            timings = chunk_then_imagination(policy, observation)
            for name, value in timings.items():
                repeated.setdefault(name, []).append(value)
        peak = peak_memory_bytes(device)
    return SettingResult(guidance_scale, first, repeated, list(timer.seconds), peak)


def describe(config: VideoVLAConfig, device: torch.device, dtype: torch.dtype, steps: int, repeats: int) -> str:
    return (
        f"VideoVLA latency: preset {config.name}, {device} {str(dtype).removeprefix('torch.')}, "
        f"{config.image_height}x{config.image_width} px, {config.sample_num_frames} video frames "
        f"({config.sample_latent_frames} latent), chunk {config.chunk_rows}x{config.action_dims}, {steps} steps, "
        f"{repeats} repeated calls, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )


def format_result(result: SettingResult) -> str:
    def ms(values: list[float]) -> str:
        return f"{1e3 * statistics.mean(values):10.2f} {1e3 * min(values):10.2f} {1e3 * max(values):10.2f}"

    guidance = "off" if result.guidance_scale <= 1.0 else f"on (scale {result.guidance_scale:g}, batched 2x)"
    lines = [f"guidance {guidance}", f"  {'stage':36s} {'mean ms':>10s} {'min ms':>10s} {'max ms':>10s}"]
    lines.append(f"  {'text encoding (first call, uncached)':36s} {1e3 * result.first['text_encoding']:10.2f}")
    lines.append(f"  {'text encoding (cached)':36s} {ms(result.repeated['text_encoding'])}")
    lines.append(f"  {'observation encoding':36s} {ms(result.repeated['observation_encoding'])}")
    lines.append(f"  {'denoising step (transformer forward)':36s} {ms(result.forward_seconds)}")
    lines.append(f"  {'denoising (all steps + scheduler)':36s} {ms(result.repeated['denoising'])}")
    lines.append(f"  {'action read-out':36s} {ms(result.repeated['action_readout'])}")
    lines.append(f"  {'total (control, no video decoding)':36s} {ms(result.repeated['total (control)'])}")
    lines.append(f"  {'video decoding':36s} {ms(result.repeated['video_decoding'])}")
    lines.append(f"  {'first call total (with decoding)':36s} {1e3 * result.first['total']:10.2f}")
    lines.append(f"  peak memory: {result.peak_memory_bytes / 2**20:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda for cogvideox-5b, else cpu)")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bfloat16 on CUDA, else float32)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    parser.add_argument("--num-frames", type=int, default=None, help="imagined video frames, 4k+1 (default: preset)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting after the first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw timings to this file")
    args = parser.parse_args(argv)

    config = VideoVLAConfig.preset(args.preset)
    if args.num_frames is not None:
        config = replace(config, sample_num_frames=args.num_frames)
    device = torch.device(args.device or ("cuda" if args.preset == "cogvideox-5b" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device} needs CUDA, which this machine does not have")
    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    steps = args.steps or config.diffusion.num_inference_steps
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    started = time.perf_counter()
    model = build_model(config, device, dtype)
    parameters = sum(p.numel() for p in model.transformer.parameters())
    print(describe(config, device, dtype, steps, args.repeats))
    print(f"built in {time.perf_counter() - started:.1f} s; transformer {parameters / 1e6:.1f} M parameters")
    timer = ForwardTimer(model.transformer, device)
    results = []
    for scale in (config.diffusion.guidance_scale, 1.0):
        result = run_setting(model, timer, scale, steps, args.repeats, device)
        results.append(result)
        print(format_result(result))
        sys.stdout.flush()
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "setting": describe(config, device, dtype, steps, args.repeats),
                    "results": [vars(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
