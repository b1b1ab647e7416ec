"""The Chat page with the real engine: send, watch the answer stream, stop, regenerate,
edit and resend; how messages look (Markdown, code copy, collapsed thinking)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox
from pytestqt.qtbot import QtBot

from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.store import ChatDefaults, Message, MessageStats, Store
from app.ui.chat import ChatPage
from app.ui.chat.conversation_model import ID_ROLE
from app.ui.chat.message_widgets import (
    CodeSegment,
    MessageWidget,
    TextSegment,
    ThinkSegment,
    stats_line,
)
from app.ui.chat.presets import sampling_for
from app.ui.chat.segments import segments
from app.ui.chat.settings_dialog import ChatSettingsDialog
from tests.chat_testing import chat_page
from tests.chat_testing import focus as focus_compose

WAIT_MS = 60_000
# temperature 0 (greedy) makes the tiny model's answers repeatable
GREEDY = ChatDefaults(preset="custom", temperature=0.0, top_p=1.0, max_tokens=24)


@pytest.fixture
def page(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         tiny_moe_gguf: Path) -> Iterator[ChatPage]:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    store = Store.open_default()
    store.set_chat_defaults(GREEDY)
    params = LoadParams(model=str(tiny_moe_gguf), placement=PlacementPlan(n_ctx=4096, n_threads=1))
    with chat_page(qtbot, store, params, WAIT_MS) as chat:
        yield chat


def focus(qtbot: QtBot, chat: ChatPage) -> None:
    focus_compose(qtbot, chat, WAIT_MS)


def send(qtbot: QtBot, chat: ChatPage, text: str) -> None:
    chat.compose.setPlainText(text)
    qtbot.waitUntil(chat.send_button.isEnabled, timeout=WAIT_MS)
    focus(qtbot, chat)
    qtbot.keyClick(chat.compose, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # Ctrl+Enter


def wait_answered(qtbot: QtBot, chat: ChatPage) -> Message:
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    assert chat.conversation is not None
    return chat.store.messages(chat.conversation.id)[-1]


def test_send_streams_an_answer_and_keeps_it_with_its_stats(qtbot: QtBot, page: ChatPage) -> None:
    with qtbot.waitSignal(page.answer_finished, timeout=WAIT_MS) as finished:
        send(qtbot, page, "Tell me about experts")
        assert page.answer is not None  # Ctrl+Enter sent it
        assert page.compose.toPlainText() == ""
    answer = wait_answered(qtbot, page)
    result = finished.args[0]
    # the first token as the user waited for it: template and tokenizer (and any wait for the
    # engine) before the engine's own time to first token
    assert result.queued_s > 0 and answer.stats is not None
    assert answer.stats.ttft_s == pytest.approx(result.queued_s + result.ttft_s)
    user = page.store.messages(answer.conversation_id)[0]
    assert (user.role, user.content) == ("user", "Tell me about experts")
    assert answer.role == "assistant" and answer.state == "complete" and answer.content
    assert answer.stats is not None and answer.stats.completion_tokens > 0
    assert answer.stats.model == "tiny-moe" or answer.stats.model
    widget = page.view.widgets()[-1]
    assert widget.message.id == answer.id
    assert "tokens" in widget.stats.text() and "decode" in widget.stats.text()
    assert page.conversation is not None and page.conversation.title == "Tell me about experts"
    assert page.conversations.rowCount() == 1


def test_tokens_stream_into_the_view_and_esc_stops_the_answer(qtbot: QtBot, page: ChatPage) -> None:
    page.store.set_chat_defaults(ChatDefaults(preset="custom", temperature=0.0, max_tokens=3000))
    page.new_conversation()
    send(qtbot, page, "Write a very long story about routers")

    def streamed_text() -> str:
        widget = page.answer_widget()
        parts = widget.segment_widgets() if widget else []
        return "".join(getattr(p, "source_text", "") for p in parts)

    qtbot.waitUntil(lambda: page.answer is not None and streamed_text() != "", timeout=WAIT_MS)
    assert page.answer_widget().badge.text() == "answering…"  # type: ignore[union-attr]
    assert page.stop_button.isEnabled() and not page.send_button.isEnabled()
    focus(qtbot, page)
    qtbot.keyClick(page.compose, Qt.Key.Key_Escape)
    answer = wait_answered(qtbot, page)
    assert answer.stats is not None, answer
    assert answer.state == "partial", (answer.stats, len(answer.content))
    assert answer.stats.finish_reason == "cancelled" and answer.stats.completion_tokens < 3000
    assert answer.content.startswith(streamed_text()[:10])
    assert page.view.widgets()[-1].badge.text() == "stopped"


def test_regenerate_replaces_the_last_answer(qtbot: QtBot, page: ChatPage) -> None:
    send(qtbot, page, "First question")
    first = wait_answered(qtbot, page)
    regenerate = page.view.widgets()[-1].regenerate_button
    assert regenerate.isVisibleTo(page)
    regenerate.click()
    second = wait_answered(qtbot, page)
    messages = page.store.messages(first.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert second.id != first.id and second.state == "complete"


def test_edit_and_resend_drops_the_later_messages(qtbot: QtBot, page: ChatPage) -> None:
    send(qtbot, page, "Original question")
    wait_answered(qtbot, page)
    send(qtbot, page, "Follow-up")
    wait_answered(qtbot, page)
    first_user = page.view.widgets()[0]
    first_user.edit_button.click()
    assert page.compose.toPlainText() == "Original question" and page.editing_bar.isVisibleTo(page)
    send(qtbot, page, "Edited question")
    answer = wait_answered(qtbot, page)
    messages = page.store.messages(answer.conversation_id)
    assert [(m.role, m.content) for m in messages[:1]] == [("user", "Edited question")]
    assert len(messages) == 2 and messages[1].state == "complete"


def test_rename_and_delete_conversations(qtbot: QtBot, page: ChatPage) -> None:
    first = page.new_conversation()
    second = page.new_conversation()
    page.rename_conversation(first.id, "Renamed")
    titles = [page.conversations.conversation_at(r).title for r in range(page.conversations.rowCount())]
    assert "Renamed" in titles
    page.delete_conversation(second.id)
    assert page.conversations.rowCount() == 1
    assert page.conversation is not None and page.conversation.id == first.id


def test_message_shows_markdown_code_with_copy_and_collapsed_thinking(qtbot: QtBot) -> None:
    text = "<think>\nweighing the experts\n</think>\n\nUse **this**:\n```python\nprint('hi')\n```\nDone."
    message = Message(id=1, conversation_id=1, role="assistant", content=text, stats=MessageStats(
        prompt_tokens=5, completion_tokens=20, prefill_tps=300.0, decode_tps=42.0, ttft_s=0.1,
        finish_reason="stop", model="tiny"))
    widget = MessageWidget(message)
    qtbot.addWidget(widget)
    widget.show()
    think, prose, code, tail = widget.segment_widgets()
    assert isinstance(think, ThinkSegment) and not think.body.isVisible()  # collapsed
    think.toggle.click()
    assert think.body.isVisible() and "weighing the experts" in think.body.toPlainText()
    assert isinstance(prose, TextSegment) and "this" in prose.toPlainText()
    assert isinstance(code, CodeSegment) and isinstance(tail, TextSegment)
    code.copy_button.click()
    assert QGuiApplication.clipboard().text() == "print('hi')"
    assert "color:" in code.code.toHtml() and code.code.toPlainText() == "print('hi')"  # coloured
    assert widget.stats.text().startswith("20 tokens · prefill 300 t/s · decode 42.0 t/s")


def test_stats_of_a_one_token_answer_leave_out_decode_speed() -> None:
    message = Message(id=1, conversation_id=1, role="assistant", content="Yes", stats=MessageStats(
        prompt_tokens=5, completion_tokens=1, prefill_tps=300.0, decode_tps=0.0, ttft_s=0.1,
        finish_reason="length", model="tiny"))
    assert stats_line(message) == ("1 token · prefill 300 t/s · first token 0.10 s · tiny · "
                                   "hit the token limit")


def test_streaming_redraw_keeps_finished_segments(qtbot: QtBot) -> None:
    widget = MessageWidget(Message(id=1, conversation_id=1, role="assistant", content=""))
    qtbot.addWidget(widget)
    widget.show_streaming("Intro\n```js\nlet a")
    prose, code = widget.segment_widgets()
    widget.show_streaming("Intro\n```js\nlet a = 1;\n```\nand more")
    assert widget.segment_widgets()[:2] == [prose, code]  # the same widgets, updated in place
    assert code.code.source_text == "let a = 1;"  # type: ignore[attr-defined]


def test_segments_split_thinking_prose_and_unfinished_code() -> None:
    parts = segments("<think>hmm</think>\n\nText\n~~~\ncode\n~~~\nafter")
    assert [(p.kind, p.text, p.closed) for p in parts] == [
        ("think", "hmm", True), ("text", "Text", True), ("code", "code", True), ("text", "after", True)]
    streaming = segments("<think>still thinking")
    assert [(p.kind, p.closed) for p in streaming] == [("think", False)]
    open_code = segments("see:\n```py\nx = 1\n")
    assert open_code[-1].kind == "code" and not open_code[-1].closed and open_code[-1].lang == "py"
    # a template that opened <think> in the prompt: the answer shows only the closing tag
    assert segments("reasoning</think>answer")[0].kind == "think"


def test_a_conversation_exports_to_markdown_and_json(qtbot: QtBot, page: ChatPage, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    send(qtbot, page, "Say something")
    answer = wait_answered(qtbot, page)
    assert page.conversation is not None
    chosen = tmp_path / "out" / "chat"
    chosen.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(chosen), ""))
    # the conversation list's menu asks the page, which asks where (the suffix is added)
    page.conversation_list.export_requested.emit(page.conversation.id, "markdown")
    written = chosen.with_suffix(".md")
    assert "## You\n\nSay something" in written.read_text()
    assert answer.content.strip()[:20] in written.read_text()
    path = page.export_conversation(page.conversation.id, "json", tmp_path / "chat.json")
    assert path is not None and json.loads(path.read_text())["messages"][1]["role"] == "assistant"
    # a folder that cannot be written: the page says so, nothing is left behind
    warned: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text: warned.append(text))
    assert page.export_conversation(page.conversation.id, "json", tmp_path / "missing" / "x.json") is None
    assert warned and "could not be written" in warned[0]


def test_the_search_box_lists_the_conversations_whose_messages_match(qtbot: QtBot, page: ChatPage) -> None:
    send(qtbot, page, "Tell me about lighthouses")
    wait_answered(qtbot, page)
    lighthouse = page.conversation
    other = page.new_conversation()
    page.rename_conversation(other.id, "Groceries")
    assert lighthouse is not None and page.conversations.rowCount() == 2
    page.conversation_list.search.setText("lightho")
    qtbot.waitUntil(lambda: page.conversations.rowCount() == 1, timeout=WAIT_MS)
    index = page.conversations.index(0)
    assert index.data(ID_ROLE) == lighthouse.id
    assert "[lighthouses]" in index.data()  # the matching message's words, under the title
    page.conversation_list.search.setText("groc")
    qtbot.waitUntil(lambda: page.conversations.index(0).data(ID_ROLE) == other.id, timeout=WAIT_MS)
    page.conversation_list.search.clear()
    qtbot.waitUntil(lambda: page.conversations.rowCount() == 2, timeout=WAIT_MS)


def test_continue_lets_an_answer_cut_short_go_on_in_the_same_message(qtbot: QtBot, page: ChatPage) -> None:
    send(qtbot, page, "Tell me a long story")
    first = wait_answered(qtbot, page)
    assert first.stats is not None and first.stats.finish_reason == "length"  # max_tokens 24
    widget = page.view.widget_for(first.id)
    assert widget is not None and widget.continue_button.isVisibleTo(widget)
    qtbot.mouseClick(widget.continue_button, Qt.MouseButton.LeftButton)
    streaming = page.view.widget_for(first.id)
    # no Continue while it streams
    assert streaming is not None and not streaming.continue_button.isVisibleTo(streaming)
    after = wait_answered(qtbot, page)
    assert after.id == first.id  # the same message, longer
    assert after.content.startswith(first.content) and len(after.content) > len(first.content)
    assert after.state == "complete"
    assert len(page.store.messages(after.conversation_id)) == 2


def test_a_saved_preset_sets_the_system_prompt_and_sampling_of_any_conversation(
        qtbot: QtBot, page: ChatPage, monkeypatch: pytest.MonkeyPatch) -> None:
    first = page.new_conversation()
    page.edit_chat_settings()
    dialog = page.findChild(ChatSettingsDialog)
    assert dialog is not None
    dialog.form.system_prompt.setPlainText("Answer like a pirate.")
    dialog.form.preset.setCurrentIndex(dialog.form.preset.findData("custom"))
    dialog.form.temperature.setValue(0.35)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Pirate", True))
    dialog.save_preset_button.click()
    dialog.reject()
    assert [p.name for p in page.store.user_presets()] == ["Pirate"]
    # offered in the header of every conversation; picking it sets its prompt and sampling
    second = page.new_conversation()
    header = page.header.preset
    index = header.findData("user:Pirate")
    assert index >= 0 and header.itemText(index) == "Pirate"
    header.setCurrentIndex(index)
    header.activated.emit(index)
    chosen = page.store.conversation(second.id)
    assert chosen.system_prompt == "Answer like a pirate." and chosen.temperature == 0.35
    assert sampling_for(chosen).temperature == 0.35
    assert page.store.conversation(first.id).system_prompt == ""  # the first is as it was
    # its settings show the preset by name, and OK keeps it
    page.edit_chat_settings()
    dialog = [d for d in page.findChildren(ChatSettingsDialog) if d.isVisible()][-1]
    assert dialog.form.preset.currentText() == "Pirate (your preset)"
    dialog.accept()
    assert page.store.conversation(second.id).preset == "user:Pirate"
