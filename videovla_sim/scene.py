"""The tabletop scene: a 6-DoF arm with a parallel gripper, coloured objects and a fixed camera (MJCF in code).

Frames: the world frame IS the arm's `base_link`: origin at the arm base, which stands on the table top at
the table's near edge; x points across the table (away from the arm), z up, table surface at z = 0. Every
pose this package reads or writes is in this frame, so what the sim reports is what a real arm's driver
reports in `base_link`.

The arm follows the Realman RM65 layout (shoulder height 0.2405 m, upper arm 0.256 m, forearm 0.210 m,
wrist to flange 0.144 m, about 0.6 m reach to the flange; RM65 joint limits) without its small lateral
offsets. The gripper adds 0.065 m from the flange to the tool centre point (TCP, the site `tcp`, between the
finger pads): its z axis points out of the gripper and the fingers close along its y axis. Only the
gripper collides; the links are drawn but pass through things, which the workspace limits of the
controller keep from mattering.

The camera looks at the table from the front-top, facing the arm, like a third-person camera set up
opposite a real arm. It is framed on the reachable band where objects are placed (the arm's base and upper
links are partly out of view), so that at the small presets' 64 x 64 px an object still covers about 5 x 5 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

# RGBA colours of the objects, by the name instructions use.
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.65, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
}

# Graspable shapes and their (half-width, half-height) in metres: the finger gap needed is 2 * half-width.
SHAPES: dict[str, tuple[float, float]] = {
    "cube": (0.02, 0.02),
    "cylinder": (0.018, 0.025),
}

# Receptacles lying flat on the table (static): (radius, half-height).
RECEPTACLES: dict[str, tuple[float, float]] = {
    "plate": (0.055, 0.005),
}

ARM_JOINTS: tuple[str, ...] = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")
FINGER_JOINTS: tuple[str, ...] = ("finger_left", "finger_right")
TCP_SITE = "tcp"
# TCP orientation (w, x, y, z) with the gripper pointing straight down and the fingers closing along base y:
# half a turn about y, so at yaw 0 the joints sit near zero and a top-down yaw psi is Rz(psi) @ TOP_DOWN.
TOP_DOWN_QUATERNION: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0)
CAMERA = "front"

# RM65 joint limits [rad] (J6 is limited here to one turn each way, as the controller never needs more).
ARM_JOINT_LIMITS: tuple[tuple[float, float], ...] = (
    (-math.radians(178), math.radians(178)),
    (-math.radians(130), math.radians(130)),
    (-math.radians(135), math.radians(135)),
    (-math.radians(178), math.radians(178)),
    (-math.radians(128), math.radians(128)),
    (-math.radians(360), math.radians(360)),
)

SHOULDER_HEIGHT = 0.2405
UPPER_ARM = 0.256
FOREARM = 0.210
WRIST_TO_FLANGE = 0.144
FLANGE_TO_TCP = 0.065
FINGER_TRAVEL = 0.04
"""Each finger travels 0..4 cm from the centre line: a 0..8 cm opening."""
FINGER_TIP_BELOW_TCP = 0.015

# A joint configuration with the gripper pointing down above the table; the home pose is solved from it.
HOME_SEED: tuple[float, ...] = (0.0, 0.35, 1.75, 0.0, 1.05, 0.0)


@dataclass(frozen=True)
class ObjectSpec:
    """One object in the scene. `kind` is a shape from SHAPES (free body) or RECEPTACLES (static)."""

    colour: str
    kind: str
    x: float
    y: float
    yaw: float = 0.0

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"ObjectSpec.colour must be one of {sorted(COLOURS)}, got {self.colour!r}")
        if self.kind not in SHAPES and self.kind not in RECEPTACLES:
            raise ValueError(
                f"ObjectSpec.kind must be one of {sorted(SHAPES) + sorted(RECEPTACLES)}, got {self.kind!r}"
            )

    @property
    def name(self) -> str:
        """The MuJoCo body name, e.g. "red_cube"."""
        return f"{self.colour}_{self.kind}"

    @property
    def is_receptacle(self) -> bool:
        return self.kind in RECEPTACLES

    @property
    def half_height(self) -> float:
        return RECEPTACLES[self.kind][1] if self.is_receptacle else SHAPES[self.kind][1]

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle on the table that contains the object (for placement without overlap)."""
        if self.is_receptacle:
            return RECEPTACLES[self.kind][0]
        half_width = SHAPES[self.kind][0]
        return half_width * math.sqrt(2.0) if self.kind == "cube" else half_width


