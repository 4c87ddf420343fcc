"""The policy node's ROS parameters (YAML key `/**/videovla_policy`), declared through videovla_ros.parameters."""

from __future__ import annotations

from dataclasses import dataclass

from videovla_ros.execution_mode import DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, EXECUTION_MODES
from videovla_ros.imagination import IMAGINATION_MODES
from videovla_ros.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH
from videovla_ros.parameters import check_fields, parameter
from videovla_ros.policy_factory import POLICY_SOURCES

IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")


@dataclass(frozen=True)
class PolicyNodeParameters:
    """The node's ROS parameters (declared from these fields, read and checked on every configure)."""

    policy: str = parameter(
        "checkpoint",
        "where the policy comes from: a checkpoint or the simulator's scripted expert (policy_factory)",
        choices=POLICY_SOURCES,
    )
    checkpoint: str = parameter("", "checkpoint directory given to load_policy (launch argument checkpoint:=)")
    device: str = parameter("cpu", 'torch device, e.g. "cpu" or "cuda:0"', non_empty=True)
    dtype: str = parameter(
        "auto", '"auto" (bfloat16 on a GPU that has it, else float32), "float32", "bfloat16", "float16"'
    )
    num_inference_steps: int = parameter(0, "denoising steps; 0 = checkpoint default", low=0)
    guidance_scale: float = parameter(-1.0, "classifier-free guidance; < 0 = default")
    seed: int = parameter(0, "seed of the initial diffusion noise")
    added_latency: float = parameter(
        0.0, "wall time added to every inference, e.g. the expert at a large model's latency [s]", low=0.0
    )
    embodiment_id: int = parameter(0, "robot id the policy is conditioned on", low=0)
    image_transport: str = parameter("raw", "Image (raw) or CompressedImage (compressed)", choices=IMAGE_TRANSPORTS)
    camera_topic: str = parameter("image_raw", "camera topic (relative name)", non_empty=True)
    execution_mode: str = parameter(DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, choices=EXECUTION_MODES)
    max_instruction_length: int = parameter(
        DEFAULT_MAX_INSTRUCTION_LENGTH, "characters; longer instructions (topic or goal) are rejected", low=1
    )
    max_image_age: float = parameter(0.5, "camera frames older than this are dropped as stale [s]", above=0.0)
    image_timeout: float = parameter(
        5.0,
        "a goal fails when no camera frame arrives for this long [s, node clock: simulated under use_sim_time]; "
        "0 = never",
        low=0.0,
    )
    publish_imagination: str = parameter(
        "auto",
        "decode the imagination: auto (when imagination/* has subscribers), always, never",
        choices=IMAGINATION_MODES,
    )
    imagination_every: int = parameter(
        1, "decode the imagination of every N-th chunk only (it costs seconds on a CPU)", low=1
    )
    imagination_max_width: int = parameter(0, "the strip is subsampled to fit this width [px]; 0 = full size", low=0)
    frame_id: str = parameter("base_link", "frame of the action deltas in ActionChunk", non_empty=True)
    diagnostics_period: float = parameter(1.0, "time between /diagnostics messages [s]", above=0.0)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.policy == "checkpoint" and not self.checkpoint:
            raise ValueError(
                "parameter checkpoint is empty: name a checkpoint directory with the launch argument "
                "checkpoint:=/path/to/checkpoint (bringup --checkpoint), or under /**/videovla_policy: "
                "ros__parameters: checkpoint: in the params file (sim:=true uses the shipped default model)"
            )

    @property
    def image_topic(self) -> str:
        """The topic actually subscribed (image_transport's naming for the compressed stream)."""
        return self.camera_topic if self.image_transport == "raw" else f"{self.camera_topic}/compressed"
