"""ROS overhead of the policy node per chunk, on top of the policy's own inference time.

    scripts/with_env.sh python benchmarks/ros_overhead.py [--checkpoint DIR] [--repeats 30]

For 256x256 and 640x480 camera frames, raw (rgb8) and compressed (JPEG), a peer node publishes one frame at a
time, waits for the chunk, and repeats. Printed per case (median / 90th percentile, milliseconds):
    node overhead      image receipt in the node's callback -> chunk published, minus the policy's inference
                       time (queueing, image conversion, message building: what the node adds)
    end-to-end extra   image publish in the peer -> chunk received by the peer, minus inference time
                       (adds DDS transport of the image and the chunk both ways)
    inference          the policy call itself (tiny model unless --checkpoint names another)
Without --checkpoint a tiny random-weight checkpoint is created in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time, time_to_ns
from videovla_ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode

CASES: tuple[tuple[int, int, str], ...] = (
    (256, 256, "raw"),
    (256, 256, "compressed"),
    (640, 480, "raw"),
    (640, 480, "compressed"),
)


def tiny_checkpoint(directory: Path) -> Path:
    from videovla_model.configuration import VideoVLAConfig
    from videovla_model.modeling import VideoVLAModel

    VideoVLAModel(VideoVLAConfig.preset("tiny")).save_pretrained(directory)
    return directory


def camera_frame(width: int, height: int) -> np.ndarray:
    """A smooth synthetic scene (JPEG of noise would be unrealistically large): (height, width, 3) uint8."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * 255 // width, rows * 255 // height, (rows + cols) % 256], axis=2).astype(np.uint8)


def wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("no chunk arrived; is the policy node active?")
        time.sleep(0.0005)


def run_case(checkpoint: Path, width: int, height: int, transport: str, repeats: int) -> dict[str, list[float]]:
    context = Context()
    rclpy.init(context=context)
    node = PolicyNode(
        context=context,
        parameter_overrides=[
            Parameter("checkpoint", value=str(checkpoint)),
            Parameter("image_transport", value=transport),
            Parameter("publish_imagination", value="never"),
        ],
    )
    peer = Node("ros_overhead_peer", context=context)
    chunks: list[tuple[int, ActionChunk]] = []
    peer.create_subscription(ActionChunk, "action_chunk", lambda m: chunks.append((time.monotonic_ns(), m)), 10)
    topic_type = Image if transport == "raw" else CompressedImage
    camera = peer.create_publisher(
        topic_type, "image_raw" if transport == "raw" else "image_raw/compressed", qos.CAMERA
    )
    instruction = peer.create_publisher(String, "instruction", qos.INSTRUCTION)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS, context=context)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    results: dict[str, list[float]] = {"node overhead": [], "end-to-end extra": [], "inference": []}
    try:
        node.trigger_configure()
        node.trigger_activate()
        instruction.publish(String(data="pick up the red cube"))
        wait(lambda: node.scheduler is not None and node.scheduler.instruction and camera.get_subscription_count())
        rgb = camera_frame(width, height)
        for index in range(repeats + 3):  # the first chunks warm up caches and allocators
            stamp = ns_to_time(peer.get_clock().now().nanoseconds)
            message = (
                rgb_to_image_msg(rgb, stamp, "camera")
                if transport == "raw"
                else (rgb_to_compressed_msg(rgb, stamp, "camera", quality=90))
            )
            count = len(chunks)
            sent = time.monotonic_ns()
            camera.publish(message)
            try:
                wait(lambda c=count: len(chunks) > c, timeout=2.0)
            except TimeoutError:
                continue  # a best-effort frame was lost; send the next one
            received, chunk = chunks[-1]
            assert time_to_ns(chunk.header.stamp) == time_to_ns(stamp)
            if index >= 3:
                results["inference"].append(chunk.inference_time)
                results["node overhead"].append(node.overhead_stats.last)
                results["end-to-end extra"].append((received - sent) / 1e9 - chunk.inference_time)
            time.sleep(0.02)
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="policy checkpoint (default: a tiny one)")
    parser.add_argument("--repeats", type=int, default=30, help="chunks measured per case")
    options = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = options.checkpoint or tiny_checkpoint(Path(scratch) / "tiny")
        print(f"checkpoint: {checkpoint}; {options.repeats} chunks per case; milliseconds, median / p90")
        print(f"{'input':<22}{'node overhead':>18}{'end-to-end extra':>20}{'inference':>18}")
        for width, height, transport in CASES:
            results = run_case(checkpoint, width, height, transport, options.repeats)
            cells = []
            for key in ("node overhead", "end-to-end extra", "inference"):
                values = np.asarray(results[key]) * 1e3
                cells.append(f"{np.median(values):8.2f} / {np.percentile(values, 90):6.2f}")
            label = f"{width}x{height} {transport}"
            print(f"{label:<22}{cells[0]:>18}{cells[1]:>20}{cells[2]:>18}  (n={len(results['inference'])})")


if __name__ == "__main__":
    main()
