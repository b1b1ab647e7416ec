"""Answers in OpenAI's shapes: a whole completion, stream chunks, the model list.

The text of a chat answer goes through ``AnswerSplitter`` first: reasoning becomes
``reasoning_content`` (as llama-server sends it) and tool calls ``tool_calls``, whole or as
stream deltas.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from app.engine.protocol import ChatResult
from app.serve.answer import AnswerSplitter, Delta, Part, whole
from app.serve.openai_api import CompletionRequest, Kind


def new_id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def splitter(request: CompletionRequest) -> AnswerSplitter:
    """How this request's answer is split (a completion's raw text is not)."""
    chat = request.kind == "chat"
    return AnswerSplitter(reasoning=chat and request.split_reasoning,
                          tools=chat and bool(request.tool_names),
                          max_calls=None if request.parallel_tool_calls else 1)


def usage(result: ChatResult) -> dict[str, Any]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def finish_reason(result: ChatResult, tool_calls: bool = False) -> str:
    # "cancelled" reaches a client only if the engine stopped (the user's own cancel is a
    # disconnect: nobody is left to tell); OpenAI has no word for it, and the text is whole
    if result.finish_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def tool_call(delta: Delta, index: int) -> dict[str, Any]:
    assert delta.call is not None
    return {"index": index, "id": delta.call_id, "type": "function",
            "function": {"name": delta.call.name, "arguments": delta.call.arguments}}


def response(request: CompletionRequest, request_id: str, model: str,
             result: ChatResult) -> dict[str, Any]:
    """The whole answer, for a request without ``stream``."""
    if request.kind == "chat":
        reasoning, content, calls = whole(splitter(request), result.text)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": content if content or not calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [tool_call(d, i) for i, d in enumerate(calls)]
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                                  "finish_reason": finish_reason(result, bool(calls))}
    else:
        choice = {"index": 0, "text": result.text, "logprobs": None,
                  "finish_reason": finish_reason(result)}
    return {"id": request_id, "object": _object(request.kind, chunk=False),
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": usage(result), **dropped(result)}


def dropped(result: ChatResult) -> dict[str, Any]:
    """MoE Desk's addition (as llama-server adds ``timings``): the earlier messages a context
    policy left out of the prompt, when it left any out."""
    return {"messages_dropped": result.messages_dropped} if result.messages_dropped else {}


def delta_chunk(request: CompletionRequest, request_id: str, model: str,
                delta: Delta | None = None, *, first: bool = False,
                call_index: int = 0) -> dict[str, Any]:
    """A streamed piece: the first chunk (``first``: the role), or one ``Delta``."""
    if request.kind == "chat":
        body: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        if delta is not None and delta.call is not None:
            body["tool_calls"] = [tool_call(delta, call_index)]
        elif delta is not None:
            body["reasoning_content" if delta.part is Part.REASONING else "content"] = delta.text
        choices = [{"index": 0, "delta": body, "logprobs": None, "finish_reason": None}]
    else:
        choices = [{"index": 0, "text": delta.text if delta else "", "logprobs": None,
                    "finish_reason": None}]
    return _chunk(request, request_id, model, choices)


def end_chunk(request: CompletionRequest, request_id: str, model: str, result: ChatResult,
              tool_calls: bool = False) -> dict[str, Any]:
    """The stream's last chunk with a choice: its finish reason."""
    reason = finish_reason(result, tool_calls)
    empty: dict[str, Any] = {"delta": {}} if request.kind == "chat" else {"text": ""}
    return {**_chunk(request, request_id, model,
                     [{"index": 0, **empty, "logprobs": None, "finish_reason": reason}]),
            **dropped(result)}


def usage_chunk(request: CompletionRequest, request_id: str, model: str,
                result: ChatResult) -> dict[str, Any]:
    """After the end, when the client asked for them: the usage counts alone."""
    out = _chunk(request, request_id, model, [])
    out["usage"] = usage(result)
    return out


def _chunk(request: CompletionRequest, request_id: str, model: str,
           choices: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"id": request_id, "object": _object(request.kind, chunk=True),
           "created": int(time.time()), "model": model, "choices": choices}
    if request.include_usage:
        out["usage"] = None
    return out


def _object(kind: Kind, chunk: bool) -> str:
    if kind == "completion":
        return "text_completion"
    return "chat.completion.chunk" if chunk else "chat.completion"


def model_list(model_id: str | None, created: int) -> dict[str, Any]:
    data = [] if model_id is None else [
        {"id": model_id, "object": "model", "created": created, "owned_by": "moedesk"}]
    return {"object": "list", "data": data}
