"""A model's text side: its chat template, tokenizer and detokenizer.

``ChatText`` turns a chat into prompt tokens (the template, the context policy, a continued
answer, the tool-call grammar) and tokens back into bytes, showing the special tokens that
mark the model's reasoning and calls (``preserved``). ``app.engine.generation`` streams what
a chat's sampled tokens say.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, replace
from typing import Any

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.engine import harmony
from app.engine.context_fit import answer_room, fit
from app.engine.protocol import ChatMessage, ChatParams, ContextPolicy, Sampling
from app.engine.sampling import ModelSampling, new_sampler
from app.engine.template_caps import TemplateCaps, template_message, with_system_note
from app.engine.tool_calls import ToolFormat, detect_format, preserved_markers
from app.engine.tool_grammar import call_grammar
from app.errors import (
    ChatTemplateError,
    ContextOverflowError,
    EngineError,
    GrammarError,
    ModelFileError,
)

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


class ChatText:
    """A model's text side: its chat template, tokenizer and detokenizer."""

    def __init__(self, model: int, chat_template: str | None) -> None:
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.template = chat_template or DEFAULT_TEMPLATE
        self.tool_format = detect_format(self.template)
        self.harmony = self.tool_format is ToolFormat.HARMONY
        self.model_sampling = ModelSampling.read(model)
        eos = self._piece(llama_cpp.llama_vocab_eos(self.vocab), special=True)
        bos = self._piece(llama_cpp.llama_vocab_bos(self.vocab), special=True)
        try:
            self.formatter = Jinja2ChatFormatter(template=self.template, eos_token=eos,
                                                 bos_token=bos, add_generation_prompt=True)
            # the same template ending a chat without the generation prompt, for the probes
            closed = Jinja2ChatFormatter(template=self.template, eos_token=eos, bos_token=bos,
                                         add_generation_prompt=False)
        except jinja2.TemplateError as exc:
            raise ModelFileError(f"the model's chat template does not parse: {exc}",
                                 TEMPLATE_HINT) from exc

        def render(messages: list[dict[str, Any]], generation_prompt: bool) -> str:
            return (self.formatter if generation_prompt else closed)(messages=messages).prompt

        self.caps = TemplateCaps.probe(self.template, render, eos)
        # the special tokens this model marks reasoning and calls with: a chat's answer shows
        # them (llama-server's preserved tokens); other special tokens stay out of the text
        self.preserved = frozenset(
            tokens[0] for tokens in map(self.tokenize, preserved_markers(self.tool_format))
            if len(tokens) == 1)

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
        if tools and not self.caps.lists_tools and not self.caps.call_example:
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
        messages = [template_message(m, self.harmony, self.caps.object_arguments)
                    for m in history]
        if tools and not self.caps.lists_tools:  # DeepSeek's: the system prompt lists them
            messages = with_system_note(messages, self.caps.tools_note(tools))
        kwargs = dict(params.template_kwargs)
        if "enable_thinking" in kwargs:  # DeepSeek-V3.1's template reads `thinking` (llama-server's mapping)
            kwargs.setdefault("thinking", kwargs["enable_thinking"])
        try:
            prompt = self.formatter(messages=messages, tools=tools, **kwargs).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:  # ValueError: raise_exception()
            raise ChatTemplateError(f"the model's chat template refused this chat: {exc}",
                                    TEMPLATE_HINT) from exc
        if partial is None:
            return prompt
        if self.harmony:  # the answer so far back in gpt-oss's channels
            return prompt + harmony.continued(partial)
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
        if sampling.grammar is not None or sampling.json_schema is not None:
            raise GrammarError("a chat that must call a tool cannot also have a grammar or "
                               "a response format.", "Leave one of them out.")
        name = None if params.tool_choice == "required" else params.tool_choice
        grammar = call_grammar(self.tool_format, sampling, params.tools, name, self.template)
        return replace(sampling, grammar=grammar, json_schema=None)

    def answer_reader(self, params: ChatParams) -> harmony.HarmonyReader | None:
        """What turns a chat's answer into MoE Desk's shape as it streams: gpt-oss's channels
        (``app.engine.harmony``); None for models that write it so already, and for a raw
        prompt, whose text is the model's as it is."""
        if not self.harmony or params.prompt is not None:
            return None
        return harmony.reader_for(params.messages[-1].content if params.continue_answer else None)

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
