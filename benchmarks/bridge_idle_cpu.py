"""CPU use of an idle arm bridge, and that its stream keeps its rate (issue: an idle bridge used half a core).

BENCHMARK HARNESS: starts the real arm bridge node in its own process (pose_stream backend, as
benchmarks/bridge_timing.py does) with a simulated arm publishing ee_pose at --state-rate Hz in this process (the
simulated arm of `sim:=true` reports at 50 Hz, rm_driver at up to 200 Hz), and measures
the bridge process's CPU time (user + system, from /proc/<pid>/stat) over --duration seconds in two phases:
  disabled  started, robot state arriving, not enabled (nothing streamed)
  holding   enabled, no chunks: the bridge streams the held pose to the arm (target_pose) at stream_rate_hz
CPU is in % of one core; the stream rate is measured at the subscriber.

Run: scripts/with_env.sh python benchmarks/bridge_idle_cpu.py [--duration 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import rclpy
from bridge_timing import Harness, Scenario, start_bridge
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import SetBool

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (its threads included) [s]."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure(pid: int, harness: Harness, duration: float) -> tuple[float, float]:
    """(CPU % of one core, target_pose commands per second) over `duration` s."""
    with harness.lock:
        before_messages = len(harness.arrivals)
    before_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(duration)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - before_cpu
    with harness.lock:
        messages = len(harness.arrivals) - before_messages
    return 100.0 * cpu / elapsed, messages / elapsed


def enable(harness: Harness) -> None:
    future = harness.enable_client.call_async(SetBool.Request(data=True))
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
    scenario = Scenario("idle", "sync", 0.0, send_chunks=False)
    bridge = start_bridge(scenario, options.rate)
    harness = Harness(scenario, policy_latency=1.0, state_rate=options.state_rate)
    executor = SingleThreadedExecutor()
    executor.add_node(harness)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        if not harness.enable_client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError("the bridge did not come up")
        time.sleep(2.0)  # start-up work (imports, discovery) is not idle time
        disabled = measure(bridge.pid, harness, options.duration)
        enable(harness)
        time.sleep(1.0)
        holding = measure(bridge.pid, harness, options.duration)
        print(
            f"bridge_idle_cpu: stream_rate_hz {options.rate:g}, ee_pose {options.state_rate:g} Hz, "
            f"{options.duration:g} s per phase, {os.cpu_count()} CPUs"
        )
        for name, (cpu, rate) in (("disabled", disabled), ("holding", holding)):
            print(f"  {name:9s} CPU {cpu:5.1f} % of a core, target_pose {rate:6.1f} Hz")
    finally:
        harness.running = False
        executor.shutdown(timeout_sec=5.0)
        harness.destroy_node()
        bridge.terminate()
        bridge.wait(timeout=10)
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
