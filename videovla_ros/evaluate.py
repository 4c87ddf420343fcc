"""`videovla-eval` and `videovla-demo`: the policy driving the simulated arm in closed loop, through ROS.

The real nodes talk over real topics and services. The simulated arm runs in a child process of its own (it
is the robot, and its physics thread must keep real time, which it cannot while sharing one Python interpreter
with the policy's inference); the policy node, the arm bridge and the evaluator share this process and one
MultiThreadedExecutor:

    sim_arm (SimArmNode) --image_raw, ee_pose--> videovla_policy (PolicyNode) --action_chunk--> arm_bridge
          ^                                                                     (ArmBridgeNode, pose_stream)
          +------------------------- target_pose, gripper_command --------------------------+

plus an evaluator node `videovla_eval` that does what a person at the robot would do. Per episode it disables
the bridge (`arm_bridge/enable` false), starts the next seeded scene (`sim_arm/reset`), publishes the scene's
instruction on `instruction`, enables the bridge and waits for `sim_arm/task_success` or the time limit. It
reads `action_chunk` (inference_time, arrival times), `sim_arm/grasped_objects` (what the gripper held during
the episode, so the report can tell a wrong grasp from no grasp), and for the first few episodes `image_raw` and
`imagination/clip`, which it turns into a GIF of imagined (left) vs actual (right) frames. Subscribing to the
imagination makes the policy decode video, so those episodes' inference times include decoding.

    videovla-eval --checkpoint checkpoints/videovla-sim-small --tasks pick --episodes 50 --output outputs/eval
    videovla-demo --instruction "pick up the red cube"
    videovla-eval --policy expert --tasks pick --episodes 50     # the scripted expert, through the same nodes

With `--policy expert` the policy node asks the simulator's scripted expert, which reads the privileged
`sim_arm/scene_state` (see `videovla_ros.policy_factory`); it measures the loop (nodes, bridge, timing)
apart from learning. `--policy-latency` adds wall seconds to every inference (the expert with a slow model's timing).

Time (`--sim-time`, the default): the simulated arm publishes /clock and every node runs with use_sim_time, so a
loaded machine slows the simulation down instead of making it skip ahead, and in sync mode the simulation waits
while the policy thinks; `--time-limit` is then in simulated seconds, and the same seeds give the same episodes
whatever the load. `--no-sim-time` runs against the wall clock (the policy's latency then costs the arm time, as on
a real robot). The report gives both the wall and the simulated seconds per episode.

Seeds: task t's episode i uses seed `--seed + i`; the shipped demonstrations were recorded with seeds from
1000 on, so the default seeds 0.. are placements the model has not seen.

Evaluator node `videovla_eval` (relative names, in --namespace):
  Publishes   instruction (std_msgs/String, INSTRUCTION)
  Subscribes  action_chunk (ActionChunk, ACTION_CHUNK), sim_arm/task_success (std_msgs/Bool, ROBOT_STATE),
              sim_arm/grasped_objects (std_msgs/String, ROBOT_STATE), ee_pose (PoseStamped, ROBOT_STATE);
              while recording a video also image_raw (Image, CAMERA) and
              imagination/clip (VideoClip, IMAGINATION)
  Calls       sim_arm/reset (std_srvs/Trigger), arm_bridge/enable (std_srvs/SetBool)
The policy node and the bridge read their parameters from --params-file (default: the package's
config/realman.yaml) keyed by node name, then the package's config/sim.yaml (the bridge clamps to the simulated
arm's workspace); the evaluator overrides only what the evaluation fixes (checkpoint,
backend, mode, stream rate, chunk age); the simulated arm gets its scene (task, seed, image size) on its
command line and node defaults otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.arm_bridge_node import ArmBridgeNode
from videovla_ros.evaluation_report import (
    EpisodeResult,
    FrameTimeline,
    ImaginedClip,
    format_summary,
    instruction_problem,
    named_object,
    side_by_side,
    summarize,
    write_gif,
    write_report,
)
from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.image_conversion import image_msg_to_rgb
from videovla_ros.launch_plan import default_params_file, sim_params_file
from videovla_ros.node_runner import make_executor
from videovla_ros.policy_factory import POLICY_SOURCES
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode
from videovla_sim.tasks import TASK_FAMILIES, sample_episode

NODE_NAME = "videovla_eval"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "videovla-sim-small"
SERVICE_TIMEOUT = 15.0  # s; a reset renders a new scene, an enable waits for fresh robot state
# Wall seconds the simulated time may stand still (the sim waits at most 30 s for the policy) before the
# evaluation gives up on the simulated arm.
SIM_STALL_LIMIT = 60.0
STATE_SETTLE = 0.3  # s after a reset before enabling, so the bridge holds the new scene's pose
QUIET_MIN = 0.3  # s without chunks before a disabled system counts as quiet (no inference in flight)
QUIET_MAX = 10.0


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation (or demo) run; see `videovla-eval --help` for each field."""

    checkpoint: str
    tasks: tuple[str, ...] = ("pick",)
    policy: str = "checkpoint"
    episodes: int = 50
    seed: int = 0
    mode: str = "sync"
    time_limit: float = 30.0
    videos: int = 3
    output: str = "outputs/eval"
    image_size: int = 64
    namespace: str = "videovla_eval"
    params_file: str = ""
    num_inference_steps: int = 0
    guidance_scale: float = -1.0
    real_time_factor: float = 1.0
    sim_time: bool = True
    policy_latency: float = 0.0
    chunk_watchdog: float = 0.0
    state_watchdog: float = 0.0
    max_chunk_age: float = 4.0
    stream_rate_hz: float = 25.0
    # A 9-frame imagination spans 0.8 s, about three sync-mode chunks of 3 rows: every third one covers the video.
    imagination_every: int = 3

    def __post_init__(self) -> None:
        if self.policy not in POLICY_SOURCES:
            raise ValueError(f"policy must be one of {list(POLICY_SOURCES)}, got {self.policy!r}")
        if self.policy == "checkpoint" and not self.checkpoint:
            raise ValueError("checkpoint must name a checkpoint directory, got ''")
        if not self.tasks:
            raise ValueError("tasks must name at least one task family or instruction")
        if self.mode not in EXECUTION_MODES:
            raise ValueError(f"mode must be one of {list(EXECUTION_MODES)}, got {self.mode!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 s, got {self.time_limit}")
        if self.videos < 0:
            raise ValueError(f"videos must be >= 0, got {self.videos}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 px, got {self.image_size}")
        if not self.real_time_factor > 0:
            raise ValueError(f"real_time_factor must be > 0, got {self.real_time_factor}")
        if not 0 < self.max_chunk_age < 5.0:
            raise ValueError(
                f"max_chunk_age must be in (0, 5) s (below the bridge's history_duration), got {self.max_chunk_age}"
            )
        if not self.stream_rate_hz > 0:
            raise ValueError(f"stream_rate_hz must be > 0 Hz, got {self.stream_rate_hz}")
        if self.policy_latency < 0:
            raise ValueError(f"policy_latency must be >= 0 s, got {self.policy_latency}")
        for name in ("chunk_watchdog", "state_watchdog"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 s (0 = the params file's), got {getattr(self, name)}")
        if self.imagination_every < 1:
            raise ValueError(f"imagination_every must be >= 1 chunk, got {self.imagination_every}")

    @property
    def policy_label(self) -> str:
        """What drove the arm, for reports: the checkpoint folder or the policy source."""
        return self.checkpoint if self.policy == "checkpoint" else f"{self.policy} policy"


class EvalProbe(Node):
    """The evaluator's node: sends instructions, calls the sim and bridge services, and records what it sees."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._lock = threading.Lock()
        self._instruction_pub = self.create_publisher(String, "instruction", qos.INSTRUCTION)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.ACTION_CHUNK)
        self.create_subscription(Bool, "sim_arm/task_success", self._on_success, qos.ROBOT_STATE)
        self.create_subscription(String, "sim_arm/grasped_objects", self._on_grasped, qos.ROBOT_STATE)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, qos.ROBOT_STATE)
        self._reset_client = self.create_client(Trigger, "sim_arm/reset")
        self._enable_client = self.create_client(SetBool, "arm_bridge/enable")
        self._chunks: list[tuple[float, ActionChunk]] = []
        """(monotonic arrival time [s], message) of every chunk since `clear`."""
        self._success = False
        self._success_stamp: float | None = None
        """The simulated arm's time [s] (newest ee_pose stamp) when success was first reported since `clear`."""
        self._grasped: set[str] = set()
        """Every object the sim reported between the fingers since `clear`."""
        self._pose: PoseStamped | None = None
        self._pose_seen_at = time.monotonic()
        """Wall time at which the newest ee_pose stamp first arrived (a simulated clock that stands still)."""
        self._recording: list[Subscription] = []
        self._camera = FrameTimeline()
        self._clips: list[ImaginedClip] = []

    # ---- callbacks: record ------------------------------------------------------------------------------

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self._lock:
            self._chunks.append((time.monotonic(), msg))

    def _on_success(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if not self._success and self._pose is not None:
                    self._success_stamp = time_to_ns(self._pose.header.stamp) / 1e9
                self._success = True

    def _on_grasped(self, msg: String) -> None:
        names = {name for name in msg.data.split(",") if name}
        if names:
            with self._lock:
                self._grasped |= names

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._lock:
            if self._pose is None or time_to_ns(msg.header.stamp) != time_to_ns(self._pose.header.stamp):
                self._pose_seen_at = time.monotonic()
            self._pose = msg

    def _on_image(self, msg: Image) -> None:
        frame = image_msg_to_rgb(msg)
        with self._lock:
            self._camera.add(time_to_ns(msg.header.stamp), frame)

    def _on_clip(self, msg: VideoClip) -> None:
        frames = np.stack([image_msg_to_rgb(f) for f in msg.frames]) if msg.frames else None
        if frames is None:
            return
        with self._lock:
            self._clips.append(ImaginedClip(time_to_ns(msg.header.stamp), msg.frame_period, frames))

    # ---- what the evaluation reads ------------------------------------------------------------------------

    def clear(self) -> None:
        """Forgets chunks, success and grasps seen so far (called when an episode starts)."""
        with self._lock:
            self._chunks.clear()
            self._success, self._success_stamp = False, None
            self._grasped.clear()

    @property
    def success(self) -> bool:
        with self._lock:
            return self._success

    @property
    def grasped_objects(self) -> tuple[str, ...]:
        """Sorted names of the objects held at some point since `clear`."""
        with self._lock:
            return tuple(sorted(self._grasped))

    def chunks(self) -> list[tuple[float, ActionChunk]]:
        with self._lock:
            return list(self._chunks)

    def last_chunk_time(self) -> float | None:
        with self._lock:
            return self._chunks[-1][0] if self._chunks else None

    @property
    def success_stamp(self) -> float | None:
        with self._lock:
            return self._success_stamp

    def robot_time(self) -> tuple[float, float]:
        """(stamp of the newest ee_pose [s] (0 before the first), wall seconds since that stamp last changed)."""
        with self._lock:
            stamp = time_to_ns(self._pose.header.stamp) / 1e9 if self._pose is not None else 0.0
            return stamp, time.monotonic() - self._pose_seen_at

    def position(self) -> np.ndarray | None:
        """The newest end-effector position [m] in base_link, or None before the first ee_pose."""
        with self._lock:
            pose = self._pose
        if pose is None:
            return None
        return np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z])

    # ---- actions ----------------------------------------------------------------------------------------

    def send_instruction(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def reset_scene(self) -> str:
        """Calls sim_arm/reset; returns its message ("seed N: instruction"); raises RuntimeError on refusal."""
        response = self._call(self._reset_client, Trigger.Request(), "sim_arm/reset")
        if not response.success:
            raise RuntimeError(f"sim_arm/reset refused: {response.message}")
        return response.message

    def set_bridge(self, enabled: bool) -> tuple[bool, str]:
        """Calls arm_bridge/enable; returns (success, message)."""
        response = self._call(self._enable_client, SetBool.Request(data=enabled), "arm_bridge/enable")
        return bool(response.success), str(response.message)

    def _call(self, client: Any, request: Any, name: str) -> Any:
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT):
            raise RuntimeError(f"service {name} is not available after {SERVICE_TIMEOUT} s")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(SERVICE_TIMEOUT):
            client.remove_pending_request(future)
            raise RuntimeError(f"service {name} did not answer within {SERVICE_TIMEOUT} s")
        return future.result()

    def start_recording(self) -> None:
        """Subscribes to the camera and the imagination (which makes the policy decode its video)."""
        with self._lock:
            self._camera = FrameTimeline()
            self._clips = []
        # No QoS event handlers on these: they are destroyed while the executor thread spins, and rclpy's
        # executor adds an event handler whose destruction has begun to its wait set anyway, which kills the
        # thread (InvalidHandle). The subscriptions themselves are destroyed safely.
        no_events = SubscriptionEventCallbacks(use_default_callbacks=False)
        self._recording = [
            self.create_subscription(Image, "image_raw", self._on_image, qos.CAMERA, event_callbacks=no_events),
            self.create_subscription(
                VideoClip, "imagination/clip", self._on_clip, qos.IMAGINATION, event_callbacks=no_events
            ),
        ]

    def stop_recording(self) -> tuple[list[ImaginedClip], FrameTimeline]:
        for subscription in self._recording:
            self.destroy_subscription(subscription)
        self._recording = []
        with self._lock:
            return list(self._clips), self._camera


SPIN_PERIOD = 0.1
"""Seconds one executor wait may last, so the spinning thread notices `close` within that time."""


class SimulatedSystem:
    """The sim, policy, bridge and evaluator nodes in one process, spun by a background executor thread.

    Use as a context manager; `start_task` (re)creates the simulated arm for a task family or instruction.
    """

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        params_file = config.params_file or str(default_params_file())
        self.context = Context()
        # The bridge clamps to the simulated arm's workspace (config/sim.yaml), whatever the params file says.
        ros_args = ["--params-file", params_file, "--params-file", str(sim_params_file())]
        rclpy.init(args=["videovla-eval", "--ros-args", *ros_args], context=self.context)
        common = {"namespace": config.namespace, "context": self.context}
        clock = [Parameter("use_sim_time", value=config.sim_time)]
        self.executor = make_executor(EXECUTOR_THREADS + 4, context=self.context)
        self.nodes: list[Node] = []
        self.sim: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop_spinning = threading.Event()
        try:
            self.policy = PolicyNode(**common, parameter_overrides=self._policy_parameters())
            self.bridge = ArmBridgeNode(**common, parameter_overrides=self._bridge_parameters())
            self.probe = EvalProbe(**common, parameter_overrides=clock)
            self.nodes = [self.policy, self.bridge, self.probe]
            for node in self.nodes:
                self.executor.add_node(node)
            self._thread = threading.Thread(target=self._spin, name="videovla-eval executor", daemon=True)
            self._thread.start()
            for name, transition in (
                ("configure", self.policy.trigger_configure),
                ("activate", self.policy.trigger_activate),
            ):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    raise RuntimeError(f"the policy node failed to {name} with {config.policy_label}")
        except BaseException:
            self.close()
            raise

    def _policy_parameters(self) -> list[Parameter]:
        c = self.config
        return [
            Parameter("policy", value=c.policy),
            Parameter("checkpoint", value=c.checkpoint),
            Parameter("execution_mode", value=c.mode),
            Parameter("num_inference_steps", value=c.num_inference_steps),
            Parameter("guidance_scale", value=c.guidance_scale),
            Parameter("publish_imagination", value="auto"),
            Parameter("imagination_every", value=c.imagination_every),
            Parameter("added_latency", value=float(c.policy_latency)),
            Parameter("use_sim_time", value=c.sim_time),
        ]

    def _bridge_parameters(self) -> list[Parameter]:
        # Decoding the imagination for a video takes seconds on a CPU; in sync mode the arm waits for it, so
        # such chunks are late but not stale.
        parameters = [
            Parameter("backend", value="pose_stream"),
            Parameter("execution_mode", value=self.config.mode),
            Parameter("max_chunk_age", value=self.config.max_chunk_age),
            # The sim's controller interpolates between targets at its own 100 Hz. A 100 Hz stream timer in the
            # same Python process as the physics thread and the policy starves both (measured: the simulated arm
            # ran at 0.2x real time), so the evaluation streams at a rate the shared interpreter sustains.
            Parameter("stream_rate_hz", value=self.config.stream_rate_hz),
            Parameter("use_sim_time", value=self.config.sim_time),
        ]
        for name in ("chunk_watchdog", "state_watchdog"):
            if getattr(self.config, name) > 0:
                parameters.append(Parameter(name, value=getattr(self.config, name)))
        return parameters

    def start_task(self, task: str, seed: int) -> None:
        """Replaces the simulated arm with one showing `task` at `seed` (its first episode).

        The simulated arm runs in a process of its own, like a real robot: its physics thread must keep real time,
        and in one Python interpreter with the policy's inference and the bridge's stream timer it could not (the
        GIL is shared; measured 0.2x to 0.5x real time on 2 cores). It inherits the environment (ROS domain).
        """
        self._remove_sim()
        c = self.config
        command = [sys.executable, "-m", "videovla_ros.sim_arm_node", "--ros-args"]
        if c.namespace:
            command += ["-r", f"__ns:=/{c.namespace.strip('/')}"]
        for name, value in (
            ("task", task),
            ("seed", seed),
            ("image_height", c.image_size),
            ("image_width", c.image_size),
            ("real_time_factor", float(c.real_time_factor)),
            # Success is looked at every 50 simulated ms, so episode times are resolved that finely.
            ("success_rate_hz", 20.0),
            ("sim_time", c.sim_time),
            ("use_sim_time", c.sim_time),
        ):
            command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        self.sim = subprocess.Popen(command, env=dict(os.environ))

    def _remove_sim(self) -> None:
        if self.sim is None:
            return
        if self.sim.poll() is None:
            self.sim.send_signal(signal.SIGINT)
            try:
                self.sim.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait()
        self.sim = None

    def silence_policy(self) -> None:
        """Stops the policy node dead, without a goodbye, as a crash or a hang would (for fault tests): it leaves
        the executor and never runs a callback again. Its handles are freed by `close`, after the executor has
        stopped: destroying a node while another thread's executor builds its wait set kills that thread."""
        self.executor.remove_node(self.policy)

    def _spin(self) -> None:
        while not self._stop_spinning.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=SPIN_PERIOD)

    def close(self) -> None:
        # The spinning thread stops before the executor shuts down: `Executor.shutdown` destroys the executor's
        # guard condition without waiting for callbacks still running (a policy inference), and a thread still
        # spinning then dies on that callback's InvalidHandle. Callbacks still running finish in the pool.
        self._stop_spinning.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.executor.shutdown()
        self._remove_sim()
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes = []
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> SimulatedSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Progress = Callable[[str], None]


