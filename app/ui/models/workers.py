"""Run Hub and disk work off the UI thread, results back as Qt signals.

``Tasks`` runs plain functions on its own QThreadPool and calls back on the UI thread (queued signal
connections); ``DownloadJob`` runs one ``download_quant`` with progress, pause, resume and cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from app.hub.download import DownloadCancelled, DownloadProgress, download_quant
from app.hub.folder import discard_partial
from app.hub.quants import Quant


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(object)


class _Call(QRunnable):
    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = _Signals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as error:  # noqa: BLE001 - every failure goes back to the UI as a message
            self.signals.failed.emit(error)
        else:
            self.signals.done.emit(result)


class Tasks(QObject):
    """A small thread pool for the page; ``run(fn, on_done, on_failed)`` never blocks the caller."""

    def __init__(self, parent: QObject | None = None, threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._running: set[_Call] = set()  # keeps each call's signal object alive until it reports

    def run(
        self,
        fn: Callable[[], object],
        on_done: Callable[[object], None],
        on_failed: Callable[[Exception], None],
    ) -> None:
        call = _Call(fn)
        call.setAutoDelete(False)

        def finished(callback: Callable, value: object) -> None:
            self._running.discard(call)
            callback(value)

        call.signals.done.connect(lambda value: finished(on_done, value))
        call.signals.failed.connect(lambda error: finished(on_failed, error))
        self._running.add(call)
        self.pool.start(call)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def wait(self, msecs: int = 10_000) -> bool:
        return self.pool.waitForDone(msecs)


class DownloadJob(QObject):
    """One quant's download: ``start()``, ``pause()`` (keeps the .part files), ``cancel()`` (deletes them).

    ``state`` is "idle" -> "running" -> "done" | "paused" | "failed" | "cancelled"; ``start()`` again
    resumes from the .part files.
    """

    progress = Signal(object)  # DownloadProgress
    state_changed = Signal(str)
    finished = Signal(object)  # list[Path] of the shards
    failed = Signal(object)  # the exception

    def __init__(
        self,
        tasks: Tasks,
        repo_id: str,
        quant: Quant,
        dest_dir: Path,
        token: Callable[[], str | None],
        endpoint: str,
        parent: QObject | None = None,
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        super().__init__(parent)
        self.tasks, self.repo_id, self.quant, self.dest_dir = tasks, repo_id, quant, dest_dir
        self.token, self.endpoint, self.free_space = token, endpoint, free_space
        self.state = "idle"
        self.last: DownloadProgress | None = None
        self._cancel = threading.Event()
        self._discard = False

    def start(self) -> None:
        """Start, or resume after a pause or a failure (the bytes on disk are kept)."""
        if self.state == "running":
            return
        self._cancel = threading.Event()
        cancel, self._discard = self._cancel, False
        self._set_state("running")
        self.tasks.run(
            lambda: download_quant(
                self.repo_id,
                self.quant,
                self.dest_dir,
                token=self.token(),
                endpoint=self.endpoint,
                on_progress=self.progress.emit,
                cancel=cancel,
                free_space=self.free_space,
            ),
            self._done,
            self._stopped,
        )

    def pause(self) -> None:
        if self.state == "running":
            self._cancel.set()  # the worker raises DownloadCancelled; .part files stay

    def cancel(self) -> None:
        """Stop and delete the partial files (after the worker has let go of them)."""
        if self.state == "running":
            self._discard = True
            self._cancel.set()
        elif self.state in ("paused", "failed", "idle"):
            self._discard_files()

    def _done(self, paths: object) -> None:
        self._set_state("done")
        self.finished.emit(paths)

    def _stopped(self, error: Exception) -> None:
        if self._discard:
            self._discard_files()
        elif isinstance(error, DownloadCancelled):
            self._set_state("paused")
        else:
            self._set_state("failed")
            self.failed.emit(error)

    def _discard_files(self) -> None:
        self._set_state("cancelling")
        self.tasks.run(
            lambda: discard_partial(self.repo_id, self.quant, self.dest_dir),
            lambda _freed: self._set_state("cancelled"),
            lambda error: (self._set_state("cancelled"), self.failed.emit(error)),
        )

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)
