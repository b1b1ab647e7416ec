"""gpt-oss's harmony answers read into MoE Desk's shape (reasoning in <think>, calls as Qwen3
writes them), whole and streamed in pieces of any size, and then split the way the chat view
and OpenAI clients read them."""

from __future__ import annotations

import json

import pytest

from app.engine.harmony import HarmonyReader, continued, reader_for
from app.serve.answer import AnswerSplitter, whole
from app.ui.chat.segments import segments

# answers as gpt-oss writes them after the generation prompt's <|start|>assistant (the forms
# llama.cpp's common_chat_parse_gpt_oss reads)
FINAL = ("<|channel|>analysis<|message|>User asks: sum 1 to 100. That's 5050.<|end|>"
         "<|start|>assistant<|channel|>final<|message|>The sum is **5050**.")
CALL_IN_CHANNEL = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
                   "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                   '{"city": "Paris"}')
CALL_IN_ROLE = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
                ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}')
PREAMBLE = ("<|channel|>analysis<|message|>First thought.<|end|><|start|>assistant<|channel|>"
            "analysis<|message|>Second thought.<|end|><|start|>assistant<|channel|>commentary"
            "<|message|>Let me check.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_time<|message|>{"tz": "UTC"}')


def read(text: str, size: int) -> tuple[str, list[str]]:
    """The answer fed in pieces of ``size`` characters: what came out, and when."""
    reader = HarmonyReader()
    pieces = [reader.feed(text[at:at + size]) for at in range(0, len(text), size)]
    pieces.append(reader.finish())
    return "".join(pieces), pieces


@pytest.mark.parametrize("size", [1, 2, 5, 10_000])
def test_reasoning_and_answer_come_apart_as_for_every_model(size: int) -> None:
    text, _ = read(FINAL, size)
    assert text == "<think>\nUser asks: sum 1 to 100. That's 5050.\n</think>\n\nThe sum is **5050**."
    # the chat view folds the reasoning; the OpenAI server returns it apart
    assert [s.kind for s in segments(text)] == ["think", "text"]
    reasoning, content, calls = whole(AnswerSplitter(), text)
    assert (reasoning, content, calls) == ("User asks: sum 1 to 100. That's 5050.",
                                           "The sum is **5050**.", [])


@pytest.mark.parametrize("answer", [CALL_IN_CHANNEL, CALL_IN_ROLE], ids=["in-channel", "in-role"])
@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_a_call_to_a_function_becomes_a_tool_call(answer: str, size: int) -> None:
    text, _ = read(answer, size)  # <|call|> ended the answer: the reader's finish
    reasoning, content, calls = whole(AnswerSplitter(tools=True), text)
    assert reasoning == "Need the weather." and content.strip() == ""
    assert [(d.call.name, json.loads(d.call.arguments)) for d in calls if d.call] == [
        ("get_weather", {"city": "Paris"})]


def test_several_analysis_messages_are_one_reasoning_and_a_preamble_is_text() -> None:
    text, _ = read(PREAMBLE, 4)
    reasoning, content, calls = whole(AnswerSplitter(tools=True), text)
    assert reasoning == "First thought.\n\nSecond thought."
    assert content.strip() == "Let me check."
    assert [d.call.name for d in calls if d.call] == ["get_time"]


def test_a_stray_commentary_label_before_the_channel_changes_nothing() -> None:
    # gpt-oss-20b sometimes labels a message twice (llama.cpp's parser allows it too)
    text = read("<|channel|>commentary<|channel|>analysis<|message|>Hmm.<|end|><|start|>"
                "assistant<|channel|>commentary to=assistant<|channel|>final<|message|>Hi", 2)[0]
    assert text == "<think>\nHmm.\n</think>\n\nHi"


def test_text_streams_as_it_comes_and_only_markers_are_held() -> None:
    _, pieces = read(FINAL, 1)
    shown = [p for p in pieces if p]
    # the reasoning and the answer arrive character by character, not at the end
    assert len(shown) > len("That's 5050.The sum is **5050**.")
    assert not any("<|" in p for p in pieces)


def test_an_answer_cut_off_keeps_what_it_had() -> None:
    # inside the reasoning: that much reasoning, still open
    assert read("<|channel|>analysis<|message|>Let me thi", 3)[0] == "<think>\nLet me thi"
    # reasoning ended, then nothing: closed, with no answer
    assert read("<|channel|>analysis<|message|>Done.<|end|>", 3)[0] == "<think>\nDone.\n</think>"
    # a call whose arguments were cut off does not parse: it stays text, as any broken call
    text = read('<|channel|>commentary to=functions.f<|message|>{"a": ', 3)[0]
    assert whole(AnswerSplitter(tools=True), text)[2] == []


@pytest.mark.parametrize("size", [1, 10_000])
def test_text_that_is_not_harmony_passes_as_the_answer(size: int) -> None:
    assert read("Hello! No channels here.", size)[0] == "Hello! No channels here."


def test_a_continued_answer_goes_back_into_its_channel() -> None:
    assert continued("The sum") == "<|channel|>final<|message|>The sum"
    assert continued("<think>\nUser asks") == "<|channel|>analysis<|message|>User asks"
    assert continued("<think>\nDone.\n</think>\n\nThe sum") == (
        "<|channel|>analysis<|message|>Done.<|end|><|start|>assistant<|channel|>final"
        "<|message|>The sum")
    # the reader goes on from there: what the client has is not said again
    reader = reader_for("<think>\nUser asks")
    more = reader.feed(" a sum.<|end|><|start|>assistant<|channel|>final<|message|>5050")
    assert more + reader.finish() == " a sum.\n</think>\n\n5050"
    reader = reader_for("<think>\nDone.\n</think>\n\nThe sum")
    assert reader.feed(" is 5050.") + reader.finish() == " is 5050."
