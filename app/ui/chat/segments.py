"""An answer's text split into what the message view draws differently: prose (Markdown),
fenced code blocks (with a copy button) and a reasoning model's <think>...</think> part.

Plain Python, so it is tested without Qt. It is called on every redraw of a streaming
answer, so it accepts unfinished input: an unclosed fence or <think> runs to the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# a fence opens a line: ``` or ~~~ (3+), then an optional language word
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+#.-]*)[^\n]*$", re.MULTILINE)


@dataclass
class Segment:
    kind: Literal["text", "code", "think"]
    text: str
    lang: str = ""  # code: the fence's language word
    closed: bool = True  # False: still streaming (no closing fence or </think> yet)


def split_thinking(text: str) -> tuple[str | None, bool, str]:
    """(thinking or None, whether </think> was seen, the answer after it).

    Reasoning models open their answer with <think> (some templates put it in the prompt,
    so an answer may start straight with the thinking and only show </think>)."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        body = stripped[len(THINK_OPEN):]
    elif THINK_CLOSE in text and THINK_OPEN not in text:
        body = text
    else:
        return None, False, text
    thinking, found, rest = body.partition(THINK_CLOSE)
    return thinking.strip("\n"), bool(found), rest.lstrip("\n")


def segments(text: str) -> list[Segment]:
    """The parts of an answer in order: an optional think segment first, then prose and code."""
    out: list[Segment] = []
    thinking, closed, text = split_thinking(text)
    if thinking is not None:
        out.append(Segment("think", thinking, closed=closed))
    pos = 0
    while pos < len(text):
        opening = _FENCE.search(text, pos)
        if opening is None:
            break
        if opening.start() > pos:
            _prose(out, text[pos:opening.start()])
        fence = opening.group("fence")
        body_start = opening.end() + 1
        closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(text, body_start) if body_start <= len(text) else None
        if end is None:
            out.append(Segment("code", text[body_start:], opening.group("lang"), closed=False))
            return out
        out.append(Segment("code", text[body_start:end.start()].rstrip("\n"), opening.group("lang")))
        pos = end.end() + 1
    _prose(out, text[pos:])
    return out


def _prose(out: list[Segment], text: str) -> None:
    if text.strip():
        out.append(Segment("text", text.strip("\n")))
