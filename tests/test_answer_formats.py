"""Answers of models whose markers are special tokens, through the real engine and the OpenAI
server: gpt-oss's harmony channels (reasoning, answer and tool calls apart, not run
together), DeepSeek's and Kimi-K2's tool-call markers (kept, so the call is read).

The tiny synthetic models carry the real special tokens and chat templates; their weights
are random, so a grammar gives the answer its shape, naming the special tokens as llama.cpp
grammars do (``<|channel|>``): the model samples those very tokens, as the real one would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, ChatResult, LoadParams, Sampling, ToolCall
from app.engine.template_caps import TemplateCaps, template_message
from app.serve import OpenAIServer
from app.synthetic import SyntheticSpec, write_synthetic_model
from app.synthetic.tokenizer import FAMILIES
from app.ui.chat.segments import segments
from tests.openai_testing import client_for, user

HARMONY_ANSWER = ('root ::= <|channel|> "analysis" <|message|> "The user greets me." <|end|> '
                  '<|start|> "assistant" <|channel|> "final" <|message|> "Hello there!"')
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}}}}]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {name: write_synthetic_model(folder / f"{name}.gguf", SyntheticSpec.preset(name))[0]
            for name in ("tiny-gpt-oss", "tiny-deepseek-v3", "tiny-kimi-k2", "tiny-glm-4.5")}


@pytest.fixture(scope="module")
def server(engine: EngineClient) -> Iterator[OpenAIServer]:
    with OpenAIServer(engine, port=0) as running:
        yield running


def load(engine: EngineClient, model: Path) -> None:
    if getattr(engine, "_test_loaded", None) != model:
        engine.load(LoadParams(model=str(model), placement=PlacementPlan(n_ctx=2048, n_threads=2)))
        engine._test_loaded = model  # type: ignore[attr-defined]


def chat(engine: EngineClient, messages: list[ChatMessage], grammar: str | None = None,
         max_tokens: int = 64, **more: Any) -> tuple[list[str], ChatResult]:
    stream = engine.chat(ChatParams(messages=messages, sampling=Sampling(
        temperature=0.0, max_tokens=max_tokens, grammar=grammar), **more))
    pieces = [token.text for token in stream]
    return pieces, stream.result


# --- gpt-oss --------------------------------------------------------------------------------


def test_gpt_oss_reasoning_is_folded_and_never_runs_into_the_answer(
        engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["tiny-gpt-oss"])
    pieces, result = chat(engine, [ChatMessage("user", "Hi")], HARMONY_ANSWER)
    assert result.text == "<think>\nThe user greets me.\n</think>\n\nHello there!"
    assert "".join(pieces) == result.text and result.finish_reason == "stop"  # <|return|>
    assert not any("<|" in piece for piece in pieces)
    # the chat view: the reasoning collapsed, then the answer
    assert [(s.kind, s.text) for s in segments(result.text)] == [
        ("think", "The user greets me."), ("text", "Hello there!")]


def test_gpt_oss_reasoning_comes_as_reasoning_content(
        engine: EngineClient, server: OpenAIServer, models: dict[str, Path]) -> None:
    load(engine, models["tiny-gpt-oss"])
    client = client_for(server)
    options: dict[str, Any] = {"model": "x", "messages": user("Hi"), "temperature": 0,
                               "reasoning_effort": "high",
                               "extra_body": {"grammar": HARMONY_ANSWER}}
    message = client.chat.completions.create(**options).choices[0].message
    assert getattr(message, "reasoning_content", None) == "The user greets me."
    assert message.content == "Hello there!"
    deltas = [c.choices[0].delta for c in client.chat.completions.create(**options, stream=True)
              if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == \
        "The user greets me."
    assert "".join(d.content or "" for d in deltas) == "Hello there!"


@pytest.mark.parametrize("grammar", [
    None,  # tool_choice "required": the engine's grammar for a harmony call
    # the two headers gpt-oss writes: recipient in the channel, or in the role
    'root ::= <|channel|> "analysis" <|message|> "Weather, then." <|end|> <|start|> "assistant" '
    '<|channel|> "commentary to=functions.get_weather " <|constrain|> "json" <|message|> '
    '"{\\"city\\": \\"Oslo\\"}"',
    'root ::= <|channel|> "analysis" <|message|> "Weather, then." <|end|> <|start|> "assistant" '
    '" to=functions.get_weather" <|channel|> "commentary json" <|message|> "{\\"city\\": \\"Oslo\\"}"',
], ids=["required", "recipient-in-channel", "recipient-in-role"])
def test_a_gpt_oss_call_becomes_tool_calls_and_goes_back_with_its_reasoning(
        engine: EngineClient, server: OpenAIServer, models: dict[str, Path],
        grammar: str | None) -> None:
    load(engine, models["tiny-gpt-oss"])
    client = client_for(server)
    ask: dict[str, Any] = {"model": "x", "messages": user("Weather in Oslo?"), "tools": WEATHER,
                           "temperature": 0, "max_tokens": 200}
    if grammar is None:
        ask["tool_choice"] = "required"
    else:
        ask["extra_body"] = {"grammar": grammar}
    choice = client.chat.completions.create(**ask).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")
    assert "<|" not in (choice.message.content or "")
    reasoning = getattr(choice.message, "reasoning_content", None)
    if grammar is not None:
        assert reasoning == "Weather, then."
    # the call, its reasoning and its result go back: the template shows the model all three
    # (gpt-oss keeps a call's reasoning until its final answer)
    def prompt_tokens(answer: dict[str, Any]) -> int:
        got = client.chat.completions.create(model="x", tools=WEATHER, max_tokens=1, messages=[
            *user("Weather in Oslo?"), {"role": "assistant", "tool_calls": [call.model_dump()],
                                        **answer},
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}])
        assert got.usage is not None
        return got.usage.prompt_tokens

    bare = prompt_tokens({"content": None})
    assert prompt_tokens({"content": None, "reasoning_content": "Need the weather."}) > bare
    # a preamble beside the reasoning is left out (the template refuses both)
    assert prompt_tokens({"content": "Let me look.", "reasoning_content": "Need it."}) > bare


def test_gpt_oss_template_gets_the_effort_the_earlier_answers_and_a_calls_reasoning() -> None:
    # the real template, given the messages as the engine gives them
    template = Jinja2ChatFormatter(template=FAMILIES["gpt-oss"].chat_template,
                                   eos_token="<|return|>", bos_token="<|startoftext|>")
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    history = [ChatMessage("user", "Weather in Oslo?"),
               ChatMessage("assistant", "", tool_calls=[call], reasoning="Need the weather."),
               ChatMessage("tool", '{"celsius": 21}', tool_call_id="call_1"),
               ChatMessage("assistant", "It is 21 °C.", reasoning="Easy."),
               ChatMessage("user", "And tomorrow?")]
    prompt = template(messages=[template_message(m, harmony=True) for m in history],
                      tools=WEATHER, reasoning_effort="high").prompt
    assert "Reasoning: high" in prompt
    assert prompt.endswith("<|start|>user<|message|>And tomorrow?<|end|><|start|>assistant")
    # a final answer came after the call: its reasoning is dropped, as every earlier one
    assert "Need the weather." not in prompt and "Easy." not in prompt
    assert ('<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>'
            '{"city": "Oslo"}<|call|>') in prompt
    assert "<|channel|>final<|message|>It is 21 °C.<|end|>" in prompt
    # before the final answer, the call keeps its reasoning (and a preamble beside it goes:
    # the template takes one analysis message before a call)
    pending = [history[0], ChatMessage("assistant", "Let me look.", tool_calls=[call],
                                       reasoning="Need the weather."), history[2]]
    prompt = template(messages=[template_message(m, harmony=True) for m in pending],
                      tools=WEATHER).prompt
    assert "<|channel|>analysis<|message|>Need the weather.<|end|>" in prompt
    assert "Reasoning: medium" in prompt  # the template's default
    # an answer sent back whole, as the engine wrote it: its reasoning is not the answer
    whole = [history[0], ChatMessage("assistant", "<think>\nEasy.\n</think>\n\nIt is 21 °C."),
             history[4]]
    prompt = template(messages=[template_message(m, harmony=True) for m in whole]).prompt
    assert "<|channel|>final<|message|>It is 21 °C.<|end|>" in prompt and "Easy." not in prompt


def test_a_gpt_oss_answer_continues_in_the_channel_it_was_cut_off_in(
        engine: EngineClient, models: dict[str, Path]) -> None:
    load(engine, models["tiny-gpt-oss"])
    question = [ChatMessage("user", "Hi")]
    cut = "<think>\nThe user"  # stopped while it was reasoning
    go_on = ('root ::= " greets me." <|end|> <|start|> "assistant" <|channel|> "final" '
             '<|message|> "Hello!"')
    _, more = chat(engine, [*question, ChatMessage("assistant", cut)], go_on,
                   continue_answer=True)
    assert cut + more.text == "<think>\nThe user greets me.\n</think>\n\nHello!"
    # cut in the answer: it goes on in the final channel
    _, more = chat(engine, [*question, ChatMessage("assistant", cut + " greets me.\n</think>\n\nHel")],
                   'root ::= "lo!"', continue_answer=True)
    assert more.text == "lo!"


# --- DeepSeek -------------------------------------------------------------------------------


def test_deepseek_call_markers_stay_in_the_text_so_the_call_is_read(
        engine: EngineClient, server: OpenAIServer, models: dict[str, Path]) -> None:
    load(engine, models["tiny-deepseek-v3"])
    # DeepSeek-V3.1's call, its markers the vocabulary's special tokens
    grammar = ('root ::= <｜tool▁calls▁begin｜> <｜tool▁call▁begin｜> "get_weather" <｜tool▁sep｜> '
               '"{\\"city\\": \\"Paris\\"}" <｜tool▁call▁end｜> <｜tool▁calls▁end｜>')
    _, result = chat(engine, [ChatMessage("user", "Weather in Paris?")], grammar)
    assert result.text == ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
                           '{"city": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    # the end of the sentence is a special token too, and not one of the markers: left out
    assert "end▁of▁sentence" not in result.text
    # DeepSeek's template lists no tools: the system prompt does, with a call as the template
    # writes one (as llama-server does); the call comes back as tool_calls, and goes back
    client = client_for(server)

    def ask(**options: Any) -> Any:
        return client.chat.completions.create(model="x", messages=user("Weather in Paris?"),
                                              temperature=0, **options)

    plain = ask(max_tokens=1).usage
    told = ask(max_tokens=1, tools=WEATHER).usage
    assert plain is not None and told is not None
    assert told.prompt_tokens > plain.prompt_tokens + 50
    choice = ask(tools=WEATHER, extra_body={"grammar": grammar}).choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    after = client.chat.completions.create(model="x", tools=WEATHER, max_tokens=1, messages=[
        *user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"celsius": 21}'}]).usage
    assert after is not None and after.prompt_tokens > told.prompt_tokens + 10


# DeepSeek-V3.1's template as llama.cpp keeps it: it joins a call's arguments as text
TEXT_ARGUMENTS = ("{%- for m in messages %}{%- for t in m['tool_calls'] or [] %}"
                  "{{- '<｜tool▁call▁begin｜>' + t['function']['name'] + '<｜tool▁sep｜>' + "
                  "t['function']['arguments'] + '<｜tool▁call▁end｜>' }}{%- endfor %}{%- endfor %}")


@pytest.mark.parametrize(("template", "objects"), [
    (TEXT_ARGUMENTS, False), (FAMILIES["gpt-oss"].chat_template, True)],
    ids=["deepseek-v3.1", "gpt-oss"])
def test_a_calls_arguments_go_to_the_template_as_it_takes_them(template: str,
                                                                objects: bool) -> None:
    formatters = {g: Jinja2ChatFormatter(template=template, eos_token="", bos_token="",
                                         add_generation_prompt=g) for g in (True, False)}
    caps = TemplateCaps.probe(template, lambda m, g: formatters[g](messages=m).prompt, "")
    assert caps.object_arguments is objects
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    messages = [template_message(m, object_arguments=caps.object_arguments) for m in (
        ChatMessage("user", "Weather?"), ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", "21", tool_call_id="call_1"))]
    assert '"city": "Oslo"' in formatters[True](messages=messages, tools=WEATHER).prompt


def test_a_kimi_k2_call_becomes_tool_calls(engine: EngineClient, server: OpenAIServer,
                                          models: dict[str, Path]) -> None:
    load(engine, models["tiny-kimi-k2"])
    grammar = ('root ::= "Checking." <|tool_calls_section_begin|> <|tool_call_begin|> '
               '"functions.get_weather:0" <|tool_call_argument_begin|> "{\\"city\\": \\"Oslo\\"}" '
               '<|tool_call_end|> <|tool_calls_section_end|>')
    choice = client_for(server).chat.completions.create(
        model="x", messages=user("Weather in Oslo?"), tools=WEATHER, temperature=0,
        extra_body={"grammar": grammar}).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    assert [(c.function.name, json.loads(c.function.arguments))
            for c in choice.message.tool_calls or []] == [("get_weather", {"city": "Oslo"})]


def test_a_raw_completion_shows_no_special_tokens(engine: EngineClient,
                                                   models: dict[str, Path]) -> None:
    load(engine, models["tiny-deepseek-v3"])
    grammar = 'root ::= <｜tool▁calls▁begin｜> "get_weather" <｜tool▁sep｜> "{}"'
    _, result = chat(engine, [], grammar, prompt="<｜User｜>Weather?<｜Assistant｜></think>")
    assert result.text == "get_weather{}"  # as llama.cpp detokenizes: special tokens left out


def test_earlier_reasoning_must_be_text(engine: EngineClient, server: OpenAIServer,
                                        models: dict[str, Path]) -> None:
    load(engine, models["tiny-gpt-oss"])
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(server).chat.completions.create(
            model="x", messages=[*user("Hi"), {"role": "assistant", "content": "Hello",
                                               "reasoning_content": 42}, *user("Again")])
    assert caught.value.param == "messages[1].reasoning_content"


@pytest.mark.parametrize("family", ["tiny-deepseek-v3", "tiny-kimi-k2", "tiny-glm-4.5"])
@pytest.mark.parametrize("tool_choice", ["required", "named"])
def test_a_required_call_is_one_call_in_the_models_own_markup(
        engine: EngineClient, server: OpenAIServer, models: dict[str, Path], family: str,
        tool_choice: str) -> None:
    """tool_choice "required" or a function's name: the engine's grammar writes the family's
    call markup (its special tokens) around arguments that follow the function's schema."""
    load(engine, models[family])
    tools = [*WEATHER, {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {
            # bounded: random weights rarely end a string by themselves
            "zone": {"type": "string", "maxLength": 12}, "hours": {"type": "integer"}},
            "required": ["zone"]}}}]
    choice_field: Any = "required" if tool_choice == "required" else {
        "type": "function", "function": {"name": "get_time"}}
    choice = client_for(server).chat.completions.create(
        model="x", messages=user("What now?"), tools=tools, tool_choice=choice_field,
        temperature=0, max_tokens=120).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    if tool_choice == "named" or call.function.name == "get_time":
        assert call.function.name == "get_time" and isinstance(arguments["zone"], str)
        assert set(arguments) <= {"zone", "hours"}
        assert isinstance(arguments.get("hours", 0), int)
    else:
        assert call.function.name == "get_weather" and arguments["city"] in ("Paris", "Oslo")
    assert "<" not in (choice.message.content or "")


