"""Reading /proc, /sys and sysctl without ever raising: a probe that cannot read says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def read_text(path: Path) -> str | None:
    """The stripped contents of a file, or None when it is missing or unreadable."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:  # missing, permission denied, or a sysfs attribute the driver refuses
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return int(text, 0) if text is not None else None
    except ValueError:
        return None


def sysctl(key: str) -> str | None:
    """One macOS sysctl value, or None when sysctl is missing or does not know the key."""
    exe = shutil.which("sysctl") or "/usr/sbin/sysctl"
    try:
        done = subprocess.run([exe, "-n", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Linux's CPU list format ("0-3,8,10-11") as CPU numbers."""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)
