"""Composable wrappers around a `videovla_model.contract.Policy` (each is a Policy itself).

`SlowedPolicy` adds a fixed wall-clock latency to every inference: a fast policy (the scripted expert) then has
the timing of a slow one (the 5B model's ~1.1 s per chunk on a GPU), so the loop's behaviour under latency can be
studied and tested apart from learning.
"""

from __future__ import annotations

import math
import time

import numpy as np

from videovla_model.contract import Observation, Policy, PolicyMetadata, PolicyOutput


class SlowedPolicy:
    """`policy`, answering `latency` wall seconds later than it would (timings["added_latency"] says so)."""

    def __init__(self, policy: Policy, latency: float) -> None:
        if not (math.isfinite(latency) and latency >= 0):
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        self.policy = policy
        self.latency = latency

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        output = self.policy.infer(observation, imagine=imagine)
        time.sleep(self.latency)
        timings = {**output.timings, "added_latency": self.latency}
        timings["total"] = timings.get("total", 0.0) + self.latency
        return PolicyOutput(actions=output.actions, timings=timings, imagination=output.imagination)

    def decode_imagination(self, output: PolicyOutput) -> np.ndarray | None:
        return self.policy.decode_imagination(output)

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if callable(close):
            close()
