"""One quant's download as the Models page runs it: progress, pause, resume and cancel, with
``download_quant`` on the page's worker pool and every state change back on the UI thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.hub.download import DownloadCancelled, DownloadProgress, download_quant
from app.hub.folder import discard_partial
from app.hub.quants import Quant
from app.ui.background import Tasks


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
