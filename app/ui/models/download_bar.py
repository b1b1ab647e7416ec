"""The running download: which quant, a byte-level progress bar, speed, time left; pause, resume, cancel."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.hub.download import DownloadProgress
from app.ui.models.download_job import DownloadJob
from app.units import file_size

_STEPS = 1000  # progress bar resolution: 0.1 %


def human_duration(seconds: float) -> str:
    """12 s, 4 min, 2 h 5 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def progress_text(p: DownloadProgress) -> str:
    """'1.2 GB of 24.1 GB · 45.3 MB/s · 9 min left'."""
    parts = [f"{file_size(p.done)} of {file_size(p.total)}"]
    if p.bytes_per_s > 0:
        parts.append(f"{file_size(int(p.bytes_per_s))}/s")
    if p.eta_s is not None and p.done < p.total:
        parts.append(f"{human_duration(p.eta_s)} left")
    return " · ".join(parts)


class DownloadBar(QWidget):
    """Shows one ``DownloadJob``; hidden while there is none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: DownloadJob | None = None
        self.title = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, _STEPS)
        self.detail = QLabel()
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.pause_button.setToolTip("Stop for now; the downloaded part is kept and Resume continues it")
        self.cancel_button.setToolTip("Stop and delete the downloaded part")
        self.pause_button.clicked.connect(lambda: self.job and self.job.pause())
        self.resume_button.clicked.connect(lambda: self.job and self.job.start())
        self.cancel_button.clicked.connect(lambda: self.job and self.job.cancel())
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        for button in (self.pause_button, self.resume_button, self.cancel_button):
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(row)
        layout.addWidget(self.detail)
        self.hide()

    def attach(self, job: DownloadJob, already: int = 0) -> None:
        """Follow ``job``; ``already`` is the bytes an earlier run left on disk."""
        self.job = job
        job.progress.connect(self.show_progress)
        job.state_changed.connect(self.show_state)
        self.title.setText(f"{job.quant.name} of {job.repo_id}")
        self.show_progress(DownloadProgress(already, job.quant.total_size, 0.0, None))
        self.show_state(job.state)
        self.show()

    def show_progress(self, p: DownloadProgress) -> None:
        if self.job is not None:
            self.job.last = p
        self.bar.setValue(int(_STEPS * p.done / p.total) if p.total else 0)
        self.detail.setText(progress_text(p))

    def show_state(self, state: str) -> None:
        running = state == "running"
        self.pause_button.setEnabled(running)
        self.resume_button.setEnabled(state in ("paused", "failed"))
        self.cancel_button.setEnabled(state in ("running", "paused", "failed"))
        last = self.job.last if self.job else None
        done = f"{file_size(last.done)} of {file_size(last.total)}" if last else ""
        words = {
            "paused": f"Paused at {done}. Resume continues from there, now or after a restart.",
            "failed": f"Stopped at {done}. Resume continues from there.",
            "cancelling": "Cancelling…",
            "cancelled": "Cancelled: the partial files were deleted.",
            "done": f"Downloaded and verified: {done}. It is in the library.",
        }
        if state in words:
            self.detail.setText(words[state])
        if state == "done":
            self.bar.setValue(_STEPS)
        if state == "cancelled":
            self.bar.setValue(0)
