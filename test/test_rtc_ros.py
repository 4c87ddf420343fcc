"""Real-time chunking (execution_mode rtc) over real DDS: the bridge's rtc_chunk_request, and the policy node
answering one with a chunk that starts with the committed motion (tiny checkpoint); the bridge's parameter check."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from bridge_harness import BridgeHarness, make_chunk, wait_for
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_process import ros_context
from sensor_msgs.msg import Image
from std_msgs.msg import String

from videovla_msgs.msg import ActionChunk, ChunkRequest
from videovla_ros import qos
from videovla_ros.action_chunk import from_msg as chunk_from_msg
from videovla_ros.action_chunk import ns_to_time
from videovla_ros.bridge_config import bridge_config
from videovla_ros.image_conversion import rgb_to_image_msg
from videovla_ros.policy_node import PolicyNode
from videovla_ros.realtime_chunking import PREFIX_DIMS, CommittedMotion, from_msg, prefix_for_capture, to_msg

_names = (f"rtc{k}" for k in itertools.count())
STEP_ROWS = np.tile([0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (6, 1))


@pytest.fixture
def harness():
    with ros_context() as context:
        h = BridgeHarness(context, f"/{next(_names)}", dry_run=True, execution_mode="rtc", blend_duration=0.0)
        requests: list[ChunkRequest] = []
        h.peer.create_subscription(ChunkRequest, "rtc_chunk_request", h._keep(requests), qos.COMMAND)
        wait_for(lambda: h.bridge.count_subscribers("rtc_chunk_request") > 0, 10.0, "discovery of the peer")
        yield h, requests
        h.close()


def test_bridge_asks_with_the_motion_the_answer_must_continue(harness):
    h, requests = harness
    h.wait_history(0.3)
    assert h.enable().success
    wait_for(lambda: len(h.snapshot(requests)) == 1, 5.0, "the request on enable")
    first = from_msg(h.snapshot(requests)[0])
    assert first.rows.shape == (0, 7)  # holding: nothing to continue
    capture_ns = h.now_ns() - 50_000_000
    h.chunk_pub.publish(make_chunk(STEP_ROWS, capture_ns))
    h.wait_counter("chunks_accepted", 1)
    wait_for(lambda: len(h.snapshot(requests)) == 2, 5.0, "the request after the chunk")
    request = from_msg(h.snapshot(requests)[1])
    # The chunk's remaining motion at 5 mm per 0.1 s, from where the arm is (it held at the capture pose until the
    # chunk came, so the first step also makes up the row due 0.05 s after capture) to its last target, 30 mm on.
    assert 5 <= len(request.rows) <= 6 and request.time_step == 0.1
    np.testing.assert_allclose(request.rows[1:-1, 0], 0.005, atol=1e-6)
    assert 0.005 < request.rows[0, 0] < 0.01 and request.rows[:, 0].sum() == pytest.approx(0.03, abs=1e-6)
    np.testing.assert_array_equal(request.rows[:, 6], 1.0)
    assert 0.05 <= request.inference_delay < 1.0
    prefix = prefix_for_capture(request, request.origin_ns, 6, 0.1, PREFIX_DIMS)
    assert prefix is not None and prefix.actions.shape == (len(request.rows), 7)


def test_rtc_is_a_bridge_execution_mode():
    assert bridge_config({"execution_mode": "rtc"}).execution_mode == "rtc"
    expected = r"parameter execution_mode must be one of \['sync', 'async', 'rtc'\], got 'RTC'"
    with pytest.raises(ValueError, match=expected):
        bridge_config({"execution_mode": "RTC"})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from videovla_model.configuration import VideoVLAConfig
    from videovla_model.modeling import VideoVLAModel

    return VideoVLAModel(VideoVLAConfig.preset("tiny")).save_pretrained(tmp_path_factory.mktemp("rtc_tiny"))


def test_policy_node_answers_a_request_with_the_committed_motion_first(checkpoint):
    with ros_context() as context:
        overrides = [Parameter("checkpoint", value=str(checkpoint)), Parameter("execution_mode", value="rtc")]
        node = PolicyNode(context=context, namespace="/rtc_policy", parameter_overrides=overrides)
        peer = Node("peer", context=context, namespace="/rtc_policy")
        chunks: list[ActionChunk] = []
        peer.create_subscription(ActionChunk, "action_chunk", chunks.append, qos.ACTION_CHUNK)
        requests = peer.create_publisher(ChunkRequest, "rtc_chunk_request", qos.COMMAND)
        camera = peer.create_publisher(Image, "image_raw", qos.CAMERA)
        instruction = peer.create_publisher(String, "instruction", qos.INSTRUCTION)
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        executor.add_node(node)
        executor.add_node(peer)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            instruction.publish(String(data="pick up the red cube"))
            wait_for(
                lambda: requests.get_subscription_count() > 0 and camera.get_subscription_count() > 0, 20.0, "discovery"
            )
            origin = peer.get_clock().now().nanoseconds
            # The arm keeps moving 4 mm per 0.1 s along +y with the gripper open for 0.4 s more.
            rows = np.tile([0.0, 0.004, 0.0, 0.0, 0.0, 0.0, 1.0], (4, 1))
            requests.publish(to_msg(CommittedMotion(origin, "base_link", rows, 0.1, 0.25, 0.0)))
            image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            camera.publish(rgb_to_image_msg(image, ns_to_time(origin + 50_000_000), "camera_optical"))
            wait_for(lambda: len(chunks) == 1, 30.0, "the answer")
            chunk = chunk_from_msg(chunks[0])
            # Captured 0.05 s after the origin: rows due at +0.15, +0.25, +0.35 s lie in the motion; two are due
            # before the expected answer (0.25 s after capture) and kept exactly.
            np.testing.assert_allclose(chunk.actions[:2], [[0.0, 0.004, 0.0, 0.0, 0.0, 0.0, 1.0]] * 2, atol=2e-4)
        finally:
            executor.shutdown()
            spinner.join(timeout=10)
            node.destroy_node()
            peer.destroy_node()