def _quiet_period(chunks: Sequence[tuple[float, ActionChunk]]) -> float:
    longest = max((msg.inference_time for _, msg in chunks), default=0.0)
    return min(QUIET_MAX, max(QUIET_MIN, 1.5 * longest))


def _wait_quiet(probe: EvalProbe, quiet: float) -> None:
    """Waits until no chunk has arrived for `quiet` s, so no inference for the previous scene is in flight."""
    deadline = time.monotonic() + QUIET_MAX
    while time.monotonic() < deadline:
        last = probe.last_chunk_time()
        if last is None or time.monotonic() - last >= quiet:
            return
        time.sleep(0.05)


def enable_bridge(probe: EvalProbe, timeout: float = SERVICE_TIMEOUT) -> None:
    """Enables the bridge, retrying while it refuses for a transient reason (robot state not yet fresh)."""
    deadline = time.monotonic() + timeout
    while True:
        enabled, message = probe.set_bridge(True)
        if enabled:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"arm_bridge/enable refused: {message}")
        time.sleep(0.2)


def run_episode(
    system: SimulatedSystem,
    task: str,
    seed: int,
    instruction: str,
    *,
    reset: bool,
    video_path: Path | None,
    progress: Progress | None = None,
) -> EpisodeResult:
    """One episode: (reset,) instruct, enable, wait for success or the time limit, disable; see the module doc."""
    probe, config = system.probe, system.config
    probe.set_bridge(False)
    _wait_quiet(probe, _quiet_period(probe.chunks()))
    if reset:
        reply = probe.reset_scene()
        if not reply.startswith(f"seed {seed}:"):
            raise RuntimeError(f"sim_arm/reset started {reply!r}, expected seed {seed}")
    probe.send_instruction(instruction)
    time.sleep(STATE_SETTLE)
    if video_path is not None:
        probe.start_recording()
    probe.clear()
    enable_bridge(probe)
    started, (robot_started, _) = time.monotonic(), probe.robot_time()
    reported = 0
    while not probe.success and not _time_is_up(config, time.monotonic() - started, robot_started, probe):
        time.sleep(0.05)
        if progress is not None:
            reported = _report_chunks(probe, started, reported, progress)
    seconds, sim_seconds = time.monotonic() - started, (probe.success_stamp or probe.robot_time()[0]) - robot_started
    success = probe.success
    idle_fraction = system.bridge.stream_stats().idle_fraction()
    probe.set_bridge(False)
    chunks = probe.chunks()
    arrivals = [t for t, _ in chunks]
    video = ""
    if video_path is not None:
        clips, camera = probe.stop_recording()
        by_capture = {time_to_ns(msg.header.stamp): msg for _, msg in chunks}
        aligned = [_execution_aligned(clip, by_capture, config.mode) for clip in clips]
        panels = side_by_side(aligned, camera)
        if panels:
            period = aligned[0].period if aligned[0].period > 0 else 0.1
            video = str(write_gif(video_path, panels, period))
    return EpisodeResult(
        task=task,
        seed=seed,
        instruction=instruction,
        success=success,
        seconds=seconds,
        chunks=len(chunks),
        inference_times=tuple(float(msg.inference_time) for _, msg in chunks),
        chunk_intervals=tuple(float(b - a) for a, b in itertools.pairwise(arrivals)),
        idle_fraction=float(idle_fraction),
        video=video,
        named_object=named_object(instruction),
        grasped_objects=probe.grasped_objects,
        sim_seconds=sim_seconds,
    )


