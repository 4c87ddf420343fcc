"""Test harness for the arm bridge: the bridge node plus a peer node that plays policy, arm and operator.

Both nodes spin on one SingleThreadedExecutor in a background thread (rclpy 9's MultiThreadedExecutor busy-spins
while a callback runs, which starved these timing tests on 2 cores), in a namespace of their own, and talk
over real DDS (same process, so discovery is quick).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import ros_process
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, Float64, Header
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, time_to_ns, to_msg
from videovla_ros.arm_bridge_node import ArmBridgeNode
from videovla_ros.backends.base import pose_stamped
from videovla_ros.trajectory import Pose

DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
S = 1_000_000_000
TEST_DEFAULTS = {"stream_rate_hz": 50.0, "state_watchdog": 2.0, "chunk_watchdog": 10.0}
STATE_PERIOD = 0.02


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not ros_process.wait_for(condition, timeout, period=0.01):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_chunk(rows: np.ndarray, capture_ns: int, sequence: int = 0, **overrides: Any) -> ActionChunk:
    """An ActionChunk of `rows` (rows, 7) captured at `capture_ns`; `overrides` set message fields afterwards."""
    chunk = TimedChunk(
        capture_time_ns=capture_ns,
        frame_id="base_link",
        instruction="test",
        sequence=sequence,
        actions=np.asarray(rows, dtype=np.float64),
        dim_names=DIMS,
        time_step=0.1,
        execute_rows=3,
    )
    msg = to_msg(chunk)
    for field, value in overrides.items():
        setattr(msg, field, value)
    return msg


class BridgeHarness:
    """ArmBridgeNode `arm_bridge` and a peer in `namespace`; the peer publishes ee_pose (a simulated arm
    that, with follow=True, moves to every target_pose the pose_stream backend sends) unless publish_state=False.
    """

    def __init__(
        self,
        context: Context,
        namespace: str,
        follow: bool = False,
        publish_state: bool = True,
        start_position: tuple[float, float, float] = (0.3, 0.0, 0.4),
        **parameters: Any,
    ) -> None:
        # Tests share a few loaded CPU cores: a calmer stream and watchdogs that a scheduling hiccup does not
        # trip (tests of the watchdogs set their own).
        parameters = {**TEST_DEFAULTS, **parameters}
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.bridge = ArmBridgeNode(context=context, namespace=namespace, parameter_overrides=overrides)
        self.peer = Node("peer", context=context, namespace=namespace)
        self.lock = threading.Lock()
        self.arm = pose_stamped_at(start_position)
        self.follow = follow
        self.publish_state = publish_state
        self.targets: list[PoseStamped] = []  # ~/target_pose of the bridge
        self.commands: list[PoseStamped] = []  # pose_stream backend's target_pose
        self.grippers: list[float] = []
        self.requests: list[Header] = []
        peer = self.peer
        peer.create_subscription(PoseStamped, "arm_bridge/target_pose", self._keep(self.targets), qos.COMMAND)
        peer.create_subscription(PoseStamped, "target_pose", self._on_command, qos.COMMAND)
        peer.create_subscription(Float64, "gripper_command", lambda m: self.grippers.append(m.data), qos.COMMAND)
        peer.create_subscription(Header, "chunk_request", self._keep(self.requests), qos.COMMAND)
        self.state_pub = peer.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self.chunk_pub = peer.create_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK)
        self.estop_pub = peer.create_publisher(Bool, "estop", qos.SAFETY)
        self.enable_client = peer.create_client(SetBool, "arm_bridge/enable")
        peer.create_timer(STATE_PERIOD, self._publish_state)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.bridge)
        self.executor.add_node(self.peer)
        self.spin = ros_process.BackgroundSpin(self.executor)
        wait_for(lambda: self.chunk_pub.get_subscription_count() > 0, 10.0, "discovery of the bridge")

    def _keep(self, store: list) -> Callable[[Any], None]:
        def append(msg: Any) -> None:
            with self.lock:
                store.append(msg)

        return append

    def _on_command(self, msg: PoseStamped) -> None:
        with self.lock:
            self.commands.append(msg)
            if self.follow:
                self.arm = msg

    def _publish_state(self) -> None:
        if not self.publish_state:
            return
        with self.lock:
            msg = PoseStamped(pose=self.arm.pose)
        msg.header.frame_id = "base_link"
        msg.header.stamp = self.peer.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def now_ns(self) -> int:
        return self.peer.get_clock().now().nanoseconds

    def enable(self, on: bool = True) -> SetBool.Response:
        assert self.enable_client.wait_for_service(timeout_sec=10.0), "~/enable not available"
        future = self.enable_client.call_async(SetBool.Request(data=on))
        wait_for(future.done, 10.0, "the ~/enable response")
        return future.result()

    def wait_history(self, seconds: float) -> None:
        """Waits until the bridge's pose history reaches `seconds` into the past."""

        def long_enough() -> bool:
            oldest = self.bridge._history.oldest()
            return oldest is not None and oldest[0] <= self.now_ns() - round(seconds * S)

        wait_for(long_enough, seconds + 5.0, f"{seconds} s of robot state history")

    def counter(self, key: str) -> int:
        return self.bridge.diagnostics.counter(key)

    def wait_counter(self, key: str, value: int, timeout: float = 5.0) -> None:
        wait_for(lambda: self.counter(key) >= value, timeout, f"diagnostics counter {key} >= {value}")

    def snapshot(self, store: list) -> list:
        with self.lock:
            return list(store)

    def close(self) -> None:
        try:
            self.spin.stop(timeout=5.0)
        finally:
            self.bridge.destroy_node()
            self.peer.destroy_node()


def pose_stamped_at(position: tuple[float, float, float]) -> PoseStamped:
    return pose_stamped(Pose.make(position), 0, "base_link")


def positions(messages: list[PoseStamped]) -> np.ndarray:
    """(n, 3) positions of PoseStamped messages."""
    return np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in messages])


def stamps_s(messages: list[PoseStamped]) -> np.ndarray:
    return np.array([time_to_ns(m.header.stamp) for m in messages]) / S
