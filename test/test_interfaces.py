"""Every videovla_msgs interface is built and crosses a process boundary over real DDS unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.action import ActionClient
from rclpy.node import Node
from ros_process import python_process, ros_context, spin_until
from sensor_msgs.msg import Image

from videovla_msgs.action import ExecuteInstruction
from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, from_msg, to_msg

# The peer process publishes what the test sends it back, so every field makes a full round trip
# (test -> peer -> test) through serialisation in two different processes.
ECHO_PEER = """
import sys
import rclpy
from rclpy.executors import ExternalShutdownException
from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos

rclpy.init()
node = rclpy.create_node("interface_echo_peer")
chunk_out = node.create_publisher(ActionChunk, "echo/action_chunk_out", qos.ACTION_CHUNK)
clip_out = node.create_publisher(VideoClip, "echo/clip_out", qos.IMAGINATION)
node.create_subscription(ActionChunk, "echo/action_chunk_in", chunk_out.publish, qos.ACTION_CHUNK)
node.create_subscription(VideoClip, "echo/clip_in", clip_out.publish, qos.IMAGINATION)
print("ready", flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""

ACTION_SERVER_PEER = """
import time
import rclpy
from rclpy.action import ActionServer
from rclpy.executors import ExternalShutdownException
from videovla_msgs.action import ExecuteInstruction

def execute(goal_handle):
    goal = goal_handle.request
    for index in range(goal.max_chunks):
        feedback = ExecuteInstruction.Feedback(chunks_executed=index + 1, last_inference_time=0.25, state="executing")
        goal_handle.publish_feedback(feedback)
        time.sleep(0.05)
    goal_handle.succeed()
    return ExecuteInstruction.Result(
        outcome=ExecuteInstruction.Result.OUTCOME_COMPLETED_LIMIT,
        reason="peer executed " + goal.instruction,
        chunks_executed=goal.max_chunks,
        elapsed=goal.timeout,
    )

rclpy.init()
node = rclpy.create_node("execute_instruction_peer")
server = ActionServer(node, ExecuteInstruction, "execute_instruction", execute)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""


def _known_chunk() -> TimedChunk:
    actions = np.arange(42, dtype=np.float64).reshape(6, 7) / 100.0
    return TimedChunk(
        capture_time_ns=1_700_000_000_123_456_789,
        frame_id="base_link",
        instruction="pick up the red cube",
        sequence=41,
        actions=actions,
        dim_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
        time_step=0.1,
        execute_rows=3,
        embodiment_id=2,
        inference_time=1.1,
        capture_to_publish_time=1.25,
    )


def _echo(node: Node, msg_type: type, topic_in: str, topic_out: str, message: object, profile: object) -> object:
    received: list[object] = []
    node.create_subscription(msg_type, topic_out, received.append, profile)
    publisher = node.create_publisher(msg_type, topic_in, profile)
    assert spin_until(node, lambda: publisher.get_subscription_count() > 0, timeout=30), "peer never subscribed"
    # Publish until the echo comes back: discovery of the peer's publisher can lag its subscriber.
    for _ in range(100):
        publisher.publish(message)
        if spin_until(node, lambda: bool(received), timeout=0.3):
            return received[0]
    pytest.fail(f"no echo on {topic_out}")


def test_action_chunk_and_video_clip_round_trip_between_processes():
    with ros_context() as context, python_process(ECHO_PEER) as peer:
        node = Node("interface_test", context=context)
        try:
            chunk = _known_chunk()
            echoed = _echo(
                node, ActionChunk, "echo/action_chunk_in", "echo/action_chunk_out", to_msg(chunk), qos.ACTION_CHUNK
            )
            back = from_msg(echoed)
            assert back.capture_time_ns == chunk.capture_time_ns
            assert back.dim_names == chunk.dim_names
            assert (back.sequence, back.execute_rows, back.embodiment_id) == (41, 3, 2)
            assert back.instruction == "pick up the red cube" and back.frame_id == "base_link"
            np.testing.assert_allclose(back.actions, chunk.actions, atol=1e-7)  # float32 on the wire
            assert (back.time_step, back.inference_time, back.capture_to_publish_time) == (0.1, 1.1, 1.25)

            frames = []
            for index in range(3):
                frame = Image(height=4, width=5, encoding="rgb8", step=15)
                frame.data = bytes((np.arange(60) + index) % 256)
                frames.append(frame)
            clip = VideoClip(instruction="stack the blue block", chunk_sequence=41, frames=frames, frame_period=0.25)
            clip.header.frame_id = "camera_optical"
            clip.header.stamp.sec = 12
            echoed_clip = _echo(node, VideoClip, "echo/clip_in", "echo/clip_out", clip, qos.IMAGINATION)
            assert echoed_clip.instruction == "stack the blue block" and echoed_clip.chunk_sequence == 41
            assert echoed_clip.header.stamp.sec == 12 and echoed_clip.frame_period == 0.25
            assert [bytes(f.data) for f in echoed_clip.frames] == [bytes(f.data) for f in frames]
            assert all((f.height, f.width, f.encoding) == (4, 5, "rgb8") for f in echoed_clip.frames)
        finally:
            node.destroy_node()
        assert peer.poll() is None, f"peer died: {peer.stdout.read() if peer.stdout else ''}"


def test_execute_instruction_action_between_processes():
    with ros_context() as context, python_process(ACTION_SERVER_PEER):
        node = Node("action_test", context=context)
        try:
            client = ActionClient(node, ExecuteInstruction, "execute_instruction")
            assert spin_until(node, client.server_is_ready, timeout=30), "action server never appeared"
            feedback: list[ExecuteInstruction.Feedback] = []
            goal = ExecuteInstruction.Goal(instruction="pick up the red cube", max_chunks=3, timeout=7.5)
            send = client.send_goal_async(goal, feedback_callback=lambda fb: feedback.append(fb.feedback))
            assert spin_until(node, send.done, timeout=30)
            handle = send.result()
            assert handle.accepted
            result_future = handle.get_result_async()
            assert spin_until(node, result_future.done, timeout=30)
            result = result_future.result().result
            assert result.outcome == ExecuteInstruction.Result.OUTCOME_COMPLETED_LIMIT
            assert result.reason == "peer executed pick up the red cube"
            assert (result.chunks_executed, result.elapsed) == (3, 7.5)
            assert [f.chunks_executed for f in feedback] == [1, 2, 3]
            assert all(f.state == "executing" and f.last_inference_time == 0.25 for f in feedback)
            client.destroy()
        finally:
            node.destroy_node()
