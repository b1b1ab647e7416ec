"""OpenAI's HTTP API in MoE Desk's terms: request bodies to ChatParams, results to responses.

Pure functions over plain data (no sockets, no engine), so the HTTP layer
(``app.serve.http``) stays thin. What the engine cannot honour (several choices, tools, log
probabilities) is refused with an OpenAI-style error naming the field, never silently
ignored; fields that change nothing here (``user``, penalties at their neutral value...) are
accepted.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from app.engine.protocol import ChatMessage, ChatParams, ChatResult, Sampling

# No max_tokens: generate until the end of the answer or a full context (the engine clamps
# max_tokens to the room left), as OpenAI does.
UNLIMITED_TOKENS = 2**31 - 1
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4
# Fields the engine cannot honour, with the value that means "not used".
UNSUPPORTED = {"tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"),
               "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
               "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False),
               "best_of": (None, 1), "suffix": (None, ""), "logit_bias": (None, {})}

Kind = Literal["chat", "completion"]


class ApiError(Exception):
    """An OpenAI-style error: HTTP status and ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass
class CompletionRequest:
    """One /v1/chat/completions or /v1/completions request, checked."""

    kind: Kind
    model: str
    params: ChatParams
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage counts


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or isinstance(value, float) and not math.isfinite(value):
        raise bad(f"'{name}' must be a number.", name)
    if not low <= value <= high:
        raise bad(f"'{name}' must be between {low:g} and {high:g}; got {value}.", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be an integer.", name)
    if value < low:
        raise bad(f"'{name}' must be at least {low}; got {value}.", name)
    return value


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stop' must be a non-empty string or a list of them.", "stop")
    if len(stops) > MAX_STOPS:
        raise bad(f"'stop' takes at most {MAX_STOPS} strings; got {len(stops)}.", "stop")
    return stops


def _content(message: dict[str, Any], where: str) -> str:
    """A message's text: a string, or a list of text parts (newer clients send those)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise bad(f"'{where}.content[{i}]': only text parts are supported (this model "
                          "reads text only).", f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"'{where}.content' must be a string or a list of text parts.", f"{where}.content")


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    messages = body.get("messages")
    if messages is None:
        raise bad("you must provide 'messages': the conversation, e.g. "
                  "[{\"role\": \"user\", \"content\": \"Hello\"}].", "messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list of {role, content} objects.", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(f"'{where}' must be an object with 'role' and 'content'.", where)
        given = message.get("role")
        role = ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise bad(f"'{where}.role' must be one of {', '.join(ROLES)}; got "
                      f"{_short(given)} (tool calls are not supported).", f"{where}.role")
        out.append(ChatMessage(role=role, content=_content(message, where)))  # type: ignore[arg-type]
    return out


def _short(value: Any) -> str:
    """A client's value in an error message, cut short: it may be megabytes."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt is None:
        raise bad("you must provide 'prompt': the text to continue.", "prompt")
    if not isinstance(prompt, str):
        raise bad("'prompt' must be a string (one prompt per request; token lists are not "
                  "supported).", "prompt")
    if not prompt:
        raise bad("'prompt' is empty: give the text to continue.", "prompt")
    return prompt


def parse_request(kind: Kind, body: Any) -> CompletionRequest:
    """Check a request body and turn it into the engine's ChatParams (ApiError if bad)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a 'model' (GET /v1/models lists it).", "model")
    if _integer(body, "n", 1) not in (None, 1):
        raise bad("'n' must be 1: this server generates one choice per request.", "n")
    for name, neutral in UNSUPPORTED.items():
        if body.get(name, None) not in neutral:
            raise bad(f"'{name}' is not supported by MoE Desk's server; leave it out.", name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object.", "stream_options")
    max_tokens = _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("'seed' must be an integer.", "seed")
    ignore_eos = body.get("ignore_eos", False)  # llama.cpp server's extension (benchmarks)
    if not isinstance(ignore_eos, bool):
        raise bad("'ignore_eos' must be true or false.", "ignore_eos")
    sampling = Sampling(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=None if seed is None else seed % 2**32,  # llama.cpp takes a uint32 seed
        max_tokens=max_tokens or UNLIMITED_TOKENS,
        ignore_eos=ignore_eos,
    )
    if kind == "chat":
        params = ChatParams(messages=_messages(body), sampling=sampling, stop=_stops(body))
    else:
        params = ChatParams(messages=[], prompt=_prompt(body), sampling=sampling,
                            stop=_stops(body))
    return CompletionRequest(kind=kind, model=model, params=params, stream=stream,
                             include_usage=bool(options.get("include_usage")))


# --- responses -----------------------------------------------------------------------------


def new_id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def usage(result: ChatResult) -> dict[str, Any]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def finish_reason(result: ChatResult) -> str:
    # "cancelled" reaches a client only if the engine stopped (the user's own cancel is a
    # disconnect: nobody is left to tell); OpenAI has no word for it, and the text is whole
    return "length" if result.finish_reason == "length" else "stop"


def response(request: CompletionRequest, request_id: str, result: ChatResult) -> dict[str, Any]:
    """The whole answer, for a request without ``stream``."""
    if request.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                           "content": result.text},
                                  "logprobs": None, "finish_reason": finish_reason(result)}
    else:
        choice = {"index": 0, "text": result.text, "logprobs": None,
                  "finish_reason": finish_reason(result)}
    return {"id": request_id, "object": _object(request.kind, chunk=False),
            "created": int(time.time()), "model": request.model, "choices": [choice],
            "usage": usage(result)}


def chunk(request: CompletionRequest, request_id: str, text: str | None = None, *,
          first: bool = False, result: ChatResult | None = None,
          usage_only: bool = False) -> dict[str, Any]:
    """One streamed event: a piece of text, the end (``result`` given: its finish reason), or
    the usage counts alone (``usage_only``, after the end, when the client asked for them)."""
    choices: list[dict[str, Any]] = []
    if not usage_only:
        reason = finish_reason(result) if result is not None else None
        if request.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
        else:
            choices = [{"index": 0, "text": text or "", "logprobs": None,
                        "finish_reason": reason}]
    out = {"id": request_id, "object": _object(request.kind, chunk=True),
           "created": int(time.time()), "model": request.model, "choices": choices}
    if request.include_usage:
        out["usage"] = usage(result) if usage_only and result is not None else None
    return out


def _object(kind: Kind, chunk: bool) -> str:
    if kind == "completion":
        return "text_completion"
    return "chat.completion.chunk" if chunk else "chat.completion"


def model_list(model_id: str | None, created: int) -> dict[str, Any]:
    data = [] if model_id is None else [
        {"id": model_id, "object": "model", "created": created, "owned_by": "moedesk"}]
    return {"object": "list", "data": data}
