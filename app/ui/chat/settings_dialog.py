"""The Chat settings dialog: one conversation's system prompt and sampling, in the same
SamplingForm that the Settings page uses for the defaults of new chats."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QInputDialog, QPushButton, QVBoxLayout, QWidget

from app.store import ChatDefaults, Conversation, UserPreset
from app.ui.chat.presets import user_name
from app.ui.chat.sampling_form import SamplingForm


class ChatSettingsDialog(QDialog):
    """A conversation's settings, shown for editing; the caller saves ``values()`` on accept.
    "Save as preset…" offers them, system prompt included, under a name for any conversation
    (``preset_saved``)."""

    preset_saved = Signal(object)  # UserPreset

    def __init__(self, conversation: Conversation, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        c = conversation
        self.setWindowTitle(f"Chat settings: {c.title}")
        self.form = SamplingForm(self)
        self.form.set_values(ChatDefaults(c.system_prompt, c.preset, c.temperature, c.top_p,
                                          c.max_tokens, c.context_policy))
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.save_preset_button = QPushButton("Save as preset…")
        self.save_preset_button.setToolTip("Keep this system prompt and sampling under a name, "
                                           "to pick for any conversation")
        box.addButton(self.save_preset_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.save_preset_button.clicked.connect(self._ask_preset_name)
        self._preset_name = user_name(c.preset) or ""
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(box)

    def values(self) -> ChatDefaults:
        return self.form.values()

    def preset_from_values(self, name: str) -> UserPreset:
        v = self.values()
        return UserPreset(name.strip(), v.system_prompt, v.temperature, v.top_p, v.max_tokens,
                          v.context_policy)

    def _ask_preset_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset", "Name of the preset:",
                                        text=self._preset_name)
        if ok and name.strip():
            self._preset_name = name.strip()
            self.preset_saved.emit(self.preset_from_values(name))
