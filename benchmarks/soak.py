"""Soak: the simulated arm + a tiny VideoVLA policy + the arm bridge for many minutes; is memory flat?

BENCHMARK, not a test. It starts the three nodes as separate processes, as `ros2 launch ... sim:=true` does
(`python -m videovla_ros.sim_arm_node` with a `--camera-fps` camera, `python -m videovla_ros.policy_node` on a
tiny random checkpoint it writes first, `python -m videovla_ros.arm_bridge_node` with the pose_stream backend),
reads the shipped config/realman.yaml (+ config/sim.yaml for the bridge), configures and activates the policy
through its lifecycle services, publishes an instruction, enables the bridge, and then only watches.

Per window (--window-minutes) it prints:
  - RSS of each node process at the window's end and its growth over the window [MiB] (/proc/<pid>/status);
  - chunk latency percentiles: the policy's inference_time and capture_to_publish_time of every ActionChunk;
  - camera frames seen by this process vs the camera_fps x window expected ("missed": the sim fell behind) and
    the frames the policy dropped (stale or unparseable, from its /diagnostics counters);
  - chunks, and chunks the bridge rejected (its /diagnostics counters);
  - how often the bridge had to be re-enabled after a watchdog stopped it (robot state late on a loaded CPU).
The nodes' own output (the tiny random model's clamped rows are logged by the bridge) goes to --node-log.

Run: OMP_NUM_THREADS=1 scripts/with_env.sh python benchmarks/soak.py [--minutes 30] [--window-minutes 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.launch_plan import default_params_file, sim_params_file

NAMESPACE = "/soak"
INSTRUCTION = "pick up the red cube"
SERVICE_TIMEOUT = 60.0
POLICY_COUNTERS = ("dropped_frames_stale", "dropped_frames_unparseable", "chunks_published", "inference_errors")
BRIDGE_COUNTERS = ("chunks_accepted", "chunks_rejected_late", "chunks_rejected_timing", "chunks_rejected_busy")


@dataclass
class Window:
    """What one window saw: chunk latencies [s], camera frames, and counters at its start and end."""

    inference: list[float] = field(default_factory=list)
    capture_to_publish: list[float] = field(default_factory=list)
    frames: int = 0
    reenables: int = 0


class Watcher(Node):
    """Counts camera frames and chunks, keeps the nodes' diagnostics counters, drives lifecycle and enable."""

    def __init__(self) -> None:
        super().__init__("soak_watcher", namespace=NAMESPACE)
        self.lock = threading.Lock()
        self.window = Window()
        self.counters: dict[str, float] = {}
        self.bridge_state = ""
        self.instruction_pub = self.create_publisher(String, "instruction", qos.INSTRUCTION)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.ACTION_CHUNK)
        self.create_subscription(Image, "image_raw", self._on_image, qos.CAMERA)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.lifecycle = self.create_client(ChangeState, "videovla_policy/change_state")
        self.enable = self.create_client(SetBool, "arm_bridge/enable")

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self.lock:
            self.window.inference.append(msg.inference_time)
            self.window.capture_to_publish.append(msg.capture_to_publish_time)

    def _on_image(self, msg: Image) -> None:
        with self.lock:
            self.window.frames += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = "policy" if "videovla_policy" in status.name else "bridge" if "arm_bridge" in status.name else ""
            if not node:
                continue
            with self.lock:
                if node == "bridge":
                    self.bridge_state = next((kv.value for kv in status.values if kv.key == "state"), "")
                for kv in status.values:
                    with contextlib.suppress(ValueError):  # text gauges (state, instruction) are not counters
                        self.counters[f"{node}.{kv.key}"] = float(kv.value)

    def take_window(self) -> tuple[Window, dict[str, float]]:
        with self.lock:
            window, self.window = self.window, Window()
            return window, dict(self.counters)

    def call(self, client: rclpy.client.Client, request: object, what: str) -> object:
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT):
            raise RuntimeError(f"{what}: service {client.srv_name} did not come up in {SERVICE_TIMEOUT:g} s")
        future = client.call_async(request)
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not future.done():
            raise RuntimeError(f"{what}: no answer from {client.srv_name} in {SERVICE_TIMEOUT:g} s")
        return future.result()


def write_tiny_checkpoint(folder: Path) -> Path:
    """A tiny random VideoVLA checkpoint (as the tests make), so the soak needs no trained weights."""
    from videovla_model.configuration import VideoVLAConfig
    from videovla_model.modeling import VideoVLAModel

    return Path(VideoVLAModel(VideoVLAConfig.preset("tiny")).save_pretrained(folder / "tiny"))


def start_nodes(checkpoint: Path, camera_fps: float, mode: str, log: IO[bytes]) -> dict[str, subprocess.Popen[bytes]]:
    params = ["--params-file", str(default_params_file())]
    common = ["--ros-args", "-r", f"__ns:={NAMESPACE}", *params]
    commands = {
        "sim_arm": ["videovla_ros.sim_arm_node", *common, "-p", f"camera_fps:={camera_fps}"],
        "arm_bridge": [
            "videovla_ros.arm_bridge_node",
            *common,
            "--params-file",
            str(sim_params_file()),
            "-p",
            "backend:=pose_stream",
            "-p",
            f"execution_mode:={mode}",
        ],
        "videovla_policy": [
            "videovla_ros.policy_node",
            *common,
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            f"execution_mode:={mode}",
        ],
    }
    return {
        name: subprocess.Popen(
            [sys.executable, "-m", *command, "--log-level", "warn"], env=dict(os.environ), stdout=log, stderr=log
        )
        for name, command in commands.items()
    }


