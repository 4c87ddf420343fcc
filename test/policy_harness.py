"""The policy node under test over real DDS: a tiny checkpoint, the node and a peer (camera, operator,
consumer, action client) on one MultiThreadedExecutor of their own context, and a policy wrapper that records
and injects failures. Shared by the test_policy_*.py files."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import ros_process
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from videovla_msgs.action import ExecuteInstruction
from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time
from videovla_ros.image_conversion import rgb_to_image_msg
from videovla_ros.policy_factory import PolicyFactory, make_policy
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode

WAIT = 20.0  # s; generous for 2 shared CPU cores, never reached when things work


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny VideoVLA preset (random weights), written once per test module."""
    from videovla_model.configuration import VideoVLAConfig
    from videovla_model.modeling import VideoVLAModel

    directory = tmp_path_factory.mktemp("tiny_checkpoint")
    VideoVLAModel(VideoVLAConfig.preset("tiny")).save_pretrained(directory)
    return directory


# Every wait in this file allows WAIT seconds unless it says otherwise.
wait_for = functools.partial(ros_process.wait_for, timeout=WAIT, period=0.01)


class Logs:
    """The process's stderr as captured so far (the node logs from executor threads, so a line may come late)."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.text = ""

    def show(self, text: str) -> bool:
        """Whether `text` has been logged (waiting for it up to WAIT seconds)."""

        def seen() -> bool:
            self.text += self.capfd.readouterr().err
            return text in self.text

        return wait_for(seen)


def rgb_image(height: int = 48, width: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * 3, rows * 4, np.full_like(rows, 90)], axis=2).astype(np.uint8)


class Harness:
    """The node under test plus a peer that plays camera, operator and consumer."""

    def __init__(self, context: Context, node: PolicyNode) -> None:
        self.node = node
        self.peer = Node("policy_test_peer", context=context)
        self.chunks: list[ActionChunk] = []
        self.strips: list[Image] = []
        self.frames: list[Image] = []
        self.clips: list[VideoClip] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.peer.create_subscription(ActionChunk, "action_chunk", self.chunks.append, 10)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.camera = self.peer.create_publisher(Image, "image_raw", qos.CAMERA)
        self.compressed = self.peer.create_publisher(CompressedImage, "image_raw/compressed", qos.CAMERA)
        self.instruction = self.peer.create_publisher(String, "instruction", qos.INSTRUCTION)
        self.requests = self.peer.create_publisher(Header, "chunk_request", qos.COMMAND)
        self.action = ActionClient(self.peer, ExecuteInstruction, "execute_instruction")
        self.streaming = False
        self.peer.create_timer(0.05, self._stream)

    def now_ns(self) -> int:
        return self.peer.get_clock().now().nanoseconds

    def image(self, stamp_ns: int | None = None, rgb: np.ndarray | None = None) -> Image:
        stamp = ns_to_time(self.now_ns() if stamp_ns is None else stamp_ns)
        return rgb_to_image_msg(rgb_image() if rgb is None else rgb, stamp, "camera_optical")

    def _stream(self) -> None:
        if self.streaming:
            self.camera.publish(self.image())

    def subscribe_imagination(self) -> None:
        self.peer.create_subscription(Image, "imagination/strip", self.strips.append, qos.IMAGINATION)
        self.peer.create_subscription(Image, "imagination/frame", self.frames.append, qos.IMAGINATION)
        self.peer.create_subscription(VideoClip, "imagination/clip", self.clips.append, qos.IMAGINATION)
        assert wait_for(lambda: self.node.count_subscribers("imagination/clip") > 0)

    def connected(self, publisher: Any, topic: str) -> None:
        assert wait_for(lambda: publisher.get_subscription_count() > 0), f"nobody subscribed to {topic}"

    def counter(self, key: str) -> int:
        return self.node.diagnostics.counter(key)

    def send_goal(self, instruction: str, max_chunks: int = 0, timeout: float = 0.0, feedback: list | None = None):
        assert self.action.wait_for_server(timeout_sec=WAIT)
        goal = ExecuteInstruction.Goal(instruction=instruction, max_chunks=max_chunks, timeout=timeout)
        future = self.action.send_goal_async(goal, feedback_callback=None if feedback is None else feedback.append)
        assert wait_for(future.done)
        return future.result()

    @staticmethod
    def result(goal_handle: Any) -> Any:
        future = goal_handle.get_result_async()
        assert wait_for(future.done)
        return future.result()


@contextmanager
def running_policy(
    checkpoint: Path, activate: bool = True, factory: PolicyFactory = make_policy, **parameters: Any
) -> Iterator[Harness]:
    context = Context()
    rclpy.init(context=context)
    overrides = [Parameter("checkpoint", value=str(checkpoint))]
    parameters.setdefault("execution_mode", "async")  # most tests want back-to-back chunks
    overrides += [Parameter(name, value=value) for name, value in parameters.items()]
    node = PolicyNode(policy_factory=factory, context=context, parameter_overrides=overrides)
    harness = Harness(context, node)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + 2, context=context)
    executor.add_node(node)
    executor.add_node(harness.peer)
    spin = ros_process.BackgroundSpin(executor)
    try:
        if activate:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        yield harness
    finally:
        harness.streaming = False
        try:
            spin.stop()
        finally:
            node.destroy_node()
            harness.peer.destroy_node()
            ros_process.shut_down(context)


class RecordingPolicy:
    """Wraps the real policy to record the imagine flag of each call, what `on_decode` reports when a decode
    starts, and to inject one failure on request."""

    @classmethod
    def factory(
        cls, recorders: list[RecordingPolicy], on_decode: Callable[[PolicyNode], Any] | None = None
    ) -> PolicyFactory:
        """A policy factory that wraps what `make_policy` builds and keeps each wrapper in `recorders`;
        `on_decode(node)` is what the wrapper reports when a decode starts."""

        def build(params: Any, node: Any) -> RecordingPolicy:
            report = None if on_decode is None else (lambda: on_decode(node))
            recorders.append(cls(make_policy(params, node), report))
            return recorders[-1]

        return build

    def __init__(self, policy: Any, on_decode: Callable[[], Any] | None = None) -> None:
        self.policy = policy
        self.decode_flags: list[bool] = []
        self.at_decode_start: list[Any] = []
        self.on_decode = on_decode
        self.fail_next: Exception | None = None

    @property
    def metadata(self) -> Any:
        return self.policy.metadata

    def infer(self, observation: Any, *, imagine: bool = False) -> Any:
        self.decode_flags.append(imagine)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return self.policy.infer(observation, imagine=imagine)

    def decode_imagination(self, output: Any) -> Any:
        if self.on_decode is not None:
            self.at_decode_start.append(self.on_decode())
        return self.policy.decode_imagination(output)


def diagnostic_values(array_msg: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for status in array_msg.status for kv in status.values}
