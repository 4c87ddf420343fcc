"""The recorder through the real nodes on the simulated arm: the scripted expert teleoperates the sim through the
arm bridge (pose_stream), the recorder node records; the episodes agree with videovla-collect's for the same
seeds, train, and survive a kill -9 of the recorder mid-episode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ros_process
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from videovla_model.episodes import EpisodeDataset
from videovla_model.train import main as train_main
from videovla_ros import sim_teleop
from videovla_ros.arm_bridge_node import ArmBridgeNode

TASK = "pick"
FIRST_SEED = 3
RATE = 10.0
SIZE = 64
NAMESPACE = "rec"
# The expert turns its gripper up to 1.2 rad/s and 0.12 rad per step; the real arm's bridge limits (realman.yaml)
# clamp that, which would make the recording differ from videovla-collect's by the clamping.
BRIDGE = {
    "backend": "pose_stream",
    "execution_mode": "async",
    "stream_rate_hz": 50.0,
    "max_step_rotation": 0.2,
    "max_angular_speed": 3.0,
    "max_linear_speed": 0.5,
    "state_watchdog": 2.0,
    "workspace_min": [0.12, -0.45, 0.015],
    "workspace_max": [0.62, 0.45, 0.55],
}


def node_process(module: str, log: Path, **parameters: object) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:=/{NAMESPACE}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    return subprocess.Popen(command, env=dict(os.environ), stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def sim_system(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    """sim_arm and recorder in processes of their own (as on a robot), the bridge in this one."""
    dataset = tmp_path / "mine"
    log = tmp_path / "nodes.log"
    sim = node_process(
        "videovla_ros.sim_arm_node",
        log,
        task=TASK,
        seed=FIRST_SEED - 1,
        image_height=SIZE,
        image_width=SIZE,
        camera_fps=30.0,
    )
    # A loaded test machine can pause the camera for a moment; these tests are not about stalls (test_recorder_session).
    recorder = node_process("videovla_ros.recorder_node", log, dataset=str(dataset), min_free_disk_mb=0.0, max_gap=2.0)
    with ros_process.ros_context() as context:
        overrides = [Parameter(name, value=value) for name, value in BRIDGE.items()]
        bridge = ArmBridgeNode(context=context, namespace=NAMESPACE, parameter_overrides=overrides)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(bridge)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            yield dataset, {"context": context, "recorder": recorder, "log": log}
        finally:
            executor.shutdown(timeout_sec=5.0)
            thread.join(timeout=5.0)
            bridge.destroy_node()
            stop(recorder)
            stop(sim)


MAX_SIM_LATENCY_S = 0.1
"""Largest arrival - stamp of the sim's frames and poses up to which the comparison with videovla-collect holds:
one late physics tick (a loaded machine) applies the streamed targets late and the arm's path differs."""


def stream_latency(episode: object) -> dict[str, float]:
    """The recorder's "stream latency" mark of an episode."""
    marks = [e for e in episode.metadata.extra["events"] if e["event"] == "stream latency"]
    return {k: v for k, v in marks[-1].items() if k != "event"}


