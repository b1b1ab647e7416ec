"""OpenAI's HTTP API in MoE Desk's terms: request bodies to ChatParams.

Pure functions over plain data (no sockets, no engine), so the HTTP layer
(``app.serve.http``) stays thin. Sampling fields are read by ``app.serve.openai_sampling``;
answers are shaped by ``app.serve.openai_responses``. What the engine cannot honour (several
choices, log probabilities, legacy function calling) is refused with an OpenAI-style error
naming the field, never silently ignored; fields that change nothing here (``user``,
penalties at their neutral value...) are accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from app.engine.protocol import ChatMessage, ChatParams, ContextPolicy, ToolCall
from app.serve import openai_sampling
from app.serve.errors import ApiError, bad

__all__ = ["ApiError", "CompletionRequest", "parse_request"]

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool"}
MAX_STOPS = 4
# Fields the engine cannot honour, with the values that mean "not used".
UNSUPPORTED = {"functions": (None, []), "function_call": (None, "none"), "echo": (None, False),
               "best_of": (None, 1), "suffix": (None, "")}
REASONING_FORMATS = ("auto", "deepseek", "none")
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

Kind = Literal["chat", "completion"]


@dataclass
class CompletionRequest:
    """One /v1/chat/completions or /v1/completions request, checked."""

    kind: Kind
    model: str
    params: ChatParams
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage counts
    split_reasoning: bool = True  # <think>...</think> as reasoning_content (chat only)
    tool_names: list[str] = field(default_factory=list)  # tools offered: calls are parsed
    parallel_tool_calls: bool = True  # false: an answer's first call only


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
    if content is None and message.get("role") in ("assistant", "tool"):
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


def _tool_calls(message: dict[str, Any], where: str) -> list[ToolCall]:
    """An assistant message's earlier tool calls."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise bad(f"'{where}.tool_calls' must be a list.", f"{where}.tool_calls")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        arguments = function.get("arguments", "{}") if isinstance(function, dict) else None
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments)
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise bad(f"'{where}.tool_calls[{i}]' must be {{\"id\", \"type\": \"function\", "
                      "\"function\": {\"name\", \"arguments\"}} with arguments as JSON text.",
                      f"{where}.tool_calls")
        call_id = call.get("id")
        out.append(ToolCall(id=call_id if isinstance(call_id, str) else f"call_{i}", name=name,
                            arguments=arguments))
    return out


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
                      f"{_short(given)}.", f"{where}.role")
        tool_call_id = message.get("tool_call_id") if role == "tool" else ""
        name = message.get("name") if role == "tool" else ""
        out.append(ChatMessage(
            role=role, content=_content(message, where),  # type: ignore[arg-type]
            tool_calls=_tool_calls(message, where) if role == "assistant" else [],
            tool_call_id=tool_call_id if isinstance(tool_call_id, str) else "",
            name=name if isinstance(name, str) else "",
            reasoning=_reasoning(message, where) if role == "assistant" else ""))
    return out


