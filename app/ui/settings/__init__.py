"""The Settings page (issue 5): model folder, Hub token, theme, defaults for new chats."""

from __future__ import annotations

from app.ui.settings.page import SettingsPage, demo_page

__all__ = ["SettingsPage", "demo_page"]
