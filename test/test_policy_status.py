"""The policy node's /diagnostics status names what keeps it from publishing chunks."""

from __future__ import annotations

import dataclasses

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from videovla_model.devices import DeviceUnavailableError, check_device
from videovla_ros.policy_status import PolicyActivity, policy_status

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