def _time_is_up(config: EvalConfig, wall_elapsed: float, robot_started: float, probe: EvalProbe) -> bool:
    """Whether the episode has used its time limit: simulated seconds in simulated-time mode, else wall seconds.
    Raises RuntimeError when the simulated time has stood still for SIM_STALL_LIMIT wall seconds."""
    if not config.sim_time:
        return wall_elapsed >= config.time_limit
    robot_now, standing_still = probe.robot_time()
    if standing_still > SIM_STALL_LIMIT:
        raise RuntimeError(
            f"the simulated arm's time stood still for {standing_still:.0f} s (wall); is sim_arm still running?"
        )
    return robot_now - robot_started >= config.time_limit


def _execution_aligned(clip: ImaginedClip, chunks: dict[int, ActionChunk], mode: str) -> ImaginedClip:
    """In sync mode the bridge starts a chunk's rows when it arrives, not at capture; compare what the arm did then.

    Shifts the clip's start by the chunk's capture-to-publish time (found by the shared capture stamp).
    """
    chunk = chunks.get(clip.start_ns)
    if mode != "sync" or chunk is None:
        return clip
    return replace(clip, start_ns=clip.start_ns + round(chunk.capture_to_publish_time * 1e9))


def _report_chunks(probe: EvalProbe, started: float, reported: int, progress: Progress) -> int:
    chunks = probe.chunks()
    position = probe.position()
    for arrival, msg in chunks[reported:]:
        rows = np.asarray(msg.actions, dtype=np.float32).reshape(msg.rows, msg.dims)
        gripper = rows[0, list(msg.dim_names).index("gripper")] if "gripper" in msg.dim_names else float("nan")
        where = f", gripper at z {position[2]:.3f} m" if position is not None else ""
        progress(
            f"  t={arrival - started:5.1f} s  chunk {msg.sequence}: inference {msg.inference_time:.3f} s, "
            f"gripper {'open' if gripper >= 0.5 else 'closed'}{where}"
        )
    return len(chunks)


