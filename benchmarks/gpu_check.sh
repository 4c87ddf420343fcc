#!/usr/bin/env bash
# The GPU check of the 5B model (random weights, nothing downloaded): deploy latency per chunk and one LoRA and one
# full fine-tuning step, printed as one table by benchmarks/gpu_check.py. Ran in 82 s on one H200.
#
#   bash benchmarks/gpu_check.sh                              # on the GPU machine
#   bash benchmarks/gpu_check.sh --preset tiny --device cpu   # the same flow on CPU in seconds (the test runs this)
#
# The GPU machine has Python 3.12, torch with CUDA, transformers, accelerate and peft, but no diffusers and no
# package registry. Download diffusers and what it needs beyond transformers' dependencies into .whl/ here (13 MB;
# .whl/ is git-ignored, so carry it: the device tool's `carry: [".whl"]`); this script installs from it there:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1 importlib_metadata zipp lazy-importer pillow
#
# diffusers is pure Python, so its py3 wheel works on any platform; Pillow is the one binary wheel (cp312).
# Everything else diffusers needs comes with transformers. Nothing else of the suite is needed there: the check
# imports no OpenCV, sentencepiece or ROS. PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

# Installed into .whl/site (on PYTHONPATH), not the system: no root, no externally-managed-environment refusal.
SITE="$PWD/.whl/site"
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import diffusers" 2>/dev/null; then
    shopt -s nullglob
    wheels=(.whl/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "gpu_check: diffusers is not installed and .whl/ holds no wheels (see the download command in $0)" >&2
        exit 2
    fi
    "$PYTHON" -m pip install --quiet --no-deps --no-index --target "$SITE" "${wheels[@]}"
fi

exec "$PYTHON" benchmarks/gpu_check.py "$@"
