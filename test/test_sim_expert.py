"""The scripted expert solves the tasks, and its recordings are valid episodes in the suite's action format."""

from __future__ import annotations

import numpy as np
import pytest
from transforms3d.euler import euler2mat

from videovla_model.action_convention import integrate_deltas, pose_deltas, quaternion_to_matrix
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.episodes import EpisodeDataset, EpisodeWriter
from videovla_ros.trajectory import Pose, apply_deltas
from videovla_sim import collect
from videovla_sim.controller import quaternion_distance
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.expert import ExpertConfig
from videovla_sim.scene import SceneConfig
from videovla_sim.tasks import InstructionError, ObjectRef, sample_episode, with_target

RATE_HZ = 10.0


@pytest.fixture(scope="module")
def env() -> TabletopEnv:
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=32, image_width=32)))
    yield env
    env.close()


def success_rate(env: TabletopEnv, task: str, seeds: range) -> float:
    outcomes = [collect.record_episode(env, task, seed, render=False) for seed in seeds]
    failures = [f"seed {r.setup.seed}: {r.failure}" for r in outcomes if not r.success]
    rate = 1.0 - len(failures) / len(outcomes)
    print(f"{task}: expert success {rate:.0%} over {len(outcomes)} seeds; failures: {failures}")
    return rate


def test_expert_picks_up_the_named_object_for_most_seeds(env):
    assert success_rate(env, "pick", range(20)) >= 0.9


def test_grasped_objects_names_only_what_the_fingers_hold_off_the_table(env):
    env.reset("pick", 0)
    env.advance(0.2)
    assert env.grasped_objects() == ()
    result = collect.record_episode(env, "pick", 0, render=False)
    assert result.success
    assert env.grasped_objects() == (result.setup.spec(result.setup.task.target).name,)


def test_each_object_of_a_pick_layout_can_be_named_and_the_expert_picks_that_one(env):
    own = sample_episode("pick", 7)
    targets = collect.episode_targets("pick", 7, env, name_each_object=True)
    assert [t.name for t in targets] == [spec.name for spec in own.objects]
    assert collect.episode_targets("pick", 7, env, name_each_object=False) == [None]
    other = targets[-1]
    assert other != own.task.target
    result = collect.record_episode(env, "pick", 7, render=False, target=other)
    assert result.setup.objects == own.objects  # the same scene ...
    assert result.setup.instruction == f"pick up the {other.words}"  # ... under another instruction
    assert result.success
    assert env.grasped_objects() == (other.name,)


def test_naming_another_object_is_refused_where_it_cannot_be_done():
    with pytest.raises(InstructionError, match="only pick"):
        with_target(sample_episode("place", 1), ObjectRef("red", "cube"))
    setup = sample_episode("pick", 1)
    absent = next(
        ObjectRef(c, "cube")
        for c in ("red", "green", "blue", "yellow", "purple")
        if f"{c}_cube" not in {spec.name for spec in setup.objects}
    )
    with pytest.raises(InstructionError, match=f"no {absent.words}"):
        with_target(setup, absent)
    with pytest.raises(ValueError, match="name_each_object needs tasks pick only"):
        collect.CollectConfig(output="x", tasks=("pick", "place"), name_each_object=True)


@pytest.mark.parametrize("family", ["place", "stack"])
def test_expert_solves_place_and_stack(env, family):
    assert success_rate(env, family, range(100, 105)) >= 0.8


def test_expert_moves_in_small_steps_with_a_binary_gripper(env):
    recording = collect.record_episode(env, "place", 3, action_rate_hz=RATE_HZ, render=False)
    config = ExpertConfig()
    steps = np.linalg.norm(recording.actions[:, :3], axis=1)
    assert steps.max() <= config.max_speed / RATE_HZ + 1e-6
    assert np.abs(recording.actions[:, 3:6]).max() <= config.max_yaw_rate / RATE_HZ + 1e-6
    assert set(np.unique(recording.actions[:, 6])) == {0.0, 1.0}


def test_integrated_deltas_reproduce_the_commanded_trajectory(env):
    recording = collect.record_episode(env, "stack", 2, action_rate_hz=RATE_HZ)
    assert recording.success, recording.failure
    start_rotation = quaternion_to_matrix(recording.target_quaternions[0])
    positions, rotations = integrate_deltas(recording.target_positions[0], start_rotation, recording.actions[:, :6])
    np.testing.assert_allclose(positions, recording.target_positions[1:], atol=1e-5)
    for rotation, quaternion in zip(rotations, recording.target_quaternions[1:], strict=True):
        np.testing.assert_allclose(rotation, quaternion_to_matrix(quaternion), atol=1e-5)
    # The arm bridge turns chunk rows into targets with its own code: it must agree with the recording.
    bridge_targets = apply_deltas(
        Pose.make(recording.target_positions[0], recording.target_quaternions[0]), recording.actions[:, :6]
    )
    for target, position, quaternion in zip(
        bridge_targets, recording.target_positions[1:], recording.target_quaternions[1:], strict=True
    ):
        np.testing.assert_allclose(target.position, position, atol=1e-5)
        assert quaternion_distance(target.quaternion, quaternion) < 1e-4
    # Frame t is what the camera saw before action t: the first frame is the freshly reset scene.
    env.reset("stack", 2)
    np.testing.assert_array_equal(recording.frames[0], env.render())