def evaluate(config: EvalConfig, progress: Progress = print) -> tuple[list[EpisodeResult], Path]:
    """Runs every task's episodes through the ROS system; writes the report and videos into config.output.

    Returns the episode results and the path of report.json.
    """
    output = Path(config.output)
    results: list[EpisodeResult] = []
    with SimulatedSystem(config) as system:
        for task in config.tasks:
            system.start_task(task, config.seed)
            for index in range(config.episodes):
                seed = config.seed + index
                instruction = sample_episode(task, seed).instruction
                video = output / "videos" / f"{_slug(task)}_seed{seed}.gif" if index < config.videos else None
                result = run_episode(system, task, seed, instruction, reset=index > 0, video_path=video)
                results.append(result)
                wins = sum(r.success for r in results if r.task == task)
                progress(
                    f"{task} seed {seed} ({instruction!r}): {'success' if result.success else 'failure'} in "
                    f"{result.seconds:.1f} s ({result.sim_seconds:.1f} simulated), {result.chunks} chunks; "
                    f"{wins}/{index + 1} so far"
                )
    summary = summarize(results, config.policy_label, config.mode, config.sim_time)
    report = write_report(output, summary, results)
    progress(format_summary(summary))
    progress(f"report: {report}")
    return results, report


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in text).split())


