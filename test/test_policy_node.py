"""PolicyNode over real DDS with the real tiny VideoVLA checkpoint: chunks, imagination, lifecycle, bad inputs,
the chunk-request trigger and the node's own process (goals: test_policy_goals.py; parameters:
test_policy_parameters.py).
"""

from __future__ import annotations

import array
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
import ros_process
from action_msgs.msg import GoalStatus
from policy_harness import (
    WAIT,
    Harness,
    Logs,
    RecordingPolicy,
    diagnostic_values,
    rgb_image,
    running_policy,
    tiny_checkpoint,
    wait_for,
)
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from videovla_msgs.action import ExecuteInstruction
from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND, from_msg, ns_to_time, time_to_ns
from videovla_ros.image_conversion import rgb_to_compressed_msg
from videovla_ros.policy_node import PolicyNode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


# ---- chunks and imagination ------------------------------------------------------------------------------
def test_chunk_carries_the_image_stamp_the_policy_layout_and_imagination_when_watched(checkpoint):
    with running_policy(checkpoint, publish_imagination="auto") as h:
        h.subscribe_imagination()
        h.instruction.publish(String(data="pick up the red cube"))
        h.connected(h.camera, "image_raw")
        stamp = h.now_ns()
        h.camera.publish(h.image(stamp))
        assert wait_for(lambda: h.chunks and h.strips and h.clips and h.frames)
        chunk = from_msg(h.chunks[0])
        metadata = h.node.metadata
        assert chunk.capture_time_ns == stamp and chunk.frame_id == "base_link"
        assert chunk.actions.shape == (6, 7) and chunk.dim_names == metadata.action_dim_names
        assert (chunk.sequence, chunk.execute_rows, chunk.time_step) == (0, 3, 0.1)
        assert chunk.instruction == "pick up the red cube"
        assert 0 < chunk.inference_time <= chunk.capture_to_publish_time
        strip, clip = h.strips[0], h.clips[0]
        count = len(clip.frames)
        assert count >= 1 and clip.chunk_sequence == 0 and clip.frame_period == pytest.approx(0.1)
        assert time_to_ns(strip.header.stamp) == stamp and strip.header.frame_id == "camera_optical"
        assert (strip.height, strip.width, strip.encoding) == (64, 64 * count, "rgb8")
        first_frame = time_to_ns(h.frames[0].header.stamp)
        assert first_frame == stamp + NANOSECONDS_PER_SECOND // 10
        assert wait_for(lambda: len(h.frames) == count)  # the whole clip is played back, frame by frame


def test_imagination_is_decoded_only_while_someone_watches(checkpoint):
    recorders: list[RecordingPolicy] = []
    with running_policy(checkpoint, factory=RecordingPolicy.factory(recorders), publish_imagination="auto") as h:
        (recorder,) = recorders
        h.instruction.publish(String(data="open the drawer"))
        h.connected(h.camera, "image_raw")
        h.camera.publish(h.image())
        assert wait_for(lambda: len(h.chunks) == 1)
        h.subscribe_imagination()
        h.camera.publish(h.image())
        assert wait_for(lambda: len(h.chunks) == 2 and h.strips)
        assert recorder.decode_flags == [False, True]


def test_a_watched_imagination_is_decoded_only_after_its_chunk_is_published(checkpoint):
    recorders: list[RecordingPolicy] = []
    factory = RecordingPolicy.factory(recorders, lambda node: node.diagnostics.counter("chunks_published"))
    with running_policy(checkpoint, factory=factory, publish_imagination="auto") as h:
        (recorder,) = recorders
        h.subscribe_imagination()
        h.instruction.publish(String(data="open the drawer"))
        h.connected(h.camera, "image_raw")
        for count in (1, 2):
            h.camera.publish(h.image())
            assert wait_for(lambda count=count: len(h.chunks) == count and len(h.clips) == count)
        # When decoding chunk k's imagination starts, k chunks have been published: chunk k went out first.
        assert recorder.decode_flags == [True, True]
        assert recorder.at_decode_start == [1, 2]


def test_a_failed_imagination_decode_is_counted_and_costs_only_the_picture(checkpoint):
    def fail(node: PolicyNode) -> None:
        raise RuntimeError("VAE out of memory")

    factory = RecordingPolicy.factory([], fail)
    with running_policy(checkpoint, factory=factory, publish_imagination="always") as h:
        h.subscribe_imagination()
        h.instruction.publish(String(data="open the drawer"))
        h.connected(h.camera, "image_raw")
        h.camera.publish(h.image())
        assert wait_for(lambda: h.chunks and h.node.diagnostics.counter("imagination_errors") == 1)
        assert not h.clips and h.node.diagnostics.counter("inference_errors") == 0


def test_never_mode_does_not_decode_even_when_watched(checkpoint):
    recorders: list[RecordingPolicy] = []
    with running_policy(checkpoint, factory=RecordingPolicy.factory(recorders), publish_imagination="never") as h:
        (recorder,) = recorders
        h.subscribe_imagination()
        h.instruction.publish(String(data="open the drawer"))
        h.connected(h.camera, "image_raw")
        h.camera.publish(h.image())
        assert wait_for(lambda: h.chunks)
        assert recorder.decode_flags == [False] and not h.strips


