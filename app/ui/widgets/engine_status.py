"""What the status bar and the died banner show about the engine, always visible. The status
connects itself to the EngineController and the app state (the loaded model); the banner only
shows what the window tells it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.engine.protocol import EngineStats, LoadResult
from app.ui.app_state import AppState, LoadedModel
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState
from app.ui.widgets.theme import primary
from app.units import gib

STATE_WORDS = {
    EngineState.STOPPED: "Engine stopped", EngineState.STARTING: "Engine starting…",
    EngineState.IDLE: "Engine ready", EngineState.LOADING: "Loading model…",
    EngineState.GENERATING: "Generating", EngineState.TUNING: "Measuring placements…",
    EngineState.DIED: "Engine stopped unexpectedly", EngineState.SHUT_DOWN: "Engine stopped",
}


def memory_text(stats: EngineStats) -> str:
    """'RAM 3.2 GiB · CUDA0 10.4/24.0 GiB' (the engine's own RAM use; GPU memory in use)."""
    parts = [f"RAM {gib(stats.rss)}"]
    parts += [f"{m.device} {gib(m.used)}/{gib(m.total)}" for m in stats.memory if m.device != "RAM"]
    return " · ".join(parts)


class EngineStatus(QWidget):
    """Engine state, loaded model, memory in use and current t/s, for the status bar."""

    def __init__(self, state: AppState, engine: EngineController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 0, 8, 0)
        layout.setSpacing(16)
        self.state = QLabel(STATE_WORDS[EngineState.STOPPED])
        self.model = QLabel("no model")
        self.memory = QLabel("")
        self.speed = QLabel("")
        self.progress = QProgressBar(maximum=100, textVisible=True)
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        for widget in (self.state, self.model, self.memory, self.speed):
            layout.addWidget(widget)
            widget.setToolTip("")
        layout.addWidget(self.progress)
        layout.addStretch(1)
        engine.state_changed.connect(self.set_state)
        engine.load_progress.connect(self.set_progress)
        engine.stats.connect(self.set_stats)
        state.connect_loaded(self._loaded_changed)

    def _loaded_changed(self, loaded: LoadedModel | None) -> None:
        self.set_model(loaded.result if loaded else None)

    def set_state(self, state: EngineState) -> None:
        self.state.setText(STATE_WORDS[state])
        self.progress.setVisible(state == EngineState.LOADING)
        if state == EngineState.LOADING:
            self.progress.setValue(0)
        if state.can_start:
            self.model.setText("no model")
            self.memory.clear()
            self.speed.clear()

    def set_progress(self, fraction: float) -> None:
        self.progress.setValue(round(fraction * 100))

    def set_model(self, result: LoadResult | None) -> None:
        if result is None:
            self.model.setText("no model")
            self.model.setToolTip("")
        else:
            self.model.setText(f"{result.model.name} · ctx {result.n_ctx:,}")
            self.model.setToolTip(result.model.path)

    def set_stats(self, stats: EngineStats) -> None:
        self.memory.setText(memory_text(stats))
        if stats.tokens_generated:
            verb = "decode" if stats.state == "generating" else "last decode"
            self.speed.setText(f"{verb} {stats.decode_tps:.1f} t/s · prefill {stats.prefill_tps:.0f} t/s")


class DiedBanner(QFrame):
    """'The engine stopped: why. [Restart]': shown over the pages when the engine dies."""

    restart_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        layout = QHBoxLayout(self)
        self.message = QLabel(wordWrap=True)
        self.message.setForegroundRole(QPalette.ColorRole.ToolTipText)
        self.restart = primary(QPushButton("Restart engine"))
        self.restart.setToolTip("Start a fresh engine and load the last model again")
        self.restart.clicked.connect(self.restart_requested)
        layout.addWidget(self.message, 1)
        layout.addWidget(self.restart)
        self.hide()

    def show_death(self, message: str, hint: str) -> None:
        # the hint may quote the engine's log: its first sentence here, all of it on hover
        first = hint.split("\n", 1)[0]
        self.message.setText(f"<b>The engine stopped:</b> {_escape(message)}<br>{_escape(first)}")
        self.message.setToolTip(f"{message}\n\n{hint}")
        self.show()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
