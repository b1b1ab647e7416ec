"""One screen on first start: this machine (the app state's, found off the UI thread), expert
offload in plain words, a recommended model and a button to the Models page. Closing it marks
the first run done."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPushButton, QVBoxLayout, QWidget

from app.hardware import Hardware
from app.store import FIRST_RUN_DONE, Store
from app.ui.app_state import AppState
from app.ui.first_run.recommend import Recommendation, memory_gb, recommend
from app.ui.widgets.theme import primary
from app.units import GB, file_size, gib

EXPLANATION = (
    "<h3>How MoE Desk runs models bigger than your GPU</h3>"
    "<p>A <b>Mixture-of-Experts</b> model is made of many small \"expert\" blocks, and for each "
    "word it writes it uses only a few of them (for example 8 of 128). Those experts are most "
    "of the model's size, but little of its work.</p>"
    "<p><b>Expert offload</b> keeps the part every word needs (attention, the shared weights and "
    "the conversation's memory) on the GPU, and the experts in your computer's RAM, where the "
    "CPU reads just the few each word asks for. So a model several times larger than your GPU "
    "still runs at a readable speed.</p>"
    "<p>The Advisor works out this split for your machine; you can change it there.</p>"
)


class FirstRunDialog(QDialog):
    """Shown once; ``models_requested(repo_id)`` asks the window to open the Models page."""

    models_requested = Signal(str)

    def __init__(self, store: Store, state: AppState, parent: QWidget | None = None) -> None:
        """The machine is the app ``state``'s: shown once it has been found."""
        super().__init__(parent)
        self.store = store
        self.recommendation: Recommendation | None = None
        self.setWindowTitle("Welcome to MoE Desk")
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * 90)  # text width, DPI-safe
        layout = QVBoxLayout(self)
        self.hardware_label = QLabel("Looking at this machine…", wordWrap=True)
        self.hardware_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        explanation = QLabel(EXPLANATION, wordWrap=True)
        explanation.setTextFormat(Qt.TextFormat.RichText)
        self.recommendation_label = QLabel("", wordWrap=True)
        self.recommendation_label.setForegroundRole(QPalette.ColorRole.Link)
        buttons = QDialogButtonBox()
        self.models_button = primary(QPushButton("Open the Models page"))  # the recommended repo, once known
        buttons.addButton(self.models_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("Later", QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self._to_models)
        buttons.rejected.connect(self.reject)
        layout.addWidget(self.hardware_label)
        layout.addWidget(explanation)
        layout.addWidget(self.recommendation_label)
        layout.addWidget(buttons)
        self.finished.connect(lambda _result: self.store.set_setting(FIRST_RUN_DONE, True))
        state.connect_hardware(self.show_hardware)

    def show_hardware(self, hardware: Hardware) -> None:
        gpus = ", ".join(g.name for g in hardware.gpus) or "no GPU found"
        ram = hardware.memory.total if hardware.memory else 0
        together = memory_gb(hardware) * GB
        self.hardware_label.setText(
            f"<b>This machine:</b> {hardware.cpu.model}, {hardware.cpu.physical_cores} cores; "
            f"{gib(ram, 0)} RAM; {gpus} ({gib(together, 0)} of RAM and VRAM together).")
        rec = self.recommendation = recommend(hardware)
        self.recommendation_label.setText(
            f"<b>Recommended to start:</b> {rec.name} ({rec.quant}, a {file_size(rec.size_gb * GB)} "
            f"download) from {rec.repo}: {rec.why}.")

    def _to_models(self) -> None:
        self.models_requested.emit(self.recommendation.repo if self.recommendation else "")
        self.accept()
