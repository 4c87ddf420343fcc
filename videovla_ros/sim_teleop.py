"""`videovla-sim-teleop`: the scripted expert as the teleoperator of the simulated arm, while the recorder records.

It plays the part a person with a SpaceMouse plays on a real arm, through the same nodes. Per episode it
disables the arm bridge, resets the simulated arm (`sim_arm/reset`: the next seed, so the first episode is the
sim_arm node's `seed` + 1), publishes the scene's instruction, enables the bridge, starts the recorder
(`recorder/start`), sends the expert's motion as ActionChunks to the bridge (async mode, pose_stream back-end ->
sim arm), waits for it to play out and stops the recorder (`recorder/stop`). The expert's motion for a seed is
the one `videovla-collect` records for it (`videovla_sim.collect.record_episode` on a local copy of the scene),
so the two datasets can be compared.

A chunk with the remaining rows goes out every CHUNK_ROWS steps (the bridge holds the arm after its chunk
watchdog), anchored like the bridge at the arm's measured pose at its capture stamp, so the absolute targets
are the expert's. Chunks are stamped on the recorder's tick grid (`tick_origin_ns` of `recorder/status`): the
expert's target i is due exactly at a tick and recorded step m + i is the expert's step i (m idle steps first).

    ros2 launch videovla_ros realman.launch.py sim:=true record:=true execution_mode:=async autostart:=false
    videovla-sim-teleop --task pick --episodes 5

Node `videovla_sim_teleop` (relative names): publishes instruction (std_msgs/String, INSTRUCTION) and
action_chunk (ActionChunk, ACTION_CHUNK); subscribes recorder/status (std_msgs/String), image_raw
(sensor_msgs/Image, CAMERA: waits for the camera before recording) and ee_pose (geometry_msgs/PoseStamped,
ROBOT_STATE: anchors the chunks); calls sim_arm/reset, arm_bridge/enable (std_srvs/SetBool), recorder/start,
recorder/stop (std_srvs/Trigger).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from videovla_model.action_convention import float32_pose_deltas, quaternion_to_matrix
from videovla_model.cli import parse
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, time_to_ns, to_msg
from videovla_ros.backends.base import pose_from_msg
from videovla_ros.trajectory import Pose, PoseHistory
from videovla_sim.collect import Recording, record_episode
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.scene import SceneConfig

NODE_NAME = "videovla_sim_teleop"
SERVICE_TIMEOUT = 15.0
SETTLE_SECONDS = 0.5
"""Rest after a reset before recording, so the first frames show the arm still."""
CHUNK_ROWS = 10
"""A chunk every this many steps (the bridge holds the arm after chunk_watchdog, 3 s, without a new one)."""
ANCHOR_DELAY_NS = 60_000_000
"""How long after a chunk's capture stamp it is sent: the arm's pose samples after the stamp have arrived."""
RECORD_SLACK = 10.0
"""Seconds the recording may take beyond the motion before the teleoperation gives up."""
_SEED_REPLY = re.compile(r"^seed (?P<seed>-?\d+): (?P<instruction>.+)$")


class TeleopError(RuntimeError):
    """A step of the teleoperation failed; the message names the service or topic and its answer."""


@dataclass(frozen=True)
class TeleopEpisode:
    seed: int
    expert: Recording
    """What videovla-collect records for this seed (frames rendered by the local scene)."""
    chunk_capture_ns: int
    idle_steps: int
    """Recorded steps before the chunk's capture stamp (the arm at rest)."""
    recorder_reply: str


