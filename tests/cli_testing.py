"""``moedesk-cli`` run as a user runs it: a child process with its own MoE Desk home. Free of Qt
(the GPU tests import it on a machine without PySide6 or pytest-qt)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path


def cli(*args: str, home: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # in the child: files cannot grow past this (as a full disk would stop them)
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MOEDESK_HOME": str(home)}, preexec_fn=limit)
