"""An answer's text as OpenAI clients expect it: reasoning, content and tool calls apart.

The engine streams the text the model writes. Reasoning models write their thinking first,
inside ``<think>...</think>`` (the engine puts the ``<think>`` in front when the chat template
opened it), which llama-server and OpenAI's reasoning models return as ``reasoning_content``;
a chat with tools may contain calls in the model's markup (``app.engine.tool_calls``), which
become ``tool_calls``. ``AnswerSplitter`` does both as the text streams, holding back only what
may still turn out to be a marker.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum

from app.engine.tool_calls import ParsedCall, ToolCallParser

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Part(Enum):
    REASONING = "reasoning"
    CONTENT = "content"


@dataclass
class Delta:
    """One piece of the answer: text of one part, or a whole tool call."""

    part: Part
    text: str = ""
    call: ParsedCall | None = None
    call_id: str = ""


@dataclass
class ReasoningSplitter:
    """``<think>`` at the start of an answer (after blank space) opens the reasoning, and
    ``</think>`` ends it; the blank lines around them are the template's, not the answer's."""

    state: str = "start"  # start -> reasoning -> content, or start -> content
    held: str = ""
    trim_lead: bool = False  # content just after </think>: its leading newlines dropped

    def feed(self, piece: str) -> list[tuple[Part, str]]:
        self.held += piece
        out: list[tuple[Part, str]] = []
        if self.state == "start":
            text = self.held.lstrip()
            if text.startswith(THINK_OPEN):
                self.state, self.held = "reasoning", text[len(THINK_OPEN):].lstrip("\n")
            elif THINK_OPEN.startswith(text):  # blank, or a part of <think>: wait
                return out
            else:
                self.state = "content"
        if self.state == "reasoning":
            at = self.held.find(THINK_CLOSE)
            if at < 0:
                keep = _partial_suffix(self.held, THINK_CLOSE)
                ready, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
                if ready:
                    out.append((Part.REASONING, ready))
                return out
            if self.held[:at].rstrip("\n"):
                out.append((Part.REASONING, self.held[:at].rstrip("\n")))
            self.state, self.held, self.trim_lead = "content", self.held[at + len(THINK_CLOSE):], True
        if self.trim_lead:
            self.held = self.held.lstrip("\n")
            if not self.held:
                return out
            self.trim_lead = False
        if self.held:
            out.append((Part.CONTENT, self.held))
            self.held = ""
        return out

    def finish(self) -> list[tuple[Part, str]]:
        rest, self.held = self.held, ""
        if not rest:
            return []
        # an answer cut off inside its reasoning: that much reasoning
        return [(Part.REASONING if self.state == "reasoning" else Part.CONTENT, rest)]


def _partial_suffix(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


@dataclass
class AnswerSplitter:
    """Reasoning, content and tool calls of a streamed answer. ``reasoning``: split the
    reasoning out (else it stays in the content, as written); ``tools``: look for calls."""

    reasoning: bool = True
    tools: bool = False
    thinking: ReasoningSplitter = field(default_factory=ReasoningSplitter)
    calls: ToolCallParser = field(default_factory=ToolCallParser)
    n_calls: int = 0
    max_calls: int | None = None  # parallel_tool_calls false: 1 (later calls are dropped)

    def feed(self, text: str) -> list[Delta]:
        parts = self.thinking.feed(text) if self.reasoning else [(Part.CONTENT, text)]
        return self._content(parts, final=False)

    def finish(self) -> list[Delta]:
        parts = self.thinking.finish() if self.reasoning else []
        return self._content(parts, final=True)

    def _content(self, parts: list[tuple[Part, str]], final: bool) -> list[Delta]:
        out: list[Delta] = []
        for part, text in parts:
            if part is Part.REASONING or not self.tools:
                out.append(Delta(part, text))
                continue
            out.extend(self._calls(self.calls.feed(text)))
        if final and self.tools:
            out.extend(self._calls(self.calls.finish()))
        return [d for d in out if d.text or d.call is not None]

    def _calls(self, items: list[str | ParsedCall]) -> list[Delta]:
        out = []
        for item in items:
            if isinstance(item, str):
                out.append(Delta(Part.CONTENT, item))
            elif self.max_calls is None or self.n_calls < self.max_calls:
                self.n_calls += 1
                out.append(Delta(Part.CONTENT, call=item, call_id="call_" + secrets.token_hex(12)))
        return out


def whole(splitter: AnswerSplitter, text: str) -> tuple[str, str, list[Delta]]:
    """A whole answer: (reasoning, content, the tool-call deltas)."""
    deltas = splitter.feed(text) + splitter.finish()
    reasoning = "".join(d.text for d in deltas if d.part is Part.REASONING)
    content = "".join(d.text for d in deltas if d.part is Part.CONTENT and d.call is None)
    return reasoning.strip("\n"), content, [d for d in deltas if d.call is not None]
