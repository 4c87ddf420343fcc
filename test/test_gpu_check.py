"""benchmarks/gpu_check.sh runs its whole flow on CPU with the tiny preset and prints one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_the_tiny_flow_on_cpu_and_prints_one_table():
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    command = ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--preset", "tiny", "--device", "cpu"]
    result = subprocess.run([*command, "--repeats", "1"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check: preset tiny, CPU")
    header, *rows = lines[1:]
    assert [cell.strip() for cell in header.split(" | ")][:5] == ["what", "setting", "s", "peak GB", "estimate GB"]
    cells = [[cell.strip() for cell in row.split(" | ")] for row in rows]
    kinds = [row[0] for row in cells]
    assert kinds.count("deploy") == 6 and "LoRA rank 64 step" in kinds and "full fine-tune step" in kinds
    assert all(float(row[2]) > 0 for row in cells)  # every row was measured
    settings = {row[1] for row in cells}
    for frames in (4, 13):
        assert f"{frames} latent frames, 10 steps, guidance 2" in settings
        assert f"{frames} latent frames, 10 steps, no guidance" in settings
    assert all(float(row[4]) > 0 for row in cells if row[0] != "deploy")  # the estimate beside each step
