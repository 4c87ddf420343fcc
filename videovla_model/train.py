"""`videovla-train`: fine-tune VideoVLA on an episode dataset, on CPU, one GPU or many (`accelerate launch`).

    videovla-train --dataset data/ --output runs/sim --preset small --steps 2000 --batch-size 8
    videovla-train --dataset data/ --output runs/rm65-lora --init-cogvideox CogVideoX-5b-I2V --preset cogvideox-5b \\
        --mixed-precision bf16 --lora-rank 64 --latent-cache cache/ --batch-size 1
    accelerate launch --num_processes 8 -m videovla_model.train --dataset data/ --output runs/rm65 \\
        --init-cogvideox CogVideoX-5b-I2V --preset cogvideox-5b --mixed-precision bf16 --optimizer adamw-8bit

Output folder::

    training_config.json       this run's TrainingConfig (a resumed run must agree with it)
    metrics.csv                step, loss, video_loss, action_loss (means over each log interval), lr (of the
                               interval's last step), samples_per_s
    checkpoint-<step>/         the model (VideoVLAModel.save_pretrained: safetensors + JSON, normalisation included)
                               + accelerate state: optimizer.bin, scheduler.bin, random_states_<rank>.pkl
                               + training_state.json (step, processes; written last: marks the checkpoint complete)
    final/                     the model after the last step (what `load_policy` opens)
    instruction_cache/         T5 embeddings of the dataset's instructions (--instruction-cache moves it)
    (LoRA runs: checkpoint-<step>/ and final/ hold an adapter folder instead of the model, see videovla_model.lora;
    load_policy opens it merged, videovla-merge-lora writes a plain checkpoint)

Checkpoints and pickle: model weights are safetensors. accelerate 1.x writes optimizer, scheduler and RNG
states with `torch.save` and reads them back through `accelerate.utils.load`, which passes `weights_only=True`
(plus an allow-list for the numpy RNG state), so resuming never unpickles arbitrary objects. The RNG files are
not needed for exactness: every random draw of step k comes from generators seeded with (seed, k, rank).

Exact resume: a step's batch (`data.StepBatchSampler`) and its noise (`step_generator`) are functions of
(seed, step, rank) only, and the optimizer and schedule state are restored, so on CPU a run stopped at step k
and resumed to step n ends with the same weights, bit for bit, as a run straight to n.

Distributed: the transformer is wrapped by `accelerator.prepare` (DDP, or FSDP under `accelerate launch
--use_fsdp`); each process reads its own slice of every global batch (batch_size per process), so the dataloader
is not prepared. The scheduler steps once per optimizer step regardless of the process count. Every DDP checkpoint
first checks that all processes hold identical weights; under FSDP the full weights are gathered for each
checkpoint. Several CPU processes (gloo) start with `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m
videovla_model.train` (accelerate offers FSDP on GPUs only).

Memory (`videovla_model.memory`): the estimate is logged as a table before any weights load, and a run over the
device's free memory (or --max-memory-gb) is refused. T5 never sits on the device: every instruction is encoded
once into the instruction cache. Only the transformer goes to the device through accelerate; the frozen VAE is
placed there by the run. CogVideoX-5B on one 80 GB GPU: --mixed-precision bf16 with gradient checkpointing (on by
default at this size) and --optimizer adamw-8bit for a full fine-tune, or --lora-rank R.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from diffusers.optimization import get_scheduler
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from videovla_model.batch import TrainingBatch
from videovla_model.condition_normalization import ConditionNormalizer
from videovla_model.configuration import VideoVLAConfig
from videovla_model.data import (
    EpisodeWindowDataset,
    StepBatchSampler,
    collate_samples,
    compute_action_statistics,
    dataset_action_rate,
    frame_stride_for,
)
from videovla_model.episodes import EpisodeDataset
from videovla_model.lora import AdapterConfig, load_adapter_model
from videovla_model.modeling import LossOutput, VideoVLAModel
from videovla_model.optimization import build_optimizer, check_optimizer_runs_on
from videovla_model.train_checkpoints import (
    CHECKPOINT_PREFIX,
    FINAL_DIR,
    METRICS_NAME,
    TRAINING_STATE_NAME,
    CheckpointWriting,
    MetricsWriter,
    checkpoint_step,
    complete_checkpoints,
    skip_model_loading,
)
from videovla_model.train_checkpoints import read_metrics as read_metrics  # re-exported: tests read metrics.csv
from videovla_model.train_cli import LATEST, parse_args
from videovla_model.train_inputs import PrecomputedInputs
from videovla_model.training_config import TRAINING_CONFIG_NAME, TrainingConfig
from videovla_model.training_setup import (
    apply_lora,
    check_memory,
    planned_model_config,
    resumed_is_adapter,
    uses_gradient_checkpointing,
)

logger = logging.getLogger("videovla.train")

SUPPORTED_DISTRIBUTED = frozenset(
    {
        DistributedType.NO,
        DistributedType.MULTI_CPU,
        DistributedType.MULTI_GPU,
        DistributedType.MULTI_NPU,
        DistributedType.FSDP,
    }
)
_SCHEDULE_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def main(argv: Sequence[str] | None = None) -> int:
    """`videovla-train`: exit code 0 after the last step; 2 (SystemExit) for bad settings or a run that cannot start."""
    config, resume = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run = TrainingRun(config, resume=resume)
    except (ValueError, FileNotFoundError, MemoryError) as error:
        # DatasetError, missing folders, a refused resume, a run that cannot fit: the message names the fix.
        print(f"videovla-train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    run.train()
    return 0


# Pieces with their own tests -------------------------------------------------------------------------------


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the random draws of one (step, process); independent streams for nearby inputs."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator behind every noise draw of training step `step` on process `rank`."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, rank))


class _LossModule(nn.Module):
    """Routes `compute_loss` through `forward`, so DDP's gradient hooks and accelerate's autocast apply.

    Only the transformer is a registered submodule: accelerate places, wraps and shards it alone, while the run
    places the frozen VAE itself and T5 stays on the host (its embeddings come from the instruction cache).
    """

    def __init__(self, model: VideoVLAModel) -> None:
        super().__init__()
        self.transformer = model.transformer
        # Set past nn.Module's registration, so `.to()`, DDP and FSDP never see the VAE or T5.
        object.__setattr__(self, "model", model)

    def forward(self, batch: TrainingBatch, generator: torch.Generator) -> LossOutput:
        return self.model.compute_loss(batch, generator=generator)


# The run ---------------------------------------------------------------------------------------------------


class TrainingRun(PrecomputedInputs, CheckpointWriting):
    """One fine-tuning run; construction checks everything (data, model, resume point) before any step runs."""

    def __init__(self, config: TrainingConfig, resume: str | None = None) -> None:
        self.config = config
        self.output = Path(config.output)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            step_scheduler_with_optimizer=False,
            # Without the video loss the video output head gets no gradient, which DDP must be told about.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=not config.video_loss)],
        )
        if self.accelerator.distributed_type not in SUPPORTED_DISTRIBUTED:
            raise ValueError(
                f"videovla-train runs single-process or data-parallel (DDP), not {self.accelerator.distributed_type}: "
                "its checkpoints are written with save_pretrained from full, unsharded weights"
            )
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.accelerator.num_processes:
            # Otherwise every process would train alone and all of them would write the same output folder.
            raise ValueError(
                f"launched as {launched} processes but accelerate joined {self.accelerator.num_processes}; on CPU "
                "set ACCELERATE_USE_CPU=1 (torchrun) so the processes form one gloo group"
            )
        if config.mixed_precision == "fp16" and self.accelerator.device.type != "cuda":
            raise ValueError(f"mixed_precision='fp16' needs a CUDA device, this run is on {self.accelerator.device}")
        self.resume_from, self.start_step = self._resume_point(resume)
        if self.start_step > config.steps:
            raise ValueError(f"steps={config.steps} is below the resumed checkpoint's step {self.start_step}")
        # Refusals that need no weights come before loading any.
        check_optimizer_runs_on(config.optimizer, self.accelerator.device)
        if config.lora_rank is not None and self.accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError("--lora-rank trains data-parallel (its trained tensors are small): launch it without FSDP")
        planned = planned_model_config(config, self.resume_from)
        self.gradient_checkpointing = uses_gradient_checkpointing(config, planned)
        shards = self.accelerator.num_processes if self.accelerator.distributed_type == DistributedType.FSDP else 1
        check_memory(config, planned, self.accelerator.device, shards, log=self.accelerator.is_main_process)
        self.resumed_adapter: AdapterConfig | None = None

        self.episodes = EpisodeDataset(config.dataset)
        action_rate = dataset_action_rate(self.episodes)
        self.model = self._build_model()
        model_config = self.model.config
        frame_stride = config.frame_stride or frame_stride_for(model_config, action_rate)
        # The checkpoint must describe the data it learnt from: one action row per recorded step, video frames
        # `frame_stride` steps apart. Consumers read these from config.json, never from this run's arguments.
        self.model.config = dataclasses.replace(
            model_config,
            time_step=1.0 / action_rate,
            video_frame_period=frame_stride / action_rate,
            loss=dataclasses.replace(
                model_config.loss,
                use_video_loss=config.video_loss,
                timestep_beta=(
                    model_config.loss.timestep_beta if config.timestep_beta is None else config.timestep_beta
                ),
                pure_noise_fraction=(
                    model_config.loss.pure_noise_fraction
                    if config.pure_noise_fraction is None
                    else config.pure_noise_fraction
                ),
            ),
        )
        fitted = self.model.normalizer != VideoVLAModel.default_normalizer(self.model.config)
        if self.resume_from is not None:
            logger.info("action statistics: from the resumed checkpoint %s", self.resume_from)
        elif config.init_from is not None and fitted:
            logger.info("action statistics: from --init-from %s (the actions it was trained on)", config.init_from)
        else:
            self.model.set_normalizer(
                compute_action_statistics(self.episodes, model_config.action_dim_names, model_config.gripper_threshold)
            )
            logger.info("action statistics: 1st/99th percentiles of the %d episodes", len(self.episodes))
        self.dataset = EpisodeWindowDataset(self.episodes, self.model.config, self.model.normalizer, frame_stride)
        self.frame_stride = frame_stride
        if config.latent_cache is not None:
            self.dataset.use_latent_cache(self._latent_cache(Path(config.latent_cache)))
        self._install_instruction_table()
        inherited_from = "the resumed checkpoint" if self.resume_from is not None else f"--init-from {config.init_from}"
        if self.model.config.normalize_condition:
            if not self.model.condition_normalizer.is_identity:
                logger.info("observation-latent statistics: from %s", inherited_from)
            else:
                observations = self._observation_latents()
                self.model.set_condition_normalizer(ConditionNormalizer.fit(observations))
                logger.info("observation-latent statistics: fitted to %d observations", len(observations))
        if self.model.config.normalize_text:
            if not self.model.text_normalizer.is_identity:
                logger.info("instruction-embedding statistics: from %s", inherited_from)
            else:
                instructions = [episode.metadata.instruction for episode in self.episodes]
                self.model.set_text_normalizer(ConditionNormalizer.fit(self._instruction_embeddings(instructions)))
                logger.info(
                    "instruction-embedding statistics: fitted to the instructions of %d episodes (%d distinct)",
                    len(instructions),
                    len(set(instructions)),
                )
        self.lora_base = apply_lora(self.model, config, self.resumed_adapter) if config.lora_rank is not None else None

    # Set-up ----------------------------------------------------------------------------------------------------

    def _resume_point(self, resume: str | None) -> tuple[Path | None, int]:
        """(checkpoint folder, its step) to continue from, or (None, 0) for a fresh run."""
        existing = complete_checkpoints(self.output)
        if resume is None:
            if existing:
                raise ValueError(
                    f"{self.output} already holds checkpoints (newest: {existing[-1][1].name}); pass --resume to "
                    "continue that run or choose a new --output"
                )
            return None, 0
        if resume == LATEST:
            if not existing:
                logger.info("--resume: no complete checkpoint in %s, starting a new run", self.output)
                return None, 0
            step, path = existing[-1]
        else:
            path = Path(resume)
            found = checkpoint_step(path)
            if found is None:
                raise FileNotFoundError(
                    f"--resume {path}: not a complete checkpoint folder ({CHECKPOINT_PREFIX}<step>/ with "
                    f"{TRAINING_STATE_NAME})"
                )
            step = found
        # The run folder's settings, or for a checkpoint taken from elsewhere those of the run that wrote it.
        settings_folder = self.output if (self.output / TRAINING_CONFIG_NAME).is_file() else path.parent
        self.config.check_resumable_from(TrainingConfig.load(settings_folder))
        written_by = json.loads((path / TRAINING_STATE_NAME).read_text()).get("num_processes")
        if written_by != self.accelerator.num_processes:
            logger.warning(
                "resuming a checkpoint written by %s process(es) with %d: the batches from here on differ from an "
                "uninterrupted run (each step's global batch is split by process)",
                written_by,
                self.accelerator.num_processes,
            )
        return path, step

    def _build_model(self) -> VideoVLAModel:
        config = self.config
        # Fresh weights (action layers, or everything for a preset) must not depend on the process count.
        set_seed(config.seed)
        if self.resume_from is not None:
            if resumed_is_adapter(self.resume_from):
                model, self.resumed_adapter = load_adapter_model(self.resume_from)
                return model
            return VideoVLAModel.from_pretrained(self.resume_from)
        if config.init_from is not None:
            model = VideoVLAModel.from_pretrained(config.init_from)
            if config.add_conditioning:
                logger.info("adding %s to the checkpoint (zero output: it starts as it was)", config.add_conditioning)
                model = model.with_added_conditioning(config.add_conditioning)
            return model
        model_config = (
            VideoVLAConfig.preset(config.preset)
            if config.preset is not None
            else VideoVLAConfig.load(config.model_config)
        )
        if config.init_cogvideox is not None:
            return VideoVLAModel.from_cogvideox(config.init_cogvideox, model_config)
        return VideoVLAModel(model_config)

    def _optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        return build_optimizer(
            config.optimizer,
            self.model.trainable_parameters(),
            lr=config.lr,
            betas=config.betas,
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
            device=self.accelerator.device,
        )

    # Loop ------------------------------------------------------------------------------------------------------

    def train(self) -> Path:
        """Runs the remaining steps; returns the `final/` folder."""
        config, accelerator = self.config, self.accelerator
        device, rank, processes = accelerator.device, accelerator.process_index, accelerator.num_processes
        if accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            config.save(self.output)
        if self.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.model.vae.to(device)
        # FSDP flattens and shards the parameters while preparing the model: the optimizer is built on what it leaves.
        self._loss_module = loss_module = accelerator.prepare(_LossModule(self.model))
        optimizer = self._optimizer()
        scheduler = get_scheduler(
            _SCHEDULE_NAMES[config.lr_schedule],
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.steps,
        )
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
        # Model weights go through save_pretrained (one format for checkpoints and releases) and come back through
        # from_pretrained at construction, so accelerate's own model files are skipped both ways.
        accelerator.register_save_state_pre_hook(self._save_model_hook)
        accelerator.register_load_state_pre_hook(skip_model_loading)
        if self.resume_from is not None:
            accelerator.load_state(str(self.resume_from))
            logger.info("resumed from %s at step %d", self.resume_from, self.start_step)

        sampler = StepBatchSampler(
            len(self.dataset),
            config.batch_size,
            config.steps,
            seed=config.seed,
            start_step=self.start_step,
            num_replicas=processes,
            rank=rank,
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=collate_samples,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )
        self._log_start(processes)
        metrics = MetricsWriter(self.output / METRICS_NAME, self.start_step, accelerator.is_main_process)
        progress = tqdm(
            total=config.steps,
            initial=self.start_step,
            desc="videovla-train",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        parameters = self.model.trainable_parameters()
        sums = torch.zeros(3, device=device)
        interval_steps, interval_start = 0, time.perf_counter()
        step = self.start_step
        for batch in loader:
            generator = step_generator(config.seed, step, rank, device)
            # Anything inside the model that draws from the global RNG (e.g. dropout) is reproducible too.
            torch.manual_seed(step_seed(config.seed, step, rank))
            output = loss_module(batch.to(device), generator)
            accelerator.backward(output.loss)
            if config.grad_clip > 0:
                accelerator.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            sums += torch.stack([output.loss.detach(), output.video_loss, output.action_loss]).float()
            interval_steps += 1

            if step % config.log_every == 0 or step == config.steps:
                means = accelerator.reduce(sums, reduction="mean") / interval_steps
                elapsed = time.perf_counter() - interval_start
                samples_per_s = interval_steps * config.batch_size * processes / elapsed
                loss, video_loss, action_loss = (float(v) for v in means)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {step}; lower --lr or use --grad-clip")
                metrics.write(step, loss, video_loss, action_loss, lr, samples_per_s)
                progress.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", lr=f"{lr:.2e}")
                sums.zero_()
                interval_steps, interval_start = 0, time.perf_counter()
            progress.update(1)
            if step % config.save_every == 0 or step == config.steps:
                self.save_checkpoint(step)
        progress.close()

        final = self.output / FINAL_DIR
        if accelerator.is_main_process and final.exists():
            shutil.rmtree(final)
        self._save_model(final)
        if accelerator.is_main_process:
            logger.info("saved the final model to %s", final)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return final

    def _log_start(self, processes: int) -> None:
        if not self.accelerator.is_main_process:
            return
        trainable = sum(p.numel() for p in self.model.trainable_parameters())
        logger.info(
            "%d windows from %d episodes (frame stride %d); %s trainable parameters; %d process(es) x batch %d on "
            "%s; steps %d..%d",
            len(self.dataset),
            len(self.episodes),
            self.frame_stride,
            f"{trainable:,}",
            processes,
            self.config.batch_size,
            self.accelerator.device,
            self.start_step,
            self.config.steps,
        )


if __name__ == "__main__":
    sys.exit(main())
