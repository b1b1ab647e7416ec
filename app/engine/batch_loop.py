"""The decode loop of all running chats: one ``llama_decode`` per step for every sequence.

Each step puts into one llama_batch the next token of every decoding sequence, then as much
of the prompts of newly admitted ones as fits in ``n_batch`` (a long prompt is prefilled over
several steps, beside the others' decoding), asks for logits only where a token is sampled,
and decodes once. Chats join between steps (``admit``, from any thread) up to the context's
``n_seq_max`` sequences, and leave on their own (end of answer, stop string, max_tokens, a
full context, cancel) without disturbing the others. With one sequence this is exactly the
engine's former one-chat loop: the prompt in one decode call, then one token per call.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp

from app.engine.generation import ChatText, LiveCounters, Sequence
from app.engine.protocol import ChatParams, ChatResult, Token
from app.engine.slots import Slot, SlotPool
from app.engine.telemetry import StorageMeter
from app.errors import EngineError, NoModelLoadedError

log = logging.getLogger("moedesk.engine.batch")

DECODE_HINT = "The context may be full or memory short; start a new chat or lower the context."


@dataclass(eq=False)
class ChatRequest:
    """A chat handed to the loop: what to answer, where its tokens and its end go."""

    params: ChatParams
    on_token: Callable[[Token], None]  # called on the loop's thread
    on_end: Callable[[ChatResult | EngineError], None]  # exactly once, on the loop's thread
    cancelled: threading.Event = field(default_factory=threading.Event)
    received: float = field(default_factory=time.perf_counter)  # when the engine read it


def unstarted_result() -> ChatResult:
    """How a chat ends that never ran (cancelled before it had a slot)."""
    return ChatResult(text="", finish_reason="cancelled", prompt_tokens=0, cached_tokens=0,
                      completion_tokens=0, prefill_tps=0.0, decode_tps=0.0, ttft_s=0.0)


class BatchBuffer:
    """A llama_batch over arrays of our own (no llama_batch_init/free): per entry a token, its
    position, its one sequence id and whether its logits are wanted."""

    def __init__(self, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.token = (llama_cpp.llama_token * capacity)()
        self.pos = (llama_cpp.llama_pos * capacity)()
        self.n_seq_id = (ctypes.c_int32 * capacity)(*([1] * capacity))
        self.seq_id = (ctypes.POINTER(llama_cpp.llama_seq_id) * capacity)()
        self.logits = (ctypes.c_int8 * capacity)()
        self._ids = [llama_cpp.llama_seq_id(s) for s in range(n_seq)]
        self._id_pointers = [ctypes.pointer(i) for i in self._ids]

    def add(self, tokens: list[int], pos0: int, seq_id: int, logits_last: bool) -> int:
        """Append ``tokens`` of sequence ``seq_id`` from position ``pos0``; returns the batch
        index of the last one (where its logits are, if asked for)."""
        a, b = self.n, self.n + len(tokens)
        assert 0 < len(tokens) and b <= self.capacity
        self.token[a:b] = tokens
        self.pos[a:b] = range(pos0, pos0 + len(tokens))
        self.seq_id[a:b] = [self._id_pointers[seq_id]] * len(tokens)
        self.logits[a:b] = [0] * len(tokens)
        self.logits[b - 1] = int(logits_last)
        self.n = b
        return b - 1

    def batch(self) -> llama_cpp.llama_batch:
        pointer = ctypes.POINTER
        return llama_cpp.llama_batch(
            n_tokens=self.n,
            token=ctypes.cast(self.token, pointer(llama_cpp.llama_token)),
            embd=None,
            pos=ctypes.cast(self.pos, pointer(llama_cpp.llama_pos)),
            n_seq_id=ctypes.cast(self.n_seq_id, pointer(ctypes.c_int32)),
            seq_id=ctypes.cast(self.seq_id, pointer(pointer(llama_cpp.llama_seq_id))),
            logits=ctypes.cast(self.logits, pointer(ctypes.c_int8)),
        )


@dataclass(eq=False)
class Running:
    """A chat in a slot."""

    request: ChatRequest
    seq: Sequence
    slot: Slot


@dataclass(eq=False)
class Entry:
    """What a running chat put into this step's batch."""

    running: Running
    tokens: list[int]
    index: int  # batch index of its last token
    samples: bool  # its logits are wanted: decoding, or the end of its prompt


