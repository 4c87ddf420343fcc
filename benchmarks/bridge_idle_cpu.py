"""CPU use of an idle arm bridge, and that its stream keeps its rate (issue: an idle bridge used half a core).

BENCHMARK HARNESS: starts the real arm bridge node in its own process (`python -m videovla_ros.arm_bridge_node`,
pose_stream backend) with a simulated arm in this process that publishes ee_pose at --state-rate Hz (the
simulated arm of `sim:=true` reports at 50 Hz, rm_driver at up to 200 Hz), and measures the bridge process's CPU
time (user + system, from /proc/<pid>/stat) over --duration seconds in two phases:
  disabled  started, robot state arriving, not enabled (nothing streamed)
  holding   enabled, no chunks: the bridge streams the held pose to the arm (target_pose) at stream_rate_hz
CPU is in % of one core; the stream rate is counted at the subscriber, and the bridge's own (its /diagnostics
stream_rate_hz, over its last 200 ticks) is printed beside it: under nice -n 10 on a machine whose other jobs run
at nice 0, the bridge and this process are both starved of CPU and fall below the set rate.

Run: scripts/with_env.sh python benchmarks/bridge_idle_cpu.py [--duration 10] [--rate 100] [--state-rate 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import SetBool

from videovla_ros import qos

NAMESPACE = "/bridge_idle_bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class SimulatedArm(Node):
    """Reports a fixed end-effector pose on ee_pose and counts the targets the bridge streams."""

    def __init__(self, state_rate: float) -> None:
        super().__init__("idle_bench_arm", namespace=NAMESPACE)
        self.commands = 0
        self.bridge_rate_hz = float("nan")  # the bridge's own stream_rate_hz gauge
        self.lock = threading.Lock()
        self.state = PoseStamped()
        self.state.header.frame_id = "base_link"
        self.state.pose.position.x, self.state.pose.position.z = 0.3, 0.4
        self.state.pose.orientation.w = 1.0
        self.state_pub = self.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self.create_subscription(PoseStamped, "target_pose", self._on_command, qos.COMMAND)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.enable_client = self.create_client(SetBool, "arm_bridge/enable")
        self.create_timer(1.0 / state_rate, self._publish_state)

    def _publish_state(self) -> None:
        self.state.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(self.state)

    def _on_command(self, msg: PoseStamped) -> None:
        with self.lock:
            self.commands += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("arm_bridge"):
                for entry in status.values:
                    if entry.key == "stream_rate_hz":
                        with self.lock:
                            self.bridge_rate_hz = float(entry.value)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (its threads included) [s]."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure(pid: int, arm: SimulatedArm, duration: float) -> tuple[float, float, float]:
    """(CPU % of one core, target_pose commands per second, the bridge's own stream rate at the end [Hz]) over
    `duration` s."""
    with arm.lock:
        before_commands = arm.commands
    before_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(duration)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - before_cpu
    with arm.lock:
        commands, bridge_rate = arm.commands - before_commands, arm.bridge_rate_hz
    return 100.0 * cpu / elapsed, commands / elapsed, bridge_rate


def enable(arm: SimulatedArm) -> None:
    future = arm.enable_client.call_async(SetBool.Request(data=True))
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not (future.done() and future.result().success):
        raise RuntimeError(f"enable failed: {future.result().message if future.done() else 'no response'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=100.0, help="the bridge's stream_rate_hz")
    parser.add_argument("--state-rate", type=float, default=100.0, help="rate of the simulated arm's ee_pose [Hz]")
    options = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    rclpy.init()
    command = [sys.executable, "-m", "videovla_ros.arm_bridge_node", "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    command += ["-p", f"stream_rate_hz:={options.rate}", "-p", "state_watchdog:=2.0", "--log-level", "warn"]
    bridge = subprocess.Popen(command, env=dict(os.environ))
    arm = SimulatedArm(options.state_rate)
    executor = SingleThreadedExecutor()
    executor.add_node(arm)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        if not arm.enable_client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError("the bridge did not come up")
        time.sleep(2.0)  # start-up work (imports, discovery) is not idle time
        disabled = measure(bridge.pid, arm, options.duration)
        enable(arm)
        time.sleep(1.0)
        holding = measure(bridge.pid, arm, options.duration)
        print(
            f"bridge_idle_cpu: stream_rate_hz {options.rate:g}, ee_pose {options.state_rate:g} Hz, "
            f"{options.duration:g} s per phase, {os.cpu_count()} CPUs"
        )
        for name, (cpu, rate, bridge_rate) in (("disabled", disabled), ("holding", holding)):
            own = f" (the bridge's own: {bridge_rate:5.1f} Hz)" if name == "holding" else ""
            print(f"  {name:9s} CPU {cpu:5.1f} % of a core, target_pose {rate:6.1f} Hz{own}")
    finally:
        executor.shutdown(timeout_sec=5.0)
        arm.destroy_node()
        bridge.terminate()
        bridge.wait(timeout=10)
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
