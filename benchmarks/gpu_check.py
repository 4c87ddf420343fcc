"""The 5B model on one GPU with random weights: deploy latency per chunk and one LoRA and one full fine-tuning step.

    bash benchmarks/gpu_check.sh                                   # the GPU check (82 s on one H200)
    bash benchmarks/gpu_check.sh --preset tiny --device cpu        # the same flow in seconds (what the test runs)

Nothing is downloaded: the model is built with random weights directly on the device (bf16 for deployment), since
latency and memory do not depend on the weight values. Prints ONE table (progress goes to stderr):

    deploy rows     seconds per chunk (`VideoVLAModel.sample`, no video decoding: control never waits for it), mean
                    of --repeats calls after one warm-up call, at 4 and 13 latent frames (13 and 49 video frames),
                    10 steps, guidance on (batched conditional + unconditional pass) and off, without and with
                    torch.compile (each DiT block compiled: one compilation serves all 42 blocks, so four shapes
                    compile within the time budget; `speed_up_inference(compile_transformer=True)` compiles the
                    whole transformer, which takes longer per shape), plus a fast mode
                    (5 steps, guidance on) and decoding one imagination; peak = torch.cuda.max_memory_allocated
    train rows      one optimizer step at batch 1 (the second of two; the first warms up), bf16 autocast, gradient
                    checkpointing, cached latents, T5 on the host: LoRA rank 64 on a bf16 backbone, and a full
                    fine-tune with float32 master weights (8-bit AdamW when bitsandbytes is installed, else fused
                    AdamW); beside each, `videovla_model.memory`'s estimate for the same settings

On CPU (`--device cpu`) the weights stay float32, compile rows are left out and peak memory is not measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from random_models import build_model  # benchmarks/ (the script's folder) is on sys.path

from videovla_model.batch import TrainingBatch
from videovla_model.configuration import PRESETS, VideoVLAConfig
from videovla_model.lora import LoraSettings, add_lora
from videovla_model.memory import GB, TrainingMemoryRequest, estimate_training_memory
from videovla_model.modeling import VideoVLAModel
from videovla_model.optimization import build_optimizer
from videovla_model.training_setup import install_instruction_table, store_frozen_weights_for
from videovla_model.transformer import VideoVLATransformer

INSTRUCTION = "pick up the red cube and put it in the bowl"
LORA_RANK = 64


@dataclass(frozen=True)
class Row:
    """One line of the table: seconds and peak GB (None where not measured), the estimate GB for train rows."""

    kind: str
    setting: str
    seconds: float | None
    peak_gb: float | None = None
    estimate_gb: float | None = None
    note: str = ""


class Check:
    """The device, timing and peak-memory helpers shared by every row, and the time budget."""

    def __init__(self, device: torch.device, budget_s: float) -> None:
        self.device = device
        self.deadline = time.monotonic() + budget_s

    @property
    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GB if self.device.type == "cuda" else None

    def timed(self, call: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        call()
        self.sync()
        return time.perf_counter() - start


def progress(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


# Deploying ---------------------------------------------------------------------------------------------------


def deploy_row(
    check: Check, model: VideoVLAModel, latent_frames: int, steps: int, guidance: float, compiled: bool, repeats: int
) -> Row:
    config = model.config
    frames = 4 * (latent_frames - 1) + 1
    observation = torch.rand(1, 3, config.image_height, config.image_width, device=check.device) * 2 - 1
    generator = torch.Generator(device=check.device).manual_seed(0)

    def chunk() -> object:
        return model.sample(
            observation,
            [INSTRUCTION],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            num_frames=frames,
        )

    guidance_text = f"guidance {guidance:g}" if guidance > 1 else "no guidance"
    setting = f"{latent_frames} latent frames, {steps} steps, {guidance_text}" + (", compiled" if compiled else "")
    warm_up = check.timed(chunk)  # compiles when compiled; fills the prompt cache
    check.reset_peak()
    seconds = [check.timed(chunk) for _ in range(repeats)]
    note = f"warm-up {warm_up:.1f} s" if compiled else ""
    return Row("deploy", setting, sum(seconds) / len(seconds), check.peak_gb(), note=note)


def decode_row(check: Check, model: VideoVLAModel, latent_frames: int) -> Row:
    config = model.config
    shape = (1, latent_frames, config.vae.latent_channels, config.latent_height, config.latent_width)
    latents = torch.randn(shape, device=check.device, dtype=model.dtype)
    check.timed(lambda: model.decode_latents(latents))
    check.reset_peak()
    seconds = check.timed(lambda: model.decode_latents(latents))
    note = "after the chunk is published"
    return Row("deploy", f"decode one imagination ({latent_frames} latent frames)", seconds, check.peak_gb(), note=note)


def deploy_rows(check: Check, model: VideoVLAModel, repeats: int, compile_blocks: bool) -> list[Row]:
    guidance = model.config.diffusion.guidance_scale
    cases = [(4, 10, guidance), (4, 10, 1.0), (13, 10, guidance), (13, 10, 1.0)]
    rows: list[Row] = []
    with torch.no_grad():
        for compiled in (False, True) if compile_blocks else (False,):
            if compiled:
                for block in model.transformer.backbone.transformer_blocks:
                    block.compile()
            for latent_frames, steps, scale in cases + ([(4, 5, guidance)] if not compiled else []):
                if check.over_budget:
                    rows.append(Row("deploy", f"{latent_frames} latent frames ...", None, note="skipped: budget"))
                    continue
                rows.append(deploy_row(check, model, latent_frames, steps, scale, compiled, repeats))
                progress(f"{rows[-1].setting}: {rows[-1].seconds:.3f} s")
        for block in model.transformer.backbone.transformer_blocks:
            block._compiled_call_impl = None  # back to eager for training
        rows.append(decode_row(check, model, 4))
    return rows


# Training ----------------------------------------------------------------------------------------------------


def training_batch(config: VideoVLAConfig, device: torch.device) -> TrainingBatch:
    """One sample with a cached VAE posterior of a full training clip (what --latent-cache feeds)."""
    latent = (1, config.vae.latent_channels, config.latent_frames(config.train_num_frames))
    latent_shape = (*latent, config.latent_height, config.latent_width)
    return TrainingBatch(
        observation=torch.rand(1, 3, config.image_height, config.image_width, device=device) * 2 - 1,
        video=None,
        instructions=[INSTRUCTION],
        actions=torch.rand(1, config.chunk_rows, config.action_dims, device=device) * 2 - 1,
        action_mask=torch.ones(1, config.chunk_rows, dtype=torch.bool, device=device),
        embodiment_ids=torch.zeros(1, dtype=torch.long, device=device),
        latent_mean=torch.randn(latent_shape, device=device),
        latent_std=torch.full(latent_shape, 0.1, device=device),
    )


def train_row(check: Check, model: VideoVLAModel, optimizer_name: str, lora_rank: int | None) -> Row:
    device = check.device
    model.transformer.enable_gradient_checkpointing()
    model.train()
    optimizer = build_optimizer(
        optimizer_name,
        model.trainable_parameters(),
        lr=1e-5,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-4,
        device=device,
    )
    batch = training_batch(model.config, device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model.compute_loss(batch, generator=generator).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    check.reset_peak()
    warm_up = check.timed(step)
    seconds = check.timed(step)
    estimate = estimate_training_memory(
        TrainingMemoryRequest(
            model.config,
            batch_size=1,
            mixed_precision="bf16",
            optimizer=optimizer_name,
            lora_rank=lora_rank,
            gradient_checkpointing=True,
            latent_cache=True,
        )
    )
    kind = f"LoRA rank {lora_rank} step" if lora_rank is not None else "full fine-tune step"
    setting = f"batch 1, {model.config.train_num_frames} frames, bf16 autocast, checkpointing, {optimizer_name}"
    note = f"first step {warm_up:.1f} s"
    return Row(kind, setting, seconds, check.peak_gb(), estimate.device_bytes / GB, note)


def training_rows(check: Check, model: VideoVLAModel) -> list[Row]:
    device = check.device
    with tempfile.TemporaryDirectory() as folder:
        install_instruction_table(model, [INSTRUCTION], Path(folder), device, build=True)
    model.text_encoder.to("cpu")  # T5 is never on the device during training
    config = model.config
    rows: list[Row] = []
    # LoRA: float32 norms and trained tensors, bf16 frozen matrices (as videovla-train --mixed-precision bf16).
    model.transformer.float()
    add_lora(model.transformer, LoraSettings(rank=LORA_RANK))
    store_frozen_weights_for(model.transformer, "bf16")
    rows.append(guarded(check, lambda: train_row(check, model, fused_adamw(device), LORA_RANK), "LoRA step"))
    progress(f"LoRA step: {rows[-1].seconds or 0:.3f} s {rows[-1].note}")
    # Full fine-tune: a fresh float32 transformer (master weights), built on the device.
    model.transformer = None  # type: ignore[assignment]  # frees the LoRA model before the 22 GB one exists
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with torch.device(device):
        model.transformer = VideoVLATransformer(config)
    optimizer = "adamw-8bit" if importlib.util.find_spec("bitsandbytes") and device.type == "cuda" else None
    rows.append(guarded(check, lambda: train_row(check, model, optimizer or fused_adamw(device), None), "full step"))
    progress(f"full step: {rows[-1].seconds or 0:.3f} s {rows[-1].note}")
    return rows


def fused_adamw(device: torch.device) -> str:
    return "adamw-fused" if device.type == "cuda" else "adamw"


def guarded(check: Check, make_row: Callable[[], Row], what: str) -> Row:
    """The row, or a row saying the step ran out of device memory / time (the check goes on)."""
    if check.over_budget:
        return Row(what, "", None, note="skipped: budget")
    try:
        return make_row()
    except torch.cuda.OutOfMemoryError:
        peak = check.peak_gb()
        torch.cuda.empty_cache()
        return Row(what, "", None, peak, note="out of device memory")


# Output ------------------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = ("what", "setting", "s", "peak GB", "estimate GB", "note")
    lines = [header] + [
        (r.kind, r.setting, number(r.seconds, 3), number(r.peak_gb, 1), number(r.estimate_gb, 1), r.note) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cogvideox-5b")
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the tiny flow for tests)")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks per deploy row after one warm-up")
    parser.add_argument("--budget-s", type=float, default=420.0, help="rows not started by then are skipped")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; on CPU run --preset tiny --device cpu")
    check = Check(device, args.budget_s)
    config = VideoVLAConfig.preset(args.preset)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    model = build_model(config, device, dtype)
    # TF32 only changes float32 products: the full fine-tuning step's master weights (deployment is bf16).
    model.speed_up_inference(tf32=device.type == "cuda")
    progress(f"built {config.name} on {device} in {time.perf_counter() - started:.1f} s")
    rows = deploy_rows(check, model, args.repeats, compile_blocks=device.type == "cuda" and not args.no_compile)
    rows += training_rows(check, model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: preset {config.name}, {name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