def rss_mib(pid: int) -> float:
    """Resident set size of a process [MiB] (VmRSS of /proc/<pid>/status); nan once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def enable_bridge(watcher: Watcher) -> None:
    """Enables the bridge, retrying while it refuses for a transient reason (robot state not yet fresh)."""
    deadline = time.monotonic() + SERVICE_TIMEOUT
    while True:
        answer = watcher.call(watcher.enable, SetBool.Request(data=True), "enable the bridge")
        if answer.success:
            with watcher.lock:
                watcher.bridge_state = "enabled"
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"arm_bridge/enable refused: {answer.message}")
        time.sleep(0.5)


def check_alive(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    dead = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    if dead:
        raise RuntimeError(f"node process(es) exited during the soak (name: exit code, negative = signal): {dead}")


def watch_window(watcher: Watcher, processes: dict[str, subprocess.Popen[bytes]], seconds: float) -> None:
    """Waits a window out; re-enables the bridge whenever a watchdog disabled it (counted), as an operator would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        check_alive(processes)
        with watcher.lock:
            disabled = watcher.bridge_state == "disabled"
        if disabled:
            enable_bridge(watcher)
            with watcher.lock:
                watcher.window.reenables += 1


def bring_up(watcher: Watcher) -> None:
    for transition_id, name in (
        (Transition.TRANSITION_CONFIGURE, "configure"),
        (Transition.TRANSITION_ACTIVATE, "activate"),
    ):
        answer = watcher.call(watcher.lifecycle, ChangeState.Request(transition=Transition(id=transition_id)), name)
        if not answer.success:
            raise RuntimeError(f"the policy node refused to {name} (see its log above)")
    watcher.instruction_pub.publish(String(data=INSTRUCTION))
    enable_bridge(watcher)


def percentiles(values: list[float]) -> str:
    if not values:
        return "   -      -      -  "
    p50, p95, p99 = np.percentile(np.asarray(values) * 1e3, [50, 95, 99])
    return f"{p50:6.0f} {p95:6.0f} {p99:6.0f}"


def report_row(index: int, window: Window, counters: dict[str, float], previous: dict[str, float], extra: str) -> str:
    def delta(key: str) -> int:
        return int(counters.get(key, 0.0) - previous.get(key, 0.0))

    dropped = delta("policy.dropped_frames_stale") + delta("policy.dropped_frames_unparseable")
    rejected = sum(delta(f"bridge.{key}") for key in BRIDGE_COUNTERS if key != "chunks_accepted")
    return (
        f"{index:3d} | {extra} | {len(window.inference):6d} {rejected:5d} | {percentiles(window.inference)} | "
        f"{percentiles(window.capture_to_publish)} | {window.frames:6d} {dropped:5d} | {window.reenables:3d}"
    )


def soak(options: argparse.Namespace, checkpoint: Path, log: IO[bytes]) -> None:
    processes = start_nodes(checkpoint, options.camera_fps, options.mode, log)
    watcher = Watcher()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(watcher)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        bring_up(watcher)
        names = list(processes)
        window_s = options.window_minutes * 60.0
        windows = max(1, round(options.minutes / options.window_minutes))
        print(
            f"soak: {options.minutes:g} min, windows of {options.window_minutes:g} min, camera {options.camera_fps:g} "
            f"Hz, mode {options.mode}, checkpoint {checkpoint} (tiny, random)"
        )
        print(f"expected camera frames per window: {options.camera_fps * window_s:.0f}")
        rss_header = " ".join(f"{name[:14]:>14s} MiB (+d)" for name in names)
        print(
            f"win | {rss_header} | chunks rej | infer ms p50 p95 p99 | capture->pub p50 p95 p99 | "
            "frames dropped | re-enabled"
        )
        watcher.take_window()
        _, previous = watcher.take_window()
        last_rss = {name: rss_mib(p.pid) for name, p in processes.items()}
        for index in range(1, windows + 1):
            watch_window(watcher, processes, window_s)
            rss = {name: rss_mib(p.pid) for name, p in processes.items()}
            extra = " ".join(f"{rss[n]:8.1f} ({rss[n] - last_rss[n]:+6.1f})" for n in names)
            window, counters = watcher.take_window()
            print(report_row(index, window, counters, previous, extra), flush=True)
            previous, last_rss = counters, rss
    finally:
        executor.shutdown(timeout_sec=5.0)
        watcher.destroy_node()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="soak duration")
    parser.add_argument("--window-minutes", type=float, default=5.0, help="report every this many minutes")
    parser.add_argument("--camera-fps", type=float, default=30.0, help="the simulated camera's frame rate")
    parser.add_argument("--mode", choices=EXECUTION_MODES, default="sync", help="execution mode of both nodes")
    parser.add_argument("--node-log", type=Path, default=Path("soak_nodes.log"), help="the nodes' output goes here")
    options = parser.parse_args()
    if not (options.minutes > 0 and 0 < options.window_minutes <= options.minutes):
        parser.error(f"need 0 < --window-minutes <= --minutes, got {options.window_minutes} and {options.minutes}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory(prefix="videovla_soak_") as folder, options.node_log.open("wb") as log:
            print(f"node output: {options.node_log}")
            soak(options, write_tiny_checkpoint(Path(folder)), log)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
