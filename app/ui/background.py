"""Work off the UI thread, and the way back to it: the desktop app's one helper for both.

``Tasks.run(fn, on_done, on_error)`` calls ``fn()`` on a worker thread, then ``on_done(result)``
or ``on_error(exception)`` on the UI thread (napari's ``create_worker`` with its returned and
errored signals, as plain callbacks). A ``Tasks`` is a child of the object whose work it runs
(a page, the app state, the OpenAI server's control): when that owner is deleted, the answers
of work still running are dropped instead of reaching a widget that is gone.

``UiThreadPost.post(fn, *args)``, from any thread, runs ``fn(*args)`` on the UI thread. Tasks
hand their results back through one; the engine worker's events and the crash guard's dialog
ride on it too. Qt delivers a signal emitted on another thread to its receiver's thread
through the event loop (a queued connection), so a callable sent through one runs there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot


class UiThreadPost(QObject):
    """``post(fn, *args)`` from any thread: ``fn(*args)`` runs on the thread this object lives
    on (create it on the UI thread), unless ``still_wanted()`` says no by then (its owner shut
    down, its pages may be gone) or this object was deleted meanwhile."""

    _deliver = Signal(object)  # a callable

    def __init__(self, parent: QObject, still_wanted: Callable[[], bool] = lambda: True) -> None:
        super().__init__(parent)
        self._still_wanted = still_wanted
        self._deliver.connect(self._run)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the Qt object is gone (its owner, or the app)
            self._deliver.emit(lambda: fn(*args))

    @Slot(object)
    def _run(self, fn: Callable[[], Any]) -> None:
        if self._still_wanted():
            fn()


class Tasks(QObject):
    """Background work for one owner.

    ``threads=None`` runs it on Qt's shared pool (one-off work: a model's header, a probe, a
    plan); a number gives the owner a pool of its own that ``close`` can wait for at exit
    (downloads), and ``threads=1`` runs the work one call after another, in order (starting
    and stopping a server on one port)."""

    def __init__(self, owner: QObject, threads: int | None = None) -> None:
        super().__init__(owner)
        if threads is None:
            self.pool = QThreadPool.globalInstance()
        else:
            self.pool = QThreadPool(self)
            self.pool.setMaxThreadCount(threads)
        self._post = UiThreadPost(self)
        self._running = 0
        self._closed = False

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[Exception], None] | None = None) -> None:
        """Call ``fn()`` on a worker; ``on_done(result)`` or ``on_error(exception)`` follow on
        the UI thread (call this from the UI thread). Nothing runs once ``close``d."""
        if self._closed:
            return
        self._running += 1
        post, finish = self._post.post, self._finish

        def work() -> None:
            try:
                result = fn()
            except Exception as exc:  # every failure goes back to the UI, to be said in words
                post(finish, on_error, exc)
            else:
                post(finish, on_done, result)

        self.pool.start(work)

    @property
    def busy(self) -> bool:
        """Some work has not reported back yet."""
        return self._running > 0

    def wait(self, msecs: int = 10_000) -> bool:
        """Wait for the work running on the pool (the shared pool: everyone's) to end."""
        return self.pool.waitForDone(msecs)

    def close(self, msecs: int = 10_000) -> bool:
        """At exit: take no more work, drop what has not started, wait for what runs."""
        self._closed = True
        if self.pool is not QThreadPool.globalInstance():
            self.pool.clear()
        return self.wait(msecs)

    def _finish(self, callback: Callable[[Any], None] | None, value: Any) -> None:
        self._running -= 1
        if callback is not None:
            callback(value)
