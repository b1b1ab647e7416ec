"""A conversation as Markdown (to read or paste) or JSON (to keep or process), written whole.

Plain Python, tested without Qt. A reasoning model's thinking goes into a collapsed
``<details>`` block in Markdown (as the chat window shows it) and into ``reasoning_content``
in JSON (as the OpenAI-compatible API returns it); answers that ended early keep their state.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from app.store import Conversation, Message
from app.ui.chat.segments import split_thinking

ExportFormat = Literal["markdown", "json"]
SUFFIXES: dict[ExportFormat, str] = {"markdown": ".md", "json": ".json"}
ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System"}
# what a message's state adds after it in Markdown
STATE_NOTES = {"partial": "answer interrupted", "error": "answer failed"}


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation.title}", "",
             f"*Exported from MoE Desk; started {_when(conversation.created)}.*", ""]
    if conversation.system_prompt.strip():
        lines += ["**System prompt:**", "", conversation.system_prompt.strip(), ""]
    for message in messages:
        lines += [f"## {ROLE_TITLES.get(message.role, message.role.title())}", ""]
        text = message.content
        if message.role == "assistant":
            thinking, _closed, answer = split_thinking(text)
            if thinking:
                lines += ["<details><summary>Reasoning</summary>", "", thinking.strip(), "",
                          "</details>", ""]
            text = answer
        if text.strip():
            lines += [text.strip(), ""]
        notes = []
        if message.state in STATE_NOTES:
            notes.append(STATE_NOTES[message.state] + (f": {message.error}" if message.error else ""))
        if message.stats is not None and message.stats.model:
            notes.append(f"{message.stats.model}, {message.stats.completion_tokens} tokens, "
                         f"{message.stats.decode_tps:.1f} t/s")
        if notes:
            lines += [f"*({'; '.join(notes)})*", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(conversation: Conversation, messages: list[Message]) -> str:
    out_messages = []
    for message in messages:
        item: dict[str, object] = {"role": message.role, "content": message.content,
                                   "state": message.state, "created": _when(message.created)}
        if message.role == "assistant":
            thinking, _closed, answer = split_thinking(message.content)
            if thinking is not None:
                item["content"], item["reasoning_content"] = answer, thinking
        if message.error:
            item["error"] = message.error
        if message.stats is not None:
            item["stats"] = asdict(message.stats)
        out_messages.append(item)
    data = {
        "format": "moedesk-conversation", "version": 1,
        "title": conversation.title,
        "created": _when(conversation.created), "updated": _when(conversation.updated),
        "system_prompt": conversation.system_prompt,
        "sampling": {"preset": conversation.preset, "temperature": conversation.temperature,
                     "top_p": conversation.top_p, "max_tokens": conversation.max_tokens},
        "context_policy": conversation.context_policy,
        "messages": out_messages,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export_conversation(conversation: Conversation, messages: list[Message], path: Path,
                        fmt: ExportFormat) -> Path:
    """Write the conversation to ``path`` whole or not at all (a temporary file renamed)."""
    text = to_markdown(conversation, messages) if fmt == "markdown" else to_json(conversation, messages)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def suggested_name(conversation: Conversation, fmt: ExportFormat) -> str:
    """A file name from the title: letters, digits, spaces and dashes kept."""
    stem = "".join(c if c.isalnum() or c in " -_" else " " for c in conversation.title).strip()
    return f"{' '.join(stem.split())[:60] or 'conversation'}{SUFFIXES[fmt]}"
