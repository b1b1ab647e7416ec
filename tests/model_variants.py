"""The tiny synthetic model with other metadata: another chat template (tools, reasoning
opened by the template) or the sampling defaults its makers would write into the GGUF.

gguf's own gguf_new_metadata copy (the script convert tools use), so the file is a real GGUF
as llama.cpp reads it; only the metadata differs from the tiny model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from app.synthetic.tokenizer import CHAT_TEMPLATE

# Qwen3's template with its tool section (as the Qwen3 GGUFs carry it, trimmed to what the
# synthetic vocabulary has): tools in the system turn, calls as <tool_call> JSON, results as
# <tool_response> in a user turn
QWEN3_TOOLS_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n" }}
    {{- "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name " }}
    {{- "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": " }}
    {{- "<function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' + (message.content or '') }}
        {%- for tool_call in message.tool_calls or [] %}
            {%- set call = tool_call.function if tool_call.function else tool_call %}
            {{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
            {%- if call.arguments is string %}{{- call.arguments }}
            {%- else %}{{- call.arguments | tojson }}{%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

# DeepSeek-R1 and Qwen3 thinking models open the reasoning in the generation prompt
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking",
    "{{- '<|im_start|>assistant\\n<think>\\n' }}\n    {%- if enable_thinking")
assert THINKING_TEMPLATE != CHAT_TEMPLATE


def with_metadata(source: Path, target: Path, *, chat_template: str | None = None,
                  sampling: dict[str, float | int] | None = None) -> Path:
    """A copy of ``source`` with another chat template and/or ``general.sampling.*`` keys
    (``{"temp": 0.0, "top_k": 1}``)."""
    reader = gguf.GGUFReader(source, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    new: dict[str, Any] = {}
    if chat_template is not None:
        new[gguf.Keys.Tokenizer.CHAT_TEMPLATE] = MetadataDetails(gguf.GGUFValueType.STRING,
                                                                 chat_template)
    for name, value in (sampling or {}).items():
        kind = gguf.GGUFValueType.INT32 if isinstance(value, int) else gguf.GGUFValueType.FLOAT32
        new[f"general.sampling.{name}"] = MetadataDetails(kind, value)
    copy_with_new_metadata(reader, writer, new, [])
    return target
