"""The conversation store: what a user keeps across restarts and crashes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.store import CHAT_DEFAULTS, ChatDefaults, MessageStats, Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "moedesk.sqlite3")


def test_conversation_round_trip_with_messages_and_stats(store: Store, tmp_path: Path) -> None:
    conv = store.create_conversation("Why MoE?", ChatDefaults(system_prompt="Be brief.",
                                                             preset="precise", temperature=0.2))
    store.add_message(conv.id, "user", "Why are MoE models fast?")
    answer = store.add_message(conv.id, "assistant", "", state="partial")
    stats = MessageStats(prompt_tokens=12, completion_tokens=3, prefill_tps=250.0,
                         decode_tps=31.5, ttft_s=0.05, finish_reason="stop", model="Qwen3")
    store.update_message(answer.id, "Few experts run.", "complete", stats)
    store.close()

    again = Store(tmp_path / "moedesk.sqlite3")
    (saved,) = again.conversations()
    assert (saved.title, saved.system_prompt, saved.preset, saved.temperature) == \
        ("Why MoE?", "Be brief.", "precise", 0.2)
    user, assistant = again.messages(saved.id)
    assert (user.role, user.content, user.stats) == ("user", "Why are MoE models fast?", None)
    assert (assistant.content, assistant.state, assistant.stats) == ("Few experts run.", "complete", stats)


def test_partial_answer_survives_a_crash_mid_answer(tmp_path: Path) -> None:
    """A process writes half an answer and is killed (no close, no clean exit): a new Store
    on the same file sees the half answer, marked partial."""
    db = tmp_path / "moedesk.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from app.store import Store
        store = Store({str(db)!r})
        conv = store.create_conversation("crash")
        store.add_message(conv.id, "user", "Tell me a story")
        answer = store.add_message(conv.id, "assistant", "", state="partial")
        store.update_message(answer.id, "Once upon", "partial")
        store.update_message(answer.id, "Once upon a time", "partial")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == -9

    survivor = Store(db)
    (conv,) = survivor.conversations()
    user, answer = survivor.messages(conv.id)
    assert user.content == "Tell me a story"
    assert (answer.content, answer.state) == ("Once upon a time", "partial")


def test_rename_order_and_delete(store: Store) -> None:
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    store.add_message(first.id, "user", "bump")  # a new message moves a chat to the top
    assert [c.title for c in store.conversations()] == ["first", "second"]
    store.update_conversation(second.id, title="renamed", max_tokens=64)
    assert store.conversation(second.id).title == "renamed"
    assert store.conversation(second.id).max_tokens == 64
    with pytest.raises(ValueError, match="unknown conversation field"):
        store.update_conversation(second.id, colour="red")
    store.delete_conversation(first.id)
    assert [c.title for c in store.conversations()] == ["renamed"]
    assert store.messages(first.id) == []  # messages go with their conversation


def test_delete_messages_from_keeps_earlier_ones(store: Store) -> None:
    conv = store.create_conversation()
    ids = [store.add_message(conv.id, role, text).id
           for role, text in [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]]
    store.delete_messages_from(ids[2])
    assert [m.content for m in store.messages(conv.id)] == ["a", "b"]


def test_settings_and_chat_defaults(store: Store, tmp_path: Path) -> None:
    assert store.setting("theme", "system") == "system"
    store.set_setting("theme", "dark")
    store.set_setting("first_run_done", True)
    store.set_chat_defaults(ChatDefaults(system_prompt="You are terse.", max_tokens=256))
    store.set_setting("model_folder", str(tmp_path / "models"))
    assert store.setting("theme") == "dark" and store.setting("first_run_done") is True
    assert store.chat_defaults().system_prompt == "You are terse."
    assert store.models_folder() == tmp_path / "models"
    # a new chat takes the defaults
    assert store.create_conversation().max_tokens == 256
    # a defaults record from a newer version with a field this one lacks still loads
    store.set_setting(CHAT_DEFAULTS, {"max_tokens": 99, "future_field": 1})
    assert store.chat_defaults().max_tokens == 99


def test_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "moedesk.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the conversation database") as info:
        Store(bad)
    assert "Move the file away" in info.value.hint


def test_a_database_from_before_context_policies_opens_with_drop_middle(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    old.executescript("""
        CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '', preset TEXT NOT NULL DEFAULT 'balanced',
            temperature REAL NOT NULL, top_p REAL NOT NULL, max_tokens INTEGER NOT NULL,
            created REAL NOT NULL, updated REAL NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id INTEGER
            NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, state TEXT NOT NULL DEFAULT
            'complete', error TEXT NOT NULL DEFAULT '', prompt_tokens INTEGER,
            completion_tokens INTEGER, prefill_tps REAL, decode_tps REAL, ttft_s REAL,
            finish_reason TEXT, model TEXT, created REAL NOT NULL);
        INSERT INTO conversations VALUES (1, 'kept', '', 'balanced', 0.7, 0.95, 1024, 0, 0);
        INSERT INTO messages (conversation_id, role, content, completion_tokens, prompt_tokens,
            prefill_tps, decode_tps, ttft_s, created) VALUES (1, 'assistant', 'hi', 3, 9, 1, 1,
            0.1, 0);
    """)
    old.close()
    store = Store(tmp_path / "old.sqlite3")
    conversation = store.conversation(1)
    assert conversation.max_tokens == 1024  # a chat keeps the limit it was made with
    assert conversation.context_policy == "drop_middle"
    (message,) = store.messages(1)
    assert message.stats is not None and message.stats.messages_dropped == 0
    # new chats answer until the context ends
    assert store.create_conversation().max_tokens == 0
    # its messages are indexed for search when it is first opened
    assert [h.conversation_id for h in store.search("hi")] == [1]


def test_search_finds_words_in_any_message_or_title(store: Store) -> None:
    trip = store.create_conversation("Trip to Lisbon")
    store.add_message(trip.id, "user", "Which café in Alfama has the best pastéis?")
    answer = store.add_message(trip.id, "assistant", "Try the one near the cathedral.")
    code = store.create_conversation("Rust")
    store.add_message(code.id, "user", "Why does the borrow checker reject my closure?")
    (hit,) = store.search("cafe alfa")  # accents and case ignored, words as prefixes
    assert hit.conversation_id == trip.id and hit.snippet == "Which [café] in [Alfama] has the best pastéis?"
    assert [h.conversation_id for h in store.search("lisbon")] == [trip.id]  # by its title
    assert store.search("lisbon")[0].message_id is None
    assert [h.conversation_id for h in store.search("borrow closure")] == [code.id]
    assert store.search("borrow cathedral") == []  # every word, in one conversation's message
    # FTS5 syntax in the query is taken as words, never as a query
    assert store.search('" OR NEAR(*') == [] and store.search("") == []
    # an answer saved again as it streams is searched by its latest text
    store.update_message(answer.id, "Try the bakery by the river.", "complete")
    assert store.search("cathedral") == []
    assert [h.conversation_id for h in store.search("bakery")] == [trip.id]
    store.delete_conversation(trip.id)
    assert store.search("bakery") == [] and store.search("alfama") == []


def test_user_presets_are_saved_replaced_and_deleted(store: Store) -> None:
    from app.store import UserPreset

    assert store.user_presets() == []
    store.save_user_preset(UserPreset("Translator", "Translate to French.", 0.3, 0.9, 0, "stop"))
    store.save_user_preset(UserPreset("coder", "You write Python.", 0.1, 0.95))
    assert [p.name for p in store.user_presets()] == ["coder", "Translator"]  # by name, any case
    store.save_user_preset(UserPreset("Translator", "Translate to German.", 0.4, 0.9))
    translator = store.user_preset("Translator")
    assert translator is not None and translator.system_prompt == "Translate to German."
    assert translator.context_policy == "drop_middle"  # the default when not given
    store.delete_user_preset("coder")
    assert [p.name for p in store.user_presets()] == ["Translator"]
    with pytest.raises(ValueError):
        store.save_user_preset(UserPreset("  ", "x", 0.5, 0.9))
