"""The Chat page (issue 5): conversations, streaming Markdown answers, stop, regenerate, edit."""

from __future__ import annotations

from app.ui.chat.demo import demo_page
from app.ui.chat.page import ChatPage

__all__ = ["ChatPage", "demo_page"]
