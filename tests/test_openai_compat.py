"""Today's OpenAI tools against MoE Desk's server: every sampling field honoured or refused,
any model name, /health, routes with and without /v1, browsers (CORS), JSON output enforced
by a grammar, reasoning apart from the answer, tool calls.

The real ``openai`` client, real sockets, the real engine and the tiny synthetic model (or a
copy with another template or the sampling defaults a GGUF may carry). Its weights are
random: what it says is word salad, so where the output must have a shape, a grammar gives it
one, and the test checks that the shape arrives intact.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling
from app.serve import OpenAIServer
from tests.model_variants import QWEN3_TOOLS_TEMPLATE, THINKING_TEMPLATE, with_metadata
from tests.openai_testing import client_for, model_name, user

N_CTX = 2048
GREEDY: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def models(tiny_moe_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("variants")
    return {
        "plain": tiny_moe_gguf,
        # its makers recommend greedy decoding (general.sampling.temp = 0)
        "greedy-default": with_metadata(tiny_moe_gguf, folder / "greedy.gguf",
                                        sampling={"temp": 0.0}),
        "tools": with_metadata(tiny_moe_gguf, folder / "tools.gguf",
                               chat_template=QWEN3_TOOLS_TEMPLATE),
        "thinking": with_metadata(tiny_moe_gguf, folder / "thinking.gguf",
                                  chat_template=THINKING_TEMPLATE),
    }


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineClient]:
    with EngineClient.spawn() as client:
        yield client


@pytest.fixture(scope="module")
def server(engine: EngineClient) -> Iterator[OpenAIServer]:
    with OpenAIServer(engine, port=0, allowed_origins=["https://chat.example"]) as running:
        yield running


def load(engine: EngineClient, path: Path) -> str:
    """Load ``path`` (if it is not loaded already); its model name."""
    stats = engine.stats()
    if getattr(engine, "_test_loaded", None) != path or stats.model is None:
        engine.load(LoadParams(model=str(path), placement=PlacementPlan(n_ctx=N_CTX, n_threads=2)))
        engine._test_loaded = path  # type: ignore[attr-defined]
    return model_name(engine)


@pytest.fixture
def client(server: OpenAIServer) -> openai.OpenAI:
    return client_for(server)


def raw(server: OpenAIServer, method: str, path: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answer(client: openai.OpenAI, text: str = "Tell me a story", **options: Any) -> str:
    content = client.chat.completions.create(model="any", messages=user(text),
                                             **options).choices[0].message.content
    assert content is not None
    return content


# --- sampling ------------------------------------------------------------------------------


def test_each_sampling_field_reaches_the_engines_sampler(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])

    def direct(**sampling: Any) -> str:
        return engine.chat(ChatParams(messages=[ChatMessage("user", "Tell me a story")],
                                      sampling=Sampling(max_tokens=24, ignore_eos=True,
                                                        **sampling))).result.text

    greedy = direct(temperature=0.0)
    # penalties change the greedy answer, exactly as the engine's own sampler does with them
    for field, value in (("presence_penalty", 2.0), ("frequency_penalty", 2.0),
                         ("repeat_penalty", 3.0)):
        extra = {"ignore_eos": True, **({field: value} if field == "repeat_penalty" else {})}
        options: dict[str, Any] = {} if field == "repeat_penalty" else {field: value}
        got = answer(client, max_tokens=24, temperature=0, extra_body=extra, **options)
        assert got == direct(temperature=0.0, **{field: value}), field
        assert got != greedy, f"{field} changed nothing"
    # top_k 1 and min_p 1 leave only the likeliest token: greedy, whatever the seed
    hot = {"temperature": 1.5, "max_tokens": 24}
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        runs = {answer(client, seed=seed, **hot, extra_body={"ignore_eos": True, **extra})
                for seed in (1, 2, 3)}
        assert runs == {greedy}, extra
    assert len({answer(client, seed=seed, **hot, extra_body={"ignore_eos": True})
                for seed in (1, 2, 3)}) > 1  # without them, the seed matters


def test_the_models_own_sampling_defaults_apply_when_the_request_sets_none(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["greedy-default"])  # general.sampling.temp = 0 in its GGUF
    unset = {answer(client, max_tokens=16, seed=seed, extra_body={"ignore_eos": True})
             for seed in (1, 2, 3)}
    assert unset == {answer(client, max_tokens=16, **GREEDY)}
    # a temperature in the request wins over the model's
    assert len({answer(client, max_tokens=16, seed=seed, temperature=1.5,
                       extra_body={"ignore_eos": True}) for seed in (1, 2, 3)}) > 1


@pytest.mark.parametrize(("field", "value"), [
    ("mirostat", 2), ("tfs_z", 0.9), ("xtc_probability", 0.5), ("dry_multiplier", 0.8),
    ("logit_bias", {"42": 5}), ("logprobs", True), ("top_n_sigma", 1.0), ("samplers", ["top_k"]),
])
def test_a_sampling_field_the_engine_cannot_honour_is_refused(
        server: OpenAIServer, field: str, value: Any) -> None:
    status, _, body = raw(server, "POST", "/v1/chat/completions",
                           {"model": "x", "messages": user("hi"), field: value})
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == field and "not supported" in error["message"]


def test_neutral_values_of_unsupported_fields_are_accepted(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])
    got = client.chat.completions.create(
        model="x", messages=user("hi"), max_tokens=2, logprobs=False, frequency_penalty=0,
        extra_body={"mirostat": 0, "tfs_z": 1.0, "logit_bias": {}, "ignore_eos": True})
    assert got.usage is not None and got.usage.completion_tokens == 2


# --- names, routes, health, browsers -------------------------------------------------------


def test_any_model_name_and_routes_with_or_without_v1(
        server: OpenAIServer, engine: EngineClient, models: dict[str, Path]) -> None:
    name = load(engine, models["plain"])
    for path in ("/v1/chat/completions", "/chat/completions"):
        status, _, body = raw(server, "POST", path, {"model": "gpt-4o-mini", "max_tokens": 2,
                                                      "messages": user("hi")})
        assert status == 200 and json.loads(body)["model"] == name, path
    for path in ("/v1/completions", "/completions"):
        status, _, body = raw(server, "POST", path, {"model": "davinci", "prompt": "Once",
                                                      "max_tokens": 2})
        assert status == 200 and json.loads(body)["object"] == "text_completion", path
    for path in ("/v1/models", "/models", "/v1/models/"):
        status, _, body = raw(server, "GET", path)
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [name]


def test_health_says_whether_a_model_is_loaded_without_a_key(tiny_moe_gguf: Path) -> None:
    with EngineClient.spawn() as bare, OpenAIServer(bare, port=0, api_key="sk-x") as server:
        for path in ("/health", "/v1/health"):
            status, _, body = raw(server, "GET", path)
            assert status == 503 and json.loads(body)["error"]["code"] == "model_not_loaded"
        bare.load(LoadParams(model=str(tiny_moe_gguf), placement=PlacementPlan(n_ctx=256)))
        status, _, body = raw(server, "GET", "/health")
        assert status == 200 and json.loads(body) == {"status": "ok",
                                                      "model": bare.stats().model}
        # the key still guards everything else
        assert raw(server, "GET", "/v1/models")[0] == 401


def test_a_browser_page_on_this_machine_may_call_after_a_preflight(
        server: OpenAIServer, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])
    origin = "http://localhost:5173"  # a web UI in development on this machine
    status, headers, _ = raw(server, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    assert status == 204
    assert headers["access-control-allow-origin"] == origin
    assert "POST" in headers["access-control-allow-methods"]
    assert "x-stainless-os" in headers["access-control-allow-headers"]
    status, headers, body = raw(server, "POST", "/v1/chat/completions",
                                 {"model": "x", "messages": user("hi"), "max_tokens": 2},
                                 headers={"Origin": origin})
    assert status == 200 and headers["access-control-allow-origin"] == origin
    assert json.loads(body)["usage"]["completion_tokens"] <= 2
    # a streamed answer carries the header too
    status, headers, _ = raw(server, "POST", "/chat/completions",
                              {"model": "x", "messages": user("hi"), "max_tokens": 2,
                               "stream": True}, headers={"Origin": origin})
    assert status == 200 and headers["access-control-allow-origin"] == origin


def test_a_page_from_the_web_is_refused_unless_its_origin_is_allowed(
        server: OpenAIServer) -> None:
    for method in ("OPTIONS", "POST"):
        status, headers, body = raw(server, method, "/v1/chat/completions",
                                     {"model": "x", "messages": user("hi")},
                                     headers={"Origin": "https://evil.example"})
        error = json.loads(body)["error"]
        assert status == 403 and error["code"] == "origin_not_allowed"
        assert "--allow-origin" in error["message"]
        assert "access-control-allow-origin" not in headers
    # the server was started with allowed_origins=["https://chat.example"]
    status, headers, _ = raw(server, "OPTIONS", "/v1/models",
                              headers={"Origin": "https://chat.example"})
    assert status == 204 and headers["access-control-allow-origin"] == "https://chat.example"


# --- JSON output ---------------------------------------------------------------------------

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pet"],
          "properties": {"name": {"type": "string", "enum": ["Ada", "Alan", "Grace"]},
                         "age": {"type": "integer"},
                         "pet": {"type": "boolean"}}}


def test_json_schema_output_parses_and_matches_the_schema(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for seed in (1, 2, 3):
        got = client.chat.completions.create(model="x", messages=user("Who?"), seed=seed,
                                             temperature=1.0, response_format=fmt)
        assert got.choices[0].finish_reason == "stop"
        person = json.loads(got.choices[0].message.content or "")
        assert set(person) == {"name", "age", "pet"}
        assert person["name"] in ("Ada", "Alan", "Grace")
        assert isinstance(person["age"], int) and not isinstance(person["age"], bool)
        assert isinstance(person["pet"], bool)
    streamed = client.chat.completions.create(model="x", messages=user("Who?"), seed=1,
                                              temperature=1.0, response_format=fmt, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert set(json.loads(text)) == {"name", "age", "pet"}


def test_json_object_output_is_a_json_object(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])
    # any object: random weights write an endless key for most seeds (cut at max_tokens,
    # finish "length"); seed 1 closes its object, which must then parse, raw control
    # characters excluded (the converter's grammar lets them through; the engine's does not)
    got = client.chat.completions.create(model="x", messages=user("Answer in JSON"), seed=1,
                                         temperature=1.0, max_tokens=300,
                                         response_format={"type": "json_object"})
    assert got.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(got.choices[0].message.content or ""), dict)
    cut = client.chat.completions.create(model="x", messages=user("Answer in JSON"),
                                         temperature=0, max_tokens=100,
                                         response_format={"type": "json_object"})
    text = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "length" and text.startswith('{"')
    assert not any(ord(c) < 0x20 for c in text.split('"', 2)[1])  # the key has no raw controls


def test_a_schema_or_grammar_that_cannot_be_used_is_a_clear_400(
        server: OpenAIServer, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"grammar": "root ::= [unclosed"}, "response_format"),  # the engine's parser says
        # a bound the converter would not enforce: refused, not silently dropped
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {
            "type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}}}},
         "response_format"),
        ({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}, "grammar"),
    ]
    for extra, param in cases:
        status, _, body = raw(server, "POST", "/v1/chat/completions",
                               {"model": "x", "messages": user("hi"), **extra})
        error = json.loads(body)["error"]
        assert status == 400 and error["param"] == param, (extra, error)
    # a llama-server grammar works as such
    status, _, body = raw(server, "POST", "/v1/chat/completions",
                           {"model": "x", "messages": user("hi"), "temperature": 0,
                            "grammar": 'root ::= ("yes" | "no") "."'})
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"] in ("yes.", "no.")


# --- reasoning ------------------------------------------------------------------------------

# the word salad given a shape: some reasoning, its end, an answer
THOUGHT_THEN_ANSWER = 'root ::= [a-z]{3,8} "</think>" [a-z]{2,6}'


def test_reasoning_the_template_opens_comes_as_reasoning_content(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["thinking"])  # its generation prompt ends with <think>, as R1's does
    options: dict[str, Any] = {"model": "x", "messages": user("Why?"), "temperature": 0,
                               "extra_body": {"grammar": THOUGHT_THEN_ANSWER}}
    message = client.chat.completions.create(**options).choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert reasoning and reasoning.isalpha() and message.content and message.content.isalpha()
    chunks = list(client.chat.completions.create(**options, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert streamed_reasoning == reasoning
    assert "".join(d.content or "" for d in deltas) == message.content
    # reasoning_format "none" (llama-server's) leaves it in the content, as written
    raw = client.chat.completions.create(**{**options, "extra_body": {
        "grammar": THOUGHT_THEN_ANSWER, "reasoning_format": "none"}}).choices[0].message
    assert raw.content == f"<think>\n{reasoning}</think>{message.content}"


def test_reasoning_the_model_opens_itself_and_template_switches(
        client: openai.OpenAI, server: OpenAIServer, engine: EngineClient,
        models: dict[str, Path]) -> None:
    load(engine, models["plain"])  # Qwen3's template: the model writes <think> itself
    message = client.chat.completions.create(
        model="x", messages=user("Why?"), temperature=0,
        extra_body={"grammar": 'root ::= "<think>" [a-z]{3,8} "</think>\\n\\n" [a-z]{2,6}'},
    ).choices[0].message
    assert getattr(message, "reasoning_content", "").isalpha()
    assert message.content and message.content.isalpha()

    def prompt_tokens(**extra: Any) -> int:
        got = client.chat.completions.create(model="x", messages=user("Why?"), max_tokens=1,
                                             extra_body=extra)
        assert got.usage is not None
        return got.usage.prompt_tokens

    # enable_thinking=false makes Qwen3's template write an empty <think></think> block
    thinking = prompt_tokens()
    assert prompt_tokens(chat_template_kwargs={"enable_thinking": False}) > thinking
    assert prompt_tokens(enable_thinking=False) > thinking
    status, _, body = raw(server, "POST", "/v1/chat/completions", {
        "model": "x", "messages": user("hi"), "chat_template_kwargs": {"messages": []}})
    assert status == 400 and json.loads(body)["error"]["code"] == "chat_template"


# --- tools ----------------------------------------------------------------------------------

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}}}}]


def test_a_required_tool_call_arrives_whole_and_streamed_and_its_result_goes_back(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["tools"])  # Qwen3's template with its tool section
    ask: dict[str, Any] = {"model": "x", "messages": user("Weather in Paris?"), "tools": WEATHER,
                           "tool_choice": "required", "temperature": 0}
    choice = client.chat.completions.create(**ask).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")
    chunks = list(client.chat.completions.create(**ask, stream=True))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(p.index, p.function.name if p.function else None) for p in pieces] == [
        (0, "get_weather")]
    assert pieces[0].function is not None
    assert pieces[0].function.arguments == call.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # the call and its result go back; the template shows the model both
    before = client.chat.completions.create(model="x", messages=user("Weather in Paris?"),
                                            tools=WEATHER, max_tokens=1)
    after = client.chat.completions.create(model="x", tools=WEATHER, max_tokens=1, messages=[
        *user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}])
    assert after.usage is not None and before.usage is not None
    assert after.usage.prompt_tokens > before.usage.prompt_tokens + 10


def test_parallel_tool_calls_false_keeps_an_answers_first_call_only(
        client: openai.OpenAI, server: OpenAIServer, engine: EngineClient,
        models: dict[str, Path]) -> None:
    load(engine, models["tools"])
    two_calls = ('root ::= "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": '
                 '{\\"city\\": \\"Paris\\"}}\\n</tool_call>\\n<tool_call>\\n{\\"name\\": '
                 '\\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Oslo\\"}}\\n</tool_call>"')
    ask: dict[str, Any] = {"model": "x", "messages": user("Weather in Paris and Oslo?"),
                           "tools": WEATHER, "temperature": 0, "extra_body": {"grammar": two_calls}}
    both = client.chat.completions.create(**ask).choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["city"] for c in both] == ["Paris", "Oslo"]
    first = client.chat.completions.create(**ask, parallel_tool_calls=False).choices[0]
    assert [json.loads(c.function.arguments)["city"] for c in first.message.tool_calls or []] == ["Paris"]
    assert first.finish_reason == "tool_calls" and not (first.message.content or "").strip()
    chunks = list(client.chat.completions.create(**ask, parallel_tool_calls=False, stream=True))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [p.index for p in pieces] == [0]
    status, _, body = raw(server, "POST", "/v1/chat/completions", {
        "model": "x", "messages": user("hi"), "tools": WEATHER, "parallel_tool_calls": "no"})
    assert status == 400 and json.loads(body)["error"]["param"] == "parallel_tool_calls"


def test_tools_a_template_cannot_show_are_a_clear_400(
        client: openai.OpenAI, engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["plain"])  # the synthetic template has no tool section
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="x", messages=user("hi"), tools=WEATHER)
    assert caught.value.code == "chat_template" and "no place for tools" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="x", messages=user("hi"), tools=WEATHER,
                                       tool_choice={"type": "function",
                                                    "function": {"name": "nope"}})
    assert caught.value.param == "tool_choice"
