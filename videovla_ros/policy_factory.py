"""How the policy node obtains its `videovla_model.contract.Policy`: one factory per `policy` parameter value.

    checkpoint  a VideoVLA checkpoint folder (`checkpoint`, `device`, `dtype`, `num_inference_steps`,
                `guidance_scale`, `seed`), through `videovla_model.policy.load_policy` (torch is imported there,
                never by a node)
    expert      the simulator's scripted expert (`videovla_sim.expert_policy.ExpertPolicy`), which plans from
                privileged state: it subscribes to `sim_arm/scene_state` (std_msgs/String, ROBOT_STATE, relative
                to the node's namespace), which only the simulated arm publishes. A learned policy never gets
                that subscription or that state.

With `added_latency` > 0 the policy is wrapped in `videovla_model.policy_wrappers.SlowedPolicy`, which answers
that much later (the expert with a large model's timing).

A factory is any callable `(parameters, node) -> Policy`; `PolicyNode(policy_factory=...)` takes one (tests wrap
`make_policy` to record calls). A policy with a `close()` method is closed when the node releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from videovla_model.contract import Policy
from videovla_model.policy import load_policy  # torch-free until a checkpoint is loaded
from videovla_model.policy_wrappers import SlowedPolicy
from videovla_ros import qos
from videovla_sim.expert_policy import ExpertPolicy
from videovla_sim.scene_state import SceneState

if TYPE_CHECKING:
    from videovla_ros.policy_parameters import PolicyNodeParameters

POLICY_SOURCES: tuple[str, ...] = ("checkpoint", "expert")
SCENE_STATE_TOPIC = "sim_arm/scene_state"

PolicyFactory = Callable[["PolicyNodeParameters", Node], Policy]


def make_policy(params: PolicyNodeParameters, node: Node) -> Policy:
    """The policy `params.policy` names (see the module docstring), slowed by `params.added_latency`."""
    policy = _make_source(params, node)
    return SlowedPolicy(policy, params.added_latency) if params.added_latency > 0 else policy


def _make_source(params: PolicyNodeParameters, node: Node) -> Policy:
    """The policy `params.policy` names; raises ValueError for an unknown one."""
    if params.policy == "checkpoint":
        return load_policy(
            params.checkpoint,
            device=params.device,
            dtype=params.dtype,
            num_inference_steps=params.num_inference_steps or None,
            guidance_scale=params.guidance_scale if params.guidance_scale >= 0 else None,
            seed=params.seed,
        )
    if params.policy == "expert":
        return SubscribedExpertPolicy(node)
    raise ValueError(f"parameter policy must be one of {list(POLICY_SOURCES)}, got {params.policy!r}")


class SubscribedExpertPolicy(ExpertPolicy):
    """The scripted expert fed by the newest message on `sim_arm/scene_state` (malformed ones are counted)."""

    def __init__(self, node: Node) -> None:
        self._lock = threading.Lock()
        self._latest: SceneState | None = None
        self.rejected_states = 0
        self._node = node
        self._subscription = node.create_subscription(
            String, SCENE_STATE_TOPIC, self._on_state, qos.ROBOT_STATE, callback_group=ReentrantCallbackGroup()
        )
        super().__init__(self._newest)

    def _on_state(self, msg: String) -> None:
        try:
            state = SceneState.from_json(msg.data)
        except ValueError as error:
            self.rejected_states += 1
            self._node.get_logger().warning(f"dropped {SCENE_STATE_TOPIC}: {error}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._latest = state

    def _newest(self) -> SceneState | None:
        with self._lock:
            return self._latest

    def close(self) -> None:
        self._node.destroy_subscription(self._subscription)
