"""gpt-oss's harmony format, read into the shape every other model's answer has.

gpt-oss writes its answer as messages on channels, between special tokens (the engine renders
them as text, see ``app.engine.tool_calls.PRESERVED``); the generation prompt ends with
``<|start|>assistant``, so the answer starts with the first message's header::

    <|channel|>analysis<|message|>reasoning...<|end|>
    <|start|>assistant<|channel|>final<|message|>the answer...            (then <|return|>)
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{...}
                                                                           (then <|call|>)

(the recipient may also come first: ``<|start|>assistant to=functions.f<|channel|>commentary
json<|message|>``, as the template writes earlier calls). ``HarmonyReader`` turns this, as it
streams, into what the rest of MoE Desk reads for every model (llama.cpp's
``common_chat_parse_gpt_oss`` splits it the same way):

* analysis messages: the reasoning, in one ``<think>\\n...\\n</think>\\n\\n`` at the start
  (the chat view folds it, the OpenAI server returns it as ``reasoning_content``)
* final and commentary messages without a recipient (a preamble): the answer's text
* a message to ``functions.f``: a call, as Qwen3 writes one (``<tool_call>\\n{"name": "f",
  "arguments": {...}}\\n</tool_call>``), which ``app.engine.tool_calls`` parses

Text that is not harmony at all (a header that cannot be one) passes as the answer's text, so
a model that ignores the format still says something.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum

START, END, MESSAGE = "<|start|>", "<|end|>", "<|message|>"
CHANNEL, CONSTRAIN, RETURN, CALL = "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"
# the special tokens that structure an answer, rendered as text for the reader
MARKERS = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL)
# what ends a message's body: <|return|> and <|call|> end the answer too (end-of-generation
# tokens, so they reach the text only with ignore_eos); <|start|> is a model that forgot <|end|>
_BODY_ENDS = (END, RETURN, CALL, START)
_HEADER_STARTS = (CHANNEL, " to=", "to=", CONSTRAIN, START)
_MAX_HEADER = 256  # a real header is a channel, a recipient and a content type: far shorter
_RECIPIENT = re.compile(r"to=([^<\s]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"(\w+)")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Kind(Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    CALL = "call"


@dataclass
class Header:
    """What a message's header says it is."""

    kind: Kind
    recipient: str = ""  # a call's function name

    @classmethod
    def parse(cls, text: str) -> Header:
        recipient = _RECIPIENT.search(text)
        name = recipient.group(1) if recipient else ""
        if name and name != "assistant":  # "to=assistant": a stray label on a plain message
            return cls(Kind.CALL, name.removeprefix("functions."))
        # the last channel counts: gpt-oss-20b sometimes writes a stray commentary one first
        channels = _CHANNEL.findall(text)
        if channels and channels[-1] == "analysis":
            return cls(Kind.REASONING)
        return cls(Kind.CONTENT)  # final, a commentary preamble, or no channel at all


