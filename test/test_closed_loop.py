"""benchmarks/closed_loop.py: the in-process closed loop executes chunks as the bridge does and judges them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from closed_loop import run_episode  # noqa: E402

from videovla_model.contract import Observation, PolicyOutput  # noqa: E402
from videovla_ros.safety import SafetyLimits  # noqa: E402
from videovla_sim.env import EnvConfig, TabletopEnv  # noqa: E402
from videovla_sim.expert_policy import EXPERT_METADATA  # noqa: E402
from videovla_sim.scene import SceneConfig  # noqa: E402


class ConstantPolicy:
    """Answers every frame with the same chunk (rows of one per-step delta)."""

    metadata = EXPERT_METADATA

    def __init__(self, row: list[float]) -> None:
        self.row = np.array(row, dtype=np.float32)
        self.frames: list[tuple[int, ...]] = []

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        self.frames.append(observation.image.shape)
        return PolicyOutput(actions=np.tile(self.row, (self.metadata.chunk_rows, 1)), timings={"total": 0.0})

    def decode_imagination(self, output: PolicyOutput) -> None:
        return None


@pytest.fixture
def env():
    environment = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=32, image_width=32)))
    yield environment
    environment.close()


def test_the_expert_picks_in_the_loop_and_the_report_counts_it():
    command = [sys.executable, str(REPO / "benchmarks" / "closed_loop.py"), "--policy", "expert", "--episodes", "2"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("SUCCESS") == 2
    assert result.stdout.strip().splitlines()[-1].startswith("expert: 2/2 success (34-100%), held named 2")


def test_a_policy_that_holds_still_fails_at_the_time_limit_after_one_chunk_per_executed_rows(env):
    policy = ConstantPolicy([0, 0, 0, 0, 0, 0, 1])
    result = run_episode(env, policy, "pick", 0, 1.5, SafetyLimits())
    assert not result.success and not result.held_named and not result.held_other
    assert result.chunks == 5  # 15 steps of 0.1 s, 3 executed rows a chunk
    assert result.sim_seconds == pytest.approx(1.5)
    assert policy.frames[0] == (32, 32, 3)


def test_chunks_are_clamped_like_the_bridge_and_refused_targets_are_counted(env):
    policy = ConstantPolicy([0.0, 0.0, 0.1, 0, 0, 0, 1])  # 10 cm up per row: clamped to 2 cm, then out of reach
    result = run_episode(env, policy, "pick", 0, 3.0, SafetyLimits())
    assert result.clamped_rows == 30
    assert result.rejected_targets > 0  # the controller's workspace ends below 60 cm above home
