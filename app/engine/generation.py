"""Chat generation on a loaded llama.cpp context: template, prefill, sampling, stop, cancel.

The loop is llama.cpp's own C API through llama-cpp-python's ctypes bindings: per token one
``llama_decode``, one ``llama_sampler_sample`` and one detokenisation, nothing else, so the
engine adds no measurable cost over bare llama-cpp-python. The KV cache of the previous turn
is reused: only the part of the new prompt after the common prefix is prefilled.
"""

from __future__ import annotations

import codecs
import ctypes
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.engine.errors import EngineError, ModelFileError
from app.engine.protocol import ChatParams, ChatResult, Sampling, Token

TEMPLATE_HINT = ("Some templates accept only alternating user/assistant turns or one system "
                 "message first; otherwise use a GGUF with a working template.")
DEFAULT_TEMPLATE = (  # ChatML, for models whose GGUF carries no template
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LiveCounters:
    """Figures of the running generation, read by ``stats`` from another thread."""

    prefill_tps: float = 0.0
    decode_tps: float = 0.0
    tokens_generated: int = 0


@dataclass
class StopMatcher:
    """Cuts the output at the first stop string, holding back text that may start one."""

    stops: list[str]
    held: str = ""
    text: str = field(default="")

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, stopped)."""
        self.held += piece
        for stop in self.stops:
            at = self.held.find(stop)
            if at >= 0:
                out, self.held = self.held[:at], ""
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


class Generator:
    """Runs chat requests on one llama context (sequence 0)."""

    def __init__(self, model: int, ctx: int, chat_template: str | None) -> None:
        self.model = model
        self.ctx = ctx
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx = llama_cpp.llama_n_ctx(ctx)
        self.n_batch = llama_cpp.llama_n_batch(ctx)
        self.kv_tokens: list[int] = []  # tokens whose K/V sit in the cache, in order
        self.live = LiveCounters()
        try:
            self.formatter = Jinja2ChatFormatter(
                template=chat_template or DEFAULT_TEMPLATE,
                eos_token=self._piece(llama_cpp.llama_vocab_eos(self.vocab), special=True),
                bos_token=self._piece(llama_cpp.llama_vocab_bos(self.vocab), special=True),
                add_generation_prompt=True,
            )
        except jinja2.TemplateError as exc:
            raise ModelFileError(f"the model's chat template does not parse: {exc}",
                                 TEMPLATE_HINT) from exc

    # --- text <-> tokens ----------------------------------------------------------------

    def _piece_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _piece(self, token: int, special: bool = False) -> str:
        if token < 0:
            return ""
        return self._piece_bytes(token, special).decode("utf-8", errors="replace")

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        """Tokens of ``text``; ``add_bos`` adds the model's BOS where it wants one (a chat
        template writes its own)."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (llama_cpp.llama_token * capacity)()
        # special tokens in the text (a template's) are parsed as such
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_bos, True)
        if n < 0:
            tokens = (llama_cpp.llama_token * -n)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, -n, add_bos, True)
        return list(tokens[:n])

    def render(self, params: ChatParams) -> str:
        if params.prompt is not None:  # a raw completion: the text as it is
            return params.prompt
        messages = [{"role": m.role, "content": m.content} for m in params.messages]
        try:
            return self.formatter(messages=messages).prompt
        except (jinja2.TemplateError, ValueError) as exc:  # ValueError: raise_exception()
            raise EngineError(f"the model's chat template refused this chat: {exc}",
                              TEMPLATE_HINT) from exc

    # --- the loop -----------------------------------------------------------------------

    def _decode(self, tokens: list[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        status = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(array, len(tokens)))
        if status != 0:
            raise EngineError(
                f"llama.cpp could not evaluate the prompt (llama_decode returned {status}).",
                "The context may be full or memory short; start a new chat or lower the context.",
            )
        self.kv_tokens.extend(tokens)

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keep the cached K/V of the longest common prefix; returns its length."""
        common = 0
        for a, b in zip(self.kv_tokens, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # the last prompt token must be evaluated
        memory = llama_cpp.llama_get_memory(self.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, 0, common, -1):
            llama_cpp.llama_memory_clear(memory, True)
            common = 0
        del self.kv_tokens[common:]
        return common

    def _sampler(self, sampling: Sampling) -> int:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if sampling.repeat_penalty != 1.0:
            add(chain, llama_cpp.llama_sampler_init_penalties(64, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def chat(self, params: ChatParams, on_token: Callable[[Token], None],
             cancelled: threading.Event) -> ChatResult:
        prompt = self.tokenize(self.render(params), add_bos=params.prompt is not None)
        if not prompt:
            raise EngineError("the chat rendered to an empty prompt", "Send a message with text.")
        budget = self.n_ctx - len(prompt)
        if budget <= 0:
            raise EngineError(
                f"the conversation ({len(prompt)} tokens) does not fit the context of {self.n_ctx}.",
                "Start a new chat, shorten it, or load the model with a larger context.",
            )
        max_tokens = min(params.sampling.max_tokens, budget)
        self.live = live = LiveCounters()
        t_start = time.perf_counter()
        cached = self._reuse_prefix(prompt)
        todo = prompt[cached:]
        for start in range(0, len(todo), self.n_batch):
            if cancelled.is_set():
                return ChatResult("", "cancelled", len(prompt), cached, 0, 0.0, 0.0, 0.0)
            self._decode(todo[start:start + self.n_batch])
        llama_cpp.llama_synchronize(self.ctx)  # decode is asynchronous on GPUs
        t_prefilled = time.perf_counter()
        live.prefill_tps = len(todo) / max(t_prefilled - t_start, 1e-9)

        sampler = self._sampler(params.sampling)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop = StopMatcher(list(params.stop))
        finish = "length"
        ttft = 0.0
        n_generated = 0
        try:
            while n_generated < max_tokens:
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                token = llama_cpp.llama_sampler_sample(sampler, self.ctx, -1)
                if llama_cpp.llama_vocab_is_eog(self.vocab, token) and not params.sampling.ignore_eos:
                    finish = "stop"
                    break
                n_generated += 1
                if n_generated == 1:
                    ttft = time.perf_counter() - t_start
                text, stopped = stop.feed(decoder.decode(self._piece_bytes(token)))
                if text:
                    on_token(Token(text=text, n=n_generated))
                if stopped:
                    finish = "stop"
                    break
                if n_generated < max_tokens:
                    self._decode([token])
                live.tokens_generated = n_generated
                live.decode_tps = n_generated / max(time.perf_counter() - t_prefilled, 1e-9)
        finally:
            llama_cpp.llama_sampler_free(sampler)
        tail = stop.flush() + decoder.decode(b"", final=True)
        if tail:
            on_token(Token(text=tail, n=n_generated))
        t_end = time.perf_counter()
        live.tokens_generated = n_generated
        live.decode_tps = n_generated / max(t_end - t_prefilled, 1e-9) if n_generated else 0.0
        return ChatResult(
            text=stop.text, finish_reason=finish, prompt_tokens=len(prompt), cached_tokens=cached,
            completion_tokens=n_generated, prefill_tps=live.prefill_tps,
            decode_tps=live.decode_tps, ttft_s=ttft,
        )