@dataclass(frozen=True)
class SceneConfig:
    """Physics and camera settings (the frozen part of a scene; objects vary per episode)."""

    image_height: int = 96
    image_width: int = 96
    timestep: float = 0.002
    """Physics step [s]."""
    camera_position: tuple[float, float, float] = (0.78, -0.25, 0.62)
    camera_target: tuple[float, float, float] = (0.31, 0.0, 0.06)
    camera_fovy: float = 40.0
    """Vertical field of view [deg]."""
    shadow_map_size: int = 0
    """Side of the light's shadow map in pixels; 0 = no shadows (they cost most of the rendering time)."""

    def __post_init__(self) -> None:
        for field_name in ("image_height", "image_width"):
            value = getattr(self, field_name)
            if not 16 <= value <= 480:
                raise ValueError(f"SceneConfig.{field_name} must be in [16, 480] pixels, got {value}")
        if not 0 < self.timestep <= 0.01:
            raise ValueError(f"SceneConfig.timestep must be in (0, 0.01] s, got {self.timestep}")
        if not 10 <= self.camera_fovy <= 120:
            raise ValueError(f"SceneConfig.camera_fovy must be in [10, 120] degrees, got {self.camera_fovy}")


def _look_at_axes(position: Sequence[float], target: Sequence[float]) -> str:
    """MJCF `xyaxes` of a camera at `position` looking at `target` with world z up (camera looks along -z)."""
    forward = np.asarray(target, dtype=float) - np.asarray(position, dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


def _object_xml(spec: ObjectSpec) -> str:
    rgba = " ".join(str(c) for c in COLOURS[spec.colour])
    quat = f"{math.cos(spec.yaw / 2):.6f} 0 0 {math.sin(spec.yaw / 2):.6f}"
    if spec.is_receptacle:
        radius, half_height = RECEPTACLES[spec.kind]
        return (
            f'<body name="{spec.name}" pos="{spec.x} {spec.y} {half_height}" quat="{quat}">'
            f'<geom class="receptacle" type="cylinder" size="{radius} {half_height}" rgba="{rgba}"/></body>'
        )
    half_width, half_height = SHAPES[spec.kind]
    if spec.kind == "cube":
        geom = f'type="box" size="{half_width} {half_width} {half_height}"'
    else:
        geom = f'type="cylinder" size="{half_width} {half_height}"'
    return (
        f'<body name="{spec.name}" pos="{spec.x} {spec.y} {half_height}" quat="{quat}">'
        f'<freejoint name="{spec.name}"/><geom class="object" {geom} rgba="{rgba}"/></body>'
    )


def _limits(index: int) -> str:
    low, high = ARM_JOINT_LIMITS[index]
    return f"{low:.6f} {high:.6f}"


def build_mjcf(objects: Sequence[ObjectSpec], config: SceneConfig) -> str:
    """The scene's MJCF text with `objects` placed on the table."""
    names = [spec.name for spec in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"objects must be unique by colour and kind, got {names}")
    camera_axes = _look_at_axes(config.camera_position, config.camera_target)
    camera_pos = " ".join(str(v) for v in config.camera_position)
    objects_xml = "\n    ".join(_object_xml(spec) for spec in objects)
    shadow = "true" if config.shadow_map_size > 0 else "false"
    # Contact tuning for grasping: elliptic friction cones with a high impratio stop held objects from
    # creeping out of the fingers; condim 4 adds torsional friction so a pinched object does not spin.
    return f"""
<mujoco model="videovla_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{config.timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <quality shadowsize="{max(config.shadow_map_size, 1)}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
  </visual>
  <default>
    <default class="link">
      <joint damping="40" armature="0.1"/>
      <geom type="capsule" contype="0" conaffinity="0" rgba="0.85 0.86 0.88 1" group="1"/>
    </default>
    <default class="wrist">
      <joint damping="12" armature="0.05"/>
      <geom type="capsule" contype="0" conaffinity="0" rgba="0.85 0.86 0.88 1" group="1"/>
    </default>
    <default class="gripper">
      <geom contype="1" conaffinity="1" rgba="0.2 0.2 0.22 1" friction="1.5 0.02 0.002" condim="4"
            solref="0.004 1" solimp="0.95 0.99 0.001"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="1" mass="0.05" friction="1.0 0.02 0.002" condim="4"
            solref="0.004 1" solimp="0.95 0.99 0.001"/>
    </default>
    <default class="receptacle">
      <geom contype="1" conaffinity="1" friction="1.0 0.02 0.002" condim="4"/>
    </default>
  </default>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.25 0.26 0.28" rgb2="0.3 0.31 0.33"
             width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.6 -0.4 1.6" dir="-0.2 0.25 -1" diffuse="0.6 0.6 0.6" castshadow="{shadow}"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" material="floor"/>
    <geom name="table" type="box" pos="0.38 0 -0.02" size="0.48 0.6 0.02" rgba="0.62 0.6 0.56 1"/>
    <geom name="table_base" type="box" pos="0.38 0 -0.39" size="0.44 0.56 0.35" rgba="0.4 0.38 0.35 1"
          contype="0" conaffinity="0"/>
    <camera name="{CAMERA}" pos="{camera_pos}" xyaxes="{camera_axes}" fovy="{config.camera_fovy}"/>
    <body name="base_link" pos="0 0 0">
      <geom type="cylinder" size="0.065 0.05" pos="0 0 0.05" rgba="0.3 0.3 0.33 1" contype="0" conaffinity="0"/>
      <body name="link1" pos="0 0 0" gravcomp="1">
        <joint name="joint1" class="link" axis="0 0 1" range="{_limits(0)}"/>
        <geom class="link" fromto="0 0 0.1 0 0 {SHOULDER_HEIGHT}" size="0.05" mass="1.5"/>
        <body name="link2" pos="0 0 {SHOULDER_HEIGHT}" gravcomp="1">
          <joint name="joint2" class="link" axis="0 1 0" range="{_limits(1)}"/>
          <geom class="link" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.045" mass="1.5"/>
          <body name="link3" pos="0 0 {UPPER_ARM}" gravcomp="1">
            <joint name="joint3" class="link" axis="0 1 0" range="{_limits(2)}"/>
            <geom class="link" fromto="0 0 0 0 0 {FOREARM}" size="0.04" mass="1.0"/>
            <body name="link4" pos="0 0 {FOREARM}" gravcomp="1">
              <joint name="joint4" class="wrist" axis="0 0 1" range="{_limits(3)}"/>
              <geom class="wrist" fromto="0 0 -0.03 0 0 0.03" size="0.035" mass="0.6"/>
              <body name="link5" pos="0 0 0" gravcomp="1">
                <joint name="joint5" class="wrist" axis="0 1 0" range="{_limits(4)}"/>
                <geom class="wrist" fromto="0 0 0 0 0 {WRIST_TO_FLANGE - 0.01}" size="0.032" mass="0.5"/>
                <body name="link6" pos="0 0 {WRIST_TO_FLANGE}" gravcomp="1">
                  <joint name="joint6" class="wrist" axis="0 0 1" range="{_limits(5)}"/>
                  <geom class="wrist" type="cylinder" size="0.032 0.005" pos="0 0 -0.005" mass="0.1"/>
                  <geom name="palm" class="gripper" type="box" size="0.022 0.055 0.012" pos="0 0 0.012"
                        mass="0.3"/>
                  <site name="{TCP_SITE}" pos="0 0 {FLANGE_TO_TCP}" size="0.006" rgba="1 1 1 0" group="3"/>
                  <body name="finger_left" pos="0 0 0.024" gravcomp="1">
                    <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}" damping="3"
                           armature="0.01"/>
                    <geom name="pad_left" class="gripper" type="box" size="0.011 0.005 0.028"
                          pos="0 0.005 0.028" mass="0.03"/>
                  </body>
                  <body name="finger_right" pos="0 0 0.024" gravcomp="1">
                    <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}" damping="3"
                           armature="0.01"/>
                    <geom name="pad_right" class="gripper" type="box" size="0.011 0.005 0.028"
                          pos="0 -0.005 0.028" mass="0.03"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    {objects_xml}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="joint1" joint="joint1" kp="1500" ctrlrange="{_limits(0)}"/>
    <position name="joint2" joint="joint2" kp="1500" ctrlrange="{_limits(1)}"/>
    <position name="joint3" joint="joint3" kp="1200" ctrlrange="{_limits(2)}"/>
    <position name="joint4" joint="joint4" kp="400" ctrlrange="{_limits(3)}"/>
    <position name="joint5" joint="joint5" kp="400" ctrlrange="{_limits(4)}"/>
    <position name="joint6" joint="joint6" kp="300" ctrlrange="{_limits(5)}"/>
    <position name="finger_left" joint="finger_left" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-12 12"/>
    <position name="finger_right" joint="finger_right" kp="300" ctrlrange="0 {FINGER_TRAVEL}"
              forcerange="-12 12"/>
  </actuator>
</mujoco>
"""


class Scene:
    """A compiled scene (model + data) with the object placement of one episode, and an offscreen camera.

    Not thread-safe: one thread steps, reads and renders.
    """

    def __init__(self, objects: Sequence[ObjectSpec], config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        self.objects: tuple[ObjectSpec, ...] = tuple(objects)
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.objects, self.config))
        self.data = mujoco.MjData(self.model)
        self.arm_qpos_addresses = np.array([self.model.joint(name).qposadr[0] for name in ARM_JOINTS])
        self.arm_dof_addresses = np.array([self.model.joint(name).dofadr[0] for name in ARM_JOINTS])
        self.finger_qpos_addresses = np.array([self.model.joint(name).qposadr[0] for name in FINGER_JOINTS])
        self.arm_actuators = np.array([self.model.actuator(name).id for name in ARM_JOINTS])
        self.finger_actuators = np.array([self.model.actuator(name).id for name in FINGER_JOINTS])
        self.tcp_site = self.model.site(TCP_SITE).id
        self.arm_joint_limits = np.array(ARM_JOINT_LIMITS)
        self._renderer: mujoco.Renderer | None = None
        self.home_qpos = np.array(HOME_SEED)
        self.reset()

    @property
    def time(self) -> float:
        """Simulated time since the last reset [s]."""
        return float(self.data.time)

    def reset(self) -> None:
        """Arm at home holding still, gripper open, objects at their placements."""
        mujoco.mj_resetData(self.model, self.data)
        qpos = self.home_qpos
        self.data.qpos[self.arm_qpos_addresses] = qpos
        self.data.qpos[self.finger_qpos_addresses] = FINGER_TRAVEL
        self.data.ctrl[self.arm_actuators] = qpos
        self.data.ctrl[self.finger_actuators] = FINGER_TRAVEL
        mujoco.mj_forward(self.model, self.data)

    def set_home(self, arm_qpos: np.ndarray) -> None:
        """Makes `arm_qpos` (6,) the configuration `reset` starts from, and resets to it."""
        self.home_qpos = np.array(arm_qpos, dtype=float)
        self.reset()

    def step(self, count: int = 1) -> None:
        mujoco.mj_step(self.model, self.data, nstep=count)

    def arm_qpos(self) -> np.ndarray:
        """(6,) arm joint angles [rad]."""
        return self.data.qpos[self.arm_qpos_addresses].copy()

    def arm_qvel(self) -> np.ndarray:
        """(6,) arm joint velocities [rad/s]."""
        return self.data.qvel[self.arm_dof_addresses].copy()

    def finger_qpos(self) -> np.ndarray:
        """(2,) finger positions [m] from the centre line (0 = closed)."""
        return self.data.qpos[self.finger_qpos_addresses].copy()

    def gripper_opening(self) -> float:
        """Measured opening 0 (closed) .. 1 (fully open)."""
        return float(np.mean(self.finger_qpos()) / FINGER_TRAVEL)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The TCP pose in base_link: position (3,) [m] and quaternion (4,) w, x, y, z."""
        position = self.data.site_xpos[self.tcp_site].copy()
        quaternion = np.empty(4)
        mujoco.mju_mat2Quat(quaternion, self.data.site_xmat[self.tcp_site])
        return position, quaternion

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Position (3,) and quaternion (4,) w, x, y, z of the object body `name` (e.g. "red_cube")."""
        body = self.model.body(name).id
        return self.data.xpos[body].copy(), self.data.xquat[body].copy()

    def object_speed(self, name: str) -> float:
        """Linear speed of a free object [m/s] (0 for static receptacles)."""
        body = self.model.body(name)
        if body.jntnum[0] == 0:
            return 0.0
        dof = self.model.jnt_dofadr[body.jntadr[0]]
        return float(np.linalg.norm(self.data.qvel[dof : dof + 3]))

    def fingers_touch(self, name: str) -> bool:
        """Whether both finger pads are in contact with the object `name` (i.e. it is pinched)."""
        body = self.model.body(name).id
        pads = {self.model.geom("pad_left").id: False, self.model.geom("pad_right").id: False}
        for contact in self.data.contact[: self.data.ncon]:
            geoms = (int(contact.geom1), int(contact.geom2))
            for pad, other in (geoms, geoms[::-1]):
                if pad in pads and self.model.geom_bodyid[other] == body:
                    pads[pad] = True
        return all(pads.values())

    def render(self) -> np.ndarray:
        """(image_height, image_width, 3) uint8 RGB from the fixed camera."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.config.image_height, self.config.image_width)
        self._renderer.update_scene(self.data, camera=CAMERA)
        return self._renderer.render()

    def project(self, point: np.ndarray) -> tuple[float, float]:
        """(row, column) in the camera image of a point (3,) in base_link (pinhole model of the camera)."""
        camera = self.model.camera(CAMERA).id
        rotation = self.data.cam_xmat[camera].reshape(3, 3)
        local = rotation.T @ (np.asarray(point, dtype=float) - self.data.cam_xpos[camera])
        focal = 0.5 * self.config.image_height / math.tan(math.radians(self.model.cam_fovy[camera]) / 2)
        column = 0.5 * self.config.image_width + focal * local[0] / -local[2]
        row = 0.5 * self.config.image_height - focal * local[1] / -local[2]
        return row, column

    def close(self) -> None:
        """Frees the offscreen rendering context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
