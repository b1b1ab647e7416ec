"""Tool calls in the text models write, family by family (pure Python: the engine and the
OpenAI server both use it, neither needs llama.cpp for it).

Each family writes its calls in its own markup, which its chat template also uses to show
earlier calls:

* Qwen3 (and Hermes-style templates): ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``
* GLM-4.5: ``<tool_call>f\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>``
  (a value that is not JSON is a string)
* DeepSeek V3/R1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f``,
  then the arguments in a fenced ``json`` block, ``<｜tool▁call▁end｜><｜tool▁calls▁end｜>``
  (V3.1 drops the ``function`` and the fence: ``<｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}``)
* Kimi-K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0``, then
  ``<|tool_call_argument_begin|>{...}<|tool_call_end|>`` for each call, ``<|tool_calls_section_end|>``
* gpt-oss (harmony): a message to ``functions.f`` on the commentary channel; the engine
  rewrites its answers into Qwen3's markup (``app.engine.harmony``), so the text holds none

Most of these markers are special tokens in the real vocabularies, which llama.cpp leaves
out of the text; the engine renders a format's own (``PRESERVED``, llama-server's "preserved
tokens") so that the calls and the reasoning can be read.

``ToolCallParser`` reads an answer as it streams: text outside calls passes at once, text
from a call's opening marker on is held until the call closes, then comes out as a
``ParsedCall``. A call that never closes (the answer cut off) or does not parse comes out as
text at the end, as it was written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from app.engine.harmony import MARKERS as HARMONY_MARKERS


class ToolFormat(Enum):
    QWEN = "qwen"
    GLM = "glm"
    DEEPSEEK = "deepseek"
    KIMI = "kimi"
    HARMONY = "harmony"


# the marker that opens a call (or a block of calls) and the one that closes it
MARKERS = {
    ToolFormat.QWEN: ("<tool_call>", "</tool_call>"),
    ToolFormat.GLM: ("<tool_call>", "</tool_call>"),
    ToolFormat.DEEPSEEK: ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"),
    ToolFormat.KIMI: ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"),
}
# the formats an answer's text holds calls in (harmony's come as Qwen's)
ALL_FORMATS = (ToolFormat.QWEN, ToolFormat.GLM, ToolFormat.DEEPSEEK, ToolFormat.KIMI)
THINK_TAGS = ("<think>", "</think>")
# the special tokens each format marks its reasoning and calls with, rendered as text
PRESERVED = {
    ToolFormat.QWEN: (*THINK_TAGS, "<tool_call>", "</tool_call>"),
    ToolFormat.GLM: (*THINK_TAGS, "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
                     "<arg_value>", "</arg_value>"),
    ToolFormat.DEEPSEEK: (*THINK_TAGS, "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                          "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"),
    ToolFormat.KIMI: (*THINK_TAGS, "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>",
                      "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"),
    ToolFormat.HARMONY: HARMONY_MARKERS,
}
_NAME = re.compile(r"[\w.\-]+")  # a function's name: no braces, spaces or markup
_GLM_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_DEEPSEEK_CALL = re.compile(r"<｜tool▁call▁begin｜>(.*?)<｜tool▁sep｜>(.*?)<｜tool▁call▁end｜>",
                            re.DOTALL)
_KIMI_CALL = re.compile(r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*"
                        r"<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def detect_format(template: str) -> ToolFormat | None:
    """The tool-call format a chat template uses, from the markup it writes for calls."""
    if "<|channel|>" in template and "<|start|>assistant" in template:
        return ToolFormat.HARMONY
    if "tool▁calls▁begin" in template:
        return ToolFormat.DEEPSEEK
    if "<|tool_calls_section_begin|>" in template:
        return ToolFormat.KIMI
    if "<tool_call>" in template:
        return ToolFormat.GLM if "<arg_key>" in template else ToolFormat.QWEN
    return None


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object


def _arguments(value: Any) -> str | None:
    if isinstance(value, str):  # some models write the arguments as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def parse_block(fmt: ToolFormat, block: str) -> list[ParsedCall] | None:
    """The calls in one block between a format's markers (the markers excluded), or None if
    it is not a well-formed call."""
    if fmt is ToolFormat.QWEN:
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        arguments = _arguments(call.get("arguments", call.get("parameters", {})))
        return None if arguments is None else [ParsedCall(call["name"], arguments)]
    if fmt is ToolFormat.GLM:
        name, _, rest = block.strip().partition("\n")
        if not _NAME.fullmatch(name.strip()):
            return None
        args: dict[str, Any] = {}
        for key, value in _GLM_ARG.findall(rest):
            try:
                args[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                args[key.strip()] = value
        return [ParsedCall(name.strip(), json.dumps(args, ensure_ascii=False))]
    if fmt is ToolFormat.KIMI:  # each call's id is functions.NAME:INDEX
        kimi = [(name, _arguments(raw.strip())) for name, raw in _KIMI_CALL.findall(block)]
        if not kimi or any(arguments is None for _, arguments in kimi):
            return None
        return [ParsedCall(name, arguments) for name, arguments in kimi if arguments is not None]
    calls = []
    for head, tail in _DEEPSEEK_CALL.findall(block):
        if head.strip() == "function":  # V3/R1: the name, then the arguments in a fence
            name, _, rest = tail.partition("\n")
            fenced = _FENCE.match("\n" + rest) if rest.lstrip().startswith("```") else None
            raw = fenced.group(1) if fenced else rest
        else:  # V3.1: name<｜tool▁sep｜>arguments
            name, raw = head, tail
        arguments = _arguments(raw.strip()) if raw.strip() else None
        if arguments is None or not name.strip():
            return None
        calls.append(ParsedCall(name.strip(), arguments))
    return calls or None


@dataclass
class ToolCallParser:
    """Splits a streamed answer into text and tool calls (see the module's docstring).

    ``formats``: those to look for (the server, which does not see the template, looks for
    all: their markers differ, and a block that is not one format's call may be another's).
    ``feed`` and ``finish`` return what is ready, in order: ``str`` pieces of text and
    ``ParsedCall``s."""

    formats: tuple[ToolFormat, ...] = ALL_FORMATS
    held: str = ""
    open_marker: str = ""  # the opening marker of the call being read, "" outside calls
    calls: list[ParsedCall] = field(default_factory=list)

    def feed(self, piece: str) -> list[str | ParsedCall]:
        self.held += piece
        out: list[str | ParsedCall] = []
        openings = {MARKERS[f][0] for f in self.formats}
        while True:
            if not self.open_marker:
                found = [(self.held.find(m), m) for m in openings if m in self.held]
                if not found:
                    keep = max(_partial_suffix(self.held, m) for m in openings)
                    if len(self.held) > keep:
                        out.append(self.held[: len(self.held) - keep])
                        self.held = self.held[len(self.held) - keep:]
                    return out
                at, self.open_marker = min(found)
                if at:
                    out.append(self.held[:at])
                self.held = self.held[at:]
            opening = self.open_marker
            closing = next(MARKERS[f][1] for f in self.formats if MARKERS[f][0] == opening)
            end = self.held.find(closing)
            if end < 0:
                return out
            block, self.held = self.held[: end + len(closing)], self.held[end + len(closing):]
            self.open_marker = ""
            inner = block[len(opening): -len(closing)].strip()
            calls = next((c for f in self.formats if MARKERS[f][0] == opening
                          for c in [parse_block(f, inner)] if c is not None), None)
            if calls is None:
                out.append(block)  # not a call after all: the model's text, as written
            else:
                self.calls.extend(calls)
                out.extend(calls)

    def finish(self) -> list[str | ParsedCall]:
        """The end of the answer: what is still held, as text."""
        rest, self.held, self.open_marker = self.held, "", ""
        return [rest] if rest else []


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def split_calls(text: str, formats: tuple[ToolFormat, ...] = ALL_FORMATS
                ) -> tuple[str, list[ParsedCall]]:
    """A whole answer's text (calls taken out) and its calls."""
    parser = ToolCallParser(formats)
    parts = parser.feed(text) + parser.finish()
    return "".join(p for p in parts if isinstance(p, str)), parser.calls


def call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """A JSON schema of one call ``{"name", "arguments"}`` to one of ``tools`` (or to the one
    named), for a grammar that makes the model call a tool."""
    options = []
    for tool in tools:
        function = tool.get("function") or {}
        if name is not None and function.get("name") != name:
            continue
        options.append({"type": "object",
                        "properties": {"name": {"const": function.get("name", "")},
                                       "arguments": function.get("parameters")
                                       or {"type": "object"}},
                        "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        raise ValueError(f"no tool named {name!r} among the tools given")
    return options[0] if len(options) == 1 else {"oneOf": options}


def preserved_markers(fmt: ToolFormat | None) -> tuple[str, ...]:
    """The marker tokens a model of this format writes its reasoning and calls with (the
    think tags for every model: some vocabularies make them special tokens too)."""
    return PRESERVED[fmt] if fmt is not None else THINK_TAGS
