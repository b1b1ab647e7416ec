"""One chat's generation: sampling, its answer's text as it streams, stop strings, its figures.

A ``Sequence`` is one request on its way through the batch loop (``app.engine.batch_loop``):
its sampler chain, the text of its tokens (UTF-8 assembly, gpt-oss's channels read into
MoE Desk's shape, stop strings), token budget and timings. The loop decides what goes into
each ``llama_decode``; a Sequence decides what its sampled tokens mean. ``ChatText``
(``app.engine.chat_text``) is the model's text side it reads them with.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp

from app.engine.chat_text import ChatText
from app.engine.protocol import ChatParams, ChatResult, Token

__all__ = ["ChatText", "LiveCounters", "Sequence", "StopMatcher"]


@dataclass
class LiveCounters:
    """Figures of the running generations (summed over them), read by ``stats`` from another
    thread; after the last one ends they stay as they were at its end."""

    prefill_tps: float = 0.0  # of the latest prompt prefilled
    decode_tps: float = 0.0
    tokens_generated: int = 0


@dataclass
class StopMatcher:
    """Cuts the output at the first stop string, holding back text that may start one."""

    stops: list[str]
    held: str = ""
    text: str = field(default="")
    stopped: bool = False  # a stop string came: nothing after it is the answer's

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, stopped)."""
        if self.stopped:
            return "", True
        self.held += piece
        for stop in self.stops:
            at = self.held.find(stop)
            if at >= 0:
                out, self.held, self.stopped = self.held[:at], "", True
                self.text += out
                return out, True
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.held)), 0, -1):
                if self.held.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep:]
        self.text += out
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        self.text += out
        return out

class Sequence:
    """One chat in the batch loop: prompt still to prefill, then one token per step.

    Timings are its own: prefill from its admission to the end of its prompt, decode from
    there, time to first token from its admission (not counting its wait for a slot).
    """

    def __init__(self, text: ChatText, params: ChatParams, prompt: list[int], cached: int,
                 max_tokens: int, on_token: Callable[[Token], None],
                 cancelled: threading.Event, t_start: float, queued_s: float = 0.0,
                 sampler: int = 0, opened: str = "", dropped: int = 0) -> None:
        """``sampler``: its chain (``text.new_sampler``), owned from here on. ``opened``:
        answer text the chat template already wrote (a ``<think>`` its generation prompt
        opens), which leads the answer so that clients see where the reasoning ends.
        ``dropped``: messages the context policy left out of ``prompt``."""
        self.text = text
        self.params = params
        self.prompt = prompt
        self.cached = cached
        self.todo = prompt[cached:]  # prompt tokens not yet in the KV cache
        self.max_tokens = max_tokens
        self.on_token = on_token
        self.cancelled = cancelled
        self.t_start = t_start
        self.queued_s = queued_s  # before t_start: a wait for a slot, template, tokenizer
        self.ttft = 0.0
        self.t_first_token = 0.0
        self.prefill_tps = 0.0
        self.n_generated = 0
        self.next_token: int | None = None  # sampled, to be decoded in the next step
        self.sampler: int | None = sampler
        self.opened = opened
        self.dropped = dropped
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = StopMatcher(list(params.stop))
        # a chat's answer shows the model's marker tokens; a raw completion none (as before)
        self.special = text.preserved if params.prompt is None else frozenset()
        self.reader = text.answer_reader(params)

    @property
    def prefilling(self) -> bool:
        return bool(self.todo)

    def prefilled(self, now: float, n_prefilled: int) -> None:
        """Its whole prompt is in the KV cache now (``n_prefilled`` of it evaluated)."""
        self.prefill_tps = n_prefilled / max(now - self.t_start, 1e-9)

    def decode_tps(self, now: float) -> float:
        # the first token is sampled from the prefill's logits: n tokens took n - 1 decode steps
        if self.n_generated < 2:
            return 0.0
        return (self.n_generated - 1) / max(now - self.t_first_token, 1e-9)

    def sample(self, ctx: int, index: int) -> str | None:
        """Sample its next token from the logits at batch position ``index``; streams the
        text that is safe to show. Returns the finish reason if the answer ends here."""
        token = llama_cpp.llama_sampler_sample(self.sampler, ctx, index)
        if self.text.is_end(token) and not self.params.sampling.ignore_eos:
            return "stop"
        self.n_generated += 1
        if self.n_generated == 1:
            self.t_first_token = time.perf_counter()
            self.ttft = self.t_first_token - self.t_start
        piece = self.decoder.decode(self.text.piece_bytes(token, token in self.special))
        if self.reader is not None:
            piece = self.reader.feed(piece)
        if self.n_generated == 1:
            piece = self.opened + piece
        piece, stopped = self.stop.feed(piece)
        # an event for every token, also one with no text yet (part of a character, a possible
        # start of a stop string, a special token): the client sees the first token when it is
        # sampled, as its time to first token and its token count assume
        self.on_token(Token(text=piece, n=self.n_generated))
        if stopped:
            return "stop"
        if self.n_generated >= self.max_tokens:
            return "length"  # the last token is never decoded: nothing would read its logits
        self.next_token = token
        return None

    def close(self) -> None:
        """Free its sampler chain (once; it samples no more)."""
        if self.sampler is not None:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None

    def finish(self, reason: str) -> ChatResult:
        """End it: stream the text held back, free the sampler, and say how it went."""
        self.close()
        if self.prefilling:  # cancelled before its prompt was in: as if it never started
            return ChatResult("", "cancelled", len(self.prompt), self.cached, 0, 0.0, 0.0, 0.0,
                              self.queued_s, self.dropped)
        # a character cut off at the end shows as U+FFFD, in the stream and the text alike
        tail = self.decoder.decode(b"", final=True)
        if self.reader is not None:
            tail = self.reader.feed(tail) + self.reader.finish()
        tail, _ = self.stop.feed(tail)
        tail += self.stop.flush()
        if tail:
            self.on_token(Token(text=tail, n=self.n_generated))
        return ChatResult(
            text=self.stop.text, finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=len(self.prompt), cached_tokens=self.cached,
            completion_tokens=self.n_generated, prefill_tps=self.prefill_tps,
            decode_tps=self.decode_tps(time.perf_counter()), ttft_s=self.ttft,
            queued_s=self.queued_s, messages_dropped=self.dropped,
        )
