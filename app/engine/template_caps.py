"""What a chat template expects, found by rendering it, as llama.cpp's minja does: a call's
arguments as an object or as JSON text, and how it writes a call; and the messages in the
shape it reads.

Templates differ where OpenAI's messages leave room: gpt-oss's writes a call's arguments with
``tojson`` (an object), DeepSeek-V3.1's concatenates them (JSON text); DeepSeek's never lists
the tools it is given, so the model learns of them from the system prompt instead, with an
example of a call rendered by the template itself (minja's "tools polyfill", as llama-server
sends it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.engine.harmony import split_think
from app.engine.protocol import ChatMessage, ToolCall

Render = Callable[[list[dict[str, Any]], bool], str]  # (messages, add_generation_prompt)

_NEEDLE = {"argument_needle": "print('Hello, World!')"}
_EXAMPLE_CALL = ToolCall("call_1___", "tool_name", json.dumps({"arg1": "some_value"}))


@dataclass(frozen=True)
class TemplateCaps:
    object_arguments: bool = True  # a call's arguments as an object (HF's shape), else JSON text
    lists_tools: bool = True  # it shows the model the tools it is given
    call_example: str = ""  # a call as it writes one ("" if it writes none)

    @classmethod
    def probe(cls, template: str, render: Render, eos: str) -> TemplateCaps:
        """Render a call both ways and keep the one whose arguments show (minja's test)."""
        def shows_arguments(objects: bool) -> bool:
            call = ToolCall("call_1", "ipython", json.dumps(_NEEDLE))
            messages = [template_message(ChatMessage("user", "Hey")),
                        template_message(ChatMessage("assistant", "", tool_calls=[call]),
                                         object_arguments=objects)]
            try:
                out = render(messages, False)
            except Exception:  # a template that cannot take this shape raises anything
                return False
            return '"argument_needle":' in out or "'argument_needle':" in out

        as_text, as_object = shows_arguments(False), shows_arguments(True)
        object_arguments = as_object or not as_text  # HF's shape, unless only text works
        lists_tools = "tools" in template
        example = "" if lists_tools else _call_example(render, eos, object_arguments)
        return cls(object_arguments, lists_tools, example)

    def tools_note(self, tools: list[dict[str, Any]]) -> str:
        """For a template that lists no tools: what the system prompt tells the model (minja's
        words, as llama-server sends them)."""
        return ("You can call any of the following tools to satisfy the user's requests: "
                f"{json.dumps(tools, indent=2, ensure_ascii=False)}\n\nExample tool call syntax:"
                f"\n\n{self.call_example}\n\n")


def _call_example(render: Render, eos: str, object_arguments: bool) -> str:
    """A call as the template writes it: a chat with one, less the chat without it."""
    user = template_message(ChatMessage("user", "Hey"))
    call = template_message(ChatMessage("assistant", "", tool_calls=[_EXAMPLE_CALL]),
                            object_arguments=object_arguments)
    try:
        before, after = render([user], True), render([user, call], False)
    except Exception:
        return ""
    common = 0
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    example = after[common:].rstrip()
    if eos and example.endswith(eos):  # the end of the turn is not part of the call
        example = example[: -len(eos)].rstrip()
    return example if "tool_name" in example else ""


def with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """``note`` at the end of the system prompt, or as one if there is none."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note.strip()}, *messages]


def template_message(message: ChatMessage, harmony: bool = False,
                     object_arguments: bool = True) -> dict[str, Any]:
    """A message as chat templates read it: Hugging Face's shape, a call's arguments as an
    object (which templates iterate or dump with tojson) or, for a template that wants it,
    as JSON text. An assistant's reasoning goes as ``reasoning_content`` (Qwen3's templates
    show it in a tool-calling turn), and for gpt-oss as ``thinking``, which its template
    shows before a call, as llama-server sends them."""
    content, reasoning = message.content, message.reasoning
    if harmony and message.role == "assistant":
        # an answer sent back whole (<think> part included, as the engine wrote it): gpt-oss's
        # template takes the final text alone, and would show the reasoning as answer text
        thinking, _, rest = split_think(content)
        if thinking is not None:
            content, reasoning = rest, reasoning or thinking.strip("\n")
    out: dict[str, Any] = {"role": message.role, "content": content}
    if reasoning:
        out["reasoning_content"] = reasoning
        if harmony:
            out["thinking"] = reasoning
            if message.tool_calls:  # the template takes one analysis before a call, not two
                del out["content"]
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            arguments: Any = call.arguments
            if object_arguments:
                try:
                    arguments = json.loads(call.arguments)
                except json.JSONDecodeError:
                    pass
            calls.append({"id": call.id, "type": "function",
                          "function": {"name": call.name, "arguments": arguments},
                          "name": call.name, "arguments": arguments})
        out["tool_calls"] = calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out
