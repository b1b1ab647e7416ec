"""The first-run screen: what this machine has, what expert offload is, which model to get."""

from __future__ import annotations

from app.ui.first_run.dialog import FirstRunDialog

__all__ = ["FirstRunDialog"]
