"""A conversation longer than the model's context in the Chat window (issue 20): it keeps
answering with earlier turns left out of the prompt, says so on the answer, and shows how much
of the context the conversation uses. Real engine, tiny model, a 512-token context."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.engine.placement import PlacementPlan
from app.engine.protocol import ContextPolicy, LoadParams
from app.store import ChatDefaults, Message, Store
from app.ui.chat import ChatPage
from app.ui.chat.presets import context_policy_for, sampling_for
from app.ui.chat.settings_dialog import ChatSettingsDialog
from tests.chat_testing import chat_page, focus

WAIT_MS = 120_000
N_CTX = 512
# greedy and short answers keep the test quick; the context policy is the app's default
SHORT_GREEDY = ChatDefaults(preset="custom", temperature=0.0, top_p=1.0, max_tokens=24)


@pytest.fixture
def page(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         tiny_moe_gguf: Path) -> Iterator[ChatPage]:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    params = LoadParams(model=str(tiny_moe_gguf), telemetry=False,
                        placement=PlacementPlan(n_ctx=N_CTX, n_threads=1))
    with chat_page(qtbot, Store.open_default(), params, WAIT_MS) as chat:
        yield chat


def send(qtbot: QtBot, chat: ChatPage, text: str) -> Message:
    chat.compose.setPlainText(text)
    qtbot.waitUntil(chat.send_button.isEnabled, timeout=WAIT_MS)
    focus(qtbot, chat, WAIT_MS)
    qtbot.keyClick(chat.compose, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    assert chat.conversation is not None
    return chat.store.messages(chat.conversation.id)[-1]


def test_new_chats_answer_until_the_context_ends_and_leave_out_the_middle(
        qtbot: QtBot, page: ChatPage) -> None:
    conversation = page.new_conversation()
    assert conversation.max_tokens == 0 and conversation.context_policy == "drop_middle"
    assert sampling_for(conversation).max_tokens is None  # no limit of its own
    assert context_policy_for(conversation) is ContextPolicy.DROP_MIDDLE
    dialog = ChatSettingsDialog(conversation, page)
    qtbot.addWidget(dialog)
    assert dialog.form.max_tokens.text() == "Until the context ends"
    dialog.form.context_policy.setCurrentIndex(
        dialog.form.context_policy.findData("rolling_window"))
    assert dialog.values().context_policy == "rolling_window" and dialog.values().max_tokens == 0


def test_a_conversation_three_times_the_context_keeps_answering(
        qtbot: QtBot, page: ChatPage) -> None:
    page.store.set_chat_defaults(SHORT_GREEDY)
    page.new_conversation()
    assert page.meter.text() == "Context: not used yet"
    answers = []
    for turn in range(10):
        answer = send(qtbot, page, f"Turn {turn}: " + "tell me more about routed experts " * 12)
        assert answer.state == "complete" and answer.stats is not None, answer
        answers.append(answer)
        # the meter shows what the last prompt and its answer took of the context
        used = answer.stats.prompt_tokens + answer.stats.completion_tokens
        assert page.meter.value() == used <= N_CTX
        assert page.meter.text() == f"Context: {used} of {N_CTX} tokens ({100 * used / N_CTX:.0f}%)"
    assert answers[0].stats is not None and answers[0].stats.messages_dropped == 0
    last = answers[-1]
    assert last.stats is not None and last.stats.messages_dropped >= 2
    # the answer says its prompt left messages out; the first answer's did not
    widgets = page.view.widgets()
    assert widgets[-1].context_note.isVisible()
    assert widgets[-1].context_note.text().startswith(
        f"{last.stats.messages_dropped} earlier messages left out of the prompt")
    assert not widgets[1].context_note.isVisible()
    assert "left out of the last prompt" in page.meter.toolTip()
    # the conversation itself is whole, in the store and on screen
    assert page.conversation is not None
    assert len(page.store.messages(page.conversation.id)) == len(widgets) == 20

    # with the policy "stop" the same conversation is refused, naming its size: three contexts
    page.conversation = page.store.update_conversation(page.conversation.id,
                                                       context_policy="stop")
    page.regenerate()
    qtbot.waitUntil(lambda: page.answer is None, timeout=WAIT_MS)
    refusal = re.search(r"the conversation \((\d+) tokens\) does not fit the context of 512",
                        page.notice.text())
    assert refusal is not None, page.notice.text()
    assert int(refusal.group(1)) > 3 * N_CTX
