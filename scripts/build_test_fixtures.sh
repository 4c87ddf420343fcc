#!/usr/bin/env bash
# Builds the test-only interface packages under test/fixtures (a stand-in rm_ros_interfaces with the real
# message names and fields) into build/test_fixtures/install. Tests source
# build/test_fixtures/install/local_setup.bash; users never install these.
# Idempotent: skipped when the fixture sources and the environment are unchanged since the last good build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
OUT="$ROOT/build/test_fixtures"

[ -x "$VENV/bin/python" ] || { echo "build_test_fixtures: error: $VENV missing; run 'make setup' first" >&2; exit 1; }
[ -d "$ROOT/install/videovla_msgs" ] || { echo "build_test_fixtures: error: install/videovla_msgs missing; run 'make setup' first" >&2; exit 1; }

inputs_hash=$(
    cd "$ROOT"
    {
        find test/fixtures -type f \( -name '*.msg' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
        cat "$VENV/.videovla-deps.sha" 2>/dev/null || true
        cat "$ROOT/scripts/build_test_fixtures.sh"
    } | sha256sum | cut -d' ' -f1
)
if [ "$(cat "$OUT/install/.fixtures.sha" 2>/dev/null)" = "$inputs_hash" ]; then
    echo "build_test_fixtures: up to date"
    exit 0
fi

rm -f "$OUT/install/.fixtures.sha"
echo "build_test_fixtures: building test/fixtures into $OUT/install"
(
    cd "$ROOT"
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    export AMENT_PREFIX_PATH="$VENV:$ROOT/install/videovla_msgs"
    colcon --log-base "$OUT/log" build --base-paths test/fixtures --build-base "$OUT/build" \
        --install-base "$OUT/install" --event-handlers console_cohesion- summary+ \
        --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
)
echo "$inputs_hash" >"$OUT/install/.fixtures.sha"
echo "build_test_fixtures: ready: source $OUT/install/local_setup.bash"
