# Source this (bash) to use the workspace built by `make setup`: the venv, ROS 2 from its wheels, install/.
_videovla_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_videovla_root/.venv/bin/activate"
# shellcheck disable=SC1091
source "$_videovla_root/install/setup.bash"
# Console scripts of an ament_python package land in lib/<pkg>/ (where `ros2 run` looks), not on PATH.
export PATH="$_videovla_root/install/videovla_ros/lib/videovla_ros:$PATH"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
unset _videovla_root
