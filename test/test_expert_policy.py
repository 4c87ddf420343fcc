"""The scripted expert behind the numpy policy contract, fed by privileged scene state (no DDS), and its factory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videovla_model.action_convention import integrate_deltas, matrix_to_quaternion, quaternion_to_matrix
from videovla_model.contract import Observation, validate_output
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.expert_policy import EXPERT_METADATA, ExpertPolicy
from videovla_sim.scene import SceneConfig
from videovla_sim.scene_state import MAX_STATE_CHARS, SceneState

BLANK = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def env() -> TabletopEnv:
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=32, image_width=32)))
    yield env
    env.close()


def play(env: TabletopEnv, task: str, seed: int, max_chunks: int = 40) -> bool:
    """Runs the policy the way the sync-mode bridge does: each chunk's execute_rows from the measured pose."""
    setup = env.reset(task, seed)
    latest: list[SceneState] = []
    policy = ExpertPolicy(lambda: latest[-1])
    rows = EXPERT_METADATA.execute_rows
    for _chunk in range(max_chunks):
        # Through JSON, as the simulated arm publishes it.
        latest.append(SceneState.from_json(SceneState.capture(env.scene, setup, task, 0).to_json()))
        output = policy.infer(Observation(BLANK, setup.instruction))
        validate_output(output, policy.metadata)
        position, quaternion = env.scene.tcp_pose()
        positions, rotations = integrate_deltas(position, quaternion_to_matrix(quaternion), output.actions[:rows, :6])
        for row in range(rows):
            env.controller.command_pose(positions[row], matrix_to_quaternion(rotations[row]))
            env.controller.command_gripper(float(output.actions[row, 6]))
            env.advance(EXPERT_METADATA.time_step)
        if env.success():
            return True
    return False


def test_the_expert_policy_picks_the_named_object_chunk_by_chunk(env):
    assert sum(play(env, "pick", seed) for seed in range(8)) >= 7


def test_chunks_hold_after_the_executed_rows(env):
    setup = env.reset("pick", 3)
    state = SceneState.capture(env.scene, setup, "pick", 0)
    actions = ExpertPolicy(lambda: state).infer(Observation(BLANK, setup.instruction)).actions
    assert actions.shape == (6, 7) and np.abs(actions[:3, :2]).sum() > 0
    assert np.all(actions[3:, :6] == 0) and np.all(actions[3:, 6] == actions[2, 6])


def test_without_state_or_with_another_instruction_it_refuses(env):
    with pytest.raises(RuntimeError, match="no scene state yet"):
        ExpertPolicy(lambda: None).infer(Observation(BLANK, "pick up the red cube"))
    setup = env.reset("pick up the red cube", 0)
    state = SceneState.capture(env.scene, setup, "pick up the red cube", 0)
    with pytest.raises(ValueError, match="plays the simulator's task 'pick up the red cube', got the instruction"):
        ExpertPolicy(lambda: state).infer(Observation(BLANK, "pick up the blue cube"))


def test_scene_state_round_trips_and_names_the_bad_field(env):
    setup = env.reset("pick", 5)
    state = SceneState.capture(env.scene, setup, "pick", 123)
    again = SceneState.from_json(state.to_json())
    assert again == state and again.seed == 5 and set(again.objects) == {s.name for s in setup.objects}
    position, quaternion = again.object_pose(setup.objects[0].name)
    assert np.allclose(position, env.scene.object_pose(setup.objects[0].name)[0]) and quaternion.shape == (4,)
    data = json.loads(state.to_json())
    with pytest.raises(ValueError, match="field tcp must be"):
        SceneState.from_json(json.dumps({**data, "tcp": [[0, 0], [1, 0, 0, 0]]}))
    with pytest.raises(ValueError, match="field seed must be an integer"):
        SceneState.from_json(json.dumps({**data, "seed": "five"}))
    with pytest.raises(ValueError, match="'touching' is missing"):
        SceneState.from_json(json.dumps({k: v for k, v in data.items() if k != "touching"}))
    with pytest.raises(ValueError, match="at most"):
        SceneState.from_json(" " * (MAX_STATE_CHARS + 1))
    with pytest.raises(KeyError, match="no object 'gold_cube'"):
        again.object_pose("gold_cube")
