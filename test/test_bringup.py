"""`bringup` in a separate process over real DDS: the YAML loads through rclpy's params-file parser, options
override it, autostart activates the policy node (real tiny checkpoint), chunks flow, SIGINT/SIGTERM shut down.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import ros_process
import yaml
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import GetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk
from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time, time_to_ns
from videovla_ros.bringup import parse_args
from videovla_ros.image_conversion import rgb_to_image_msg
from videovla_ros.launch_plan import default_params_file, sim_params_file

WAIT = 30.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from videovla_model.configuration import VideoVLAConfig
    from videovla_model.modeling import VideoVLAModel

    directory = tmp_path_factory.mktemp("tiny_checkpoint")
    VideoVLAModel(VideoVLAConfig.preset("tiny")).save_pretrained(directory)
    return directory


# Every wait in this file allows WAIT seconds unless it says otherwise.
wait_for = functools.partial(ros_process.wait_for, timeout=WAIT)


@contextmanager
def bringup(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            # -X faulthandler: a hung process dumps every thread's stack on SIGABRT (see stop()).
            [sys.executable, "-X", "faulthandler", "-m", "videovla_ros.bringup", *args],
            env=dict(os.environ),
            stdout=out,
            stderr=out,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@contextmanager
def peer() -> Iterator[Node]:
    context = Context()
    rclpy.init(context=context)
    node = Node("bringup_test_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()
        ros_process.shut_down(context)


def call(node: Node, service_type: Any, name: str, request: Any) -> Any:
    """Calls an idempotent service; a request sent before DDS has matched the reply path is lost, so retry."""
    client = node.create_client(service_type, name)
    for _ in range(5):
        assert client.wait_for_service(timeout_sec=WAIT), f"service {name} did not appear"
        future = client.call_async(request)
        if wait_for(future.done, timeout=3.0):
            return future.result()
    raise AssertionError(f"service {name} did not answer")


def parameters(node: Node, target: str, names: list[str]) -> dict[str, Any]:
    response = call(node, GetParameters, f"{target}/get_parameters", GetParameters.Request(names=names))
    return {name: parameter_value_to_python(value) for name, value in zip(names, response.values, strict=True)}


def active(node: Node, target: str) -> bool:
    return call(node, GetState, f"{target}/get_state", GetState.Request()).current_state.label == "active"


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, log: Path) -> None:
    process.send_signal(sig)
    try:
        code = process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # the stacks of the hang go to the log
        process.wait(timeout=WAIT)
        pytest.fail(f"bringup ignored {sig.name}:\n{log.read_text()}")
    assert code == 0, f"bringup exited with {code} after {sig.name}:\n{log.read_text()}"


def test_namespaced_policy_loads_the_yaml_autostarts_serves_and_stops_on_sigterm(checkpoint, tmp_path):
    log = tmp_path / "bringup.log"
    with (
        bringup(
            *("--no-bridge", "--namespace", "robot1", "--checkpoint", str(checkpoint)),
            *("--execution-mode", "async", "--autostart"),
            log=log,
        ) as process,
        peer() as node,
    ):
        assert wait_for(lambda: active(node, "/robot1/videovla_policy")), log.read_text()
        values = parameters(node, "/robot1/videovla_policy", ["checkpoint", "execution_mode", "imagination_max_width"])
        # From the YAML through its /**/ key (2048; the node's own default is 0) and from the command line.
        assert values == {
            "checkpoint": str(checkpoint),
            "execution_mode": "async",
            "imagination_max_width": 2048,
        }
        chunks: list[ActionChunk] = []
        node.create_subscription(ActionChunk, "/robot1/action_chunk", chunks.append, qos.ACTION_CHUNK)
        instruction = node.create_publisher(String, "/robot1/instruction", qos.INSTRUCTION)
        camera = node.create_publisher(Image, "/robot1/image_raw", qos.CAMERA)
        instruction.publish(String(data="pick up the cube"))
        assert wait_for(lambda: camera.get_subscription_count() > 0)

        def publish_image() -> bool:
            # Camera QoS is best effort: keep streaming fresh frames until a chunk comes back.
            stamp = ns_to_time(node.get_clock().now().nanoseconds)
            camera.publish(rgb_to_image_msg(np.full((48, 64, 3), 90, np.uint8), stamp, "camera_optical"))
            return bool(chunks)

        assert wait_for(publish_image), log.read_text()
        assert chunks[0].rows == 6 and chunks[0].dims == 7
        stop(process, signal.SIGTERM, log)


def test_bridge_gets_its_overrides_and_sigint_stops_everything(checkpoint, tmp_path):
    log = tmp_path / "bringup.log"
    # No --execution-mode and a params file without it: both nodes still agree (they share one default).
    args = ("--checkpoint", str(checkpoint), "--backend", "pose_stream", "--dry-run")
    with bringup(*args, log=log) as process, peer() as node:
        bridge = ["backend", "dry_run", "execution_mode", "realman.prefix", "workspace_min"]
        values = parameters(node, "arm_bridge", bridge)
        assert values == {
            "backend": "pose_stream",
            "dry_run": True,
            "execution_mode": "sync",
            "realman.prefix": "/rm_driver",
            "workspace_min": [-0.8, -0.8, 0.0],  # realman.yaml's box: config/sim.yaml only comes with --sim
        }
        state = call(node, GetState, "videovla_policy/get_state", GetState.Request()).current_state.label
        assert state == "unconfigured"  # no --autostart
        policy = parameters(node, "videovla_policy", ["execution_mode"])
        assert policy == {"execution_mode": "sync"}
        stop(process, signal.SIGINT, log)


def _names(parameters: dict[str, Any], prefix: str = "") -> list[str]:
    """Parameter names of a params-file section: nested keys join with dots (`realman: {prefix: ..}`)."""
    names = []
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        names += _names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names


def test_every_yaml_key_is_a_declared_parameter_of_its_node(checkpoint):
    from videovla_ros.arm_bridge_node import ArmBridgeNode
    from videovla_ros.policy_node import PolicyNode
    from videovla_ros.recorder_node import RecorderNode
    from videovla_ros.sim_arm_node import SimArmNode

    documents = [yaml.safe_load(path.read_text()) for path in (default_params_file(), sim_params_file())]
    context = Context()
    rclpy.init(context=context)
    try:
        nodes = {
            "videovla_policy": PolicyNode(context=context),
            "arm_bridge": ArmBridgeNode(
                context=context, parameter_overrides=[Parameter("backend", value="pose_stream")]
            ),
            "sim_arm": SimArmNode(context=context),
            "recorder": RecorderNode(context=context, parameter_overrides=[Parameter("dataset", value="unused")]),
        }
        for key, section in (item for document in documents for item in document.items()):
            name = key.removeprefix("/**/")
            assert name in nodes, f"{key}: no such node in bringup"
            undeclared = [p for p in _names(section["ros__parameters"]) if not nodes[name].has_parameter(p)]
            assert not undeclared, f"{key} sets parameters the node does not declare: {undeclared}"
        for node in nodes.values():
            node.destroy_node()
    finally:
        ros_process.shut_down(context)


def test_sim_yaml_gives_the_bridge_the_simulated_controllers_workspace():
    from videovla_sim.controller import Workspace

    bridge = yaml.safe_load(sim_params_file().read_text())["/**/arm_bridge"]["ros__parameters"]
    workspace = Workspace()
    assert bridge["workspace_min"] == [workspace.x[0], workspace.y[0], workspace.z[0]]
    assert bridge["workspace_max"] == [workspace.x[1], workspace.y[1], workspace.z[1]]


def test_sim_bringup_closes_the_loop_from_the_simulated_camera_to_the_arm(checkpoint, tmp_path):
    log = tmp_path / "bringup.log"
    args = ("--sim", "--checkpoint", str(checkpoint), "--execution-mode", "async", "--autostart")
    with bringup(*args, log=log) as process, peer() as node:
        sim = yaml.safe_load(sim_params_file().read_text())["/**/arm_bridge"]["ros__parameters"]
        assert parameters(node, "arm_bridge", ["backend", "workspace_min", "workspace_max"]) == {
            "backend": "pose_stream",
            "workspace_min": sim["workspace_min"],
            "workspace_max": sim["workspace_max"],
        }, log.read_text()
        frames: list[Image] = []
        chunks: list[ActionChunk] = []
        node.create_subscription(Image, "image_raw", frames.append, qos.CAMERA)
        node.create_subscription(ActionChunk, "action_chunk", chunks.append, qos.ACTION_CHUNK)
        node.create_publisher(String, "instruction", qos.INSTRUCTION).publish(String(data="pick up the red cube"))
        # Chunks are predicted from the simulated camera's frames: each carries the stamp of one of them.
        assert wait_for(
            lambda: {time_to_ns(c.header.stamp) for c in chunks} & {time_to_ns(f.header.stamp) for f in frames}
        )
        assert frames[0].header.frame_id == "sim_camera"
        # The bridge rightly refuses while the simulator's state is older than its watchdog; on a loaded machine the
        # simulator can stall for a few seconds, so the test asks again until it is fresh.
        answers: list[SetBool.Response] = []

        def enabled() -> bool:
            answers.append(call(node, SetBool, "arm_bridge/enable", SetBool.Request(data=True)))
            return answers[-1].success

        assert wait_for(enabled, period=0.5), [answer.message for answer in answers[-3:]]
        stop(process, signal.SIGINT, log)


def test_options_are_checked():
    assert parse_args([]).params_file == default_params_file()
    assert default_params_file().name == "realman.yaml" and default_params_file().is_file()
    with pytest.raises(SystemExit):
        parse_args(["--sim", "--backend", "realman"])
    assert parse_args(["--sim"]).launch_choices().sim
    assert parse_args(["--sim", "--sim-time"]).launch_choices().sim_time
    with pytest.raises(SystemExit):
        parse_args(["--sim-time"])  # nothing would publish /clock
    with pytest.raises(SystemExit):
        parse_args(["--params-file", str(REPO / "no_such.yaml")])
