"""The Chat page: conversations on the left, the open one on the right, a compose box below.

The page wires its parts together and keeps the state: ``ConversationList`` (the left pane),
``ConversationHeader`` (title, preset, settings), ``MessageView`` (the messages); what is sent
for an answer and what streams back are ``answer.py``'s plain data.

The page takes the app state (the loaded model, for the context meter and the answers' stats)
and the EngineController, and connects itself: ``chat(ChatParams) -> id`` and ``stop_chat(id)``
out, ``chat_token`` / ``chat_finished`` / ``chat_failed`` and the engine's state back. An answer
is written to the store as it streams (every ``SAVE_EVERY_S``, marked partial) and redrawn at
most every ``REDRAW_MS``. With no conversation, or none with messages yet, the message area
says what to do instead (start one; load a model first).
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.engine.protocol import ChatMessage, ChatParams, ChatResult, LoadResult
from app.store import EXPORT_FOLDER, Conversation, MessageStats, Store, UserPreset
from app.ui.app_state import AppState, LoadedModel
from app.ui.chat.answer import StreamingAnswer, continuable, history_for
from app.ui.chat.context_meter import ContextMeter
from app.ui.chat.conversation_header import ConversationHeader
from app.ui.chat.conversation_list import ConversationList
from app.ui.chat.conversation_model import ConversationListModel
from app.ui.chat.empty_state import ChatEmptyState
from app.ui.chat.export import SUFFIXES, ExportFormat, export_conversation, suggested_name
from app.ui.chat.message_view import MessageView
from app.ui.chat.message_widgets import MessageWidget
from app.ui.chat.presets import context_policy_for, sampling_for, user_name
from app.ui.chat.settings_dialog import ChatSettingsDialog
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState
from app.ui.widgets.look import PAGE_MARGIN, SPACING, tighten
from app.ui.widgets.theme import primary

SAVE_EVERY_S = 0.5
REDRAW_MS = 80
NEW_TITLE = "New chat"


class ChatPage(QWidget):
    """Chat with the loaded model; every conversation is kept in the store."""

    answer_finished = Signal(object)  # ChatResult
    page_requested = Signal(str)  # the user asked for another page ("Models": to load a model)

    def __init__(self, store: Store, state: AppState, engine: EngineController,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.engine = engine
        self.model: LoadResult | None = None  # the loaded model (the app state's)
        self.engine_state = engine.state
        self.conversation: Conversation | None = None
        self.answer: StreamingAnswer | None = None
        self._editing: int | None = None  # the user message being edited (edit-and-resend)
        self._redraw = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw.timeout.connect(self._redraw_answer)
        self._build()
        self._shortcuts()
        engine.chat_token.connect(self.on_token)
        engine.chat_finished.connect(self.on_finished)
        engine.chat_failed.connect(self.on_failed)
        engine.state_changed.connect(self._engine_state_changed)
        state.connect_loaded(self._model_changed)
        rows = self.conversations.rowCount()
        if rows:
            self.open_conversation(self.conversations.conversation_at(0).id)
        self._update_controls()

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        self.conversations = ConversationListModel(self.store, self)
        self.conversation_list = ConversationList(self.conversations)
        self.conversation_list.new_requested.connect(self.new_conversation)
        self.conversation_list.open_requested.connect(self.open_conversation)
        self.conversation_list.delete_requested.connect(self.delete_conversation)
        self.conversation_list.export_requested.connect(self.export_conversation)

        self.header = ConversationHeader()
        self.header.set_user_presets(self.store.user_presets())
        self.header.preset_chosen.connect(self._preset_chosen)
        self.header.settings_requested.connect(self.edit_chat_settings)

        self.view = MessageView()
        self.view.edit_requested.connect(self.start_edit)
        self.view.regenerate_requested.connect(self.regenerate)
        self.view.continue_requested.connect(self.continue_answer)
        self.empty = ChatEmptyState()
        self.empty.new_chat_requested.connect(self.new_conversation)
        self.empty.models_requested.connect(lambda: self.page_requested.emit("Models"))
        self.messages = QStackedWidget()  # the messages, or what to do when there are none
        self.messages.addWidget(self.view)
        self.messages.addWidget(self.empty)
        self.meter = ContextMeter()
        self.notice = QLabel(wordWrap=True)
        self.notice.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.notice.linkActivated.connect(self.page_requested)  # "load one on the Models page"
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
        self.send_button = primary(QPushButton("Send"))
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
        right_layout = tighten(QVBoxLayout(right))
        right_layout.setContentsMargins(SPACING, 0, 0, 0)
        right_layout.addWidget(self.header)
        right_layout.addWidget(self.messages, 1)
        right_layout.addWidget(self.meter)
        right_layout.addWidget(self.notice)
        right_layout.addWidget(self.editing_bar)
        right_layout.addLayout(compose_row)

        splitter = QSplitter()
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.conversation_list)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 760])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(PAGE_MARGIN, PAGE_MARGIN - 4, PAGE_MARGIN, PAGE_MARGIN)
        layout.addWidget(splitter)

    def _shortcuts(self) -> None:
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.send, context=context)
        QShortcut(QKeySequence("Escape"), self, self.stop, context=context)

    # --- the engine and the loaded model ---------------------------------------------------

    def _engine_state_changed(self, state: EngineState) -> None:
        self.engine_state = state
        self._update_controls()

    def _model_changed(self, loaded: LoadedModel | None) -> None:
        self.model = loaded.result if loaded is not None else None
        self._show_context_use()
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
        self.header.set_title(self.conversation.title)
        self.header.set_preset(self.conversation.preset)
        self.view.set_messages(self.store.messages(conversation_id))
        answer = self.answer
        if answer is not None and answer.conversation_id == conversation_id:
            widget = self.view.widget_for(answer.message_id)
            if widget is not None:
                widget.show_streaming(answer.text)
        self.conversation_list.select(conversation_id)
        self._show_context_use()
        self._update_controls()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self.store.update_conversation(conversation_id, title=title)
        self.conversations.refresh()
        self.conversation_list.select(self.conversation.id if self.conversation else None)
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation = self.store.conversation(conversation_id)
            self.header.set_title(title)

    def delete_conversation(self, conversation_id: int) -> None:
        if self.answer is not None and self.answer.conversation_id == conversation_id:
            self.stop()
            self.answer = None
        self.store.delete_conversation(conversation_id)
        self.conversations.refresh()
        if self.conversation is not None and self.conversation.id == conversation_id:
            self.conversation = None
            self.header.set_title("")
            self.view.set_messages([])
            self._show_context_use()
            if self.conversations.rowCount():
                self.open_conversation(self.conversations.conversation_at(0).id)
        self._update_controls()

    def export_conversation(self, conversation_id: int, fmt: ExportFormat,
                            path: Path | None = None) -> Path | None:
        """Save a conversation as Markdown or JSON; asks where when ``path`` is None. Returns
        the file written (None: cancelled, or it could not be written, which the page says)."""
        conversation = self.store.conversation(conversation_id)
        if path is None:
            folder = Path(self.store.setting(EXPORT_FOLDER, str(Path.home())))
            suffix = SUFFIXES[fmt]
            chosen, _ = QFileDialog.getSaveFileName(
                self, "Export the conversation", str(folder / suggested_name(conversation, fmt)),
                f"{'Markdown' if fmt == 'markdown' else 'JSON'} (*{suffix})")
            if not chosen:
                return None
            path = Path(chosen) if Path(chosen).suffix else Path(chosen + suffix)
        try:
            written = export_conversation(conversation, self.store.messages(conversation_id), path, fmt)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed",
                                f"{path} could not be written: {exc.strerror or exc}. "
                                "Choose another folder.")
            return None
        self.store.set_setting(EXPORT_FOLDER, str(written.parent))
        return written

    def edit_chat_settings(self) -> None:
        """System prompt and sampling of this conversation, in a small dialog."""
        if self.conversation is None:
            self.new_conversation()
        assert self.conversation is not None
        conversation_id = self.conversation.id
        dialog = ChatSettingsDialog(self.conversation, self)
        dialog.preset_saved.connect(self.save_user_preset)

        def save() -> None:
            v = dialog.values()
            self.conversation = self.store.update_conversation(
                conversation_id, system_prompt=v.system_prompt, preset=v.preset, temperature=v.temperature,
                top_p=v.top_p, max_tokens=v.max_tokens, context_policy=v.context_policy)
            self.header.set_preset(v.preset)

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
            self.header.set_title(self.conversation.title)
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

    def continue_answer(self) -> None:
        """Let the last answer, cut short, go on from its last word (into the same message)."""
        if self.conversation is None or self.answer is not None or not self._can_answer():
            return
        conversation = self.store.conversation(self.conversation.id)
        messages = self.store.messages(conversation.id)
        if not messages or not continuable(messages[-1]):
            return
        last = messages[-1]
        # the answer whole, thinking included: the model goes on from its last word
        history = [*history_for(conversation, messages[:-1]), ChatMessage("assistant", last.content)]
        self.store.update_message(last.id, last.content, "partial")
        chat_id = self._ask(conversation, history, continue_answer=True)
        self.answer = StreamingAnswer(chat_id, conversation.id, last.id, text=last.content,
                                      saved_at=time.monotonic(), prefix=last.content)
        self.open_conversation(conversation.id)

    def stop(self) -> None:
        if self.answer is not None:
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
        assert self.conversation is not None
        conversation = self.store.conversation(self.conversation.id)
        history = history_for(conversation, self.store.messages(conversation.id))
        placeholder = self.store.add_message(conversation.id, "assistant", "", state="partial")
        chat_id = self._ask(conversation, history)
        self.answer = StreamingAnswer(chat_id, conversation.id, placeholder.id, saved_at=time.monotonic())
        self.conversations.refresh()
        self.open_conversation(conversation.id)

    def _ask(self, conversation: Conversation, history: list[ChatMessage],
             continue_answer: bool = False) -> int:
        """Ask the engine for an answer with the conversation's sampling and context policy."""
        return self.engine.chat(ChatParams(messages=history, sampling=sampling_for(conversation),
                                           context_policy=context_policy_for(conversation),
                                           continue_answer=continue_answer))

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
                             result.decode_tps, result.first_token_s, result.finish_reason,
                             self.model.model.name if self.model else "",
                             result.messages_dropped)
        state = "partial" if result.finish_reason == "cancelled" else "complete"
        self.store.update_message(answer.message_id, answer.prefix + result.text, state, stats)
        self._end_answer()
        self._show_context_use()
        self.answer_finished.emit(result)

    def on_failed(self, chat_id: int, message: str, hint: str) -> None:
        answer = self.answer
        if answer is None or answer.chat_id != chat_id:
            return
        # whatever streamed stays, marked; the reason is shown on the message
        state = "partial" if answer.text else "error"  # a continued answer keeps its start
        self.store.update_message(answer.message_id, answer.text, state, error=message)
        self._end_answer()
        if self.engine_state != EngineState.DIED:  # a death has its own notice and banner
            self._say(f"{message} {hint}".strip().splitlines()[0])

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

    def _show_context_use(self) -> None:
        """The meter from the open conversation's last answer: its prompt and its tokens are
        what the context held (what the next prompt starts from)."""
        n_ctx = self.model.n_ctx if self.model else None
        self.meter.setVisible(n_ctx is not None)  # "no model loaded" is said once, below it
        messages = self.store.messages(self.conversation.id) if self.conversation else []
        last = next((m for m in reversed(messages) if m.stats is not None), None)
        if last is None or last.stats is None:
            self.meter.show_use(None, n_ctx)
            return
        s = last.stats
        self.meter.show_use(s.prompt_tokens + s.completion_tokens, n_ctx, s.messages_dropped)

    def _can_answer(self) -> bool:
        return self.model is not None and self.engine_state == EngineState.IDLE

    def _update_controls(self) -> None:
        busy = self.answer is not None
        self.send_button.setEnabled(not busy and self._can_answer()
                                    and bool(self.compose.toPlainText().strip()))
        self.stop_button.setEnabled(busy)
        self.header.preset.setEnabled(self.conversation is not None)
        self.view.set_busy(busy)
        if busy:
            self._say("")
        elif self.engine_state == EngineState.DIED:
            self._say("The engine stopped. Restart it from the banner above; "
                                "this conversation is kept.")
        elif self.model is None and not self.engine_state.coming_up:
            self._say('No model is loaded: <a href="Models">load one on the Models page</a>.')
        elif self.engine_state.coming_up:
            self._say("The model is loading…")
        elif self.notice.text().startswith(("No model", "The model is loading", "The engine stopped")):
            self._say("")
        self._show_empty_state()

    def _say(self, notice: str) -> None:
        """The line above the compose box (hidden while it has nothing to say)."""
        self.notice.setText(notice)
        self.notice.setVisible(bool(notice))

    def _show_empty_state(self) -> None:
        """The messages, or, when there are none, what to do (the first thing that is missing)."""
        self.header.setVisible(self.conversation is not None)
        if self.conversation is not None and self.view.widgets():
            self.messages.setCurrentWidget(self.view)
            return
        self.empty.show_for(self.conversation is not None, self.model)
        self.messages.setCurrentWidget(self.empty)

    def save_user_preset(self, preset: UserPreset) -> None:
        """Keep a preset (replacing one of that name) and offer it in every conversation."""
        self.store.save_user_preset(preset)
        self.header.set_user_presets(self.store.user_presets())

    def _preset_chosen(self, preset: str) -> None:
        if self.conversation is None:
            return
        name = user_name(preset)
        user = self.store.user_preset(name) if name is not None else None
        if user is None:  # a built-in (sampling only), or Custom
            self.conversation = self.store.update_conversation(self.conversation.id, preset=preset)
            return
        # the user's own: its system prompt and sampling become the conversation's
        self.conversation = self.store.update_conversation(
            self.conversation.id, preset=preset, system_prompt=user.system_prompt,
            temperature=user.temperature, top_p=user.top_p, max_tokens=user.max_tokens,
            context_policy=user.context_policy)


def _title_from(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
