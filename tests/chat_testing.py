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
from app.ui.engine_controller import EngineController


@contextmanager
def chat_page(qtbot: QtBot, store: Store, params: LoadParams, wait_ms: int) -> Iterator[ChatPage]:
    """A shown ChatPage on ``store``, its controller's engine loaded with ``params``."""
    controller = EngineController()
    chat = ChatPage(store)
    qtbot.addWidget(chat)
    chat.attach(controller)
    controller.model_loaded.connect(chat.set_model)
    controller.state_changed.connect(chat.set_engine_state)
    chat.resize(1000, 700)
    chat.show()
    try:
        with qtbot.waitSignal(controller.model_loaded, timeout=wait_ms):
            controller.load(params)
        yield chat
    finally:
        controller.shutdown()


def focus(qtbot: QtBot, chat: ChatPage, wait_ms: int) -> None:
    """Shortcuts fire only in the active window (offscreen too): make it so, focus the box."""
    chat.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is chat.window(), timeout=wait_ms)
    chat.compose.setFocus()
