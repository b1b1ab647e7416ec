"""The Chat page: conversations on the left, the open one on the right, a compose box below.

The page talks to the engine only through the EngineController it is attached to
(``attach``): ``chat(ChatParams) -> id`` and ``stop_chat(id)`` out, ``chat_token`` /
``chat_finished`` / ``chat_failed`` back. An answer is written to the store as it streams
(every ``SAVE_EVERY_S``, marked partial) and redrawn at most every ``REDRAW_MS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.engine.protocol import ChatMessage, ChatParams, ChatResult, LoadResult
from app.store import ChatDefaults, Conversation, MessageStats, Store
from app.ui.chat.conversation_model import ID_ROLE, ConversationListModel
from app.ui.chat.message_view import MessageView
from app.ui.chat.message_widgets import MessageWidget
from app.ui.chat.presets import CUSTOM, PRESETS, sampling_for
from app.ui.chat.sampling_form import SamplingForm
from app.ui.chat.segments import split_thinking

SAVE_EVERY_S = 0.5
REDRAW_MS = 80
NEW_TITLE = "New chat"


@dataclass
class _Answer:
    """The answer being generated."""

    chat_id: int
    conversation_id: int
    message_id: int
    text: str = ""
    saved_at: float = 0.0
    tokens: int = 0


class ChatPage(QWidget):
    """Chat with the loaded model; every conversation is kept in the store."""

    answer_finished = Signal(object)  # ChatResult, for the dashboard

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.engine: Any = None  # the EngineController, once attached
        self.model: LoadResult | None = None
        self.engine_state = "stopped"
        self.conversation: Conversation | None = None
        self.answer: _Answer | None = None
        self._editing: int | None = None  # the user message being edited (edit-and-resend)
        self._redraw = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw.timeout.connect(self._redraw_answer)
        self._build()
        self._shortcuts()
        rows = self.conversations.rowCount()
        if rows:
            self.open_conversation(self.conversations.conversation_at(0).id)
        self._update_controls()

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        self.conversations = ConversationListModel(self.store, self)
        self.list = QListView()
        self.list.setModel(self.conversations)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.DoubleClicked)
        self.list.clicked.connect(self._list_clicked)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._list_menu)
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_conversation)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.new_button)
        left_layout.addWidget(self.list)

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
        self.preset.activated.connect(self._preset_chosen)
        self.settings_button = QPushButton("Chat settings…")
        self.settings_button.setToolTip("System prompt, sampling and length of this conversation")
        self.settings_button.clicked.connect(self.edit_chat_settings)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.preset)
        top.addWidget(self.settings_button)

        self.view = MessageView()
        self.view.edit_requested.connect(self.start_edit)
        self.view.regenerate_requested.connect(self.regenerate)
        self.notice = QLabel(wordWrap=True)
        self.notice.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.editing_bar = QWidget()
        edit_layout = QHBoxLayout(self.editing_bar)
        edit_layout.setContentsMargins(0, 0, 0, 0)
        edit_layout.addWidget(QLabel("Editing a message: Send replaces it and every later message."), 1)
        cancel_edit = QPushButton("Cancel edit")
        cancel_edit.clicked.connect(self.cancel_edit)
        edit_layout.addWidget(cancel_edit)
        self.editing_bar.hide()
        self.compose = QPlainTextEdit()
        self.compose.setPlaceholderText("Message (Ctrl+Enter to send, Esc to stop)")
        self.compose.setTabChangesFocus(True)
        self.compose.setFixedHeight(self.compose.fontMetrics().lineSpacing() * 5)
        self.compose.textChanged.connect(self._update_controls)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send (Ctrl+Enter)")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the answer (Esc)")
        self.stop_button.clicked.connect(self.stop)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        compose_row = QHBoxLayout()
        compose_row.addWidget(self.compose, 1)
        compose_row.addLayout(buttons)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(top)
        right_layout.addWidget(self.view, 1)
        right_layout.addWidget(self.notice)
        right_layout.addWidget(self.editing_bar)
        right_layout.addLayout(compose_row)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 780])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def _shortcuts(self) -> None:
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.send, context=context)
        QShortcut(QKeySequence("Escape"), self, self.stop, context=context)

    # --- engine ---------------------------------------------------------------------------

    def attach(self, engine: Any) -> None:
        """Use this EngineController for answers."""
        self.engine = engine
        engine.chat_token.connect(self.on_token)
        engine.chat_finished.connect(self.on_finished)
        engine.chat_failed.connect(self.on_failed)

    def set_engine_state(self, state: str) -> None:
        self.engine_state = state
        self._update_controls()

    def set_model(self, model: LoadResult | None) -> None:
        self.model = model
        self._update_controls()

    # --- conversations --------------------------------------------------------------------

    def new_conversation(self) -> Conversation:
        conversation = self.store.create_conversation(NEW_TITLE)
        self.conversations.refresh()
        self.open_conversation(conversation.id)
        self.compose.setFocus()
        return conversation

    def open_conversation(self, conversation_id: int) -> None:
        self.cancel_edit()
        self.conversation = self.store.conversation(conversation_id)
        self.title.setText(self.conversation.title)
        self.preset.setCurrentIndex(max(self.preset.findData(self.conversation.preset), 0))
        self.view.set_messages(self.store.messages(conversation_id))
        answer = self.answer
        if answer is not None and answer.conversation_id == conversation_id:
            widget = self.view.widget_for(answer.message_id)
            if widget is not None:
                widget.show_streaming(answer.text)
        self._select_row(conversation_id)
        self._update_controls()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self.store.update_conversation(conversation_id, title=title)
        self.conversations.refresh()
        self._select_row(self.conversation.id if self.conversation else None)
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation = self.store.conversation(conversation_id)
            self.title.setText(title)

    def delete_conversation(self, conversation_id: int) -> None:
        if self.answer is not None and self.answer.conversation_id == conversation_id:
            self.stop()
            self.answer = None
        self.store.delete_conversation(conversation_id)
        self.conversations.refresh()
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.conversation = None
            self.title.clear()
            self.view.set_messages([])
            if self.conversations.rowCount():
                self.open_conversation(self.conversations.conversation_at(0).id)
        self._update_controls()

    def edit_chat_settings(self) -> None:
        """System prompt and sampling of this conversation, in a small dialog."""
        if self.conversation is None:
            self.new_conversation()
        assert self.conversation is not None
        c = self.conversation
        dialog = QDialog(self, windowTitle=f"Chat settings: {c.title}")
        form = SamplingForm(dialog)
        form.set_values(ChatDefaults(c.system_prompt, c.preset, c.temperature, c.top_p, c.max_tokens))
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(dialog.accept)
        box.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(form)
        layout.addWidget(box)

        def save() -> None:
            v = form.values()
            self.conversation = self.store.update_conversation(
                c.id, system_prompt=v.system_prompt, preset=v.preset, temperature=v.temperature,
                top_p=v.top_p, max_tokens=v.max_tokens)
            self.preset.setCurrentIndex(max(self.preset.findData(v.preset), 0))

        dialog.accepted.connect(save)
        dialog.open()

    # --- sending and answers --------------------------------------------------------------

    def send(self) -> None:
        """Send the compose box's text (replacing the edited message, if editing)."""
        text = self.compose.toPlainText().strip()
        if not text or self.answer is not None or not self._can_answer():
            return
        if self.conversation is None:
            self.new_conversation()
        assert self.conversation is not None
        if self._editing is not None:
            self.store.delete_messages_from(self._editing)
            self.cancel_edit()
        self.store.add_message(self.conversation.id, "user", text)
        if self.conversation.title == NEW_TITLE:
            self.conversation = self.store.update_conversation(self.conversation.id,
                                                               title=_title_from(text))
            self.title.setText(self.conversation.title)
        self.compose.clear()
        self._generate()

    def regenerate(self) -> None:
        """Drop the last answer and answer the last user message again."""
        if self.conversation is None or self.answer is not None or not self._can_answer():
            return
        messages = self.store.messages(self.conversation.id)
        if messages and messages[-1].role == "assistant":
            self.store.delete_messages_from(messages[-1].id)
        self._generate()

    def stop(self) -> None:
        if self.answer is not None and self.engine is not None:
            self.engine.stop_chat(self.answer.chat_id)

    def start_edit(self, message_id: int) -> None:
        if self.answer is not None:
            return
        self._editing = message_id
        self.compose.setPlainText(self.store.message(message_id).content)
        self.editing_bar.show()
        self.compose.setFocus()

    def cancel_edit(self) -> None:
        if self._editing is not None:
            self._editing = None
            self.compose.clear()
        self.editing_bar.hide()

    def _generate(self) -> None:
        assert self.conversation is not None and self.engine is not None
        conversation = self.store.conversation(self.conversation.id)
        history = [ChatMessage("system", conversation.system_prompt)] if conversation.system_prompt else []
        for message in self.store.messages(conversation.id):
            if message.role == "user":
                history.append(ChatMessage("user", message.content))
            elif message.role == "assistant" and message.content:
                # earlier thinking is not sent back (reasoning models' chat templates drop it too)
                history.append(ChatMessage("assistant", split_thinking(message.content)[2]))
        placeholder = self.store.add_message(conversation.id, "assistant", "", state="partial")
        chat_id = self.engine.chat(ChatParams(messages=history, sampling=sampling_for(conversation)))
        self.answer = _Answer(chat_id, conversation.id, placeholder.id, saved_at=time.monotonic())
        self.conversations.refresh()
        self.open_conversation(conversation.id)

    def on_token(self, chat_id: int, text: str) -> None:
        answer = self.answer
        if answer is None or answer.chat_id != chat_id:
            return
        answer.text += text
        answer.tokens += 1
        now = time.monotonic()
        if now - answer.saved_at >= SAVE_EVERY_S:  # a crash now loses at most this much
            self.store.update_message(answer.message_id, answer.text, "partial")
            answer.saved_at = now
        if not self._redraw.isActive():
            self._redraw.start()

    def on_finished(self, chat_id: int, result: ChatResult) -> None:
        answer = self.answer
        if answer is None or answer.chat_id != chat_id:
            return
        stats = MessageStats(result.prompt_tokens, result.completion_tokens, result.prefill_tps,
                             result.decode_tps, result.ttft_s, result.finish_reason,
                             self.model.model.name if self.model else "")
        state = "partial" if result.finish_reason == "cancelled" else "complete"
        self.store.update_message(answer.message_id, result.text, state, stats)
        self._end_answer()
        self.answer_finished.emit(result)

    def on_failed(self, chat_id: int, message: str, hint: str) -> None:
        answer = self.answer
        if answer is None or answer.chat_id != chat_id:
            return
        # whatever streamed stays, marked; the reason is shown on the message
        state = "partial" if answer.text else "error"
        self.store.update_message(answer.message_id, answer.text, state, error=message)
        self._end_answer()
        if self.engine_state != "died":  # a death has its own notice and banner
            self.notice.setText(f"{message} {hint}".strip().splitlines()[0])

    def answer_widget(self) -> MessageWidget | None:
        """The widget of the answer being generated, if its conversation is shown."""
        return self.view.widget_for(self.answer.message_id) if self.answer else None

    def _end_answer(self) -> None:
        answer, self.answer = self.answer, None
        self._redraw.stop()
        assert answer is not None
        if self.conversation is not None and self.conversation.id == answer.conversation_id:
            widget = self.view.widget_for(answer.message_id)
            if widget is not None:
                widget.set_message(self.store.message(answer.message_id))
        self.view.set_busy(False)
        self._update_controls()

    def _redraw_answer(self) -> None:
        widget = self.answer_widget()
        if widget is not None and self.answer is not None:
            widget.show_streaming(self.answer.text)

    # --- helpers --------------------------------------------------------------------------

    def _can_answer(self) -> bool:
        return self.engine is not None and self.model is not None and self.engine_state in ("idle",)

    def _update_controls(self) -> None:
        busy = self.answer is not None
        self.send_button.setEnabled(not busy and self._can_answer()
                                    and bool(self.compose.toPlainText().strip()))
        self.stop_button.setEnabled(busy)
        self.preset.setEnabled(self.conversation is not None)
        self.view.set_busy(busy)
        if busy:
            self.notice.clear()
        elif self.engine_state == "died":
            self.notice.setText("The engine stopped. Restart it from the banner above; "
                                "this conversation is kept.")
        elif self.model is None and self.engine_state not in ("loading", "starting"):
            self.notice.setText("No model is loaded: load one on the Models page.")
        elif self.engine_state in ("loading", "starting"):
            self.notice.setText("The model is loading…")
        elif self.notice.text().startswith(("No model", "The model is loading", "The engine stopped")):
            self.notice.clear()

    def _preset_chosen(self) -> None:
        if self.conversation is not None:
            self.conversation = self.store.update_conversation(self.conversation.id,
                                                               preset=self.preset.currentData())

    def _select_row(self, conversation_id: int | None) -> None:
        row = self.conversations.row_of(conversation_id) if conversation_id is not None else -1
        if row >= 0:
            self.list.setCurrentIndex(self.conversations.index(row))

    def _list_clicked(self, index: QModelIndex) -> None:
        self.open_conversation(index.data(ID_ROLE))

    def _list_menu(self, position: Any) -> None:
        index = self.list.indexAt(position)
        if not index.isValid():
            return
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.list.edit(index))
        menu.addAction("Delete", lambda: self.delete_conversation(index.data(ID_ROLE)))
        menu.popup(self.list.viewport().mapToGlobal(position))


def _title_from(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
