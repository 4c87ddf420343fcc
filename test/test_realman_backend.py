"""The Realman backend against a stand-in rm_driver in another process, over real DDS.

Needs the test-only rm_ros_interfaces: `bash scripts/build_test_fixtures.sh` and
`source build/test_fixtures/install/local_setup.bash` (make test does both).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bridge_harness import BridgeHarness, make_chunk, wait_for
from geometry_msgs.msg import Pose
from rclpy.node import Node
from ros_process import ros_context, spin_until
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

rm_msgs = pytest.importorskip(
    "rm_ros_interfaces.msg",
    reason="test fixture rm_ros_interfaces not built/sourced: bash scripts/build_test_fixtures.sh && "
    "source build/test_fixtures/install/local_setup.bash",
)

FAKE_DRIVER = Path(__file__).parent / "fixtures" / "fake_rm_driver.py"
DRIVER_QOS = 10
_names = (f"rm{k}" for k in itertools.count())


@pytest.fixture(scope="module")
def context():
    with ros_context() as ros:
        yield ros


@pytest.fixture
def fake_driver(request):
    process = subprocess.Popen(
        [sys.executable, str(FAKE_DRIVER), "--stop-type", request.param, "--initial", "0.3", "0.0", "0.4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready", "the stand-in rm_driver did not start"
        yield request.param
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("fake_driver", ["bool", "empty"], indirect=True)
def test_realman_streams_cartepos_moves_the_gripper_and_stops(context, fake_driver):
    h = BridgeHarness(
        context,
        f"/{next(_names)}",
        publish_state=False,
        backend="realman",
        execution_mode="async",
        latency_compensation=0.05,
        **{"realman.stop_message_type": fake_driver},
    )
    try:
        sent, arm, stops, gripper_positions = [], [], [], []
        peer = h.peer
        peer.create_subscription(rm_msgs.Cartepos, "/rm_driver/movep_canfd_cmd", sent.append, DRIVER_QOS)
        peer.create_subscription(Pose, "/rm_driver/udp_arm_position", arm.append, DRIVER_QOS)
        peer.create_subscription(Bool, "/rm_driver/move_stop_result", stops.append, DRIVER_QOS)
        peer.create_subscription(
            rm_msgs.Gripperset,
            "/rm_driver/set_gripper_position_cmd",
            lambda m: gripper_positions.append(m.position),
            10,
        )
        wait_for(lambda: h.bridge._history.latest() is not None, 10.0, "udp_arm_position from the stand-in driver")
        response = h.enable()
        assert response.success, response.message

        rows = np.zeros((6, 7))
        rows[:, 0] = 0.01  # +1 cm per row in x
        rows[:, 2] = -0.005  # -5 mm per row in z
        rows[:3, 6] = 1.0  # open, then close
        h.chunk_pub.publish(make_chunk(rows, h.now_ns()))
        h.wait_counter("chunks_accepted", 1)
        # The stand-in driver follows the streamed poses: its reported pose ends at the chunk's last target.
        wait_for(lambda: arm and abs(arm[-1].position.x - 0.36) < 1e-6, 10.0, "the arm at x = 0.36")
        assert abs(arm[-1].position.z - 0.37) < 1e-6
        assert len(sent) > 10 and all(msg.follow is False for msg in sent)
        xs = np.array([msg.pose.position.x for msg in sent])
        assert np.all(np.diff(xs) >= -1e-12), "the stream went backwards"
        wait_for(lambda: gripper_positions == [1000, 1], 5.0, "gripper open (1000) then closed (1)")

        h.estop_pub.publish(Bool(data=True))
        wait_for(lambda: stops and stops[-1].data, 10.0, f"move_stop_result after a {fake_driver} stop")
        count = len(sent)
        h.chunk_pub.publish(make_chunk(rows, h.now_ns(), sequence=1))
        h.wait_counter("chunks_ignored_disabled", 1)
        assert len(sent) == count, "poses were streamed after the e-stop"
    finally:
        h.close()


@pytest.mark.parametrize("fake_driver", ["empty"], indirect=True)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_enabled_bridge_process_stops_the_arm_when_it_is_shut_down(context, fake_driver, stop_signal, tmp_path):
    namespace = f"/{next(_names)}"
    log = tmp_path / "arm_bridge.log"
    command = [sys.executable, "-m", "videovla_ros.arm_bridge_node", "--ros-args", "-r", f"__ns:={namespace}"]
    command += ["-p", "backend:=realman", "-p", f"realman.stop_message_type:={fake_driver}"]
    # Only the shutdown may stop the arm here: on a loaded machine the stand-in driver's pose stream can pause
    # past the default 0.5 s state watchdog, which stops the arm too (seen once in CI).
    command += ["-p", "state_watchdog:=10.0"]
    peer = Node(f"{namespace.strip('/')}_peer", context=context)
    stops: list[Bool] = []
    peer.create_subscription(Bool, "/rm_driver/move_stop_result", stops.append, DRIVER_QOS)
    enable = peer.create_client(SetBool, f"{namespace}/arm_bridge/enable")
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=dict(os.environ), stdout=out, stderr=out)
    try:

        def enabled() -> bool:
            # Refused until the bridge has heard the driver's pose; a request sent before discovery can be lost.
            future = enable.call_async(SetBool.Request(data=True))
            if spin_until(peer, future.done, 3.0) and future.result().success:
                return True
            spin_until(peer, lambda: False, 0.5)
            return False

        assert spin_until(peer, enable.service_is_ready, 20.0), log.read_text()
        assert any(enabled() for _ in range(20)), log.read_text()
        assert not stops, log.read_text()
        process.send_signal(stop_signal)
        assert spin_until(peer, lambda: bool(stops), 10.0), f"no move_stop_cmd on shutdown:\n{log.read_text()}"
        assert process.wait(timeout=10) == 0, log.read_text()
        assert "shutting down: arm stopped and disabled" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        peer.destroy_node()
