"""Tool calls and reasoning in answers as each family writes them (recorded outputs), split
the way OpenAI clients read them: whole, and streamed in pieces of any size."""

from __future__ import annotations

import json

import pytest

from app.engine.tool_calls import ToolFormat, detect_format, preserved_markers, split_calls
from app.serve.answer import AnswerSplitter, Part, whole

# answers as the models wrote them (from llama.cpp's chat-parser tests and the models' cards)
QWEN3 = ('<think>\nThe user wants the weather; I will call the tool.\n</think>\n\n'
         'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
         '"unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": '
         '{"tz": "Europe/Paris"}}\n</tool_call>')
DEEPSEEK_R1 = ('<think>\nI need the weather.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'
               'function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris", "unit": "celsius"}\n'
               '```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n'
               '{"tz": "Europe/Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
DEEPSEEK_V31 = ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", '
                '"unit": "celsius"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>'
                '{"tz": "Europe/Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
GLM45 = ('<think>The weather, then.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n'
         '<arg_value>Paris</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n'
         '</tool_call><tool_call>get_time\n<arg_key>tz</arg_key>\n<arg_value>Europe/Paris'
         '</arg_value>\n</tool_call>')
KIMI_K2 = ('Checking both.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0'
           '<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}<|tool_call_end|>'
           '<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{"tz": '
           '"Europe/Paris"}<|tool_call_end|><|tool_calls_section_end|>')
EXPECTED = [("get_weather", {"city": "Paris", "unit": "celsius"}),
            ("get_time", {"tz": "Europe/Paris"})]


def streamed(text: str, size: int) -> tuple[str, str, list[tuple[str, dict[str, object]]]]:
    """The answer fed in pieces of ``size`` characters: reasoning, content, calls."""
    splitter = AnswerSplitter(reasoning=True, tools=True)
    deltas = []
    for at in range(0, len(text), size):
        deltas += splitter.feed(text[at:at + size])
    deltas += splitter.finish()
    reasoning = "".join(d.text for d in deltas if d.part is Part.REASONING)
    content = "".join(d.text for d in deltas if d.part is Part.CONTENT and d.call is None)
    calls = [(d.call.name, json.loads(d.call.arguments)) for d in deltas if d.call]
    return reasoning, content, calls


@pytest.mark.parametrize(("answer", "reasoning", "content"), [
    (QWEN3, "The user wants the weather; I will call the tool.", "Let me check.\n"),
    (DEEPSEEK_R1, "I need the weather.", ""),
    (DEEPSEEK_V31, "", ""),
    (GLM45, "The weather, then.", ""),
    (KIMI_K2, "", "Checking both."),
], ids=["qwen3", "deepseek-r1", "deepseek-v3.1", "glm-4.5", "kimi-k2"])
@pytest.mark.parametrize("size", [1, 3, 7, 10_000])
def test_each_familys_calls_and_reasoning_come_apart(answer: str, reasoning: str,
                                                     content: str, size: int) -> None:
    got_reasoning, got_content, calls = streamed(answer, size)
    assert calls == EXPECTED
    assert got_reasoning.strip("\n") == reasoning
    assert got_content.strip() == content.strip()


def test_a_whole_answer_gives_the_same_split() -> None:
    reasoning, content, calls = whole(AnswerSplitter(reasoning=True, tools=True), QWEN3)
    assert reasoning == "The user wants the weather; I will call the tool."
    assert content.strip() == "Let me check."
    assert [(d.call.name, json.loads(d.call.arguments)) for d in calls if d.call] == EXPECTED
    assert len({d.call_id for d in calls}) == 2  # each call its own id


def test_text_that_only_looks_like_a_call_stays_text() -> None:
    broken = 'Use <tool_call>{"name": oops}</tool_call> or <tool_call> unfinished'
    assert split_calls(broken) == (broken, [])
    assert split_calls("no calls <tool here") == ("no calls <tool here", [])


def test_without_tools_or_with_reasoning_off_the_text_is_untouched() -> None:
    assert whole(AnswerSplitter(reasoning=True, tools=False), QWEN3)[1].count("<tool_call>") == 2
    reasoning, content, _ = whole(AnswerSplitter(reasoning=False, tools=False), QWEN3)
    assert reasoning == "" and content == QWEN3


def test_reasoning_the_template_opened_ends_at_the_close() -> None:
    # the engine puts the template's <think> in front; an answer cut off mid-thought is all
    # reasoning
    assert whole(AnswerSplitter(), "<think>\nhmm\n</think>\n\nHi")[:2] == ("hmm", "Hi")
    assert whole(AnswerSplitter(), "<think>\nstill thinking")[:2] == ("still thinking", "")
    assert whole(AnswerSplitter(), "  plain answer")[:2] == ("", "  plain answer")


@pytest.mark.parametrize(("template", "fmt"), [
    ("{{ '<tool_call>' }}{{ tool_call.arguments | tojson }}", ToolFormat.QWEN),
    ("<tool_call>{{ name }}<arg_key>{{ k }}</arg_key>", ToolFormat.GLM),
    ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", ToolFormat.DEEPSEEK),
    ('{{- "<|start|>assistant<|channel|>final<|message|>" + message.content }}', ToolFormat.HARMONY),
    ("<|tool_calls_section_begin|>{%- for tool_call in message['tool_calls'] -%}", ToolFormat.KIMI),
    ("{% for m in messages %}{{ m.content }}{% endfor %}", None),
])
def test_the_format_is_read_from_the_template(template: str, fmt: ToolFormat | None) -> None:
    assert detect_format(template) is fmt


def test_each_format_shows_its_own_markers_and_every_model_its_think_tags() -> None:
    # llama.cpp leaves special tokens out of the text; these are rendered, so that calls and
    # reasoning can be read (llama-server's "preserved tokens")
    assert "<｜tool▁sep｜>" in preserved_markers(ToolFormat.DEEPSEEK)
    assert {"<arg_key>", "</arg_value>"} <= set(preserved_markers(ToolFormat.GLM))
    assert {"<|channel|>", "<|message|>", "<|end|>", "<|start|>"} <= set(
        preserved_markers(ToolFormat.HARMONY))
    assert preserved_markers(None) == ("<think>", "</think>")
    # none names the end of a turn or of the text: those stay out of the answer
    assert not {"<|endoftext|>", "<|im_end|>", "<｜end▁of▁sentence｜>"} & {
        m for f in ToolFormat for m in preserved_markers(f)}