class BatchLoop:
    """All chats of one context. ``admit`` from any thread; ``run`` on one worker thread."""

    def __init__(self, ctx: int, text: ChatText, n_seq: int) -> None:
        self.ctx = ctx
        self.text = text
        self.n_seq = n_seq
        self.n_ctx = llama_cpp.llama_n_ctx(ctx) // n_seq  # each sequence's own context
        self.n_batch = llama_cpp.llama_n_batch(ctx)
        self.slots = SlotPool(ctx, n_seq)
        self.buffer = BatchBuffer(self.n_batch, n_seq)
        self.live = LiveCounters()
        self.storage = StorageMeter()
        self.running: list[Running] = []  # in the order they were admitted
        self._inbox: deque[ChatRequest] = deque()
        self._lock = threading.Lock()

    # --- any thread ---------------------------------------------------------------------

    def admit(self, request: ChatRequest) -> None:
        """Queue a chat; it starts at the next step with a free slot."""
        with self._lock:
            self._inbox.append(request)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._inbox or self.running)

    def close(self) -> None:
        """The model goes: chats that never started end with ``no_model``."""
        with self._lock:
            left, self._inbox = list(self._inbox), deque()
        for request in left:
            request.on_end(NoModelLoadedError("the model was unloaded before this chat ran.",
                                              "Load a model and send it again."))

    # --- the loop, on the worker thread ----------------------------------------------------

    def run(self) -> None:
        """Step until no chat runs or waits for a slot here."""
        try:
            while True:
                self._admit_waiting()
                for running in [r for r in self.running if r.request.cancelled.is_set()]:
                    self._finish(running, "cancelled")
                if not self.running:
                    return
                self._step()
        except Exception as exc:  # a bug: every chat here hears of it, the engine lives on
            log.exception("the batch loop failed")
            error = EngineError(f"internal engine error: {exc!r}",
                                "Report this as a bug, with the engine log.")
            for running in list(self.running):
                self._fail(running, error)

    def _admit_waiting(self) -> None:
        while self.slots.free():
            with self._lock:
                if not self._inbox:
                    return
                request = self._inbox.popleft()
            if request.cancelled.is_set():
                request.on_end(unstarted_result())
                continue
            try:
                fitted = self.text.prompt(request.params, self.n_ctx)
                prompt = fitted.tokens
                sampler = self.text.new_sampler(request.params, self.n_ctx)
            except EngineError as exc:  # the template, the context, the grammar refused it
                request.on_end(exc)
                continue
            except Exception as exc:  # a bug: this chat hears of it (it is in no slot yet)
                log.exception("admitting a chat failed")
                request.on_end(EngineError(f"internal engine error: {exc!r}",
                                           "Report this as a bug, with the engine log."))
                continue
            t_start = time.perf_counter()
            slot, cached = self.slots.take(prompt)
            room = self.n_ctx - len(prompt)  # no max_tokens: until the context is full
            max_tokens = min(request.params.sampling.max_tokens or room, room)
            seq = Sequence(self.text, request.params, prompt, cached, max_tokens,
                           request.on_token, request.cancelled, t_start,
                           queued_s=t_start - request.received, sampler=sampler,
                           opened=fitted.opened, dropped=fitted.dropped)
            self.running.append(Running(request, seq, slot))

    def _fill(self) -> list[Entry]:
        """This step's batch: every decoding sequence's next token, then prompt chunks."""
        buffer = self.buffer
        buffer.n = 0
        entries = []
        for running in self.running:
            token = running.seq.next_token
            if token is not None:
                index = buffer.add([token], len(running.slot.kv_tokens), running.slot.seq_id, True)
                entries.append(Entry(running, [token], index, True))
        for running in self.running:
            room = buffer.capacity - buffer.n
            if running.seq.prefilling and room > 0:
                chunk = running.seq.todo[:room]
                last = len(chunk) == len(running.seq.todo)
                index = buffer.add(chunk, len(running.slot.kv_tokens), running.slot.seq_id, last)
                entries.append(Entry(running, chunk, index, last))
        return entries

    def _step(self) -> None:
        entries = self._fill()
        # decode steps only (one token a sequence): what they read from the SSD per token
        decoding = all(len(entry.tokens) == 1 and not entry.running.seq.prefilling for entry in entries)
        read_start = self.storage.start() if decoding else None
        t_decode = time.perf_counter()
        status = llama_cpp.llama_decode(self.ctx, self.buffer.batch())
        if status != 0:
            error = EngineError(
                f"llama.cpp could not evaluate the prompt (llama_decode returned {status}).",
                DECODE_HINT)
            for entry in entries:
                self._fail(entry.running, error)
            return
        llama_cpp.llama_synchronize(self.ctx)  # decode is asynchronous on GPUs
        now = time.perf_counter()
        self.storage.step(read_start, len(entries), now - t_decode)
        stepped = [entry.running for entry in entries]
        for entry in entries:
            seq = entry.running.seq
            entry.running.slot.kv_tokens.extend(entry.tokens)
            if seq.prefilling:
                del seq.todo[:len(entry.tokens)]
                if not seq.prefilling:
                    seq.prefilled(now, len(seq.prompt) - seq.cached)
                    self.live.prefill_tps = seq.prefill_tps
            seq.next_token = None
        for entry in entries:
            if entry.samples:
                reason = entry.running.seq.sample(self.ctx, entry.index)
                if reason is not None:
                    self._finish(entry.running, reason)
        now = time.perf_counter()
        self.live.tokens_generated = sum(r.seq.n_generated for r in stepped)
        self.live.decode_tps = sum(r.seq.decode_tps(now) for r in stepped)

    def _finish(self, running: Running, reason: str) -> None:
        result = running.seq.finish(reason)
        self.slots.release(running.slot)
        self.running.remove(running)
        running.request.on_end(result)

    def _fail(self, running: Running, error: EngineError) -> None:
        running.seq.close()
        self.slots.forget(running.slot)
        self.slots.release(running.slot)
        self.running.remove(running)
        running.request.on_end(error)
