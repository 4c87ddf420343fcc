"""`EvalConfig` and `DemoConfig`: what one `videovla-eval` / `videovla-demo` run does, validated with the field
named. The command lines are generated from these dataclasses (`videovla_ros.evaluate_cli`): each field is a flag,
its docstring the help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from videovla_model.cli import choices
from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.policy_factory import POLICY_SOURCES

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "videovla-sim-small"


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run: each task's seeded episodes through the ROS nodes (`videovla-eval --help`).

    `imagination_every` defaults to 3 because a 9-frame imagination spans 0.8 s, about three sync-mode chunks
    of 3 rows: every third one covers the video.
    """

    checkpoint: str = str(DEFAULT_CHECKPOINT)
    """VideoVLA checkpoint folder (used when policy is checkpoint)"""
    tasks: tuple[str, ...] = ("pick",)
    """task families (videovla_sim.tasks, e.g. pick) or instructions"""
    policy: Annotated[str, choices(POLICY_SOURCES)] = "checkpoint"
    """checkpoint: the VideoVLA checkpoint; expert: the scripted expert reading the simulator's state"""
    episodes: int = 50
    """seeded episodes per task"""
    seed: int = 0
    """seed of the first episode (episode i uses seed + i)"""
    mode: Annotated[str, choices(EXECUTION_MODES)] = "sync"
    """bridge execution mode"""
    time_limit: float = 30.0
    """seconds per episode (simulated seconds with sim_time)"""
    videos: int = 3
    """episodes per task saved as imagined|actual GIFs"""
    output: str = "outputs/eval"
    """folder for the report and videos"""
    image_size: int = 64
    """sim camera size [px]"""
    namespace: str = "videovla_eval"
    """namespace of all nodes"""
    params_file: str = ""
    """YAML keyed by node name ('': config/realman.yaml)"""
    num_inference_steps: int = 0
    """denoising steps (0: the checkpoint's)"""
    guidance_scale: float = -1.0
    """classifier-free guidance (< 0: the checkpoint's)"""
    real_time_factor: float = 1.0
    """simulated seconds per wall second (with sim_time: at most)"""
    sim_time: bool = True
    """simulated time: the sim publishes /clock and every node follows it (use_sim_time); the sim never skips
    ahead when the machine is slow and in sync mode stands still while the policy thinks, so the policy's latency
    and the machine's load cost no simulated time (not lockstep: message transit still does) (--no-sim-time: the
    wall clock, as on a real robot)"""
    policy_latency: float = 0.0
    """wall seconds added to every inference (e.g. the expert at a large model's latency)"""
    chunk_watchdog: float = 0.0
    """bridge: hold (sync: and request again) after this long without a chunk [s] (0: the params file's)"""
    state_watchdog: float = 0.0
    """bridge: stop and disable after this long without robot state [s] (0: the params file's)"""
    max_chunk_age: float = 4.0
    """bridge: chunks captured longer ago are rejected [s] (below its 5 s history_duration)"""
    stream_rate_hz: float = 25.0
    """bridge: rate of the streamed end-effector targets [Hz] (what one Python process sustains beside the sim)"""
    imagination_every: int = 3
    """in recorded episodes, decode the imagination of every N-th chunk (decoding costs seconds on a CPU)"""

    def __post_init__(self) -> None:
        if self.policy not in POLICY_SOURCES:
            raise ValueError(f"policy must be one of {list(POLICY_SOURCES)}, got {self.policy!r}")
        if self.policy == "checkpoint" and not self.checkpoint:
            raise ValueError("checkpoint must name a checkpoint directory, got ''")
        if not self.tasks:
            raise ValueError("tasks must name at least one task family or instruction")
        if self.mode not in EXECUTION_MODES:
            raise ValueError(f"mode must be one of {list(EXECUTION_MODES)}, got {self.mode!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 s, got {self.time_limit}")
        if self.videos < 0:
            raise ValueError(f"videos must be >= 0, got {self.videos}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 px, got {self.image_size}")
        if not self.real_time_factor > 0:
            raise ValueError(f"real_time_factor must be > 0, got {self.real_time_factor}")
        if not 0 < self.max_chunk_age < 5.0:
            raise ValueError(
                f"max_chunk_age must be in (0, 5) s (below the bridge's history_duration), got {self.max_chunk_age}"
            )
        if not self.stream_rate_hz > 0:
            raise ValueError(f"stream_rate_hz must be > 0 Hz, got {self.stream_rate_hz}")
        if self.policy_latency < 0:
            raise ValueError(f"policy_latency must be >= 0 s, got {self.policy_latency}")
        for name in ("chunk_watchdog", "state_watchdog"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 s (0 = the params file's), got {getattr(self, name)}")
        if self.imagination_every < 1:
            raise ValueError(f"imagination_every must be >= 1 chunk, got {self.imagination_every}")

    @property
    def policy_label(self) -> str:
        """What drove the arm, for reports: the checkpoint folder or the policy source."""
        return self.checkpoint if self.policy == "checkpoint" else f"{self.policy} policy"


@dataclass(frozen=True)
class DemoConfig(EvalConfig):
    """One `videovla-demo` episode of `instruction` on a scene that shows it, with a video (`videovla-demo --help`)."""

    output: str = "outputs/demo"
    """folder for the report and the video"""
    tasks: tuple[str, ...] = field(init=False)
    """the instruction (set from it)"""
    episodes: int = field(default=1, init=False)
    """one"""
    videos: int = field(default=1, init=False)
    """the demo's one episode is recorded"""
    instruction: str = "pick up the red cube"
    """what to ask the robot"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", (self.instruction,))
        super().__post_init__()