def train_arguments(dataset: Path, output: Path) -> list[str]:
    """videovla-train, tiny preset, 2 steps."""
    sizes = ["--steps", "2", "--batch-size", "2", "--num-workers", "0"]
    return ["--dataset", str(dataset), "--output", str(output), "--preset", "tiny", *sizes]


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference (0..255)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_recorded_episodes_agree_with_videovla_collect_and_train(sim_system, tmp_path):
    dataset, system = sim_system
    started = time.perf_counter()
    episodes = sim_teleop.run(TASK, 2, RATE, SIZE, NAMESPACE, context=system["context"])
    seconds = time.perf_counter() - started
    recorded = EpisodeDataset(dataset)
    assert len(recorded) == 2, system["log"].read_text()[-3000:]
    print(f"recorded 2 episodes in {seconds:.1f} s")
    output = tmp_path / "run"
    assert train_main(train_arguments(dataset, output)) == 0
    assert (output / "final").is_dir()
    for sent, episode in zip(episodes, recorded, strict=True):
        assert sent.seed in (FIRST_SEED, FIRST_SEED + 1)
        assert episode.metadata.instruction == sent.expert.setup.instruction
        assert episode.metadata.num_steps >= sent.idle_steps + sent.expert.num_steps
    if lagging := [lag for lag in map(stream_latency, recorded) if max(lag.values()) > MAX_SIM_LATENCY_S]:
        # A simulated arm whose physics falls behind the clock applies each streamed target late in its own
        # stamps, so the arm moves differently from videovla-collect's stepped one: the comparison only means
        # something on a machine that keeps the simulation in real time (the recorder measured how late).
        pytest.skip(f"the simulated arm lagged the clock ({lagging[0]}); recording and training checked only")
    for sent, episode in zip(episodes, recorded, strict=True):
        expert, m = sent.expert, sent.idle_steps
        steps = expert.num_steps
        actions = episode.actions[m : m + steps].astype(np.float64)
        error = np.abs(actions[:, :6] - expert.actions[:, :6])
        drift = np.abs(np.cumsum(actions[:, :6], axis=0) - np.cumsum(expert.actions[:, :6], axis=0))
        gripper_mismatch = int(np.sum(actions[:, 6] != expert.actions[:, 6]))
        frames = [frame_difference(episode.frames[m + t], expert.frames[t]) for t in range(steps)]
        print(
            f"seed {sent.seed}: {steps} steps after {m} idle; per-step error max {error[:, :3].max() * 1000:.1f} mm "
            f"{error[:, 3:].max():.3f} rad, mean {error[:, :3].mean() * 1000:.2f} mm; integrated pose error max "
            f"{drift[:, :3].max() * 1000:.1f} mm, at the end {drift[-1, :3].max() * 1000:.2f} mm "
            f"{drift[-1, 3:].max():.4f} rad; gripper mismatches {gripper_mismatch}; frame difference mean "
            f"{np.mean(frames):.2f} max {np.max(frames):.2f} /255; latency {stream_latency(episode)}"
        )
        # Tolerances measured on this test (README, "Record your own demonstrations"): frames and gripper agree
        # step for step; the recorder reads the MEASURED arm pose, which follows the streamed target with the sim
        # controller's lag, while collect stores the commanded targets, so single steps differ where the expert
        # starts or stops moving (one expert step, 15 mm / 0.12 rad; up to 31 mm, mean 2.3 mm, on a loaded
        # machine when the simulated arm fell behind real time) and agree again once the arm settles.
        assert gripper_mismatch <= 1
        assert np.mean(frames) < 3.0
        assert error[:, :3].mean() < 0.004 and error[:, :3].max() < 0.045 and error[:, 3:].max() < 0.15
        assert drift[-1, :3].max() < 0.003 and drift[-1, 3:].max() < 0.02
        assert np.all(np.abs(episode.actions[:m, :6]) < 2e-3)  # at rest before the chunk


def test_kill_9_mid_episode_then_the_dataset_loads_and_trains(sim_system, tmp_path):
    dataset, system = sim_system
    sim_teleop.run(TASK, 1, RATE, SIZE, NAMESPACE, context=system["context"])
    assert len(EpisodeDataset(dataset)) == 1
    teleop = sim_teleop.SimTeleop(namespace=NAMESPACE, context=system["context"])
    executor = SingleThreadedExecutor(context=system["context"])
    executor.add_node(teleop)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        teleop.wait_status("has_pose", timeout=15.0)
        teleop.trigger(teleop.start_client)
        teleop.wait_status("tick_origin_ns", timeout=5.0)
        time.sleep(1.5)
        killed = time.perf_counter()
        system["recorder"].send_signal(signal.SIGKILL)
        system["recorder"].wait()
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        teleop.destroy_node()
    assert len(EpisodeDataset(dataset)) == 1  # the finished episode; the interrupted one is not half-read
    assert len(list(dataset.glob(".recording_*"))) == 1
    recovered = subprocess.run(
        [sys.executable, "-c", "from videovla_model.recording import main; raise SystemExit(main())", str(dataset)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"kill -9 to recovered: {time.perf_counter() - killed:.2f} s; {recovered.stdout.strip()}")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    loaded = EpisodeDataset(dataset)
    assert len(loaded) == 2 and "interrupted" in loaded[1].metadata.extra
    assert loaded[1].metadata.num_steps >= 10
    output = tmp_path / "run"
    assert train_main(train_arguments(dataset, output)) == 0