def _reasoning(message: dict[str, Any], where: str) -> str:
    """An earlier answer's reasoning, as this server returned it (``reasoning_content``, as
    llama-server; ``reasoning`` as some clients name it): the template decides whether the
    model sees it again (gpt-oss's and Qwen3's show it before that turn's tool calls)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise bad(f"'{where}.{key}' must be a string: the reasoning of that answer.",
                      f"{where}.{key}")
        return value
    return ""


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The tools offered and the tool_choice as the engine takes it ("auto", "none",
    "required" or a function's name)."""
    tools = body.get("tools")
    if tools is None or tools == []:
        tools = []
    elif not isinstance(tools, list):
        raise bad("'tools' must be a list of {\"type\": \"function\", \"function\": {name, "
                  "description, parameters}} objects.", "tools")
    names = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" \
                or not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise bad(f"'tools[{i}]' must be {{\"type\": \"function\", \"function\": {{\"name\": "
                      "...}}}}, the name of letters, digits, '_', '.' or '-' (at most 64).",
                      f"tools[{i}]")
        parameters = function.get("parameters")  # type: ignore[union-attr]
        if parameters is not None and not isinstance(parameters, dict):
            raise bad(f"'tools[{i}].function.parameters' must be a JSON schema object.",
                      f"tools[{i}].function.parameters")
        names.append(name)
    choice = body.get("tool_choice")
    if choice is None:
        return tools, "auto"
    if choice in ("auto", "none", "required"):
        chosen = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        chosen = choice["function"]["name"]
        if chosen not in names:
            raise bad(f"'tool_choice' names the function {_short(chosen)}, which is not among "
                      "the 'tools'.", "tool_choice")
    else:
        raise bad("'tool_choice' must be 'auto', 'none', 'required' or {\"type\": "
                  "\"function\", \"function\": {\"name\": ...}}.", "tool_choice")
    if chosen != "none" and chosen != "auto" and not tools:
        raise bad("'tool_choice' asks for a tool call, but no 'tools' are given.", "tool_choice")
    return tools, chosen


def _template_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """chat_template_kwargs, with the shortcuts clients send at the top level."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise bad("'chat_template_kwargs' must be an object of template variables, e.g. "
                  "{\"enable_thinking\": false}.", "chat_template_kwargs")
    kwargs = dict(kwargs)
    thinking = body.get("enable_thinking")
    if thinking is not None:
        if not isinstance(thinking, bool):
            raise bad("'enable_thinking' must be true or false.", "enable_thinking")
        kwargs["enable_thinking"] = thinking
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise bad(f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}.",
                      "reasoning_effort")
        kwargs["reasoning_effort"] = effort
    return kwargs


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


def _context_policy(body: dict[str, Any], default: ContextPolicy) -> ContextPolicy:
    """MoE Desk's field for a conversation longer than the context (not OpenAI's)."""
    value = body.get("context_policy")
    if value is None:
        return default
    try:
        return ContextPolicy(value) if isinstance(value, str) else ContextPolicy("")
    except ValueError:
        names = ", ".join(repr(p.value) for p in ContextPolicy)
        raise bad(f"'context_policy' must be one of {names} (a conversation longer than the "
                  f"context: refused, or sent with earlier turns left out), not "
                  f"{_short(value)}.", "context_policy") from None


def parse_request(kind: Kind, body: Any,
                  context_policy: ContextPolicy = ContextPolicy.STOP) -> CompletionRequest:
    """Check a request body and turn it into the engine's ChatParams (ApiError if bad).
    ``context_policy``: the server's, for requests that name none."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a 'model' (any name serves the loaded model; GET "
                  "/v1/models lists it).", "model")
    if openai_sampling.integer(body, "n", 1) not in (None, 1):
        raise bad("'n' must be 1: this server generates one choice per request.", "n")
    for name, neutral in UNSUPPORTED.items():
        if body.get(name, None) not in neutral:
            hint = " (use 'tools')" if name.startswith("function") else ""
            raise bad(f"'{name}' is not supported by MoE Desk's server{hint}; leave it out.",
                      name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object.", "stream_options")
    reasoning_format = body.get("reasoning_format", "auto")
    if reasoning_format not in REASONING_FORMATS:
        raise bad(f"'reasoning_format' must be one of {', '.join(REASONING_FORMATS)} ('none' "
                  "leaves <think> in the content).", "reasoning_format")
    sampling = openai_sampling.sampling(body)
    if kind == "chat":
        tools, tool_choice = _tools(body)
        params = ChatParams(messages=_messages(body), sampling=sampling, stop=_stops(body),
                            tools=tools, tool_choice=tool_choice,
                            template_kwargs=_template_kwargs(body),
                            context_policy=_context_policy(body, context_policy))
    else:
        if body.get("tools") not in (None, []):
            raise bad("'tools' belong to /v1/chat/completions, not /v1/completions.", "tools")
        params = ChatParams(messages=[], prompt=_prompt(body), sampling=sampling,
                            stop=_stops(body))
    names = [t["function"]["name"] for t in params.tools] if params.tool_choice != "none" else []
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad("'parallel_tool_calls' must be true or false.", "parallel_tool_calls")
    return CompletionRequest(kind=kind, model=model, params=params, stream=stream,
                             include_usage=bool(options.get("include_usage")),
                             split_reasoning=kind == "chat" and reasoning_format != "none",
                             tool_names=names, parallel_tool_calls=parallel)