def demo(config: EvalConfig, instruction: str, progress: Progress = print) -> EpisodeResult:
    """One episode of `instruction` with progress printed per chunk; writes the report and the video.

    An instruction the scene cannot show (unknown colour or object) is reported, then sent as given on a scene
    of the pick family, so one can watch what the policy makes of it; its success is not judged.
    """
    problem = instruction_problem(instruction)
    task = instruction
    if problem is not None:
        task = "pick"
        progress(
            f"note: {problem}. The simulated scene cannot contain it, so it shows a {task!r} layout (seed "
            f"{config.seed}); the policy still gets {instruction!r} and acts on it, and success is not judged."
        )
    output = Path(config.output)
    with SimulatedSystem(config) as system:
        system.start_task(task, config.seed)
        progress(f"sending {instruction!r}; time limit {config.time_limit:.0f} s")
        result = run_episode(
            system,
            task,
            config.seed,
            instruction,
            reset=False,
            video_path=output / "demo.gif",
            progress=progress,
        )
    if problem is not None:
        result = replace(result, success=False)
        progress(f"done in {result.seconds:.1f} s ({result.chunks} chunks); success not judged: {problem}")
    else:
        progress(f"{'SUCCESS' if result.success else 'FAILURE'} in {result.seconds:.1f} s ({result.chunks} chunks)")
    summary = summarize([result], config.policy_label, config.mode, config.sim_time)
    write_report(output, summary, [result])
    progress(
        f"mean inference {summary.mean_inference_time:.3f} s (with video decoding), {summary.seconds_per_chunk:.3f} "
        f"s/chunk, arm idle {summary.idle_fraction:.0%}"
    )
    progress(f"video: {result.video or 'none (no imagined clip arrived)'}")
    return result