@dataclass
class HarmonyReader:
    """Harmony text in, MoE Desk's answer text out (see the module's docstring). ``feed``
    returns what can be shown now, holding back only what may still be a marker or a
    header; ``finish`` the rest."""

    held: str = ""  # input not yet read: a header so far, or a body's possible marker start
    kind: Kind | None = None  # the body being read; None while reading a header
    call: str = ""  # the function of the call being read
    arguments: str = ""  # its arguments so far (a call comes out whole)
    think: str = "none"  # none -> open (<think> written) -> closed (</think> written)
    reasoning_ended: bool = False  # the last analysis message ended (</think> not yet written)
    wrote_content: bool = False
    after_start: bool = True  # the header follows <|start|>: it may begin with the role

    def feed(self, piece: str) -> str:
        self.held += piece
        out: list[str] = []
        while self.held:
            if self.kind is None and not self._read_header(out):
                break
            if self.kind is not None and not self._read_body(out):
                break
        return "".join(out)

    def finish(self) -> str:
        """The answer ended (its end-of-generation token, the token limit, a stop string):
        the text still held, a call read whole, the reasoning closed if its message ended."""
        out: list[str] = []
        if self.kind is None and self.held:  # a header never finished: it was text
            self._begin(Header(Kind.CONTENT), out)
        if self.kind is not None:
            body, self.held = self.held, ""
            self._body_text(body, out)
            if self.kind is Kind.CALL:  # <|call|> ended it (cut off, it will not parse)
                self._end_message(out)
            self.kind = None  # reasoning cut off stays open: that much reasoning
        if self.think == "open" and self.reasoning_ended:
            out.append("\n" + THINK_CLOSE)
            self.think = "closed"
        return "".join(out)

    def _read_header(self, out: list[str]) -> bool:
        """Reads a header up to <|message|>; False while it is not whole yet."""
        text = self.held
        if self.after_start:
            if "assistant".startswith(text):
                return False
            text = text.removeprefix("assistant")
        at = text.find(MESSAGE)
        restart = text.find(START)
        if restart >= 0 and (at < 0 or restart < at):  # a new message before this one began
            self.held, self.after_start = text[restart + len(START):], True
            return True
        if at >= 0:
            self.held = text[at + len(MESSAGE):]
            self._begin(Header.parse(text[:at]), out)
            return True
        plausible = any(text.startswith(s) or s.startswith(text) for s in _HEADER_STARTS)
        if plausible and len(text) <= _MAX_HEADER:
            return False
        # not harmony: the text is the answer's, as written
        self.held = text
        self._begin(Header(Kind.CONTENT), out)
        return True

    def _read_body(self, out: list[str]) -> bool:
        """Reads a body up to its end marker; False when all it can read is read."""
        ends = [(self.held.find(m), m) for m in _BODY_ENDS if m in self.held]
        if not ends:
            keep = max(_partial_suffix(self.held, m) for m in _BODY_ENDS)
            ready, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
            self._body_text(ready, out)
            return False
        at, marker = min(ends)
        self._body_text(self.held[:at], out)
        self.held = self.held[at + len(marker):]
        self._end_message(out)
        self.after_start = marker == START
        return True

    def _begin(self, header: Header, out: list[str]) -> None:
        self.kind, self.call, self.arguments = header.kind, header.recipient, ""
        if header.kind is Kind.REASONING and self.think != "closed" and not self.wrote_content:
            if self.think == "none":
                out.append(THINK_OPEN + "\n")
                self.think = "open"
            elif self.reasoning_ended:  # another analysis message: the same reasoning goes on
                out.append("\n\n")
            self.reasoning_ended = False
            return
        if self.think == "open":
            out.append("\n" + THINK_CLOSE + "\n\n")
            self.think = "closed"
        if self.wrote_content and header.kind is not Kind.CALL:
            out.append("\n\n")  # a preamble, then the final answer: two paragraphs
        # reasoning after the answer began (rare: after a preamble) cannot go back into the
        # <think> at the start: it is shown as text
        if header.kind is Kind.REASONING:
            self.kind = Kind.CONTENT

    def _body_text(self, text: str, out: list[str]) -> None:
        if not text:
            return
        if self.kind is Kind.CALL:
            self.arguments += text
            return
        out.append(text)
        if self.kind is Kind.CONTENT:
            self.wrote_content = True

    def _end_message(self, out: list[str]) -> None:
        if self.kind is Kind.CALL:
            if self.wrote_content:
                out.append("\n")
            out.append(call_text(self.call, self.arguments))
            self.wrote_content = True
        elif self.kind is Kind.REASONING:
            self.reasoning_ended = True
        self.kind = None


def call_text(name: str, arguments: str) -> str:
    """A call as Qwen3 writes one; arguments that are not a JSON object stay as written (the
    parser then takes the block for text, as it does for any call that does not parse)."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        body = json.dumps({"name": name, "arguments": value}, ensure_ascii=False)
    else:
        body = f'{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {arguments}}}'
    return f"<tool_call>\n{body}\n</tool_call>"


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def split_think(answer: str) -> tuple[str | None, bool, str]:
    """An answer as MoE Desk shows it: (its reasoning or None, whether the reasoning ended,
    the text after it)."""
    stripped = answer.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, False, answer
    thinking, closed, rest = stripped[len(THINK_OPEN):].partition(THINK_CLOSE)
    return thinking, bool(closed), rest.lstrip("\n")


def continued(answer: str) -> str:
    """An answer cut short, as MoE Desk shows it (``<think>`` part included), back in harmony:
    what follows the generation prompt for the model to go on from its last word."""
    thinking, closed, rest = split_think(answer)
    if thinking is None:
        return f"{CHANNEL}final{MESSAGE}{answer}"
    if not closed:  # the model goes on thinking from its last word
        return f"{CHANNEL}analysis{MESSAGE}{thinking.lstrip(chr(10))}"
    analysis = f"{CHANNEL}analysis{MESSAGE}{thinking.strip(chr(10))}"
    return f"{analysis}{END}{START}assistant{CHANNEL}final{MESSAGE}{rest}"


def reader_for(answer_so_far: str | None) -> HarmonyReader:
    """A reader for a new answer, or for one going on from ``answer_so_far`` (its harmony is
    read first and its text dropped: the client has it)."""
    reader = HarmonyReader()
    if answer_so_far is not None:
        reader.feed(continued(answer_so_far))
        if reader.kind is not None:  # the body's end, held as a possible marker, is shown
            reader.held = ""
    return reader
