"""Shared by the Chat page's tests: the page over a real engine with a model loaded, as the
app wires them, and the focus that its keyboard shortcuts need."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.engine.protocol import LoadParams
from app.store import Store
from app.ui.chat import ChatPage
from tests.ui_testing import app_parts


@contextmanager
def chat_page(qtbot: QtBot, store: Store, params: LoadParams, wait_ms: int) -> Iterator[ChatPage]:
    """A shown ChatPage on ``store``, its controller's engine loaded with ``params``."""
    with app_parts() as (state, controller):
        chat = ChatPage(store, state, controller)
        qtbot.addWidget(chat)
        chat.resize(1000, 700)
        chat.show()
        with qtbot.waitSignal(controller.model_loaded, timeout=wait_ms):
            controller.load(params)
        yield chat


def focus(qtbot: QtBot, chat: ChatPage, wait_ms: int) -> None:
    """Shortcuts fire only in the active window (offscreen too): make it so, focus the box."""
    chat.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is chat.window(), timeout=wait_ms)
    chat.compose.setFocus()