# Command lines ---------------------------------------------------------------------------------------------


def _common_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    defaults = EvalConfig(checkpoint="-")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="policy checkpoint directory")
    parser.add_argument(
        "--policy",
        choices=POLICY_SOURCES,
        default=defaults.policy,
        help="checkpoint: the VideoVLA checkpoint; expert: the scripted expert reading the simulator's state "
        "(the ceiling of the loop, apart from learning)",
    )
    parser.add_argument("--mode", choices=tuple(EXECUTION_MODES), default=defaults.mode, help="bridge execution mode")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the first episode")
    parser.add_argument(
        "--time-limit", type=float, default=defaults.time_limit, help="seconds per episode (simulated with --sim-time)"
    )
    parser.add_argument("--output", default=output, help="folder for the report and videos")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="sim camera size [px]")
    parser.add_argument("--namespace", default=defaults.namespace, help="namespace of all nodes")
    parser.add_argument("--params-file", default="", help="YAML keyed by node name (default: config/realman.yaml)")
    parser.add_argument("--num-inference-steps", type=int, default=0, help="denoising steps (0 = checkpoint's)")
    parser.add_argument("--guidance-scale", type=float, default=-1.0, help="guidance (< 0 = checkpoint's)")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument(
        "--sim-time",
        action=argparse.BooleanOptionalAction,
        default=defaults.sim_time,
        help="simulated time: the sim publishes /clock, every node uses it, the sim never skips ahead and in sync "
        "mode waits while the policy thinks; --time-limit is then simulated seconds (--no-sim-time: wall clock)",
    )
    parser.add_argument(
        "--policy-latency",
        type=float,
        default=defaults.policy_latency,
        help="wall seconds added to every inference (e.g. the expert at a large model's latency)",
    )
    parser.add_argument(
        "--imagination-every",
        type=int,
        default=defaults.imagination_every,
        help="in recorded episodes, decode the imagination of every N-th chunk (decoding costs seconds on a CPU)",
    )


