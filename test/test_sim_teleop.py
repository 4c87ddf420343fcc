"""videovla-sim-teleop's pure parts: the tick grid and chunk rows that land on the expert's targets."""

from __future__ import annotations

import numpy as np

from videovla_model.action_convention import integrate_deltas, quaternion_to_matrix
from videovla_ros.sim_teleop import chunk_rows, on_tick_grid
from videovla_ros.trajectory import Pose
from videovla_sim.collect import record_episode
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.scene import SceneConfig


def test_the_newest_tick_at_or_before_now():
    assert on_tick_grid(1_000, 1_000, 10.0) == (0, 1_000)
    assert on_tick_grid(1_000, 1_000 + 250_000_000, 10.0) == (2, 1_000 + 200_000_000)
    assert on_tick_grid(1_000, 500, 10.0) == (0, 1_000)


def test_chunk_rows_land_on_the_expert_targets_from_any_anchor():
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=32, image_width=32)))
    try:
        expert = record_episode(env, "pick", 1, render=False)
    finally:
        env.close()
    assert expert.success
    # From the start target the rows are the expert's own actions.
    start = Pose.make(expert.target_positions[0], expert.target_quaternions[0])
    np.testing.assert_allclose(chunk_rows(expert, start, 0), expert.actions, atol=1e-6)
    # From an arm lagging 7 mm behind target 11, row 0 absorbs the lag and the absolute targets are the expert's.
    lagging = Pose.make(expert.target_positions[11] + [0.007, 0.0, -0.002], expert.target_quaternions[11])
    rows = chunk_rows(expert, lagging, 11)
    assert rows.shape == (expert.num_steps - 11, 7)
    positions, rotations = integrate_deltas(lagging.position, lagging.rotation, rows[:, :6])
    np.testing.assert_allclose(positions, expert.target_positions[12:], atol=1e-8)
    targets = np.array([quaternion_to_matrix(q) for q in expert.target_quaternions[12:]])
    np.testing.assert_allclose(rotations, targets, atol=1e-8)
    np.testing.assert_array_equal(rows[:, 6], expert.actions[11:, 6])