def test_imagination_every_decodes_only_every_nth_chunk(checkpoint):
    # The next image may arrive while the previous chunk's imagination is still decoding (after its chunk went
    # out); a generous max_image_age keeps it from going stale on a loaded machine.
    recorders: list[RecordingPolicy] = []
    factory = RecordingPolicy.factory(recorders)
    with running_policy(
        checkpoint, factory=factory, publish_imagination="always", imagination_every=2, max_image_age=30.0
    ) as h:
        (recorder,) = recorders
        h.subscribe_imagination()
        h.instruction.publish(String(data="open the drawer"))
        h.connected(h.camera, "image_raw")
        for count in (1, 2, 3):
            h.camera.publish(h.image())
            assert wait_for(lambda count=count: len(h.chunks) == count)
        assert recorder.decode_flags == [True, False, True]
        assert wait_for(lambda: len(h.clips) == 2)
        assert [clip.chunk_sequence for clip in h.clips] == [0, 2]


# ---- lifecycle --------------------------------------------------------------------------------------------
def test_lifecycle_configure_activate_deactivate_cleanup(checkpoint, capfd):
    with running_policy(checkpoint, activate=False, execution_mode="sometimes") as h:
        node = h.node
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert Logs(capfd).show("parameter execution_mode must be one of ['sync', 'async', 'rtc'], got 'sometimes'")
        node.set_parameters([Parameter("execution_mode", value="async")])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.policy is not None and node.diagnostics.gauge("policy_load_time") > 0

        h.instruction.publish(String(data="stack the blocks"))  # latched; delivered before activation
        assert wait_for(lambda: node.scheduler.instruction == "stack the blocks")
        h.streaming = True
        time.sleep(0.3)
        assert not h.chunks  # inactive: no inference

        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: len(h.chunks) >= 2)
        assert [c.sequence for c in h.chunks[:2]] == [0, 1]

        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.3)  # let a chunk that was in flight arrive
        published = len(h.chunks)
        time.sleep(0.5)
        assert len(h.chunks) == published  # no chunks while inactive, although the camera streams

        h.chunks.clear()
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: h.chunks)
        assert h.chunks[0].sequence == 0  # sequence restarts with each activation

        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.policy is None and node.scheduler is None
        assert wait_for(lambda: any(diagnostic_values(d).get("chunks_published") for d in h.diagnostics))


def test_configure_fails_with_a_clear_message_for_a_missing_checkpoint(tmp_path, capfd):
    with running_policy(tmp_path / "missing", activate=False) as h:
        assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert Logs(capfd).show("configure failed: could not load")
        assert h.node.policy is None
        import torch

        if not torch.cuda.is_available():  # the device is named, not the checkpoint blamed
            h.node.set_parameters([Parameter("device", value="cuda:0")])
            assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert Logs(capfd).show("configure failed: parameter device: device 'cuda:0' is not available")


# ---- bad inputs -------------------------------------------------------------------------------------------
def _bad_raw_images(h: Harness) -> list[tuple[str, Image, str]]:
    wrong_encoding = h.image()
    wrong_encoding.encoding = "yuv422"
    truncated = h.image()
    truncated.data = truncated.data[:100]
    zero_size = h.image()
    zero_size.height = zero_size.width = 0
    narrow_step = h.image()
    narrow_step.step = 10
    no_stamp = h.image(stamp_ns=0)
    return [
        ("dropped_frames_unparseable", wrong_encoding, "image encoding must be one of"),
        ("dropped_frames_unparseable", truncated, "image data is truncated"),
        ("dropped_frames_unparseable", zero_size, "image height and width must be > 0"),
        ("dropped_frames_unparseable", narrow_step, "image step must be >= width*channels*bytes = 64*3*1 = 192"),
        ("dropped_frames_unparseable", no_stamp, "image header.stamp is zero"),
        ("dropped_frames_stale", h.image(stamp_ns=h.now_ns() - 5 * NANOSECONDS_PER_SECOND), "older than max_image_age"),
    ]


def test_bad_inputs_are_logged_counted_and_the_node_keeps_serving(checkpoint, capfd):
    logs = Logs(capfd)
    with running_policy(checkpoint) as h:
        h.instruction.publish(String(data="wipe the table"))
        assert wait_for(lambda: h.node.scheduler.instruction == "wipe the table")
        h.connected(h.camera, "image_raw")
        for counter, message, text in _bad_raw_images(h):
            before = h.counter(counter)
            h.camera.publish(message)
            assert wait_for(lambda c=counter, b=before: h.counter(c) == b + 1), text
            assert logs.show(text), text
        h.instruction.publish(String(data="   "))
        assert wait_for(lambda: h.counter("rejected_instructions") == 1)
        assert logs.show("rejected instruction on 'instruction': instruction must be a non-empty string")
        assert h.node.scheduler.instruction == "wipe the table"  # the last good instruction stays
        assert not h.chunks
        h.camera.publish(h.image())
        assert wait_for(lambda: h.chunks)
        assert h.chunks[0].instruction == "wipe the table"