def _config(args: argparse.Namespace, **extra: Any) -> EvalConfig:
    return EvalConfig(
        checkpoint=args.checkpoint,
        policy=args.policy,
        mode=args.mode,
        seed=args.seed,
        time_limit=args.time_limit,
        output=args.output,
        image_size=args.image_size,
        namespace=args.namespace,
        params_file=args.params_file,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        real_time_factor=args.real_time_factor,
        sim_time=args.sim_time,
        policy_latency=args.policy_latency,
        imagination_every=args.imagination_every,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`videovla-eval`: exit code 0 after a complete evaluation, 2 for bad arguments or a failed start."""
    parser = argparse.ArgumentParser(
        prog="videovla-eval", description="Closed-loop evaluation of a VideoVLA checkpoint on the simulated arm."
    )
    _common_arguments(parser, "outputs/eval")
    parser.add_argument(
        "--tasks", nargs="+", default=["pick"], help=f"task families ({', '.join(TASK_FAMILIES)}) or instructions"
    )
    parser.add_argument("--episodes", type=int, default=50, help="seeded episodes per task")
    parser.add_argument("--videos", type=int, default=3, help="episodes per task saved as imagined|actual GIFs")
    args = parser.parse_args(argv)
    try:
        config = _config(args, tasks=tuple(args.tasks), episodes=args.episodes, videos=args.videos)
        evaluate(config)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`videovla-demo`: exit code 0 on success, 1 on failure, 2 for bad arguments or a failed start."""
    parser = argparse.ArgumentParser(
        prog="videovla-demo",
        description="One episode: the simulated arm, the VideoVLA policy node and the arm bridge, driven by an "
        "instruction; prints progress and writes imagined|actual frames to a GIF.",
    )
    _common_arguments(parser, "outputs/demo")
    parser.add_argument("--instruction", default="pick up the red cube", help="what to ask the robot")
    args = parser.parse_args(argv)
    try:
        config = _config(args, tasks=(args.instruction,), episodes=1)
        result = demo(config, args.instruction)
    except (ValueError, RuntimeError) as error:
        print(f"videovla-demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
