"""The scripted expert behind the numpy policy contract: the ceiling of the closed loop, apart from learning.

`ExpertPolicy` is a `videovla_model.contract.Policy` whose chunks come from `ScriptedExpert` instead of a
model. The expert plans from privileged simulator state, which the observation does not carry: the policy is
built with a `state_source` (a callable returning the newest `SceneState`, e.g. what the simulated arm
publishes on `sim_arm/scene_state`). Learned policies are built without one and never see that state.

Per chunk it re-anchors the script at the snapshot's measured TCP pose (where the arm bridge anchors a chunk's
deltas), steps the script `execute_rows` times, and fills the remaining rows with holds: in sync mode the bridge
executes exactly `execute_rows` rows before asking again, so the script's phases (the waits after closing)
advance in step with what the arm did. A new (task, seed) in the snapshot starts a new script.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from videovla_model.action_convention import pose_deltas, quaternion_to_matrix
from videovla_model.contract import (
    DEFAULT_ACTION_DIM_NAMES,
    Observation,
    PolicyMetadata,
    PolicyOutput,
    validate_observation,
)
from videovla_sim.expert import ExpertConfig, ScriptedExpert
from videovla_sim.scene_state import SceneState
from videovla_sim.tasks import sample_episode

EXPERT_METADATA = PolicyMetadata(
    action_dim_names=DEFAULT_ACTION_DIM_NAMES,
    chunk_rows=6,
    execute_rows=3,
    time_step=0.1,
    image_size=(64, 64),
)
"""The layout of the shipped checkpoints' chunks (6 rows at 10 Hz, 3 executed), so the bridge settings match."""


class ExpertPolicy:
    """A `Policy` that asks the scripted expert; see the module docstring."""

    def __init__(
        self,
        state_source: Callable[[], SceneState | None],
        metadata: PolicyMetadata = EXPERT_METADATA,
        config: ExpertConfig | None = None,
    ) -> None:
        self._source = state_source
        self._metadata = metadata
        self._config = config
        self._episode: tuple[str, int] | None = None
        self._expert: ScriptedExpert | None = None

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        """One chunk from the newest scene state; `imagine` is ignored (the expert imagines nothing)."""
        del imagine
        started = time.perf_counter()
        validate_observation(observation, self._metadata)
        state = self._source()
        if state is None:
            raise RuntimeError("the expert has no scene state yet (is the simulated arm publishing scene_state?)")
        if state.instruction != observation.instruction.strip():
            raise ValueError(
                f"the expert plays the simulator's task {state.instruction!r}, "
                f"got the instruction {observation.instruction[:80]!r}"
            )
        expert = self._expert_for(state)
        expert.observe(state)
        position, quaternion = state.tcp_pose()
        positions, rotations, grippers = [position], [quaternion_to_matrix(quaternion)], []
        for _row in range(self._metadata.execute_rows):
            target = expert.act()
            positions.append(target.position)
            rotations.append(quaternion_to_matrix(target.quaternion))
            grippers.append(target.gripper)
        deltas = pose_deltas(np.array(positions), np.array(rotations))
        holds = self._metadata.chunk_rows - self._metadata.execute_rows
        deltas = np.concatenate((deltas, np.zeros((holds, 6))))
        grippers += [grippers[-1]] * holds
        actions = np.concatenate((deltas, np.array(grippers).reshape(-1, 1)), axis=1).astype(np.float32)
        return PolicyOutput(actions=actions, timings={"total": time.perf_counter() - started})

    def decode_imagination(self, output: PolicyOutput) -> None:
        """The expert imagines nothing."""
        del output

    def _expert_for(self, state: SceneState) -> ScriptedExpert:
        episode = (state.task, state.seed)
        if self._expert is None or episode != self._episode:
            setup = sample_episode(state.task, state.seed)
            position, quaternion = state.tcp_pose()
            self._expert = ScriptedExpert(setup, state, position, quaternion, self._metadata.time_step, self._config)
            self._episode = episode
        return self._expert