def test_deepseek_r1_templates_get_the_fenced_call_form() -> None:
    """V3/R1 templates write ``function<｜tool▁sep｜>NAME`` and the arguments in a ```json
    fence; V3.1's ``NAME<｜tool▁sep｜>{...}``: the grammar follows the template."""
    from app.engine.tool_calls import ToolFormat, parse_block
    from app.engine.tool_grammar import call_grammar

    fenced = call_grammar(ToolFormat.DEEPSEEK, Sampling(), WEATHER, None, "... ```json ...")
    plain = call_grammar(ToolFormat.DEEPSEEK, Sampling(), WEATHER, None, "...")
    assert '"function" <｜tool▁sep｜> "get_weather" "\\n```json\\n"' in fenced
    assert '"get_weather" <｜tool▁sep｜> args0' in plain
    # what each grammar makes parses to the same call
    for text in ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n'
                 '```json\n{"city": "Oslo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
                 '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
                 '{"city": "Oslo"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'):
        (call,) = parse_block(ToolFormat.DEEPSEEK, text) or []
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}


def test_enable_thinking_reaches_deepseeks_template_as_thinking(
        engine: EngineClient, server: OpenAIServer, models: dict[str, Path]) -> None:
    """DeepSeek-V3.1's template reads ``thinking``; clients send ``enable_thinking`` (as to
    llama-server, which passes it on under both names): thinking on opens ``<think>``."""
    load(engine, models["tiny-deepseek-v3"])
    client = client_for(server)

    def prompt_and_answer(**extra: Any) -> tuple[int, str]:
        got = client.chat.completions.create(model="x", messages=user("Why?"), max_tokens=1,
                                             temperature=0, extra_body=extra)
        assert got.usage is not None
        return got.usage.prompt_tokens, got.choices[0].message.content or ""

    off, _ = prompt_and_answer()  # not thinking: the template closes an empty <think></think>
    on, _ = prompt_and_answer(enable_thinking=True)
    assert on == prompt_and_answer(chat_template_kwargs={"thinking": True})[0]
    assert on < off  # "<think>" opened instead of "<think></think>" written
    assert prompt_and_answer(enable_thinking=False)[0] == off
