"""Arm bridge timing: stream rate and jitter over real DDS, and, per policy latency, arm idle time and the velocity
and acceleration steps at chunk switches in the sync, async and rtc (real-time chunking) execution modes.

BENCHMARK HARNESS, not part of the system: it starts the real arm bridge node in its own process
(`python -m videovla_ros.arm_bridge_node`, pose_stream backend) and plays everything around it in this process:
  - a simulated arm that moves to every streamed target at once and reports it on ee_pose (100 Hz);
  - a policy that answers after --policy-latencies seconds: in sync mode each chunk_request, stamped with the
    request; in async mode back to back, each chunk stamped when its inference started (its image's capture);
    in rtc mode each rtc_chunk_request, with the prefix the policy node would compute
    (videovla_ros.realtime_chunking.prefix_for_capture). The policy (--policy) is either
      scripted: a policy that changes its mind every chunk (5 cm/s along +x, then -x, ...), the case RTC is for;
                given a prefix it answers as a perfectly converged RTC sampler: row i = W_i prefix_i +
                (1 - W_i) intent_i with the soft mask W (videovla_model.rtc.prefix_weights);
      tiny:     the real tiny VideoVLA sampler on CPU (random weights; normaliser mapping [-1, 1] to +-5 mm and
                +-0.02 rad per row) behind the policy contract, the prefix inpainted by the sampler; each answer
                takes max(latency, the sampler's own time).
Measured from the bridge's ~/target_pose stream (stamped with the time each target was sampled), from the first
chunk to the end of the run: idle fraction (target did not move); at chunk switches (publication of a chunk to
blend_duration + 0.1 s later) the largest change of velocity between consecutive targets |dv| [m/s] and the
largest acceleration |dv| / dt [m/s^2], the peak speed and the ticks at the bridge's speed limit (all from the
second chunk on: the first starts from rest, with rows already due, in every mode); accepted and late chunks.

Run: scripts/with_env.sh python benchmarks/bridge_timing.py [--policy scripted|tiny] [--duration 12]
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

from videovla_model.rtc import prefix_weights
from videovla_msgs.msg import ActionChunk, ChunkRequest
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, time_to_ns, to_msg
from videovla_ros.realtime_chunking import Prefix, from_msg, prefix_for_capture

NAMESPACE = "/bridge_bench"
DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
START = (0.3, 0.0, 0.4)
STEP = 0.005  # m per row: 5 cm/s at 10 Hz, well inside the default limits
TIME_STEP = 0.1
BLEND = 0.15  # the bridge's default blend_duration [s]
SWITCH_WINDOW = BLEND + 0.1
MAX_SPEED = 0.25  # the bridge's default max_linear_speed [m/s]
TRANSPORT = 0.05  # allowance for DDS and scheduling on a loaded machine [s]


@dataclass(frozen=True)
class Chunking:
    """rows per chunk (6 in the paper) and rows executed per chunk in sync mode (3)."""

    rows: int
    execute_rows: int

    @property
    def horizon(self) -> float:
        return self.rows * TIME_STEP


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str
    latency_compensation: float
    send_chunks: bool


class ScriptedPolicy:
    """Changes its mind every chunk; honours a prefix as a converged RTC sampler would."""

    def __init__(self, chunking: Chunking) -> None:
        self.chunking = chunking

    def answer(self, sequence: int, prefix: Prefix | None) -> np.ndarray:
        rows = np.zeros((self.chunking.rows, 7))
        rows[:, 0] = STEP if sequence % 2 == 0 else -STEP
        rows[:, 6] = 1.0
        if prefix is not None:
            count = len(prefix.actions)
            weights = prefix_weights(count, prefix.inference_delay_rows)[:, None]
            rows[:count] = weights * prefix.actions + (1.0 - weights) * rows[:count]
        return rows


class TinySamplerPolicy:
    """The real tiny VideoVLA sampler behind the policy contract (random weights, small steps)."""

    def __init__(self, chunking: Chunking) -> None:
        import dataclasses

        import torch

        from videovla_model.configuration import VideoVLAConfig
        from videovla_model.modeling import VideoVLAModel
        from videovla_model.normalization import ActionNormalizer
        from videovla_model.policy import VideoVLAPolicy

        torch.manual_seed(0)
        torch.set_num_threads(1)
        config = dataclasses.replace(
            VideoVLAConfig.preset("tiny"), chunk_rows=chunking.rows, execute_rows=chunking.execute_rows
        )
        self.chunking = chunking
        span = np.array([STEP, STEP, STEP, 0.02, 0.02, 0.02, 1.0])
        normalizer = ActionNormalizer(DIMS, low=(*(-span[:6]), 0.0), high=tuple(span), gripper_dims=(6,))
        self.policy = VideoVLAPolicy(VideoVLAModel(config, normalizer=normalizer), seed=0)
        self.image = np.random.default_rng(0).integers(0, 256, (*config.image_size, 3), dtype=np.uint8)

    def answer(self, sequence: int, prefix: Prefix | None) -> np.ndarray:
        from videovla_model.contract import Observation

        observation = Observation(
            self.image,
            "benchmark",
            action_prefix=None if prefix is None else prefix.actions,
            inference_delay_rows=0 if prefix is None else prefix.inference_delay_rows,
        )
        return self.policy.infer(observation).actions.astype(np.float64)


class Harness(Node):
    """Simulated arm + policy + measurement, all talking to the bridge over DDS."""

    def __init__(self, scenario: Scenario, latency: float, policy: ScriptedPolicy | TinySamplerPolicy) -> None:
        self.chunking = policy.chunking
        super().__init__("bench_harness", namespace=NAMESPACE)
        self.scenario, self.latency, self.policy = scenario, latency, policy
        self.lock = threading.Lock()
        self.policy_lock = threading.Lock()  # one inference at a time, as in the policy node
        self.arm = PoseStamped()
        self.arm.header.frame_id = "base_link"
        self.arm.pose.position.x, self.arm.pose.position.y, self.arm.pose.position.z = START
        self.arm.pose.orientation.w = 1.0
        self.targets: list[tuple[int, np.ndarray]] = []  # (stamp ns, position) of each ~/target_pose
        self.switches_ns: list[int] = []
        self.sequence = 0
        self.bridge_gauges: dict[str, str] = {}
        self.running = True
        self.state_pub = self.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self.chunk_pub = self.create_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK)
        self.create_subscription(PoseStamped, "target_pose", self._on_command, qos.COMMAND)
        self.create_subscription(PoseStamped, "arm_bridge/target_pose", self._on_target, qos.COMMAND)
        self.create_subscription(Header, "chunk_request", self._on_request, qos.COMMAND)
        self.create_subscription(ChunkRequest, "rtc_chunk_request", self._on_rtc_request, qos.COMMAND)
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
            self.targets.append((time_to_ns(msg.header.stamp), np.array([p.x, p.y, p.z])))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "arm_bridge" in status.name:
                self.bridge_gauges = {kv.key: kv.value for kv in status.values}

    def _on_request(self, msg: Header) -> None:
        if self.scenario.send_chunks and self.scenario.mode == "sync":
            self._spawn(time_to_ns(msg.stamp), None)

    def _on_rtc_request(self, msg: ChunkRequest) -> None:
        if self.scenario.send_chunks and self.scenario.mode == "rtc":
            # The policy node takes the first frame captured at or after the request: here, now.
            capture_ns = self.get_clock().now().nanoseconds
            prefix = prefix_for_capture(from_msg(msg), capture_ns, self.chunking.rows, TIME_STEP, DIMS)
            self._spawn(capture_ns, prefix)

    def _spawn(self, capture_ns: int, prefix: Prefix | None) -> None:
        threading.Thread(target=self._answer, args=(capture_ns, prefix), daemon=True).start()

    def run_async_policy(self) -> None:
        """Back-to-back inference, each chunk captured when its inference started."""
        while self.running:
            self._answer(self.get_clock().now().nanoseconds, None)

    def _answer(self, capture_ns: int, prefix: Prefix | None) -> None:
        with self.policy_lock:
            start = time.monotonic()
            rows = self.policy.answer(self.sequence, prefix)
            time.sleep(max(0.0, self.latency - (time.monotonic() - start)))
            if not self.running:
                return
            chunk = TimedChunk(
                capture_time_ns=capture_ns,
                frame_id="base_link",
                instruction="benchmark",
                sequence=self.sequence,
                actions=rows,
                dim_names=DIMS,
                time_step=TIME_STEP,
                execute_rows=self.chunking.execute_rows,
            )
            self.sequence += 1
            with self.lock:
                self.switches_ns.append(self.get_clock().now().nanoseconds)
            self.chunk_pub.publish(to_msg(chunk))


def start_bridge(scenario: Scenario, rate: float) -> subprocess.Popen[str]:
    parameters = {
        "execution_mode": scenario.mode,
        "stream_rate_hz": rate,
        "latency_compensation": scenario.latency_compensation,
        "max_chunk_age": 3.0,
        "state_watchdog": 2.0,  # a loaded machine delays the simulated arm's state now and then
        "blend_duration": BLEND,
    }
    command = [sys.executable, "-m", "videovla_ros.arm_bridge_node", "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    command += ["--log-level", "error"]
    return subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def call_enable(harness: Harness, bridge: subprocess.Popen[str]) -> None:
    if not harness.enable_client.wait_for_service(timeout_sec=30.0):
        raise RuntimeError(f"the bridge did not come up: {bridge.stderr.read() if bridge.poll() else 'no service'}")
    time.sleep(0.5)  # a little robot state history before enabling
    deadline = time.monotonic() + 20.0
    while True:  # retried while the state is late (a loaded machine)
        future = harness.enable_client.call_async(SetBool.Request(data=True))
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if future.done() and future.result().success:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"enable failed: {future.result().message if future.done() else 'no response'}")
        time.sleep(0.2)


def run(
    scenario: Scenario, duration: float, rate: float, latency: float, policy: ScriptedPolicy | TinySamplerPolicy
) -> dict[str, float]:
    bridge = start_bridge(scenario, rate)
    harness = Harness(scenario, latency, policy)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(harness)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        call_enable(harness, bridge)
        if scenario.send_chunks and scenario.mode == "async":
            threading.Thread(target=harness.run_async_policy, daemon=True).start()
        time.sleep(duration)
        harness.running = False
        stop_ns = harness.get_clock().now().nanoseconds
        time.sleep(1.2)  # one more diagnostics message
        with harness.lock:
            targets, switches = list(harness.targets), list(harness.switches_ns)
        return summarize([t for t in targets if t[0] <= stop_ns], switches, harness.bridge_gauges, MAX_SPEED)
    finally:
        harness.running = False
        executor.shutdown(timeout_sec=5.0)
        harness.destroy_node()
        bridge.terminate()
        bridge.wait(timeout=10)


def summarize(
    targets: list[tuple[int, np.ndarray]], switches_ns: list[int], gauges: dict[str, str], max_speed: float
) -> dict[str, float]:
    """Stream rate and jitter; with chunks, idle % from the first chunk on, and the switch metrics from the second
    chunk on (the first starts from rest with rows already due, the same in every mode)."""
    times = np.array([t for t, _ in targets], dtype=np.int64)
    positions = np.array([p for _, p in targets])
    periods = np.diff(times) / 1e9
    result = {"rate_hz": float(1.0 / periods.mean()), "jitter_ms": float(periods.std() * 1e3)}
    for key in ("chunks_accepted", "chunks_rejected_late"):
        result[key] = float(gauges.get(key, 0))
    if len(switches_ns) < 2:
        return result
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    after = times[1:] >= switches_ns[0]
    result["idle_%"] = 100.0 * float(np.sum(periods[after & (steps < 1e-9)]) / np.sum(periods[after]))
    velocity = np.diff(positions, axis=0) / periods[:, None]  # between targets k and k + 1
    speed = np.linalg.norm(velocity, axis=1)
    dv = np.linalg.norm(np.diff(velocity, axis=0), axis=1)  # at target k + 1
    acceleration = dv / ((times[2:] - times[:-2]) / 2e9)
    at = times[1:-1]
    near = np.zeros(len(at), dtype=bool)
    for switch in switches_ns[1:]:
        near |= (at >= switch) & (at <= switch + round(SWITCH_WINDOW * 1e9))
    steady = times[1:] >= switches_ns[1]
    result["switch_dv"] = float(dv[near].max()) if near.any() else 0.0
    result["switch_acc"] = float(acceleration[near].max()) if near.any() else 0.0
    result["peak_speed"] = float(speed[steady].max())
    result["speed_limited"] = float(np.sum(speed[steady] >= 0.999 * max_speed))
    return result


def scenarios(latency: float, chunking: Chunking) -> list[Scenario]:
    # A policy about as slow as the chunk's horizon or slower needs its rows delayed (README: Execution modes),
    # or every row is due before the chunk arrives.
    compensation = 0.0 if latency + TRANSPORT < chunking.horizon else latency + TRANSPORT
    suffix = f", latency_compensation {compensation:g} s" if compensation else ""
    return [
        Scenario("sync", "sync", 0.0, send_chunks=True),
        Scenario(f"async{suffix}", "async", compensation, send_chunks=True),
        Scenario(f"rtc{suffix}", "rtc", compensation, send_chunks=True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per scenario")
    parser.add_argument("--rate", type=float, default=100.0, help="the bridge's stream_rate_hz")
    parser.add_argument("--policy-latencies", type=float, nargs="+", default=[0.3, 0.6, 1.1], help="seconds per chunk")
    parser.add_argument("--policy", choices=("scripted", "tiny"), default="scripted", help="who answers")
    parser.add_argument("--chunk-rows", type=int, default=6, help="rows per chunk (execute_rows: half)")
    options = parser.parse_args()
    if options.chunk_rows < 2:
        parser.error(f"--chunk-rows must be >= 2, got {options.chunk_rows}")
    chunking = Chunking(options.chunk_rows, options.chunk_rows // 2)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    policy = ScriptedPolicy(chunking) if options.policy == "scripted" else TinySamplerPolicy(chunking)
    rclpy.init()
    try:
        print(f"bridge_timing: stream_rate_hz {options.rate:g}, {options.policy} policy, {options.duration:g} s each, ")
        print(f"chunks of {chunking.rows} rows x {TIME_STEP:g} s (horizon {chunking.horizon:g} s), blend {BLEND:g} s")
        idle = run(
            Scenario("stream only", "async", 0.0, send_chunks=False), options.duration, options.rate, 0.0, policy
        )
        print(f"stream only (holding): {idle['rate_hz']:.1f} Hz, period jitter {idle['jitter_ms']:.2f} ms (std)\n")
        header = "| latency | mode | idle % | max dv at switch [m/s] | max accel at switch [m/s²] | peak speed [m/s] "
        print(header + f"| ticks at the speed limit ({MAX_SPEED:g} m/s) | chunks accepted / late |")
        print("|---|---|---|---|---|---|---|---|")
        for latency in options.policy_latencies:
            for scenario in scenarios(latency, chunking):
                r = run(scenario, options.duration, options.rate, latency, policy)
                print(
                    f"| {latency:g} s | {scenario.name} | {r.get('idle_%', float('nan')):.1f} | "
                    f"{r.get('switch_dv', float('nan')):.3f} | {r.get('switch_acc', float('nan')):.1f} | "
                    f"{r.get('peak_speed', float('nan')):.3f} | {r.get('speed_limited', float('nan')):.0f} | "
                    f"{r['chunks_accepted']:.0f} / {r['chunks_rejected_late']:.0f} |",
                    flush=True,
                )
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
