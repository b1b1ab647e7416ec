"""The grammar that makes an answer one tool call, in the model's own markup (for a
``tool_choice`` of "required" or a function's name).

The arguments follow each function's JSON schema (llama-cpp-python's converter, through
``app.engine.sampling.grammar_text``); the markup around them is the format's:

* Qwen3: ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``
* gpt-oss: an optional analysis message, then ``<|channel|>commentary to=functions.f
  <|constrain|>json<|message|>{...}``, its markers as the special tokens (llama.cpp grammars
  name a token by its text in ``<...>``), as llama.cpp's own gpt-oss grammar allows
* DeepSeek-V3.1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}<｜tool▁call▁end｜>
  <｜tool▁calls▁end｜>``; V3/R1 (templates with a ```json fence): ``...begin｜>function<｜tool▁sep｜>f``,
  then the arguments in a fence
* Kimi-K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0
  <|tool_call_argument_begin|>{...}<|tool_call_end|><|tool_calls_section_end|>``
* GLM-4.5: ``<tool_call>f`` then each argument as ``<arg_key>k</arg_key><arg_value>v
  </arg_value>`` (a string as it is, any other value as JSON), then ``</tool_call>``

The markers are named as tokens: in the real vocabularies each is one special token.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from app.engine.protocol import Sampling
from app.engine.sampling import grammar_text
from app.engine.tool_calls import ToolFormat, call_schema
from app.errors import ChatTemplateError

SUPPORTED = (ToolFormat.QWEN, ToolFormat.HARMONY, ToolFormat.DEEPSEEK, ToolFormat.KIMI, ToolFormat.GLM)
# a rule's name in GBNF, and what may hold the same letters without being one
_GBNF_PART = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[^}]*\}|<[^>\s]*>|[\w-]+')


def call_grammar(fmt: ToolFormat | None, sampling: Sampling, tools: list[dict[str, Any]],
                 name: str | None, template: str = "") -> str:
    """GBNF for one call to one of ``tools`` (or to the one named ``name``); ``template``: the
    chat template, which tells DeepSeek's two call forms apart."""
    if fmt not in SUPPORTED:
        raise ChatTemplateError(
            "a required tool call is not supported for this model: its chat template writes "
            "no tool-call format MoE Desk knows (Qwen3's, DeepSeek's, GLM's, Kimi-K2's, "
            "gpt-oss's).", 'Use tool_choice "auto": the model decides whether to call a tool.')
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
    if fmt is not ToolFormat.HARMONY:
        return _marked_call(fmt, sampling, options, fenced="```json" in template)
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


def _marked_call(fmt: ToolFormat, sampling: Sampling, options: list[dict[str, Any]],
                 fenced: bool) -> str:
    """DeepSeek's, Kimi-K2's and GLM's calls: one alternative per function, its arguments by
    the function's schema."""
    calls, rules = [], []
    for i, option in enumerate(options):
        function = json.dumps(option["properties"]["name"]["const"])
        arguments = option["properties"]["arguments"]
        if fmt is ToolFormat.GLM:
            body, more = _glm_arguments(sampling, arguments, f"args{i}")
            calls.append(f'{function} "\\n" {body}')
            rules.extend(more)
            continue
        rules.append(_schema_rules(sampling, arguments, f"args{i}"))
        if fmt is ToolFormat.KIMI:
            calls.append(f'"functions." {function} ":0" <|tool_call_argument_begin|> args{i}')
        elif fenced:  # DeepSeek-V3/R1
            calls.append(f'"function" <｜tool▁sep｜> {function} "\\n```json\\n" args{i} "\\n```"')
        else:  # DeepSeek-V3.1
            calls.append(f'{function} <｜tool▁sep｜> args{i}')
    choice = " | ".join(calls)
    if fmt is ToolFormat.KIMI:
        root = (f"root ::= <|tool_calls_section_begin|> <|tool_call_begin|> ( {choice} ) "
                "<|tool_call_end|> <|tool_calls_section_end|>")
    elif fmt is ToolFormat.GLM:
        root = f"root ::= <tool_call> ( {choice} ) </tool_call>"
    else:
        root = (f"root ::= <｜tool▁calls▁begin｜> <｜tool▁call▁begin｜> ( {choice} ) "
                "<｜tool▁call▁end｜> <｜tool▁calls▁end｜>")
    return "\n".join([root, *rules])


def _glm_arguments(sampling: Sampling, schema: dict[str, Any], prefix: str) -> tuple[str, list[str]]:
    """GLM's arguments: each property as a key/value pair, required ones always and in order,
    the others optional; a string value as it is (no markup in it), another as JSON."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    parts, rules = [], []
    for j, (key, prop) in enumerate(properties.items()):
        value = f"{prefix}-v{j}"
        if prop.get("type") == "string" and "enum" in prop:
            rules.append(f'{value} ::= ' + " | ".join(json.dumps(str(v)) for v in prop["enum"]))
        elif prop.get("type") == "string":
            limit = prop.get("maxLength")
            rules.append(f'{value} ::= [^<]' + (f"{{0,{int(limit)}}}" if limit is not None else "*"))
        else:
            rules.append(_schema_rules(sampling, prop, value))
        pair = f'<arg_key> {json.dumps(key)} </arg_key> "\\n" <arg_value> {value} </arg_value> "\\n"'
        parts.append(pair if key in required else f"( {pair} )?")
    return ('"\\n" ' + " ".join(parts)) if parts else '"\\n"', rules


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
