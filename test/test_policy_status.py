"""The policy node's /diagnostics status names what keeps it from publishing chunks."""

from __future__ import annotations

import dataclasses

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from videovla_model.devices import DeviceUnavailableError, check_device
from videovla_ros.inference_scheduler import InferenceScheduler
from videovla_ros.metrics import RunningStats
from videovla_ros.policy_parameters import PolicyNodeParameters
from videovla_ros.policy_status import PolicyActivity, policy_status, timing_gauges

S = 1_000_000_000

HEALTHY = PolicyActivity(
    active_since_ns=0,
    instruction="pick up the red cube",
    last_frame_ns=10 * S,
    last_error=None,
    image_topic="image_raw",
    camera_silence=0.5,
    waiting_for_request=False,
)


@pytest.mark.parametrize(
    ("changes", "level", "message"),
    [
        ({}, DiagnosticStatus.OK, "publishing chunks"),
        ({"active_since_ns": None}, DiagnosticStatus.WARN, "inactive: activate the node"),
        ({"last_frame_ns": None}, DiagnosticStatus.WARN, "no camera image on 'image_raw' for 10.1 s"),
        ({"last_frame_ns": 8 * S}, DiagnosticStatus.WARN, "no new camera image on 'image_raw' for 2.1 s"),
        ({"instruction": ""}, DiagnosticStatus.WARN, "no instruction: publish one on 'instruction'"),
        ({"last_error": "boom"}, DiagnosticStatus.ERROR, "inference failed: boom"),
        ({"waiting_for_request": True}, DiagnosticStatus.OK, "waiting for a chunk request"),
    ],
)
def test_status_names_what_is_missing(changes, level, message):
    got_level, got_message = policy_status(dataclasses.replace(HEALTHY, **changes), round(10.1 * S))
    assert got_level == level and got_message.startswith(message)


def test_an_unavailable_device_is_named():
    check_device("cpu")
    with pytest.raises(DeviceUnavailableError, match="device 'gpu0' is not a torch device string"):
        check_device("gpu0")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match=r"device 'cuda:0' is not available: .*use device 'cpu'"):
            check_device("cuda:0")


def test_timing_gauges_name_every_timing_of_diagnostics():
    inference, overhead = RunningStats(), RunningStats()
    inference.add(1.0)
    inference.add(2.0)
    overhead.add(0.01)
    assert timing_gauges(inference, overhead, 0.5) == {
        "inference_time_last": 2.0,
        "inference_time_mean": 1.5,
        "ros_overhead_last": 0.01,
        "ros_overhead_mean": 0.01,
        "chunk_rate_hz": 0.5,
    }


def test_activity_of_a_configured_node_reads_its_scheduler_and_parameters():
    params = PolicyNodeParameters(policy="expert", camera_topic="cam", image_transport="compressed")
    scheduler = InferenceScheduler("sync", params.max_image_age, params.max_instruction_length)
    scheduler.set_instruction("pick up the red cube")
    activity = PolicyActivity.of(scheduler, params, active_since_ns=0, last_error=None)
    assert activity.image_topic == "cam/compressed" and activity.instruction == "pick up the red cube"
    assert activity.waiting_for_request and activity.last_frame_ns is None
    assert policy_status(activity, 2 * S) == (DiagnosticStatus.WARN, "no camera image on 'cam/compressed' for 2.0 s")
