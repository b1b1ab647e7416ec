"""The Autotune panel: measure candidate placements around the plan with short real runs and
keep the fastest that fits. It only says what the user wants (``tune_requested``, ``stop``);
``TuneRunner`` does the work and reports back through the ``show_*`` methods."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.tune.autotune import TuneProgress, TuneResult
from app.tune.measure import Measurement
from app.tune.strategies import describe


@dataclass
class TuneRequest:
    model: str  # the model file (first shard)
    start: object  # the PlacementPlan to start from (the advisor's, or the user's own)
    vram_budget: int | None  # bytes; None: the GPU's free memory
    seconds: float
    n_layer: int
    decode_depth: int = 0  # rank by decode after this many tokens of context (0: a short prompt)


class TunePanel(QGroupBox):
    """Start/stop an autotune run and see what it tried and what it kept."""

    tune_requested = Signal(object)  # TuneRequest (without model/start: the page fills them)
    stop_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Autotune: measure, don't guess", parent)
        self.minutes = QSpinBox()
        self.minutes.setRange(1, 30)
        self.minutes.setValue(4)
        self.minutes.setSuffix(" min at most")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0, 1024)
        self.budget.setDecimals(0)
        self.budget.setSuffix(" GB")
        self.budget.setSpecialValueText("all free VRAM")
        self.budget.setToolTip("Tune for a smaller GPU than this one (e.g. 12 or 24 GB)")
        self.depth = QSpinBox()
        self.depth.setRange(0, 0)
        self.depth.setSingleStep(1024)
        self.depth.setSuffix(" tokens")
        self.depth.setSpecialValueText("a short prompt")
        self.depth.setToolTip("Rank placements by decode speed this deep into a chat: offloading "
                              "whole layers keeps part of the KV cache on the CPU, which slows "
                              "down as a chat grows. Up to the context size less 1024.")
        self.start_button = QPushButton("Autotune")
        self.start_button.setToolTip("Load a few candidate placements and settings, run each "
                                     "briefly, and keep the fastest that fits")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.hide()
        self.status = QLabel("Starts from the plan above and loads the winner when done.")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Time limit", self.minutes)
        form.addRow("VRAM budget", self.budget)
        form.addRow("Decode measured after", self.depth)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.start_button.clicked.connect(self._start)
        self.stop_button.clicked.connect(self.stop_requested)
        self.running = False

    def _start(self) -> None:
        budget = int(self.budget.value() * 1e9) or None
        self.tune_requested.emit(TuneRequest("", None, budget, self.minutes.value() * 60.0, 0,
                                             self.depth.value()))

    def set_context(self, n_ctx: int) -> None:
        """The plan's context size: a deep decode needs room for the measured tokens after it."""
        self.depth.setMaximum(max(0, (n_ctx - 1024) // 1024 * 1024))

    def set_available(self, available: bool, why: str = "") -> None:
        """Whether a tune can start now (a model chosen, no load running)."""
        self.start_button.setEnabled(available and not self.running)
        self.start_button.setToolTip(why or self.start_button.toolTip())

    def show_started(self) -> None:
        self.running = True
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.show()
        self.status.setText("Starting the engine…")

    def show_preparing(self, step: str) -> None:
        """Before the runs, the first tuning beside a GPU (and of each new type of weights) times
        this CPU's kernels."""
        self.status.setText(f"Before the runs, timing this CPU's kernels for the advisor (once on this "
                            f"machine for each type of weights): {step}")

    def show_progress(self, progress: TuneProgress, n_layer: int) -> None:
        best = progress.best
        lines = [f"Run {progress.done + 1}: {progress.label} ({progress.elapsed:.0f} s)"]
        if best is not None and best.ok:
            lines.append(f"Best so far: {_speeds(best)} — {describe(best.plan, n_layer)}")
        self.status.setText("\n".join(lines))

    def show_result(self, result: TuneResult, n_layer: int) -> None:
        self._finish()
        best = result.best
        if not best.ok:
            self.status.setText(f"Nothing could be measured: {best.error}")
            return
        tried = sum(1 for m in result.tried if m.ok)
        ended = f" ({result.stopped})" if result.stopped else ""
        self.status.setText(
            f"Kept: {describe(best.plan, n_layer)}\n{_speeds(best)}; {tried} of {len(result.tried)} "
            f"candidates ran in "
            f"{result.seconds:.0f} s{ended}. Loaded, and remembered for this machine.")

    def show_failed(self, message: str, hint: str) -> None:
        self._finish()
        self.status.setText(f"Autotune failed: {message} {hint}".strip())

    def _finish(self) -> None:
        self.running = False
        self.progress.hide()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)


def _speeds(m: Measurement) -> str:
    deep = f" ({m.deep_decode_tps:.1f} at depth {m.decode_depth:,})" if m.decode_depth else ""
    return f"decode {m.decode_tps:.1f} t/s{deep}, prefill {m.prefill:.0f} t/s"
