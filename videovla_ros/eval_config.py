"""`EvalConfig`: what one `videovla-eval` / `videovla-demo` run does, validated with the field named.

No rclpy here: the command lines are built from this dataclass before any node exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.policy_factory import POLICY_SOURCES

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "videovla-sim-small"


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation (or demo) run; see `videovla-eval --help` for each field."""

    checkpoint: str
    tasks: tuple[str, ...] = ("pick",)
    policy: str = "checkpoint"
    episodes: int = 50
    seed: int = 0
    mode: str = "sync"
    time_limit: float = 30.0
    videos: int = 3
    output: str = "outputs/eval"
    image_size: int = 64
    namespace: str = "videovla_eval"
    params_file: str = ""
    num_inference_steps: int = 0
    guidance_scale: float = -1.0
    real_time_factor: float = 1.0
    chunk_watchdog: float = 0.0
    state_watchdog: float = 0.0
    max_chunk_age: float = 4.0
    stream_rate_hz: float = 25.0
    # A 9-frame imagination spans 0.8 s, about three sync-mode chunks of 3 rows: every third one covers the video.
    imagination_every: int = 3

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
        for name in ("chunk_watchdog", "state_watchdog"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 s (0 = the params file's), got {getattr(self, name)}")
        if self.imagination_every < 1:
            raise ValueError(f"imagination_every must be >= 1 chunk, got {self.imagination_every}")

    @property
    def policy_label(self) -> str:
        """What drove the arm, for reports: the checkpoint folder or the policy source."""
        return self.checkpoint if self.policy == "checkpoint" else f"{self.policy} policy"
