"""The `videovla-train` command line: argparse options generated beside `TrainingConfig`, and the config they
build. `videovla_model.train.main` parses with it."""

from __future__ import annotations

import argparse
import dataclasses

from videovla_model.configuration import ADDABLE_CONDITIONING, PRESETS
from videovla_model.memory import OPTIMIZERS
from videovla_model.training_config import TrainingConfig


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults only where there is one worth reading (not for unset options and flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}
    parser = argparse.ArgumentParser(
        prog="videovla-train",
        description="Fine-tune VideoVLA (joint video + action diffusion) on a videovla episode dataset. "
        "Runs on CPU, one GPU, or many via `accelerate launch -m videovla_model.train ...`.",
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--dataset", required=True, help="episode dataset folder (videovla_model.episodes format)")
    data.add_argument("--output", required=True, help="run folder: checkpoints, metrics.csv, final/")
    data.add_argument(
        "--frame-stride",
        type=int,
        default=None,
        help="recorded steps between training video frames (default: the model's video_frame_period x the "
        "dataset's action rate); the saved model's video_frame_period follows it",
    )
    data.add_argument(
        "--latent-cache",
        default=None,
        metavar="FOLDER",
        help="encode every training clip with the frozen VAE once, into FOLDER, and train from those posteriors "
        "(reused by later runs with the same data and VAE; rebuilt otherwise)",
    )
    data.add_argument(
        "--instruction-cache",
        default=None,
        metavar="FOLDER",
        help="where the instructions' T5 embeddings are kept (encoded once; T5 stays off the training device; "
        "default: OUTPUT/instruction_cache)",
    )
    data.add_argument("--num-workers", type=int, default=defaults["num_workers"], help="dataloader worker processes")

    model = parser.add_argument_group("model (exactly one of --preset, --config, --init-from)")
    source = model.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a VideoVLAConfig preset")
    source.add_argument("--config", dest="model_config", help="a VideoVLAConfig JSON file")
    source.add_argument("--init-from", help="a VideoVLA checkpoint folder (weights and normalisation statistics)")
    model.add_argument(
        "--init-cogvideox",
        help="a diffusers CogVideoX image-to-video folder to initialise the backbone, VAE and T5 from "
        "(with --preset or --config)",
    )
    model.add_argument(
        "--add-conditioning",
        nargs="+",
        default=[],
        choices=ADDABLE_CONDITIONING,
        metavar="LAYER",
        help=f"with --init-from: grow the checkpoint by these conditioning layers ({', '.join(ADDABLE_CONDITIONING)}), "
        "which start at zero",
    )
    model.add_argument("--no-video-loss", action="store_true", help="train on the action loss only (ablation)")
    model.add_argument(
        "--timestep-beta",
        type=float,
        help="sample training timesteps as T * Beta(value, 1): 1 is uniform, more trains more on noisy timesteps "
        "(default: the model config's loss.timestep_beta)",
    )
    model.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in backward to save memory (default: on for transformers of 1B parameters or "
        "more, e.g. the cogvideox-5b preset)",
    )
    model.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        metavar="R",
        help="train rank-R LoRA on the DiT attention (q, k, v, out) plus the action layers in full, instead of "
        "every weight; needs --init-from or --init-cogvideox; checkpoints hold only the trained tensors "
        "(merge with videovla-merge-lora)",
    )
    model.add_argument("--lora-alpha", type=float, default=None, metavar="A", help="LoRA scale alpha (default: R)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=int, default=defaults["steps"], help="optimizer steps in total")
    optim.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="samples per process and step")
    optim.add_argument("--lr", type=float, default=defaults["lr"], help="AdamW peak learning rate")
    optim.add_argument("--weight-decay", type=float, default=defaults["weight_decay"], help="AdamW weight decay")
    optim.add_argument(
        "--betas", type=float, nargs=2, default=defaults["betas"], metavar=("B1", "B2"), help="AdamW betas"
    )
    optim.add_argument("--warmup-steps", type=int, default=defaults["warmup_steps"], help="linear warm-up steps")
    optim.add_argument(
        "--lr-schedule",
        choices=("constant", "linear", "cosine"),
        default=defaults["lr_schedule"],
        help="learning rate after warm-up (linear and cosine decay to 0 at --steps)",
    )
    optim.add_argument("--grad-clip", type=float, default=defaults["grad_clip"], help="max gradient norm; 0 = off")
    optim.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=defaults["mixed_precision"],
        help="autocast precision (fp16 needs CUDA); weights and optimizer state stay float32",
    )
    optim.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=defaults["optimizer"],
        help="AdamW, fused AdamW, or 8-bit AdamW (bitsandbytes, CUDA only; 2 instead of 8 bytes of state per weight)",
    )
    optim.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="refuse to start when the memory estimate exceeds this (default on CUDA: the device's free memory)",
    )
    optim.add_argument("--seed", type=int, default=defaults["seed"], help="seed of weights, data order and noise")

    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--save-every", type=int, default=defaults["save_every"], help="steps between checkpoints")
    run.add_argument(
        "--keep-checkpoints", type=int, default=None, help="keep only the newest N checkpoints (default: all)"
    )
    run.add_argument("--log-every", type=int, default=defaults["log_every"], help="steps between metrics.csv rows")
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from a checkpoint folder, or (no value) from the newest complete one in --output "
        "(a fresh start when there is none)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        dataset=args.dataset,
        output=args.output,
        preset=args.preset,
        model_config=args.model_config,
        init_from=args.init_from,
        init_cogvideox=args.init_cogvideox,
        add_conditioning=tuple(args.add_conditioning),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        betas=tuple(args.betas),
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        grad_clip=args.grad_clip,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every,
        seed=args.seed,
        num_workers=args.num_workers,
        video_loss=not args.no_video_loss,
        timestep_beta=args.timestep_beta,
        frame_stride=args.frame_stride,
        latent_cache=args.latent_cache,
        instruction_cache=args.instruction_cache,
        optimizer=args.optimizer,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        max_memory_gb=args.max_memory_gb,
    )