def test_bad_compressed_images_are_dropped_and_good_ones_used(checkpoint, capfd):
    with running_policy(checkpoint, image_transport="compressed") as h:
        h.instruction.publish(String(data="push the button"))
        h.connected(h.compressed, "image_raw/compressed")
        garbage = CompressedImage(format="jpeg", header=Header(stamp=ns_to_time(h.now_ns())))
        garbage.data = array.array("B", b"definitely not a jpeg")
        assert wait_for(lambda: h.node.scheduler.instruction == "push the button")
        h.compressed.publish(garbage)
        assert wait_for(lambda: h.counter("dropped_frames_unparseable") == 1)
        assert Logs(capfd).show("is not a decodable jpeg image")
        h.compressed.publish(rgb_to_compressed_msg(rgb_image(), ns_to_time(h.now_ns()), "camera_optical"))
        assert wait_for(lambda: h.chunks)
        assert h.counter("inference_errors") == 0


def test_an_inference_failure_is_counted_fails_the_goal_and_the_node_keeps_serving(checkpoint):
    recorders: list[RecordingPolicy] = []
    with running_policy(checkpoint, factory=RecordingPolicy.factory(recorders)) as h:
        (recorder,) = recorders
        recorder.fail_next = RuntimeError("CUDA out of memory")
        h.streaming = True
        goal = h.send_goal("pour the water")
        assert goal.accepted
        result = h.result(goal)
        assert result.status == GoalStatus.STATUS_ABORTED
        assert result.result.outcome == ExecuteInstruction.Result.OUTCOME_FAILED
        assert result.result.reason == "inference failed: CUDA out of memory"
        assert h.counter("inference_errors") == 1
        h.instruction.publish(String(data="pour the water"))
        assert wait_for(lambda: h.chunks)


# ---- triggers ---------------------------------------------------------------------------------------------
def test_sync_mode_infers_once_per_request_on_a_frame_taken_after_it(checkpoint):
    with running_policy(checkpoint, execution_mode="sync") as h:
        h.instruction.publish(String(data="close the lid"))
        h.streaming = True
        h.connected(h.requests, "chunk_request")
        time.sleep(0.5)
        assert not h.chunks
        request_ns = h.now_ns()
        h.requests.publish(Header(stamp=ns_to_time(request_ns)))
        assert wait_for(lambda: h.chunks)
        time.sleep(0.5)
        assert len(h.chunks) == 1
        assert time_to_ns(h.chunks[0].header.stamp) >= request_ns
        h.requests.publish(Header(stamp=ns_to_time(h.now_ns())))
        assert wait_for(lambda: len(h.chunks) == 2)
        assert h.chunks[1].sequence == 1


# ---- the node's own process ---------------------------------------------------------------------------------
def test_policy_node_main_serves_lifecycle_services_and_stops_on_sigint(checkpoint, tmp_path, own_ros_domain):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    log = tmp_path / "policy_node.log"
    command = [sys.executable, "-m", "videovla_ros.policy_node", "--ros-args", "-p", f"checkpoint:={checkpoint}"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=dict(os.environ), stdout=out, stderr=out)
    context = Context()
    rclpy.init(context=context)
    client_node = Node("policy_main_test", context=context)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        get_state = client_node.create_client(GetState, "videovla_policy/get_state")
        change_state = client_node.create_client(ChangeState, "videovla_policy/change_state")

        def node_report() -> str:
            status = "running" if process.poll() is None else f"exited with {process.returncode}"
            return f"videovla_policy {status}, log:\n{log.read_text()}"

        def state() -> str:
            # A request sent before DDS has matched the reply path is lost, so ask again (it is idempotent).
            for _ in range(5):
                assert get_state.wait_for_service(timeout_sec=WAIT), node_report()
                future = get_state.call_async(GetState.Request())
                if wait_for(future.done, timeout=3.0):
                    return future.result().current_state.label
            raise AssertionError(f"get_state never answered:\n{log.read_text()}")

        def transition(transition_id: int, goal: str) -> None:
            for _ in range(5):
                assert change_state.wait_for_service(timeout_sec=WAIT), node_report()
                future = change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
                if wait_for(future.done, timeout=3.0):
                    assert future.result().success, log.read_text()
                    return
                if state() == goal:  # the transition happened; only its reply was lost
                    return
            raise AssertionError(f"change_state never answered:\n{log.read_text()}")

        assert state() == "unconfigured"
        transition(Transition.TRANSITION_CONFIGURE, "inactive")
        transition(Transition.TRANSITION_ACTIVATE, "active")
        assert state() == "active"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0, log.read_text()
        output = log.read_text()
        assert "Loading weights" not in output  # no progress bars in launch output
        assert "never retrieved" not in output and "Traceback" not in output, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        executor.shutdown()
        spinner.join(timeout=10)
        client_node.destroy_node()
        ros_process.shut_down(context)