def test_recorded_episodes_load_back(env, tmp_path):
    recording = collect.record_episode(env, "pick", 1, action_rate_hz=RATE_HZ)
    writer = EpisodeWriter(tmp_path)
    writer.write(
        recording.frames,
        recording.actions,
        recording.setup.instruction,
        RATE_HZ,
        success=recording.success,
        extra=recording.extra(),
    )
    (episode,) = EpisodeDataset(tmp_path)
    assert episode.metadata.instruction == recording.setup.instruction
    assert episode.metadata.action_dim_names == DEFAULT_ACTION_DIM_NAMES
    assert episode.metadata.action_rate_hz == RATE_HZ
    assert episode.metadata.success is True
    assert episode.metadata.extra["seed"] == 1 and episode.metadata.extra["task"] == "pick"
    assert len(episode.metadata.extra["objects"]) == len(recording.setup.objects)
    np.testing.assert_allclose(episode.metadata.extra["start_target"]["position"], recording.target_positions[0])
    assert episode.frames.shape == (recording.num_steps, 32, 32, 3)
    np.testing.assert_array_equal(episode.actions, recording.actions)


def test_pose_deltas_and_integration_are_inverse():
    rng = np.random.default_rng(0)
    positions = np.cumsum(rng.normal(scale=0.01, size=(9, 3)), axis=0)
    rotations = [np.eye(3)]
    for _ in range(8):
        rotations.append(euler2mat(*rng.normal(scale=0.1, size=3), "sxyz") @ rotations[-1])
    deltas = pose_deltas(positions, np.array(rotations))
    assert deltas.shape == (8, 6)
    integrated_positions, integrated_rotations = integrate_deltas(positions[0], rotations[0], deltas)
    np.testing.assert_allclose(integrated_positions, positions[1:], atol=1e-12)
    np.testing.assert_allclose(integrated_rotations, np.array(rotations[1:]), atol=1e-12)
    # A pure turn about base z is a pure yaw delta.
    yaw_turn = pose_deltas(np.zeros((2, 3)), np.array([np.eye(3), euler2mat(0.0, 0.0, 0.2, "sxyz")]))
    np.testing.assert_allclose(yaw_turn, [[0, 0, 0, 0, 0, 0.2]], atol=1e-12)


def test_noise_injection_pushes_the_arm_and_records_the_experts_correction(env):
    clean = collect.record_episode(env, "pick", 4, action_rate_hz=RATE_HZ, render=False)
    noisy = collect.record_episode(env, "pick", 4, action_rate_hz=RATE_HZ, render=False, position_noise=0.004)
    again = collect.record_episode(env, "pick", 4, action_rate_hz=RATE_HZ, render=False, position_noise=0.004)
    assert clean.success and noisy.success, noisy.failure
    np.testing.assert_array_equal(noisy.actions, again.actions)  # seeded: the same episode every time
    assert noisy.extra()["position_noise"] == 0.004

    executed = np.diff(noisy.target_positions, axis=0)
    pushed = np.linalg.norm(executed - noisy.actions[:, :3], axis=1)
    # Approach and descent are pushed sideways (only x, y); grasping and lifting are not.
    assert 0.002 < np.median(pushed[:8]) < 0.012
    assert np.all(np.abs(executed[:, 2] - noisy.actions[:, 2]) < 1e-9)
    closing = int(np.argmax(noisy.actions[:, 6] == 0.0))
    assert np.all(pushed[closing:] < 1e-9)
    # The recorded rows are the expert's own bounded steps, never the noise.
    assert np.linalg.norm(noisy.actions[:, :3], axis=1).max() <= ExpertConfig().max_speed / RATE_HZ + 1e-6
    # The expert steers back after every push: the gripper closes where it closes without noise.
    clean_closing = int(np.argmax(clean.actions[:, 6] == 0.0))
    np.testing.assert_allclose(noisy.target_positions[closing], clean.target_positions[clean_closing], atol=0.002)

    with pytest.raises(ValueError, match=r"position_noise must be a finite number >= 0 m, got -0\.001"):
        collect.record_episode(env, "pick", 4, render=False, position_noise=-0.001)


def test_collect_command_line_refuses_bad_position_noise(tmp_path, capsys):
    with pytest.raises(SystemExit):
        collect.main(["--output", str(tmp_path / "dataset"), "--position-noise", "nan"])
    assert "position_noise must be a finite number >= 0 m, got nan" in capsys.readouterr().err
    assert not (tmp_path / "dataset").exists()


def test_collect_command_line_writes_successful_episodes(tmp_path, capsys):
    output = tmp_path / "dataset"
    code = collect.main(["--output", str(output), "--tasks", "pick", "--episodes", "2", "--image-size", "24", "32"])
    assert code == 0
    episodes = list(EpisodeDataset(output))
    assert len(episodes) == 2
    assert all(e.metadata.success for e in episodes)
    assert {e.metadata.extra["seed"] for e in episodes} == {0, 1}
    assert episodes[0].frames.shape[1:] == (24, 32, 3)
    assert "pick: 2/2 successful" in capsys.readouterr().out


def test_collect_command_line_refuses_an_unknown_task(tmp_path, capsys):
    code = collect.main(["--output", str(tmp_path / "d"), "--tasks", "pick up the pink cube", "--image-size", "24"])
    assert code == 2
    assert "unknown colour 'pink'" in capsys.readouterr().err
