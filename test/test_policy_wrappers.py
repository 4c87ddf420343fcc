"""videovla_model.policy_wrappers: a policy slowed down stays the same policy, only later."""

from __future__ import annotations

import time

import numpy as np
import pytest

from videovla_model.contract import Observation, PolicyOutput, validate_output
from videovla_model.policy_wrappers import SlowedPolicy
from videovla_sim.expert_policy import EXPERT_METADATA


class ConstantPolicy:
    """A policy answering one fixed chunk (the contract's smallest implementation)."""

    metadata = EXPERT_METADATA

    def __init__(self) -> None:
        self.closed = False

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        del observation, imagine
        return PolicyOutput(actions=np.zeros((6, 7), np.float32), timings={"total": 0.01})

    def decode_imagination(self, output: PolicyOutput) -> np.ndarray | None:
        del output
        return None

    def close(self) -> None:
        self.closed = True


def test_slowed_policy_answers_the_same_later_and_says_so():
    inner = ConstantPolicy()
    slowed = SlowedPolicy(inner, latency=0.05)
    observation = Observation(image=np.zeros((64, 64, 3), np.uint8), instruction="pick up the red cube")
    started = time.perf_counter()
    output = slowed.infer(observation)
    assert time.perf_counter() - started >= 0.05
    validate_output(output, slowed.metadata)
    np.testing.assert_array_equal(output.actions, inner.infer(observation).actions)
    assert output.timings == pytest.approx({"total": 0.06, "added_latency": 0.05})
    assert slowed.decode_imagination(output) is None
    slowed.close()
    assert inner.closed
    with pytest.raises(ValueError, match="latency must be >= 0 seconds, got -1"):
        SlowedPolicy(inner, latency=-1.0)
