"""Shared test set-up: isolated DDS for every test run, and skipping of tests the machine cannot run."""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Tests talk over real DDS; keep this run's traffic on loopback and away from other runs on the machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")
_domains = itertools.count(int(os.environ["ROS_DOMAIN_ID"]))


@contextmanager
def _next_ros_domain() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(1 + next(_domains) % 100))
        yield


@pytest.fixture(scope="module", autouse=True)
def ros_domain_per_module() -> Iterator[None]:
    """Each test module talks on its own DDS domain, so a participant an earlier module left behind (a process
    still shutting down, a killed one whose lease has not yet run out) cannot crowd or confuse its discovery."""
    with _next_ros_domain():
        yield


@pytest.fixture
def own_ros_domain() -> Iterator[None]:
    """A DDS domain for this test alone: for a test that starts a node in its own process and finds it by name,
    so no same-named node an earlier test of the module left on the module's domain can answer for it."""
    with _next_ros_domain():
        yield


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_full_ros = all(importlib.util.find_spec(name) is not None for name in ("launch", "launch_ros"))
    reasons = {
        "gpu": (None if _cuda_available() else "needs a CUDA GPU"),
        "full_ros": (None if has_full_ros else "needs a full ROS 2 install (launch, launch_ros)"),
        "checkpoint": (None if os.environ.get("VIDEOVLA_CHECKPOINT") else "set VIDEOVLA_CHECKPOINT to real weights"),
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason is not None and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset of three square-drawing episodes (9, 12 and 7 steps), written once per module that uses it (the
    training tests' data; a module may define its own)."""
    from test_data import write_square_dataset  # imports torch: only for the modules that use it

    root = tmp_path_factory.mktemp("episodes") / "data"
    write_square_dataset(root, lengths=(9, 12, 7))
    return root
