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
