"""Conversations longer than the context, in the engine: a context policy leaves whole turns out
of the prompt instead of refusing the chat (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.context_fit import answer_room, fit
from app.engine.placement import PlacementPlan
from app.engine.protocol import (
    ChatMessage,
    ChatParams,
    ChatResult,
    ContextPolicy,
    LoadParams,
    Sampling,
    from_wire,
    to_wire,
)
from app.errors import ContextOverflowError, EngineError, ProtocolError

N_CTX = 512


def load_small(engine: EngineClient, model: Path) -> None:
    engine.load(LoadParams(model=str(model), telemetry=False,
                           placement=PlacementPlan(n_ctx=N_CTX, n_threads=2)))


def long_conversation(turns: int, words: int = 40) -> list[ChatMessage]:
    """A system prompt, then ``turns`` user/assistant exchanges and a last question."""
    messages = [ChatMessage("system", "You are a patient tutor.")]
    for turn in range(turns):
        messages.append(ChatMessage("user", f"Question {turn}: " + "why experts " * words))
        messages.append(ChatMessage("assistant", f"Answer {turn}: " + "because routing " * words))
    messages.append(ChatMessage("user", "And what comes last?"))
    return messages


def chat(engine: EngineClient, messages: list[ChatMessage], policy: ContextPolicy,
         max_tokens: int | None = 8) -> ChatResult:
    stream = engine.chat(ChatParams(messages=messages, context_policy=policy,
                                    sampling=Sampling(temperature=0.0, max_tokens=max_tokens)))
    for _ in stream:
        pass
    return stream.result


def test_a_conversation_three_times_the_context_is_refused_without_a_policy(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load_small(engine, tiny_moe_gguf)
    # its own error type, across the socket: the server and the app tell it from others by it
    with pytest.raises(ContextOverflowError) as caught:
        chat(engine, long_conversation(8), ContextPolicy.STOP)
    assert caught.value.code == "context_overflow"
    assert "does not fit the context of 512" in str(caught.value)
    assert "drop_middle" in caught.value.hint  # the refusal names the way out


@pytest.mark.parametrize("policy", [ContextPolicy.DROP_MIDDLE, ContextPolicy.ROLLING_WINDOW])
def test_a_policy_answers_a_conversation_three_times_the_context(
        engine: EngineClient, tiny_moe_gguf: Path, policy: ContextPolicy) -> None:
    load_small(engine, tiny_moe_gguf)
    messages = long_conversation(8)
    result = chat(engine, messages, policy, max_tokens=None)
    assert result.finish_reason in ("stop", "length") and result.completion_tokens > 0
    # whole turns (a question and its answer) were left out, never the system prompt or the
    # last question; what was sent left a quarter of the context for the answer
    assert result.messages_dropped > 0 and result.messages_dropped % 2 == 0
    assert result.messages_dropped <= len(messages) - 2
    assert result.prompt_tokens <= N_CTX - N_CTX // 4
    assert result.prompt_tokens + result.completion_tokens <= N_CTX


def test_a_growing_conversation_keeps_answering_past_three_contexts(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load_small(engine, tiny_moe_gguf)
    messages = [ChatMessage("system", "Be brief.")]
    sent_tokens = 0
    dropped = []
    for turn in range(12):
        messages.append(ChatMessage("user", f"Turn {turn}: tell me more " * 12))
        result = chat(engine, messages, ContextPolicy.DROP_MIDDLE, max_tokens=16)
        messages.append(ChatMessage("assistant", result.text))
        sent_tokens += result.prompt_tokens - result.cached_tokens
        dropped.append(result.messages_dropped)
        assert result.prompt_tokens + 16 <= N_CTX
    assert dropped[0] == 0 and dropped[-1] > 0  # only once the context is outgrown
    assert sum(len(m.content) for m in messages) > 3 * N_CTX


def test_a_last_message_larger_than_the_context_is_refused_with_its_size(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load_small(engine, tiny_moe_gguf)
    messages = long_conversation(2) + [ChatMessage("user", "far too long " * 400)]
    with pytest.raises(EngineError) as caught:
        chat(engine, messages, ContextPolicy.DROP_MIDDLE)
    assert "the context of 512" in str(caught.value)
    assert "tokens" in str(caught.value) and "every earlier turn left out" in str(caught.value)


def test_a_policy_changes_nothing_for_a_conversation_that_fits(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load_small(engine, tiny_moe_gguf)
    short = [ChatMessage("user", "Hello there")]
    stopped = chat(engine, short, ContextPolicy.STOP)
    dropped = chat(engine, short, ContextPolicy.DROP_MIDDLE)
    assert dropped.messages_dropped == 0
    assert dropped.text == stopped.text and dropped.prompt_tokens == stopped.prompt_tokens


def characters(messages: list[ChatMessage]) -> int:
    return sum(len(m.content) for m in messages)


def test_drop_middle_keeps_the_system_prompt_the_first_turn_and_the_latest_turns() -> None:
    messages = [ChatMessage("system", "S" * 10)]
    for turn in range(6):
        messages += [ChatMessage("user", f"u{turn}" + "." * 8),
                     ChatMessage("assistant", f"a{turn}" + "." * 8)]
    messages.append(ChatMessage("user", "last" + "." * 6))
    middle = fit(messages, ContextPolicy.DROP_MIDDLE, characters, 80)
    assert [m.content[:2] for m in middle.messages] == ["SS", "u0", "a0", "u4", "a4", "u5",
                                                       "a5", "la"]
    assert middle.dropped == 6
    rolling = fit(messages, ContextPolicy.ROLLING_WINDOW, characters, 80)
    assert [m.content[:2] for m in rolling.messages] == ["SS", "u3", "a3", "u4", "a4", "u5",
                                                        "a5", "la"]
    # with no room at all, only the system prompt and the last turn stay: the first goes too
    least = fit(messages, ContextPolicy.DROP_MIDDLE, characters, 1)
    assert [m.content[:2] for m in least.messages] == ["SS", "la"] and least.dropped == 12


def test_a_tool_result_leaves_with_the_turn_that_called_it() -> None:
    messages = [ChatMessage("user", "x" * 50), ChatMessage("assistant", "calling"),
                ChatMessage("tool", "y" * 50, tool_call_id="c1"),
                ChatMessage("assistant", "done"), ChatMessage("user", "next")]
    fitted = fit(messages, ContextPolicy.ROLLING_WINDOW, characters, 10)
    assert [m.content for m in fitted.messages] == ["next"] and fitted.dropped == 4


def test_room_for_the_answer_is_max_tokens_or_a_quarter_of_the_context() -> None:
    assert answer_room(4096, None) == 1024
    assert answer_room(4096, 300) == 300
    assert answer_room(4096, 100_000) == 2048  # never more than half: history still fits


def test_the_policy_travels_on_the_wire_as_its_name() -> None:
    params = ChatParams(messages=[ChatMessage("user", "hi")],
                        context_policy=ContextPolicy.ROLLING_WINDOW)
    wire = to_wire(params)
    assert wire["context_policy"] == "rolling_window"
    assert from_wire(ChatParams, wire) == params
    assert from_wire(ChatParams, {"messages": []}).context_policy is ContextPolicy.STOP
    with pytest.raises(ProtocolError, match="'drop_middle'"):
        from_wire(ChatParams, {"messages": [], "context_policy": "forget"})
