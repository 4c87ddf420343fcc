"""Arm bridge timing: streaming rate and jitter over real DDS, and arm idle time in sync vs async mode.

BENCHMARK HARNESS, not part of the system: it starts the real arm bridge node in its own process
(`python -m videovla_ros.arm_bridge_node`, pose_stream backend) and plays everything around it in this process:
  - a simulated arm that moves to every streamed target_pose at once and reports it on ee_pose (100 Hz);
  - a simulated policy that takes --policy-latency seconds (default 1.1 s, VideoVLA's measured latency) per
    chunk: in sync mode it answers each chunk_request that much later, with the request's stamp as the
    capture stamp; in async mode it publishes back to back, each chunk stamped --policy-latency seconds
    before its publication (when its image would have been captured).
Measured at the subscriber (this process): the rate and period jitter of the bridge's ~/target_pose stream,
and the fraction of time the commanded pose stands still after the first chunk (the arm is idle).

Run: scripts/with_env.sh python benchmarks/bridge_timing.py [--duration 12] [--rate 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, time_to_ns, to_msg

NAMESPACE = "/bridge_bench"
DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
START = (0.3, 0.0, 0.4)
STEP = 0.005  # m per row: 5 cm/s at 10 Hz, well inside the default limits


@dataclass
class Scenario:
    name: str
    mode: str
    latency_compensation: float
    send_chunks: bool


class Harness(Node):
    """Simulated arm + simulated policy + measurement, all talking to the bridge over DDS."""

    def __init__(self, scenario: Scenario, policy_latency: float) -> None:
        super().__init__("bench_harness", namespace=NAMESPACE)
        self.scenario, self.policy_latency = scenario, policy_latency
        self.lock = threading.Lock()
        self.arm = PoseStamped()
        self.arm.header.frame_id = "base_link"
        self.arm.pose.position.x, self.arm.pose.position.y, self.arm.pose.position.z = START
        self.arm.pose.orientation.w = 1.0
        self.arrivals: list[tuple[float, np.ndarray]] = []  # (monotonic s, position) of each ~/target_pose
        self.first_chunk_at: float | None = None
        self.sequence = 0
        self.bridge_gauges: dict[str, str] = {}
        self.running = True
        self.state_pub = self.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self.chunk_pub = self.create_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK)
        self.create_subscription(PoseStamped, "target_pose", self._on_command, qos.COMMAND)
        self.create_subscription(PoseStamped, "arm_bridge/target_pose", self._on_target, qos.COMMAND)
        self.create_subscription(Header, "chunk_request", self._on_request, qos.COMMAND)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.enable_client = self.create_client(SetBool, "arm_bridge/enable")
        self.create_timer(0.01, self._publish_state)

    def _publish_state(self) -> None:
        with self.lock:
            msg = PoseStamped(header=self.arm.header, pose=self.arm.pose)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def _on_command(self, msg: PoseStamped) -> None:
        with self.lock:
            self.arm = msg

    def _on_target(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self.lock:
            self.arrivals.append((time.monotonic(), np.array([p.x, p.y, p.z])))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "arm_bridge" in status.name:
                self.bridge_gauges = {kv.key: kv.value for kv in status.values}

    def _on_request(self, msg: Header) -> None:
        if self.scenario.send_chunks and self.scenario.mode == "sync":
            capture_ns = time_to_ns(msg.stamp)
            threading.Timer(self.policy_latency, self._publish_chunk, args=(capture_ns,)).start()

    def run_async_policy(self) -> None:
        """Back-to-back inference: a chunk every policy_latency s, captured when its inference started."""
        while self.running:
            capture_ns = self.get_clock().now().nanoseconds
            time.sleep(self.policy_latency)
            if self.running:
                self._publish_chunk(capture_ns)

    def _publish_chunk(self, capture_ns: int) -> None:
        if not self.running:
            return
        rows = np.zeros((6, 7))
        rows[:, 0] = STEP if self.sequence % 2 == 0 else -STEP  # back and forth, to stay in the workspace
        rows[:, 6] = 1.0
        chunk = TimedChunk(
            capture_time_ns=capture_ns,
            frame_id="base_link",
            instruction="benchmark",
            sequence=self.sequence,
            actions=rows,
            dim_names=DIMS,
            time_step=0.1,
            execute_rows=3,
        )
        self.sequence += 1
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
        self.chunk_pub.publish(to_msg(chunk))


def start_bridge(scenario: Scenario, rate: float) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "videovla_ros.arm_bridge_node",
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
        "-p",
        f"execution_mode:={scenario.mode}",
        "-p",
        f"stream_rate_hz:={rate}",
        "-p",
        f"latency_compensation:={scenario.latency_compensation}",
        "-p",
        "max_chunk_age:=3.0",
        "--log-level",
        "warn",
    ]
    return subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run(scenario: Scenario, duration: float, rate: float, policy_latency: float) -> dict[str, float | str]:
    bridge = start_bridge(scenario, rate)
    harness = Harness(scenario, policy_latency)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(harness)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        if not harness.enable_client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError(f"the bridge did not come up: {bridge.stderr.read() if bridge.poll() else 'no service'}")
        time.sleep(0.5)  # a little robot state history before enabling
        future = harness.enable_client.call_async(SetBool.Request(data=True))
        deadline = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not (future.done() and future.result().success):
            raise RuntimeError(f"enable failed: {future.result().message if future.done() else 'no response'}")
        policy = None
        if scenario.send_chunks and scenario.mode == "async":
            policy = threading.Thread(target=harness.run_async_policy, daemon=True)
            policy.start()
        time.sleep(duration)
        harness.running = False
        time.sleep(1.2)  # one more diagnostics message
        with harness.lock:
            arrivals = list(harness.arrivals)
        return summarize(arrivals, harness.first_chunk_at, harness.bridge_gauges, rate)
    finally:
        harness.running = False
        executor.shutdown(timeout_sec=5.0)
        harness.destroy_node()
        bridge.terminate()
        bridge.wait(timeout=10)


def summarize(
    arrivals: list[tuple[float, np.ndarray]], first_chunk_at: float | None, gauges: dict[str, str], rate: float
) -> dict[str, float | str]:
    times = np.array([t for t, _ in arrivals])
    periods = np.diff(times)
    result: dict[str, float | str] = {
        "messages": float(len(arrivals)),
        "rate_hz": float(1.0 / periods.mean()),
        "jitter_std_ms": float(periods.std() * 1e3),
        "period_p99_ms": float(np.percentile(periods, 99) * 1e3),
        "period_max_ms": float(periods.max() * 1e3),
        "late_ticks_over_2x_%": float(100.0 * np.mean(periods > 2.0 / rate)),
    }
    if first_chunk_at is not None:
        positions = np.array([p for _, p in arrivals])
        moving = np.linalg.norm(np.diff(positions, axis=0), axis=1) > 1e-9
        after = times[1:] >= first_chunk_at
        idle_time = float(np.sum(periods[after & ~moving]))
        total_time = float(np.sum(periods[after]))
        result["idle_fraction_subscriber"] = idle_time / total_time if total_time else float("nan")
    for key in ("idle_fraction", "chunks_accepted", "chunks_rejected_late", "rows_dropped_late", "chunk_requests"):
        if key in gauges:
            result[f"bridge_{key}"] = gauges[key]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per scenario")
    parser.add_argument("--rate", type=float, default=100.0, help="the bridge's stream_rate_hz")
    parser.add_argument("--policy-latency", type=float, default=1.1, help="simulated seconds per chunk")
    options = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    latency = options.policy_latency
    scenarios = [
        Scenario("stream only (holding, no chunks)", "async", 0.0, send_chunks=False),
        Scenario("sync", "sync", 0.0, send_chunks=True),
        Scenario(f"async, latency_compensation {latency + 0.05:.2f} s", "async", latency + 0.05, send_chunks=True),
        Scenario("async, strict timing (latency_compensation 0)", "async", 0.0, send_chunks=True),
    ]
    rclpy.init()
    try:
        print(
            f"bridge_timing: stream_rate_hz {options.rate:g}, policy latency {latency:g} s, {options.duration:g} s each"
        )
        for scenario in scenarios:
            result = run(scenario, options.duration, options.rate, latency)
            print(f"\n[{scenario.name}]")
            for key, value in result.items():
                print(f"  {key:28s} {value:.4g}" if isinstance(value, float) else f"  {key:28s} {value}")
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
