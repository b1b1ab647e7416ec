"""The Chat settings dialog: one conversation's system prompt and sampling, in the same
SamplingForm that the Settings page uses for the defaults of new chats."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QVBoxLayout, QWidget

from app.store import ChatDefaults, Conversation
from app.ui.chat.sampling_form import SamplingForm


class ChatSettingsDialog(QDialog):
    """A conversation's settings, shown for editing; the caller saves ``values()`` on accept."""

    def __init__(self, conversation: Conversation, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        c = conversation
        self.setWindowTitle(f"Chat settings: {c.title}")
        self.form = SamplingForm(self)
        self.form.set_values(ChatDefaults(c.system_prompt, c.preset, c.temperature, c.top_p,
                                          c.max_tokens, c.context_policy))
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(box)

    def values(self) -> ChatDefaults:
        return self.form.values()
