"""The line above the open conversation: its title, its sampling preset, and the button that
opens its Chat settings. The page decides what a choice changes and saves it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from app.ui.chat.presets import CUSTOM, PRESETS


class ConversationHeader(QWidget):
    """Title, preset and settings button of the open conversation."""

    preset_chosen = Signal(str)  # a preset name, or CUSTOM
    settings_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.title.setFont(font)
        self.preset = QComboBox()
        self.preset.setToolTip("Sampling preset of this conversation")
        for preset in PRESETS.values():
            self.preset.addItem(preset.label, preset.name)
        self.preset.addItem("Custom", CUSTOM)
        self.preset.activated.connect(lambda _index: self.preset_chosen.emit(self.preset.currentData()))
        self.settings_button = QPushButton("Chat settings…")
        self.settings_button.setToolTip("System prompt, sampling and length of this conversation")
        self.settings_button.clicked.connect(lambda: self.settings_requested.emit())
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title, 1)
        layout.addWidget(self.preset)
        layout.addWidget(self.settings_button)

    def set_title(self, title: str) -> None:
        self.title.setText(title)

    def set_preset(self, name: str) -> None:
        """Show the conversation's preset (the first one if the name is unknown)."""
        self.preset.setCurrentIndex(max(self.preset.findData(name), 0))
