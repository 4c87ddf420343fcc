"""Real-time chunking at the arm bridge over real DDS: the rtc_chunk_request it publishes, and the parameter check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from bridge_harness import BridgeHarness, make_chunk, wait_for
from ros_process import ros_context

from videovla_msgs.msg import ChunkRequest
from videovla_ros import qos
from videovla_ros.arm_bridge_node import PARAMETERS, config_from_parameters
from videovla_ros.realtime_chunking import PREFIX_DIMS, from_msg, prefix_for_capture

_names = (f"rtc{k}" for k in itertools.count())
STEP_ROWS = np.tile([0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (6, 1))


@pytest.fixture
def harness():
    with ros_context() as context:
        h = BridgeHarness(context, f"/{next(_names)}", dry_run=True, mode="async", rtc=True, blend_duration=0.0)
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
    # The chunk's rows due after the request (about 5 of 6) at 5 mm per 0.1 s, and the measured delay. The arm
    # held at the capture pose until now, so the first step also makes up the row due 0.05 s after capture.
    assert 4 <= len(request.rows) <= 5 and request.time_step == 0.1
    np.testing.assert_allclose(request.rows[1:, 0], 0.005, atol=1e-6)
    assert 0.005 < request.rows[0, 0] < 0.01
    np.testing.assert_array_equal(request.rows[:, 6], 1.0)
    assert 0.05 <= request.inference_delay < 1.0
    prefix = prefix_for_capture(request, request.origin_ns, 6, 0.1, PREFIX_DIMS)
    assert prefix is not None and prefix.actions.shape == (len(request.rows), 7)


def test_rtc_needs_async_mode():
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    with pytest.raises(ValueError, match=r"parameter rtc needs mode 'async'.*got mode 'sync'"):
        config_from_parameters({**values, "mode": "sync", "rtc": True})
    assert config_from_parameters({**values, "mode": "async", "rtc": True}).rtc
