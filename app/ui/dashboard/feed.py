"""Engine events as Qt signals, for the dashboard's demo, tests and latency benchmark.

In the app the EngineController does this (and much more). The engine client calls its
subscription callbacks on its reader thread and streams chats on whatever thread iterates
them; emitting a signal there makes Qt queue the call to the receiver's (UI) thread, which is
how the page's slots stay on the UI thread without any locking.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from app.engine.client import EngineClient
from app.engine.protocol import ChatParams, SubscribeParams
from app.errors import EngineError


class EngineFeed(QObject):
    """Signals carrying one engine client's pushes and chats to the UI thread."""

    stats = Signal(object)  # EngineStats
    routing = Signal(object)  # RoutingSnapshot
    token = Signal(str)  # each streamed piece of an answer
    chat_finished = Signal(object)  # ChatResult
    chat_failed = Signal(str)  # the error's message

    def subscribe(self, client: EngineClient, interval_s: float = 0.25) -> None:
        """Have ``client`` push stats and routing every ``interval_s`` as signals."""
        client.subscribe(SubscribeParams(interval_s=interval_s),
                         on_stats=self.stats.emit, on_routing=self.routing.emit)

    def start_chat(self, client: EngineClient, params: ChatParams) -> threading.Thread:
        """Stream one chat on a new thread, every token as a signal; returns the thread."""

        def run() -> None:
            try:
                stream = client.chat(params)
                for text in stream.texts():
                    self.token.emit(text)
                self.chat_finished.emit(stream.result)
            except EngineError as exc:
                self.chat_failed.emit(str(exc))

        thread = threading.Thread(target=run, name="dashboard-feed-chat", daemon=True)
        thread.start()
        return thread
