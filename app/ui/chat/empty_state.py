"""What the Chat page's message area says while it has no messages to show: start a
conversation, load a model first, or, with both, that the model is ready."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from app.engine.protocol import LoadResult
from app.ui.widgets.empty_state import EmptyState


class ChatEmptyState(EmptyState):
    """Says the first thing missing; its button does it (a new chat, or the Models page)."""

    new_chat_requested = Signal()
    models_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("chat", parent=parent)
        self._has_conversation = False
        self.action_clicked.connect(self._act)

    def show_for(self, has_conversation: bool, model: LoadResult | None) -> None:
        self._has_conversation = has_conversation
        if not has_conversation:
            self.say("No conversations yet",
                     "Start one with New chat (Ctrl+N). Conversations stay on this computer, and the "
                     "search box finds any word in them.", "New chat")
        elif model is None:
            self.say("No model loaded",
                     "Load a model to chat: download one from Hugging Face, or pick one in your "
                     "library, on the Models page.", "Open Models")
        else:
            self.say(f"Ask {model.model.name} anything",
                     f"Its context holds {model.n_ctx:,} tokens. Ctrl+Enter sends, Esc stops an "
                     "answer; Chat settings sets the system prompt and sampling.")

    def _act(self) -> None:
        (self.models_requested if self._has_conversation else self.new_chat_requested).emit()
