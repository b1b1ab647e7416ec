"""Run a blocking function off the UI thread; its result (or exception) comes back as a call
on the UI thread. For one-off work: hardware detection, GGUF header reads, planning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


class _Relay(QObject):
    """Lives on the UI thread; its signals carry the worker's outcome there (queued)."""

    done = Signal(object)
    failed = Signal(object)


class _Job(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self.fn, self.relay = fn, relay

    @Slot()
    def run(self) -> None:
        try:
            try:
                result = self.fn()
            except Exception as exc:  # handed to on_error on the UI thread
                self.relay.failed.emit(exc)
            else:
                self.relay.done.emit(result)
        except RuntimeError:  # the relay is gone: the app quit while this ran
            pass


_pending: set[_Relay] = set()  # relays alive until their job reports


def run_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                      on_error: Callable[[Exception], None] | None = None,
                      owner: QObject | None = None) -> None:
    """Call ``fn()`` on Qt's global thread pool, then ``on_done(result)`` or
    ``on_error(exception)`` on the UI thread (must be called from the UI thread).

    With ``owner`` (the widget whose slots the callbacks are), nothing is called if the owner
    was destroyed in the meantime (a page closed while its work ran)."""
    relay = _Relay()
    _pending.add(relay)
    owner_alive = [True]
    if owner is not None:
        owner.destroyed.connect(lambda: owner_alive.__setitem__(0, False))

    def finish(callback: Callable[[Any], None] | None, value: Any) -> None:
        _pending.discard(relay)
        relay.deleteLater()
        if callback is not None and owner_alive[0]:
            callback(value)

    relay.done.connect(lambda value: finish(on_done, value))
    relay.failed.connect(lambda exc: finish(on_error, exc))
    QThreadPool.globalInstance().start(_Job(fn, relay))
