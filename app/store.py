"""Conversations and settings on disk: one SQLite file under ``app.paths.data_dir()``.

Qt-free and synchronous (the chat page calls it on the UI thread: each write is one small
transaction, well under a millisecond in WAL mode). Nothing is lost when the app or the engine
crashes mid-answer: the chat page writes the answer as it streams with ``state="partial"``,
and only a finished answer becomes ``"complete"``; a crash leaves the partial text, marked.

    store = Store.open_default()
    conv = store.create_conversation("Why MoE?")
    store.add_message(conv.id, "user", "Why are MoE models fast?")
    answer = store.add_message(conv.id, "assistant", "", state="partial")
    store.update_message(answer.id, "Because only", state="partial")
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app import paths

DB_NAME = "moedesk.sqlite3"
SCHEMA_VERSION = 2  # 2: conversations.context_policy, messages.messages_dropped

Role = Literal["system", "user", "assistant"]
MessageState = Literal["complete", "partial", "error"]
# app.engine.protocol.ContextPolicy's values, stored as text (the store imports no engine code)
DEFAULT_CONTEXT_POLICY = "drop_middle"
UNTIL_CONTEXT_ENDS = 0  # max_tokens 0: the answer runs until it ends or the context is full

# Setting keys (values are stored as JSON).
MODEL_FOLDER = "model_folder"
THEME = "theme"  # "system" | "light" | "dark"
CHAT_DEFAULTS = "chat_defaults"  # ChatDefaults as a dict
LOAD_CONTEXT = "load_context"  # n_ctx asked of the planner when a model is loaded
FIRST_RUN_DONE = "first_run_done"
EXPORT_FOLDER = "export_folder"  # where the last conversation export went

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids never reused: views key widgets by id
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    preset TEXT NOT NULL DEFAULT 'balanced',
    temperature REAL NOT NULL,
    top_p REAL NOT NULL,
    max_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    context_policy TEXT NOT NULL DEFAULT 'drop_middle'
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids never reused: views key widgets by id
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'complete',
    error TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    prefill_tps REAL,
    decode_tps REAL,
    ttft_s REAL,
    finish_reason TEXT,
    model TEXT,
    created REAL NOT NULL,
    messages_dropped INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presets (
    name TEXT PRIMARY KEY,
    system_prompt TEXT NOT NULL,
    temperature REAL NOT NULL,
    top_p REAL NOT NULL,
    max_tokens INTEGER NOT NULL,
    context_policy TEXT NOT NULL,
    created REAL NOT NULL
);
"""
# Full-text search over every message (SQLite FTS5, an external-content index kept by triggers;
# a streaming answer's saves reindex it as they go).
_SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
"""
# columns added after version 1, for databases made before them: (table, column, definition)
_ADDED_COLUMNS = (
    ("conversations", "context_policy", "TEXT NOT NULL DEFAULT 'drop_middle'"),
    ("messages", "messages_dropped", "INTEGER"),
)


@dataclass
class ChatDefaults:
    """What a new conversation starts with (Settings > Defaults for new chats)."""

    system_prompt: str = ""
    preset: str = "balanced"
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = UNTIL_CONTEXT_ENDS  # a fixed limit cuts reasoning models mid-thought
    # a conversation longer than the context: "stop", "drop_middle" or "rolling_window"
    context_policy: str = DEFAULT_CONTEXT_POLICY


@dataclass
class UserPreset:
    """A system prompt and sampling the user saved under a name, to pick for any conversation."""

    name: str
    system_prompt: str
    temperature: float
    top_p: float
    max_tokens: int = UNTIL_CONTEXT_ENDS
    context_policy: str = DEFAULT_CONTEXT_POLICY


@dataclass
class Conversation:
    id: int
    title: str
    system_prompt: str
    preset: str  # a name in app.ui.chat.presets.PRESETS, or "custom"
    temperature: float
    top_p: float
    max_tokens: int  # 0: until the answer or the context ends
    created: float  # Unix time
    updated: float
    context_policy: str = DEFAULT_CONTEXT_POLICY  # app.engine.protocol.ContextPolicy's value


@dataclass
class MessageStats:
    """How an answer was generated (from the engine's ChatResult)."""

    prompt_tokens: int
    completion_tokens: int
    prefill_tps: float
    decode_tps: float
    ttft_s: float
    finish_reason: str  # "stop" | "length" | "cancelled"
    model: str = ""
    messages_dropped: int = 0  # earlier messages the context policy left out of the prompt


@dataclass
class Message:
    id: int
    conversation_id: int
    role: Role
    content: str
    state: MessageState = "complete"
    error: str = ""  # why an answer ended early, in plain words
    stats: MessageStats | None = None
    created: float = field(default_factory=time.time)


@dataclass
class SearchHit:
    conversation: Conversation
    snippet: str  # the matching words in [brackets], with some words around them
    message_id: int | None  # None: the title matched

    @property
    def conversation_id(self) -> int:
        return self.conversation.id


class Store:
    """The app's SQLite database. One instance per process; not shared across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            # the user's alone: SQLite gives its -wal and -shm files the database's mode
            paths.private_file(self.path)
            for extra in ("-wal", "-shm"):
                if self.path.with_name(self.path.name + extra).exists():
                    paths.private_file(self.path.with_name(self.path.name + extra))
        except OSError as exc:
            raise StoreError(f"cannot create the conversation database {self.path} "
                             f"({exc.strerror or exc}).",
                             "Check that the folder is writable by you, or set MOEDESK_HOME to "
                             "another folder.") from exc
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; explicit txns
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed write survives an app crash (not a power cut)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._add_columns()
            self._add_search()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the conversation database {self.path}: {exc}.",
                             "Move the file away (MoE Desk starts a new one) or restore a backup.")\
                from exc
        self._db.row_factory = sqlite3.Row

    def _add_columns(self) -> None:
        for table, column, definition in _ADDED_COLUMNS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def _add_search(self) -> None:
        """The search index; a database made before it gets its messages indexed once."""
        had = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone()
        self._db.executescript(_SEARCH_SCHEMA)
        if had is None:
            self._db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")

    @classmethod
    def open_default(cls) -> Store:
        """The store under the user's data folder (``MOEDESK_HOME`` moves it)."""
        return cls(paths.data_dir() / DB_NAME)

    def close(self) -> None:
        self._db.close()

    # --- search ---------------------------------------------------------------------------

    def search(self, text: str, limit: int = 100) -> list[SearchHit]:
        """Conversations whose title or messages contain every word of ``text`` (word
        prefixes; case and accents ignored), most recently updated first, each with a snippet
        of its best-matching message."""
        words = _words(text)
        if not words:
            return []
        query = " ".join(f'"{w}"*' for w in words)
        rows = self._db.execute(
            "SELECT m.conversation_id AS cid, m.id AS mid, "
            "snippet(messages_fts, 0, '[', ']', '…', 12) AS snip, bm25(messages_fts) AS rank "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "WHERE messages_fts MATCH ? ORDER BY rank", (query,)).fetchall()
        best: dict[int, tuple[int, str]] = {}
        for row in rows:
            best.setdefault(row["cid"], (row["mid"], row["snip"]))
        hits = []
        for conversation in self.conversations():
            title = _words(conversation.title)
            if conversation.id in best:
                message_id, snip = best[conversation.id]
                hits.append(SearchHit(conversation, snip, message_id))
            elif all(any(t.startswith(w) for t in title) for w in words):
                hits.append(SearchHit(conversation, conversation.title, None))
        return hits[:limit]

    # --- conversations --------------------------------------------------------------------

    def create_conversation(self, title: str = "New chat",
                            defaults: ChatDefaults | None = None) -> Conversation:
        d = defaults or self.chat_defaults()
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO conversations (title, system_prompt, preset, temperature, top_p, "
            "max_tokens, context_policy, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (title, d.system_prompt, d.preset, d.temperature, d.top_p, d.max_tokens,
             d.context_policy, now, now))
        return self.conversation(int(cur.lastrowid or 0))

    def conversation(self, conversation_id: int) -> Conversation:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
        if row is None:
            raise KeyError(f"no conversation {conversation_id}")
        return Conversation(**dict(row))

    def conversations(self) -> list[Conversation]:
        """All conversations, the most recently updated first."""
        rows = self._db.execute("SELECT * FROM conversations ORDER BY updated DESC, id DESC")
        return [Conversation(**dict(row)) for row in rows]

    def update_conversation(self, conversation_id: int, **changes: Any) -> Conversation:
        """Change title, system_prompt, preset, temperature, top_p, max_tokens or
        context_policy."""
        allowed = {"title", "system_prompt", "preset", "temperature", "top_p", "max_tokens",
                   "context_policy"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown conversation field(s): {', '.join(sorted(unknown))}")
        if changes:
            columns = ", ".join(f"{name} = ?" for name in changes)
            self._db.execute(f"UPDATE conversations SET {columns}, updated = ? WHERE id = ?",
                             (*changes.values(), time.time(), conversation_id))
        return self.conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- presets --------------------------------------------------------------------------

    _PRESET_COLUMNS = "name, system_prompt, temperature, top_p, max_tokens, context_policy"

    def user_presets(self) -> list[UserPreset]:
        rows = self._db.execute(f"SELECT {self._PRESET_COLUMNS} FROM presets ORDER BY name COLLATE NOCASE")
        return [UserPreset(**dict(row)) for row in rows]

    def user_preset(self, name: str) -> UserPreset | None:
        row = self._db.execute(f"SELECT {self._PRESET_COLUMNS} FROM presets WHERE name = ?",
                               (name,)).fetchone()
        return UserPreset(**dict(row)) if row is not None else None

    def save_user_preset(self, preset: UserPreset) -> None:
        """Save (or replace) the preset of this name."""
        if not preset.name.strip():
            raise ValueError("a preset needs a name")
        self._db.execute(
            "INSERT OR REPLACE INTO presets (name, system_prompt, temperature, top_p, max_tokens, "
            "context_policy, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (preset.name.strip(), preset.system_prompt, preset.temperature, preset.top_p,
             preset.max_tokens, preset.context_policy, time.time()))

    def delete_user_preset(self, name: str) -> None:
        self._db.execute("DELETE FROM presets WHERE name = ?", (name,))

    # --- messages -------------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id",
                                (conversation_id,))
        return [_message(row) for row in rows]

    def message(self, message_id: int) -> Message:
        row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise KeyError(f"no message {message_id}")
        return _message(row)

    def add_message(self, conversation_id: int, role: Role, content: str,
                    state: MessageState = "complete") -> Message:
        now = time.time()
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, state, created) "
                "VALUES (?, ?, ?, ?, ?)", (conversation_id, role, content, state, now))
            self._touch(conversation_id, now)
        return self.message(int(cur.lastrowid or 0))

    def update_message(self, message_id: int, content: str, state: MessageState,
                       stats: MessageStats | None = None, error: str = "") -> None:
        """Write an answer's text so far (or its end): one short transaction."""
        columns = "content = ?, state = ?, error = ?"
        values: list[Any] = [content, state, error]
        if stats is not None:
            columns += (", prompt_tokens = ?, completion_tokens = ?, prefill_tps = ?, "
                        "decode_tps = ?, ttft_s = ?, finish_reason = ?, model = ?, "
                        "messages_dropped = ?")
            values += [stats.prompt_tokens, stats.completion_tokens, stats.prefill_tps,
                       stats.decode_tps, stats.ttft_s, stats.finish_reason, stats.model,
                       stats.messages_dropped]
        with self._transaction():
            self._db.execute(f"UPDATE messages SET {columns} WHERE id = ?", (*values, message_id))
            self._db.execute(
                "UPDATE conversations SET updated = ? WHERE id = "
                "(SELECT conversation_id FROM messages WHERE id = ?)", (time.time(), message_id))

    def delete_messages_from(self, message_id: int) -> None:
        """Delete a message and every later one of its conversation (regenerate, edit)."""
        message = self.message(message_id)
        self._db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                         (message.conversation_id, message_id))

    # --- settings -------------------------------------------------------------------------

    def setting(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, json.dumps(value)))

    def chat_defaults(self) -> ChatDefaults:
        saved = self.setting(CHAT_DEFAULTS) or {}
        known = {k: v for k, v in saved.items() if k in ChatDefaults.__dataclass_fields__}
        return ChatDefaults(**known)

    def set_chat_defaults(self, defaults: ChatDefaults) -> None:
        self.set_setting(CHAT_DEFAULTS, defaults.__dict__)

    def models_folder(self) -> Path:
        """Where models are looked for and downloaded (Settings), else the default."""
        folder = self.setting(MODEL_FOLDER)
        return Path(folder) if folder else paths.default_models_dir()

    # --- plumbing -------------------------------------------------------------------------

    def _touch(self, conversation_id: int, now: float) -> None:
        self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))

    def _transaction(self) -> sqlite3.Connection:
        # sqlite3.Connection as a context manager commits or rolls back; BEGIN makes the
        # statements one transaction even in autocommit mode
        self._db.execute("BEGIN")
        return self._db


def _words(text: str) -> list[str]:
    """Lower-case words without accents, as the search index tokenizes them."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return re.findall(r"\w+", folded)


class StoreError(Exception):
    """The database cannot be opened or read; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message} {hint}".strip())
        self.message = message
        self.hint = hint


def _message(row: sqlite3.Row) -> Message:
    stats = None
    if row["completion_tokens"] is not None:
        stats = MessageStats(
            prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
            prefill_tps=row["prefill_tps"], decode_tps=row["decode_tps"], ttft_s=row["ttft_s"],
            finish_reason=row["finish_reason"] or "", model=row["model"] or "",
            messages_dropped=row["messages_dropped"] or 0)
    return Message(id=row["id"], conversation_id=row["conversation_id"], role=row["role"],
                   content=row["content"], state=row["state"], error=row["error"], stats=stats,
                   created=row["created"])
