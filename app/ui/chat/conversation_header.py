"""The line above the open conversation: its title, its sampling preset, and the button that
opens its Chat settings. The page decides what a choice changes and saves it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from app.store import UserPreset
from app.ui.chat.presets import CUSTOM, PRESETS, user_key


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
        self.preset.setToolTip("Sampling preset of this conversation; your own presets (saved in "
                               "Chat settings) also set its system prompt")
        self.set_user_presets([])
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

    def set_user_presets(self, presets: list[UserPreset]) -> None:
        """The built-in presets, the user's own (by name), then Custom."""
        current = self.preset.currentData()
        self.preset.clear()
        for preset in PRESETS.values():
            self.preset.addItem(preset.label, preset.name)
        if presets:
            self.preset.insertSeparator(self.preset.count())
        for user in presets:
            self.preset.addItem(user.name, user_key(user.name))
        self.preset.addItem("Custom", CUSTOM)
        if current is not None:
            self.set_preset(current)

    def set_preset(self, name: str) -> None:
        """Show the conversation's preset (the first one if the name is unknown)."""
        self.preset.setCurrentIndex(max(self.preset.findData(name), 0))
