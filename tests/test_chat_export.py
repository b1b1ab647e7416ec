"""A conversation exported to Markdown and JSON: thinking kept apart, whole files only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.store import Conversation, Message, MessageStats
from app.ui.chat.export import export_conversation, suggested_name, to_json, to_markdown

CONVERSATION = Conversation(id=1, title="Trip / plans: Lisbon?", system_prompt="Be brief.",
                            preset="balanced", temperature=0.7, top_p=0.95, max_tokens=0,
                            created=1_700_000_000.0, updated=1_700_000_100.0)
STATS = MessageStats(prompt_tokens=20, completion_tokens=12, prefill_tps=300.0, decode_tps=21.5,
                     ttft_s=0.1, finish_reason="stop", model="Qwen3-30B-A3B")
MESSAGES = [
    Message(1, 1, "user", "Where should I go first?", created=1_700_000_010.0),
    Message(2, 1, "assistant", "<think>\nThey asked about Lisbon.\n</think>\n\nStart in **Alfama**.",
            stats=STATS, created=1_700_000_020.0),
    Message(3, 1, "user", "And then?", created=1_700_000_030.0),
    Message(4, 1, "assistant", "Then Bel", state="partial", error="stopped by you",
            created=1_700_000_040.0),
]


def test_markdown_keeps_the_turns_and_folds_the_thinking() -> None:
    text = to_markdown(CONVERSATION, MESSAGES)
    assert text.startswith("# Trip / plans: Lisbon?\n")
    assert "**System prompt:**\n\nBe brief." in text
    assert text.count("## You") == 2 and text.count("## Assistant") == 2
    assert "<details><summary>Reasoning</summary>\n\nThey asked about Lisbon.\n\n</details>" in text
    assert "Start in **Alfama**." in text and "<think>" not in text
    assert "*(Qwen3-30B-A3B, 12 tokens, 21.5 t/s)*" in text
    assert "*(answer interrupted: stopped by you)*" in text


def test_json_carries_reasoning_apart_and_the_settings() -> None:
    data = json.loads(to_json(CONVERSATION, MESSAGES))
    assert data["format"] == "moedesk-conversation" and data["title"] == CONVERSATION.title
    assert data["sampling"] == {"preset": "balanced", "temperature": 0.7, "top_p": 0.95, "max_tokens": 0}
    answer = data["messages"][1]
    assert answer["content"] == "Start in **Alfama**."
    assert answer["reasoning_content"] == "They asked about Lisbon."
    assert answer["stats"]["decode_tps"] == 21.5
    assert data["messages"][3]["state"] == "partial" and data["messages"][3]["error"] == "stopped by you"
    assert "reasoning_content" not in data["messages"][0]


def test_an_export_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = export_conversation(CONVERSATION, MESSAGES, tmp_path / "trip.json", "json")
    assert json.loads(path.read_text())["messages"][0]["content"] == "Where should I go first?"

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("app.ui.chat.export.os.replace", full_disk)
    with pytest.raises(OSError):
        export_conversation(CONVERSATION, MESSAGES, tmp_path / "trip.md", "markdown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trip.json"]  # no half-written file


def test_suggested_file_names_are_safe() -> None:
    assert suggested_name(CONVERSATION, "markdown") == "Trip plans Lisbon.md"
    untitled = Conversation(**{**CONVERSATION.__dict__, "title": "???"})
    assert suggested_name(untitled, "json") == "conversation.json"
