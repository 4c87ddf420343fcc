"""`make setup`'s preflight fails early and names the fix (run against a copy, so nothing is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASIC_TOOLS = ("bash", "env", "dirname", "cat", "df", "awk", "sha256sum", "cut", "sort", "find", "xargs", "rm", "grep")


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """scripts/ and requirements/ in a fresh folder: setup.sh treats it as a repository without .venv."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def _tool_dir(tmp_path: Path, tools: dict[str, str]) -> Path:
    """A PATH folder with the basic tools plus `tools` (name -> real program path or shell script text)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in BASIC_TOOLS:
        os.symlink(shutil.which(name), folder / name)
    for name, target in tools.items():
        if target.startswith("#!"):
            (folder / name).write_text(target)
            (folder / name).chmod(0o755)
        else:
            os.symlink(target, folder / name)
    return folder


def _run_setup(copy: Path, path: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": str(path), "HOME": str(copy), **env}
    return subprocess.run(
        [shutil.which("bash"), str(copy / "scripts" / "setup.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _real_python311() -> str:
    candidate = shutil.which("python3.11") or shutil.which("python3")
    probe = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return probe.stdout.strip()


def test_unsupported_python_is_refused_with_the_fix(checkout_copy: Path, tmp_path: Path):
    fake_python = "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Python 3.12.1'; exit 0; fi\nexit 1\n"
    tools = _tool_dir(tmp_path, {"python3": fake_python})
    result = _run_setup(checkout_copy, tools)
    assert result.returncode == 1
    assert "CPython 3.11 not found (found: Python 3.12.1)" in result.stderr
    assert "install Python 3.11" in result.stderr
    assert not (checkout_copy / ".venv").exists()


def test_missing_cmake_is_refused_with_the_fix(checkout_copy: Path, tmp_path: Path):
    tools = _tool_dir(
        tmp_path,
        {
            "python3.11": _real_python311(),
            "cc": shutil.which("cc"),
            "c++": shutil.which("c++"),
            "make": shutil.which("make"),
        },
    )
    result = _run_setup(checkout_copy, tools)
    assert result.returncode == 1
    assert "'cmake' not found" in result.stderr
    assert "apt-get install build-essential cmake" in result.stderr
    assert not (checkout_copy / ".venv").exists()


def test_missing_compiler_is_refused_with_the_fix(checkout_copy: Path, tmp_path: Path):
    tools = _tool_dir(tmp_path, {"python3.11": _real_python311(), "cmake": shutil.which("cmake")})
    result = _run_setup(checkout_copy, tools)
    assert result.returncode == 1
    assert "'cc' not found" in result.stderr


def test_too_little_disk_space_is_refused_before_anything_is_installed(checkout_copy: Path):
    result = _run_setup(checkout_copy, os.environ["PATH"], VIDEOVLA_MIN_FREE_GB="100000000")
    assert result.returncode == 1
    assert "the environment needs about 100000000 GiB" in result.stderr
    assert "free disk space" in result.stderr
    assert not (checkout_copy / ".venv").exists()
