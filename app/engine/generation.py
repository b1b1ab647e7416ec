"""One chat's generation: template, tokens, sampling, stop strings, UTF-8, its own figures.

``ChatText`` turns a chat into prompt tokens and tokens back into bytes; a ``Sequence`` is
one request on its way through the batch loop (``app.engine.batch_loop``): its sampler
chain, stop strings, UTF-8 assembly, token budget and timings. The loop decides what goes
into each ``llama_decode``; a Sequence decides what its sampled tokens mean.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.engine.context_fit import answer_room, fit
from app.engine.errors import (
    ChatTemplateError,
    ContextOverflowError,
    EngineError,
    GrammarError,
    ModelFileError,
)
from app.engine.protocol import ChatMessage, ChatParams, ChatResult, ContextPolicy, Sampling, Token
from app.engine.sampling import ModelSampling, grammar_text, new_sampler
from app.engine.tool_calls import ToolFormat, call_schema, detect_format

TEMPLATE_HINT = ("Some templates accept only alternating user/assistant turns or one system "
                 "message first; otherwise use a GGUF with a working template.")
DEFAULT_TEMPLATE = (  # ChatML, for models whose GGUF carries no template
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# what the engine gives every template itself; template_kwargs cannot replace them
RESERVED_TEMPLATE_NAMES = frozenset({"messages", "tools", "add_generation_prompt", "bos_token",
                                     "eos_token", "raise_exception", "tool_choice", "functions",
                                     "function_call", "strftime_now"})
THINK_OPEN = "<think>"


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


class ChatText:
    """A model's text side: its chat template, tokenizer and detokenizer."""

    def __init__(self, model: int, chat_template: str | None) -> None:
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.template = chat_template or DEFAULT_TEMPLATE
        self.tool_format = detect_format(self.template)
        self.model_sampling = ModelSampling.read(model)
        try:
            self.formatter = Jinja2ChatFormatter(
                template=self.template,
                eos_token=self._piece(llama_cpp.llama_vocab_eos(self.vocab), special=True),
                bos_token=self._piece(llama_cpp.llama_vocab_bos(self.vocab), special=True),
                add_generation_prompt=True,
            )
        except jinja2.TemplateError as exc:
            raise ModelFileError(f"the model's chat template does not parse: {exc}",
                                 TEMPLATE_HINT) from exc

    def piece_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (a piece of a UTF-8 character, possibly)."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _piece(self, token: int, special: bool = False) -> str:
        if token < 0:
            return ""
        return self.piece_bytes(token, special).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """End of generation (EOS, EOT, ...)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

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
        """The prompt text of a chat: its messages through the template, or its raw prompt."""
        if params.prompt is not None:  # a raw completion: the text as it is
            return params.prompt
        reserved = sorted(RESERVED_TEMPLATE_NAMES & set(params.template_kwargs))
        if reserved:
            raise ChatTemplateError(f"template_kwargs may not set {', '.join(reserved)}.",
                                    "Pass messages and tools as such; template_kwargs is for "
                                    "other variables (enable_thinking, reasoning_effort, ...).")
        tools = params.tools if params.tools and params.tool_choice != "none" else None
        if tools and "tools" not in self.template:
            raise ChatTemplateError(
                "this model's chat template has no place for tools, so the model cannot be "
                "told about them.", "Send the request without tools, or load a model whose "
                "template supports tool calling (Qwen3, DeepSeek, GLM-4.5, gpt-oss...).")
        history, partial = params.messages, None
        if params.continue_answer:
            if not history or history[-1].role != "assistant":
                raise EngineError("continue_answer needs the answer to continue as the last "
                                  "message (role assistant).", "Send the conversation with it.")
            history, partial = history[:-1], history[-1].content
        messages = [_template_message(m) for m in history]
        try:
            prompt = self.formatter(messages=messages, tools=tools,
                                    **params.template_kwargs).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:  # ValueError: raise_exception()
            raise ChatTemplateError(f"the model's chat template refused this chat: {exc}",
                                    TEMPLATE_HINT) from exc
        if partial is None:
            return prompt
        # the answer so far after the generation prompt, as the model wrote it (the template
        # may have opened its <think> already)
        opened = self.opened_text(prompt)
        if opened and partial.lstrip().startswith(opened.strip()):
            partial = partial.lstrip()[len(opened.strip()):].lstrip("\n")
        return prompt + partial

    def sampling(self, params: ChatParams) -> Sampling:
        """The chat's sampling with the model's defaults filled in, and, for a tool_choice of
        "required" or a function's name, a grammar that makes the answer one call."""
        sampling = self.model_sampling.resolve(params.sampling)
        if not params.tools or params.tool_choice in ("auto", "none"):
            return sampling
        if self.tool_format is not ToolFormat.QWEN:
            raise ChatTemplateError(
                f"tool_choice {params.tool_choice!r} is not supported for this model's "
                "tool-call format (only for Qwen3-style <tool_call> JSON so far).",
                'Use tool_choice "auto": the model decides whether to call a tool.')
        if sampling.grammar is not None or sampling.json_schema is not None:
            raise GrammarError("a chat that must call a tool cannot also have a grammar or "
                               "a response format.", "Leave one of them out.")
        name = None if params.tool_choice == "required" else params.tool_choice
        try:
            schema = call_schema(params.tools, name)
        except ValueError as exc:
            raise ChatTemplateError(f"tool_choice names {name!r}, which is not among the "
                                    "tools given.", "Name one of the tools, or use "
                                    '"required" or "auto".') from exc
        call = grammar_text(replace(sampling, json_schema=json.dumps(schema)))
        assert call is not None
        # the schema's grammar is the call's JSON; the call is that JSON inside Qwen's markers
        rules = call.replace("root ::=", "tool-call-json ::=", 1)
        grammar = f'root ::= "<tool_call>\\n" tool-call-json "\\n</tool_call>"\n{rules}'
        return replace(sampling, grammar=grammar, json_schema=None)

    def new_sampler(self, params: ChatParams, n_ctx: int) -> int:
        """A sampler chain for a chat (free it with ``llama_sampler_free``)."""
        return new_sampler(self.sampling(params), self.vocab, n_ctx)

    @staticmethod
    def opened_text(prompt: str) -> str:
        """What a prompt's generation part already opened for the answer: ``<think>\\n`` when
        the template starts the reasoning itself (DeepSeek-R1, Qwen3 thinking models)."""
        tail = prompt.rstrip()
        return THINK_OPEN + "\n" if tail.endswith(THINK_OPEN) else ""

    def prompt_tokens(self, params: ChatParams, n_ctx: int) -> list[int]:
        """The prompt of a chat as tokens; an EngineError if empty or longer than ``n_ctx``."""
        return self.prompt(params, n_ctx).tokens

    def prompt(self, params: ChatParams, n_ctx: int) -> Prompt:
        """The prompt of a chat as tokens, the answer text it opened (``opened_text``) and the
        messages its context policy left out; an EngineError if empty or if it cannot fit
        ``n_ctx``."""
        policy = params.context_policy
        dropped = 0
        if params.prompt is None and policy is not ContextPolicy.STOP and params.messages:
            room = answer_room(n_ctx, params.sampling.max_tokens)

            def size(messages: list[ChatMessage]) -> int:
                return len(self.tokenize(self.render(replace(params, messages=messages))))

            fitted = fit(params.messages, policy, size, n_ctx - room)
            params, dropped = replace(params, messages=fitted.messages), fitted.dropped
        rendered = self.render(params)
        # a continued answer has opened what it opened already: its text is what follows
        opened = "" if params.prompt is not None or params.continue_answer else self.opened_text(rendered)
        prompt = self.tokenize(rendered, add_bos=params.prompt is not None)
        if not prompt:
            raise EngineError("the chat rendered to an empty prompt", "Send a message with text.")
        if len(prompt) >= n_ctx and policy is not ContextPolicy.STOP and params.prompt is None:
            raise EngineError(
                f"the latest turn with the system prompt is {len(prompt)} tokens, more than "
                f"the context of {n_ctx} holds, even with every earlier turn left out.",
                "Shorten the message or the system prompt, or load the model with a larger "
                "context.")
        if len(prompt) >= n_ctx and params.prompt is not None:
            raise EngineError(f"the prompt ({len(prompt)} tokens) does not fit the context of "
                              f"{n_ctx}.", "Shorten it, or load the model with a larger context.")
        if len(prompt) >= n_ctx:
            raise ContextOverflowError(
                f"the conversation ({len(prompt)} tokens) does not fit the context of {n_ctx}.",
                "Start a new chat, shorten it, load the model with a larger context, or send "
                'it with a context policy ("drop_middle" or "rolling_window") that leaves '
                "earlier turns out of the prompt.",
            )
        return Prompt(prompt, opened, dropped)


@dataclass
class Prompt:
    """A chat's prompt as the engine will prefill it."""

    tokens: list[int]
    opened: str  # answer text the template's generation prompt opened (``<think>\n``)
    dropped: int = 0  # messages the context policy left out


def _template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it (Hugging Face's shape: arguments as an object,
    which templates iterate or dump with tojson)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            try:
                arguments: Any = json.loads(call.arguments)
            except json.JSONDecodeError:
                arguments = call.arguments
            calls.append({"id": call.id, "type": "function",
                          "function": {"name": call.name, "arguments": arguments},
                          "name": call.name, "arguments": arguments})
        out["tool_calls"] = calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
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
        piece = self.decoder.decode(self.text.piece_bytes(token))
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
        tail, _ = self.stop.feed(self.decoder.decode(b"", final=True))
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
