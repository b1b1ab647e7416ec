"""The grammar that makes an answer one tool call, in the model's own markup (for a
``tool_choice`` of "required" or a function's name).

The arguments follow each function's JSON schema (llama-cpp-python's converter, through
``app.engine.sampling.grammar_text``); the markup around them is the format's:

* Qwen3: ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``
* gpt-oss: an optional analysis message, then ``<|channel|>commentary to=functions.f
  <|constrain|>json<|message|>{...}``, its markers as the special tokens (llama.cpp grammars
  name a token by its text in ``<...>``), as llama.cpp's own gpt-oss grammar allows
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from app.engine.errors import ChatTemplateError
from app.engine.protocol import Sampling
from app.engine.sampling import grammar_text
from app.engine.tool_calls import ToolFormat, call_schema

SUPPORTED = (ToolFormat.QWEN, ToolFormat.HARMONY)
# a rule's name in GBNF, and what may hold the same letters without being one
_GBNF_PART = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[^}]*\}|<[^>\s]*>|[\w-]+')


def call_grammar(fmt: ToolFormat | None, sampling: Sampling, tools: list[dict[str, Any]],
                 name: str | None) -> str:
    """GBNF for one call to one of ``tools`` (or to the one named ``name``)."""
    if fmt not in SUPPORTED:
        raise ChatTemplateError(
            "a required tool call is not supported for this model's tool-call format (only "
            "for Qwen3-style <tool_call> JSON and gpt-oss so far).",
            'Use tool_choice "auto": the model decides whether to call a tool.')
    try:
        schema = call_schema(tools, name)
    except ValueError as exc:
        raise ChatTemplateError(f"tool_choice names {name!r}, which is not among the tools "
                                "given.", 'Name one of the tools, or use "required" or '
                                '"auto".') from exc
    if fmt is ToolFormat.QWEN:
        # the schema's grammar is the call's JSON; the call is that JSON inside Qwen's markers
        rules = _schema_rules(sampling, schema, "tool-call-json")
        return f'root ::= "<tool_call>\\n" tool-call-json "\\n</tool_call>"\n{rules}'
    options = schema.get("oneOf", [schema])
    calls, rules = [], []
    for i, option in enumerate(options):
        function = option["properties"]["name"]["const"]
        rules.append(_schema_rules(sampling, option["properties"]["arguments"], f"args{i}"))
        calls.append(f'{json.dumps(function)} " " <|constrain|> "json" <|message|> args{i}')
    return "\n".join([
        "root ::= analysis? call",
        # reasoning first, as the model is used to: any tokens up to its <|end|>
        'analysis ::= <|channel|> "analysis" <|message|> !<|end|>* <|end|> <|start|> "assistant"',
        f'call ::= <|channel|> "commentary to=functions." ( {" | ".join(calls)} )',
        *rules])


def _schema_rules(sampling: Sampling, schema: dict[str, Any], root: str) -> str:
    """The grammar of a JSON schema with its root rule named ``root`` and the others prefixed
    by it, so that several schemas' grammars live in one."""
    text = grammar_text(replace(sampling, grammar=None, json_schema=json.dumps(schema)))
    assert text is not None

    def rename(match: re.Match[str]) -> str:
        part = match.group(0)
        if part[0] in '"[{<' or part.isdigit():
            return part
        return root if part == "root" else f"{root}-{part}"

    return "\n".join(_GBNF_PART.sub(rename, line) for line in text.splitlines())
