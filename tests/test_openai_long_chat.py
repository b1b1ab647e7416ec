"""Conversations longer than the context over the OpenAI API (issue 20): refused by default
with a 400 that names the opt-in, answered with earlier turns left out when the request (or
the server) asks for a context policy. The real openai client, the real engine, n_ctx 512."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.cli import main
from app.engine.client import EngineClient
from app.engine.protocol import ContextPolicy
from app.serve import OpenAIServer
from tests.openai_testing import client_for, engine_with

N_CTX = 512


@pytest.fixture(scope="module")
def engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    with engine_with(tiny_moe_gguf, N_CTX, telemetry=False) as client:
        yield client


@pytest.fixture(scope="module")
def server(engine: EngineClient) -> Iterator[OpenAIServer]:
    with OpenAIServer(engine, port=0) as running:
        yield running


def long_conversation(turns: int = 10) -> list[dict[str, Any]]:
    """What a client that keeps the whole history sends: a system prompt and many turns."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a patient tutor."}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn}: " + "why experts " * 30})
        messages.append({"role": "assistant", "content": f"Answer {turn}: " + "routing " * 30})
    messages.append({"role": "user", "content": "And what comes last?"})
    return messages


def conversation_tokens(client: openai.OpenAI, messages: list[dict[str, Any]]) -> int:
    """The conversation's size as the server's refusal counts it."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", messages=messages, max_tokens=8)  # type: ignore[arg-type]
    found = re.search(r"the conversation \((\d+) tokens\)", str(caught.value))
    assert found is not None, caught.value
    return int(found.group(1))


def test_without_a_policy_a_long_conversation_is_a_400_naming_the_option(
        server: OpenAIServer) -> None:
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", messages=long_conversation(),  # type: ignore[arg-type]
                                       max_tokens=8)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "does not fit the context of 512" in error["message"]
    assert '"context_policy": "drop_middle"' in error["message"]
    assert "--context-policy" in error["message"]


@pytest.mark.parametrize("policy", ["drop_middle", "rolling_window"])
def test_a_conversation_three_times_the_context_is_answered_with_a_policy(
        server: OpenAIServer, policy: str) -> None:
    client = client_for(server)
    messages = long_conversation()
    assert conversation_tokens(client, messages) > 3 * N_CTX
    answer = client.chat.completions.create(
        model="any", messages=messages, max_tokens=16, temperature=0,  # type: ignore[arg-type]
        extra_body={"context_policy": policy, "ignore_eos": True})
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 16
    # the prompt sent left room for the 16 tokens asked, and the response says what was left out
    assert answer.usage.prompt_tokens + 16 <= N_CTX
    assert answer.model_extra is not None and answer.model_extra["messages_dropped"] >= 10

    streamed = client.chat.completions.create(
        model="any", messages=messages, max_tokens=16, temperature=0, stream=True,  # type: ignore[arg-type]
        extra_body={"context_policy": policy, "ignore_eos": True})
    chunks = list(streamed)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == answer.choices[0].message.content
    last = next(c for c in reversed(chunks) if c.choices and c.choices[0].finish_reason)
    assert last.model_extra is not None
    assert last.model_extra["messages_dropped"] == answer.model_extra["messages_dropped"]


def test_a_growing_conversation_keeps_answering_past_three_contexts(server: OpenAIServer) -> None:
    client = client_for(server)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for turn in range(12):
        messages.append({"role": "user", "content": f"Turn {turn}: tell me more " * 10})
        answer = client.chat.completions.create(
            model="any", messages=messages, max_tokens=24, temperature=0,  # type: ignore[arg-type]
            extra_body={"context_policy": "drop_middle"})
        messages.append({"role": "assistant", "content": answer.choices[0].message.content})
    assert conversation_tokens(client, messages) > 3 * N_CTX


def test_the_server_default_policy_serves_requests_that_name_none(
        engine: EngineClient) -> None:
    with OpenAIServer(engine, port=0, context_policy=ContextPolicy.DROP_MIDDLE) as lenient:
        client = client_for(lenient)
        answer = client.chat.completions.create(model="any", messages=long_conversation(),  # type: ignore[arg-type]
                                                max_tokens=8)
        assert answer.usage is not None and answer.usage.prompt_tokens < N_CTX
        # a request may still ask for the refusal
        with pytest.raises(openai.BadRequestError, match="does not fit"):
            client.chat.completions.create(model="any", messages=long_conversation(),  # type: ignore[arg-type]
                                           max_tokens=8, extra_body={"context_policy": "stop"})


def test_an_unknown_policy_is_a_400_listing_the_policies(server: OpenAIServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(server).chat.completions.create(
            model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            extra_body={"context_policy": "forget"})
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "context_policy"
    assert "'drop_middle'" in error["message"] and "'forget'" in error["message"]


def test_serve_takes_a_default_context_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--context-policy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["serve", "model.gguf", "--context-policy", "forget"])
    assert bad.value.code == 2
