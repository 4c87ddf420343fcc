"""The simulated scene renders what it holds, and its controller reaches, or refuses, pose targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videovla_sim.controller import ArmController, ControllerConfig, TargetRejectedError, Workspace, quaternion_distance
from videovla_sim.expert import top_down_quaternion
from videovla_sim.scene import COLOURS, TOP_DOWN_QUATERNION, ObjectSpec, Scene, SceneConfig

OBJECTS = (
    ObjectSpec("red", "cube", 0.30, 0.00, 0.4),
    ObjectSpec("blue", "cylinder", 0.36, 0.15),
    ObjectSpec("yellow", "cube", 0.26, -0.18, -0.3),
    ObjectSpec("green", "plate", 0.40, -0.10),
)


def dominant_colour(pixel: np.ndarray) -> str:
    """The palette colour nearest to an RGB pixel by hue direction (shading changes brightness, not hue)."""
    rgb = pixel.astype(float) / 255.0

    def direction(v: np.ndarray) -> np.ndarray:
        centred = v - v.mean()
        return centred / (np.linalg.norm(centred) + 1e-9)

    return max(COLOURS, key=lambda name: float(direction(rgb) @ direction(np.array(COLOURS[name][:3]))))


@pytest.fixture(scope="module")
def scene() -> Scene:
    scene = Scene(OBJECTS, SceneConfig(image_height=128, image_width=128))
    yield scene
    scene.close()


def test_render_shows_every_object_in_its_colour(scene):
    image = scene.render()
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert image.std() > 20, "a flat image means the camera sees nothing"
    for spec in OBJECTS:
        position, _ = scene.object_pose(spec.name)
        top = position + np.array([0.0, 0.0, spec.half_height])
        row, column = (round(v) for v in scene.project(top))
        assert 0 <= row < 128 and 0 <= column < 128, f"{spec.name} is out of the camera's view"
        patch = image[row - 1 : row + 2, column - 1 : column + 2].reshape(-1, 3)
        colours = [dominant_colour(p) for p in patch]
        assert colours.count(spec.colour) >= 5, f"{spec.name} at pixel ({row}, {column}) looks {colours}"


def test_objects_rest_on_the_table(scene):
    scene.reset()
    scene.step(250)
    for spec in OBJECTS:
        position, _ = scene.object_pose(spec.name)
        assert position[2] == pytest.approx(spec.half_height, abs=2e-3)
        assert position[:2] == pytest.approx([spec.x, spec.y], abs=1e-3)
        assert scene.object_speed(spec.name) < 1e-3


def test_scene_rejects_bad_configuration():
    with pytest.raises(ValueError, match="image_height must be in"):
        SceneConfig(image_height=4)
    with pytest.raises(ValueError, match="colour must be one of"):
        ObjectSpec("pink", "cube", 0.3, 0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ObjectSpec("red", "ball", 0.3, 0.0)
    with pytest.raises(ValueError, match="unique"):
        Scene([ObjectSpec("red", "cube", 0.3, 0.0), ObjectSpec("red", "cube", 0.3, 0.1)])


@pytest.fixture()
def arm() -> ArmController:
    scene = Scene(OBJECTS[:1], SceneConfig(image_height=32, image_width=32))
    yield ArmController(scene)
    scene.close()


def test_controller_starts_holding_home_pointing_down(arm):
    position, quaternion = arm.scene.tcp_pose()
    assert position == pytest.approx(arm.home_position, abs=1e-3)
    assert quaternion_distance(quaternion, np.array(TOP_DOWN_QUATERNION)) < 0.01
    arm.step(500)
    assert arm.scene.tcp_pose()[0] == pytest.approx(arm.home_position, abs=1e-3)


@pytest.mark.parametrize(
    ("position", "yaw"),
    [((0.35, 0.10, 0.05), 0.0), ((0.40, -0.18, 0.02), 0.7), ((0.22, 0.20, 0.30), -1.2), ((0.25, 0.0, 0.38), 0.3)],
)
def test_controller_reaches_reachable_targets(arm, position, yaw):
    target_quaternion = top_down_quaternion(yaw)
    arm.command_pose(np.array(position), target_quaternion)
    arm.step(750)  # 1.5 s
    reached, quaternion = arm.scene.tcp_pose()
    assert np.linalg.norm(reached - position) < 0.003
    assert quaternion_distance(quaternion, target_quaternion) < 0.02
    assert np.all(np.abs(arm.scene.arm_qvel()) < 0.05), "the arm should have settled"


def test_controller_refuses_targets_outside_its_workspace_and_holds(arm):
    held = np.array([0.33, 0.05, 0.10])
    down = np.array(TOP_DOWN_QUATERNION)
    arm.command_pose(held, down)
    arm.step(500)
    refused = {
        "workspace x range": (0.90, 0.0, 0.10),
        "workspace z range": (0.30, 0.0, -0.05),
        "not reachable": (0.55, 0.35, 0.02),  # inside the box, but beyond the arm's top-down reach
    }
    for reason, position in refused.items():
        with pytest.raises(TargetRejectedError, match=reason):
            arm.command_pose(np.array(position), down)
        assert arm.target_position == pytest.approx(held)
    arm.step(250)
    assert np.linalg.norm(arm.scene.tcp_pose()[0] - held) < 0.002


def test_controller_refuses_malformed_commands(arm):
    down = np.array(TOP_DOWN_QUATERNION)
    with pytest.raises(TargetRejectedError, match="3 finite numbers"):
        arm.command_pose(np.array([0.3, math.nan, 0.1]), down)
    with pytest.raises(TargetRejectedError, match="unit quaternion"):
        arm.command_pose(np.array([0.3, 0.0, 0.1]), np.zeros(4))
    with pytest.raises(TargetRejectedError, match=r"gripper opening must be in \[0, 1\]"):
        arm.command_gripper(1.5)
    with pytest.raises(ValueError, match="low < high"):
        Workspace(x=(0.5, 0.1))
    # A target the bridge clamped to the box's floor arrives a rounding error below it and is still accepted.
    assert Workspace().violation(np.array([0.3, 0.0, 0.015 - 1e-9])) is None
    assert "workspace z range" in Workspace().violation(np.array([0.3, 0.0, 0.015 - 1e-4]))
    with pytest.raises(ValueError, match="max_joint_speed"):
        ControllerConfig(max_joint_speed=0.0)


def test_gripper_opens_and_closes(arm):
    arm.command_gripper(0.0)
    arm.step(250)
    assert arm.scene.gripper_opening() < 0.02
    arm.command_gripper(1.0)
    arm.step(250)
    assert arm.scene.gripper_opening() > 0.98
