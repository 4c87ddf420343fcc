"""What the policy node publishes: the lifecycle publishers, the ActionChunk of an inference, the imagined video.

`chunk_from_output` and `imagination_messages` are pure; `PolicyOutputs` holds the publishers the node creates
on configure (they publish only while the node is active); `publish_imagination` decodes and publishes a chunk's
imagined video once the chunk is out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher
from sensor_msgs.msg import Image

from videovla_model.contract import Policy, PolicyMetadata, PolicyOutput, validate_frames
from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk
from videovla_ros.imagination import FramePlayback, frame_msgs, strip_msg, video_clip_msg
from videovla_ros.inference_scheduler import InferenceJob


@dataclass(frozen=True)
class PolicyOutputs:
    """The lifecycle publishers of action_chunk and imagination/{strip, frame, clip}."""

    chunk: LifecyclePublisher
    strip: LifecyclePublisher
    frame: LifecyclePublisher
    clip: LifecyclePublisher

    @classmethod
    def create(cls, node: LifecycleNode) -> PolicyOutputs:
        return cls(
            chunk=node.create_lifecycle_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK),
            strip=node.create_lifecycle_publisher(Image, "imagination/strip", qos.IMAGINATION),
            frame=node.create_lifecycle_publisher(Image, "imagination/frame", qos.IMAGINATION),
            clip=node.create_lifecycle_publisher(VideoClip, "imagination/clip", qos.IMAGINATION),
        )

    def destroy(self, node: LifecycleNode) -> None:
        for publisher in (self.chunk, self.strip, self.frame, self.clip):
            node.destroy_lifecycle_publisher(publisher)

    @property
    def imagination_subscribers(self) -> int:
        return sum(p.get_subscription_count() for p in (self.strip, self.frame, self.clip))


@dataclass(frozen=True)
class ChunkContext:
    """What a chunk says besides the policy's output: its number, the node's frame and robot id, and timings."""

    sequence: int
    frame_id: str
    embodiment_id: int
    inference_time: float  # s
    now_ns: int  # ROS time the chunk is built at


def chunk_from_output(
    job: InferenceJob, output: PolicyOutput, metadata: PolicyMetadata, context: ChunkContext
) -> TimedChunk:
    """The chunk of `output` (actions (chunk_rows, action_dims)), stamped with the capture of the job's frame."""
    capture_time_ns = job.frame.capture_time_ns
    return TimedChunk(
        capture_time_ns=capture_time_ns,
        frame_id=context.frame_id,
        instruction=job.instruction,
        sequence=context.sequence,
        actions=output.actions,
        dim_names=metadata.action_dim_names,
        time_step=metadata.time_step,
        execute_rows=metadata.execute_rows,
        embodiment_id=context.embodiment_id,
        inference_time=context.inference_time,
        capture_to_publish_time=(context.now_ns - capture_time_ns) / 1e9,
    )


@dataclass(frozen=True)
class ImaginationMessages:
    """The imagined video as messages: a strip, a clip and (with a frame period) frames to play back."""

    strip: Image
    clip: VideoClip
    frames: list[Image]


def imagination_messages(
    frames: np.ndarray,
    job: InferenceJob,
    camera_frame_id: str,
    sequence: int,
    frame_period: float,
    max_width: int,
) -> ImaginationMessages:
    """Messages of the imagined `frames` ((T, H, W, 3) uint8), in the camera's frame, stamped from the capture
    of the job's frame; no playback frames when the policy has no frame period."""
    capture = job.frame.capture_time_ns
    return ImaginationMessages(
        strip=strip_msg(frames, capture, camera_frame_id, max_width),
        clip=video_clip_msg(frames, capture, camera_frame_id, job.instruction, sequence, frame_period),
        frames=frame_msgs(frames, capture, camera_frame_id, frame_period) if frame_period > 0 else [],
    )


def publish_imagination(
    policy: Policy,
    output: PolicyOutput,
    job: InferenceJob,
    sequence: int,
    max_width: int,
    outputs: PolicyOutputs,
    playback: FramePlayback,
) -> Exception | None:
    """Decodes the imagined video of `output` ((T, H, W, 3) uint8), publishes its strip and clip in the camera's
    frame and loads its frames into `playback`. Returns what failed when decoding or checking the frames raised
    (nothing is published then), None otherwise (also when the policy had nothing to decode)."""
    try:
        frames = policy.decode_imagination(output)
        if frames is None:
            return None
        validate_frames(frames)
    except Exception as error:  # the caller counts and logs it; the chunk is already out
        return error
    period = policy.metadata.imagined_frame_period
    messages = imagination_messages(frames, job, job.frame.message.header.frame_id, sequence, period, max_width)
    outputs.strip.publish(messages.strip)
    outputs.clip.publish(messages.clip)
    if messages.frames:
        playback.load(messages.frames)
    return None
