"""The GPU tests run on the accelerator machine (bench/gpu_session.sh test), whose Python has no
Qt: PySide6, pytest-qt and pyqtgraph are not carried there. A GPU test file that imports them,
even through a helper, stops every GPU test at collection (the thirty-second session's lease
lost its GPU test run to one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
GPU_TEST_FILES = sorted(p for p in TESTS.glob("test_*.py") if "pytest.mark.gpu" in p.read_text())
# a finder ahead of the others that refuses what the accelerator machine lacks
BLOCK = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"PySide6", "shiboken6", "pytestqt", "pyqtgraph"}:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the accelerator machine)")
        return None
sys.meta_path.insert(0, Absent())
"""


def test_there_are_gpu_test_files() -> None:
    assert len(GPU_TEST_FILES) >= 5


@pytest.mark.parametrize("module", ["conftest", *(p.stem for p in GPU_TEST_FILES)])
def test_a_gpu_test_file_imports_without_qt(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"{BLOCK}\nimport tests.{module}"], cwd=TESTS.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
