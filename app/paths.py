"""Where MoE Desk keeps its files, from platformdirs (one place, so tests can move it all).

``MOEDESK_HOME`` puts everything under one folder instead: the tests set it to a temporary
directory, and a user can set it to keep MoE Desk portable.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "moedesk"


def _home() -> Path | None:
    value = os.environ.get("MOEDESK_HOME")
    return Path(value) if value else None


def data_dir() -> Path:
    """Conversations, the model library's index, downloaded models (by default)."""
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def config_dir() -> Path:
    """Settings."""
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def cache_dir() -> Path:
    """Things that can be rebuilt: engine logs, measured bandwidth, autotune results."""
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def default_models_dir() -> Path:
    """Where downloads go unless the user chose another folder in Settings."""
    return data_dir() / "models"


def logs_dir() -> Path:
    """Logs of the app, the CLI and engines that ended badly (kept to be read or reported)."""
    return cache_dir() / "logs"


def private_dir(folder: Path) -> Path:
    """``folder``, created (with its parents) if missing, itself readable by the user only.

    A folder that already exists keeps its mode: the files MoE Desk writes in it are private
    on their own (``private_file``), and the folder may be the user's choice."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def private_file(path: Path) -> Path:
    """Create ``path`` (empty) readable and writable by the user only, or narrow an existing
    file to that: conversations, settings and logs hold prompts, answers and paths that other
    local users have no business reading. Created with the mode, never chmod-ed after, so it is
    never wider for an instant. (On Windows, files in the user's profile are private already.)"""
    private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)  # an older MoE Desk (or a copy) left it readable by others
    finally:
        os.close(fd)
    return path