class SimTeleop(Node):
    """The expert-teleoperator node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.instruction_pub = self.create_publisher(String, "instruction", qos.INSTRUCTION)
        self.chunk_pub = self.create_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK)
        self.create_subscription(String, "recorder/status", self._on_status, 10)
        self._frames = 0
        self.create_subscription(Image, "image_raw", self._on_frame, qos.CAMERA)
        # A simulated arm on a loaded machine can publish its pose a second late; the chunk is still anchored
        # at the newest pose, as the bridge would hold it, rather than the teleoperation giving up.
        self.history = PoseHistory(duration_s=5.0, max_extrapolation_s=2.0)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, qos.ROBOT_STATE)
        self.reset_client = self.create_client(Trigger, "sim_arm/reset")
        self.enable_client = self.create_client(SetBool, "arm_bridge/enable")
        self.start_client = self.create_client(Trigger, "recorder/start")
        self.stop_client = self.create_client(Trigger, "recorder/stop")

    def _on_status(self, msg: String) -> None:
        with self._lock:
            self._status = json.loads(msg.data)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.history.add(time_to_ns(msg.header.stamp), pose_from_msg(msg.pose))

    def _on_frame(self, msg: Image) -> None:
        del msg  # only that the camera is up matters
        with self._lock:
            self._frames += 1

    def wait_for_camera(self, frames: int, timeout: float) -> None:
        """Waits for `frames` more camera frames (the sim publishes once its physics runs after a reset)."""
        with self._lock:
            target = self._frames + frames
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._frames >= target:
                    return
            time.sleep(0.02)
        raise TeleopError(f"no camera frames on image_raw within {timeout} s")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def call(self, client: Any, request: Any) -> Any:
        """Calls a service and returns its reply; raises TeleopError when it is absent or does not answer."""
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT):
            raise TeleopError(f"service {client.srv_name} is not available (is the system up?)")
        future = client.call_async(request)
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while not future.done():
            if time.monotonic() > deadline:
                raise TeleopError(f"service {client.srv_name} did not answer within {SERVICE_TIMEOUT} s")
            time.sleep(0.01)
        return future.result()

    def trigger(self, client: Any) -> str:
        reply = self.call(client, Trigger.Request())
        if not reply.success:
            raise TeleopError(f"{client.srv_name} refused: {reply.message}")
        return reply.message

    def wait_status(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.get(key):
                return status
            time.sleep(0.02)
        raise TeleopError(f"recorder/status did not report {key} within {timeout} s (status: {self.status()})")

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds


def on_tick_grid(origin_ns: int, now_ns: int, rate_hz: float) -> tuple[int, int]:
    """(m, stamp of tick m): the newest tick at or before now on the recorder's grid."""
    period_ns = 1e9 / rate_hz
    m = max(0, int((now_ns - origin_ns) // period_ns))
    return m, origin_ns + round(m * period_ns)


def chunk_rows(expert: Recording, anchor: Pose, first_row: int) -> np.ndarray:
    """(rows, 7): from `anchor` (the arm at the chunk's capture) through the expert's targets first_row.. on.

    Row 0 goes from the measured anchor to the expert's target, so the absolute targets the bridge integrates
    are the expert's own whatever the arm's tracking error; the other rows are the expert's steps.
    """
    positions = np.concatenate((anchor.position[None], expert.target_positions[1 + first_row :]))
    quaternions = np.concatenate((anchor.quaternion[None], expert.target_quaternions[1 + first_row :]))
    deltas = float32_pose_deltas(positions, np.array([quaternion_to_matrix(q) for q in quaternions]))
    return np.concatenate((deltas, expert.actions[first_row:, 6:]), axis=1)


def send_expert_chunks(teleop: SimTeleop, expert: Recording, capture_ns: int, rate_hz: float) -> None:
    """The expert's rows as chunks of the remaining rows every CHUNK_ROWS steps, the first captured at capture_ns."""
    period_ns = 1e9 / rate_hz
    for first_row in range(0, expert.num_steps, CHUNK_ROWS):
        chunk_capture_ns = capture_ns + round(first_row * period_ns)
        # The bridge anchors a chunk at the arm's pose at its capture stamp, so wait for the samples around it.
        while teleop.now_ns() < chunk_capture_ns + ANCHOR_DELAY_NS:
            time.sleep(0.005)
        anchor = teleop.history.lookup(chunk_capture_ns)
        chunk = TimedChunk(
            capture_time_ns=chunk_capture_ns,
            frame_id="base_link",
            instruction=expert.setup.instruction,
            sequence=first_row,
            actions=chunk_rows(expert, anchor, first_row).astype(np.float64),
            dim_names=DEFAULT_ACTION_DIM_NAMES,
            time_step=1.0 / rate_hz,
            execute_rows=expert.num_steps - first_row,
        )
        teleop.chunk_pub.publish(to_msg(chunk))


def play_episode(teleop: SimTeleop, env: TabletopEnv, task: str, rate_hz: float) -> TeleopEpisode:
    """One recorded episode; see the module docstring for the steps."""
    enable = teleop.call(teleop.enable_client, SetBool.Request(data=False))
    if not enable.success:
        raise TeleopError(f"arm_bridge/enable false refused: {enable.message}")
    reply = teleop.trigger(teleop.reset_client)
    match = _SEED_REPLY.match(reply)
    if match is None:
        raise TeleopError(f"sim_arm/reset replied {reply[:200]!r}, expected 'seed N: instruction'")
    seed = int(match["seed"])
    expert = record_episode(env, task, seed, action_rate_hz=rate_hz)
    if not expert.success:
        raise TeleopError(f"the expert fails {task!r} seed {seed}: {expert.failure}")
    if expert.setup.instruction != match["instruction"]:
        raise TeleopError(
            f"sim_arm shows {match['instruction'][:200]!r} at seed {seed}, the expert's task {task!r} gives "
            f"{expert.setup.instruction!r}: pass the sim_arm node's task as --task"
        )
    teleop.instruction_pub.publish(String(data=expert.setup.instruction))
    time.sleep(SETTLE_SECONDS)
    teleop.wait_for_camera(frames=3, timeout=SERVICE_TIMEOUT)
    enable = teleop.call(teleop.enable_client, SetBool.Request(data=True))
    if not enable.success:
        raise TeleopError(f"arm_bridge/enable true refused: {enable.message}")
    teleop.wait_status("has_pose", timeout=SERVICE_TIMEOUT)
    teleop.trigger(teleop.start_client)
    origin = int(teleop.wait_status("tick_origin_ns", timeout=5.0)["tick_origin_ns"])
    idle_steps, capture_ns = on_tick_grid(origin, teleop.now_ns(), rate_hz)
    send_expert_chunks(teleop, expert, capture_ns, rate_hz)
    # The last row is due at capture + rows * step, tick idle + rows; the recorder has that step once a frame of
    # the tick after it is kept (frames are stamped by the camera, which may trail the clock), one tick later.
    wanted_s = (idle_steps + expert.num_steps + 2) / rate_hz
    deadline = time.monotonic() + wanted_s + RECORD_SLACK
    while (status := teleop.status()).get("seconds", 0.0) < wanted_s:
        if status.get("state") == "idle":  # the recorder ended the episode itself (a stream stopped)
            raise TeleopError(f"the recorder ended the episode early: {status.get('last_outcome')}")
        if time.monotonic() > deadline:
            raise TeleopError(f"recorder/status reached {teleop.status().get('seconds')} s, not {wanted_s:.1f} s")
        time.sleep(0.02)
    recorder_reply = teleop.trigger(teleop.stop_client)
    return TeleopEpisode(seed, expert, capture_ns, idle_steps, recorder_reply)


def run(
    task: str, episodes: int, rate_hz: float, image_size: int, namespace: str = "", context: Context | None = None
) -> list[TeleopEpisode]:
    """Plays `episodes` episodes against a running sim + bridge + recorder; returns what was sent."""
    teleop = SimTeleop(namespace=namespace, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(teleop)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=image_size, image_width=image_size)))
    try:
        return [play_episode(teleop, env, task, rate_hz) for _ in range(episodes)]
    finally:
        env.close()
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        teleop.destroy_node()


@dataclass(frozen=True)
class TeleopConfig:
    """One `videovla-sim-teleop` session; each field is a flag (`videovla-sim-teleop --help`)."""

    task: str = "pick"
    """the sim_arm node's task (pick, place, stack)"""
    episodes: int = 5
    """episodes to record"""
    action_rate: float = 10.0
    """the recorder's action_rate_hz"""
    image_size: int = 96
    """the sim_arm node's image size [px]"""
    namespace: str = ""
    """namespace of the nodes"""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")


def main(argv: Sequence[str] | None = None) -> int:
    config = parse(TeleopConfig, argv, prog="videovla-sim-teleop", description=__doc__.split("\n\n")[0])
    rclpy.init()
    try:
        for episode in run(config.task, config.episodes, config.action_rate, config.image_size, config.namespace):
            print(f"seed {episode.seed}: {episode.expert.num_steps} expert steps; {episode.recorder_reply}")
    except TeleopError as error:
        print(f"videovla-sim-teleop: {error}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
