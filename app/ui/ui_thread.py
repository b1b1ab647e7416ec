"""Handing work from worker threads to the UI thread.

Qt delivers a signal emitted on another thread to its receivers' thread through the event
loop (a queued connection), so a callable sent through one runs on the UI thread. Workers
use ``UiThreadPost.post`` and never touch widgets or emit the public signals themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot


class UiThreadPost(QObject):
    """``post(fn, *args)`` from any thread: ``fn(*args)`` runs on the thread this object lives
    on (create it on the UI thread), unless ``still_wanted()`` says no by then (its owner shut
    down, its pages may be gone)."""

    _deliver = Signal(object)  # a callable

    def __init__(self, parent: QObject, still_wanted: Callable[[], bool] = lambda: True) -> None:
        super().__init__(parent)
        self._still_wanted = still_wanted
        self._deliver.connect(self._run)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the Qt object is gone (app exit)
            self._deliver.emit(lambda: fn(*args))

    @Slot(object)
    def _run(self, fn: Callable[[], Any]) -> None:
        if self._still_wanted():
            fn()
