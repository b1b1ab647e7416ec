"""Chatting with the real engine: template, stop strings, KV reuse, routing telemetry, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFReader

from app.engine.client import EngineClient
from app.engine.generation import StopMatcher
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, ChatResult, LoadParams, Sampling, Token
from app.errors import EngineError, TelemetryUnavailableError


def load(engine: EngineClient, model: Path, telemetry: bool = True, **plan: object) -> None:
    placement = PlacementPlan(**{"n_ctx": 1024, "n_threads": 2, **plan})  # type: ignore[arg-type]
    engine.load(LoadParams(model=str(model), placement=placement, telemetry=telemetry))


def ask(engine: EngineClient, text: str, max_tokens: int = 16, stop: list[str] | None = None,
        history: list[ChatMessage] | None = None) -> tuple[str, ChatResult]:
    messages = (history or []) + [ChatMessage(role="user", content=text)]
    stream = engine.chat(ChatParams(
        messages=messages, stop=stop or [],
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
    ))
    streamed = "".join(token.text for token in stream)
    return streamed, stream.result


def test_routing_counts_every_token_of_every_layer(engine: EngineClient,
                                                   tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf)
    _, first = ask(engine, "How do experts get routed?", max_tokens=12)
    snapshot = engine.routing()
    # the prompt is prefilled in one decode call, then every generated token but the last
    # is decoded; llama.cpp runs the last layer only for the one token per call whose logits
    # it needs
    evaluated = first.prompt_tokens + first.completion_tokens - 1
    decode_calls = first.completion_tokens
    assert snapshot.tokens == evaluated
    assert snapshot.layers == [0, 1, 2, 3] and snapshot.n_expert == 8
    assert [sum(row) for row in snapshot.counts] == [evaluated * 2] * 3 + [decode_calls * 2]
    # two distinct experts a token: none counted more often than tokens were routed
    assert all(max(row) <= evaluated for row in snapshot.counts)
    assert snapshot.hit_rate == 0.0  # no GPU here: every expert is read from RAM
    assert snapshot.layer_hit_rate == [0.0] * 4

    _, second = ask(engine, "And then?", max_tokens=8,
                    history=[ChatMessage(role="user", content="How do experts get routed?"),
                             ChatMessage(role="assistant", content=first.text)])
    assert second.cached_tokens > 0  # the first turn's prompt stayed in the KV cache
    evaluated += second.prompt_tokens - second.cached_tokens + second.completion_tokens - 1
    assert engine.routing().tokens == evaluated


def test_routing_capture_changes_no_answer(engine: EngineClient, tiny_moe_gguf: Path) -> None:
    answers = []
    for telemetry in (False, True, False):
        load(engine, tiny_moe_gguf, telemetry=telemetry)
        answers.append(ask(engine, "Does counting experts change the answer?", max_tokens=24)[0])
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("active", [1, 4])
def test_active_experts_override_changes_what_is_routed(engine: EngineClient,
                                                        tiny_moe_gguf: Path, active: int) -> None:
    load(engine, tiny_moe_gguf, n_expert_used=active)
    _, result = ask(engine, "Count my experts", max_tokens=6)
    snapshot = engine.routing()
    assert snapshot.n_expert_used == active
    evaluated = result.prompt_tokens + result.completion_tokens - 1
    last_layer = result.completion_tokens  # one output token per decode call
    assert [sum(row) for row in snapshot.counts] == [evaluated * active] * 3 + [last_layer * active]


def test_skewed_model_sends_most_tokens_to_its_hot_experts(engine: EngineClient,
                                                           skewed_moe_gguf: Path) -> None:
    field = GGUFReader(skewed_moe_gguf).fields["moedesk.synthetic.hot_experts"]
    hot = list(field.contents())
    load(engine, skewed_moe_gguf)
    ask(engine, "Tell me something about mixture of experts models", max_tokens=24)
    snapshot = engine.routing()
    n_hot = len(hot) // len(snapshot.layers)  # stored flat: n_hot ids per layer
    for layer, row in zip(snapshot.layers, snapshot.counts, strict=True):
        hot_here = hot[layer * n_hot:(layer + 1) * n_hot]
        share = sum(row[e] for e in hot_here) / sum(row)
        assert share > 0.5, f"layer {layer}: hot experts got {share:.0%}"


def test_routing_needs_telemetry_at_load(engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf, telemetry=False)
    ask(engine, "hello", max_tokens=2)
    with pytest.raises(TelemetryUnavailableError):
        engine.routing()


def test_streamed_tokens_are_the_answer_and_stop_strings_cut_it(engine: EngineClient,
                                                                 tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf)
    streamed, full = ask(engine, "Write a long story", max_tokens=40)
    assert streamed == full.text and full.finish_reason == "length"
    assert full.completion_tokens == 40 and full.prefill_tps > 0 and full.decode_tps > 0
    assert 0 < full.ttft_s
    # the same greedy answer again, from a fresh context, cut at a piece of its middle
    cut_at = full.text[len(full.text) // 2: len(full.text) // 2 + 3]
    load(engine, tiny_moe_gguf)
    streamed, cut = ask(engine, "Write a long story", max_tokens=40, stop=[cut_at])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(cut_at)] == streamed


def test_decode_speed_counts_decode_steps_not_tokens(engine: EngineClient,
                                                   tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf)
    # the only token comes from the prefill's logits: nothing was decoded, so no decode speed
    _, one = ask(engine, "Hi", max_tokens=1)
    assert one.completion_tokens == 1 and one.prefill_tps > 0 and one.decode_tps == 0.0
    _, two = ask(engine, "Hi again", max_tokens=2)
    assert two.completion_tokens == 2 and two.decode_tps > 0


def test_every_token_is_an_event_when_sampled_also_one_without_text(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf)

    def chat(stop: list[str]) -> tuple[list[Token], ChatResult]:
        stream = engine.chat(ChatParams(
            messages=[ChatMessage(role="user", content="Write a long story")], stop=stop,
            sampling=Sampling(temperature=0.0, max_tokens=40, ignore_eos=True)))
        return list(stream), stream.result

    tokens, result = chat([])
    # one event a token, counted from 1 (then perhaps the held-back tail, with the last count)
    assert [t.n for t in tokens][:40] == list(range(1, 41)) and len(tokens) in (40, 41)
    assert all(t.n == 40 for t in tokens[40:])
    assert "".join(t.text for t in tokens) == result.text
    # a stop string that the first token's text begins holds that text back: its event still
    # comes, empty, so the first event is the first token (the text follows with a later one)
    held, again = chat([tokens[0].text + "\x01"])
    assert (held[0].n, held[0].text) == (1, "")
    assert "".join(t.text for t in held) == again.text == result.text


def test_stop_matcher_holds_back_a_partial_stop_string() -> None:
    matcher = StopMatcher(["</answer>"])
    assert matcher.feed("The result is 4</ans") == ("The result is 4", False)
    assert matcher.feed("wer> trailing") == ("", True)
    assert matcher.text == "The result is 4"
    assert StopMatcher(["STOP"]).feed("no stop here") == ("no stop here", False)


@pytest.mark.parametrize("placement", [[], ["--no-repack"]])
def test_cli_chat_answers_and_prints_speed(tiny_moe_gguf: Path, placement: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "chat", "--model", str(tiny_moe_gguf), "--ctx", "512",
         "--threads", "2", "--max-tokens", "8", "--temp", "0", *placement],
        input="Hello there\nWhat now?\n\n", capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("decode") == 2  # one stats line per answer
    assert "qwen3moe, 4 layers, 8 experts (2 active)" in done.stderr
    assert "routed_experts" in done.stderr


def test_cli_chat_reports_a_bad_model_in_plain_words(tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some notes")
    done = subprocess.run([sys.executable, "-m", "app.cli", "chat", "--model", str(bad)],
                          input="", capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "not a GGUF model" in done.stderr and "Traceback" not in done.stderr


def test_cli_chat_loads_a_library_model_with_the_plan_the_app_would_load(tiny_moe_gguf: Path,
                                                                         tmp_path: Path) -> None:
    env = {**os.environ, "MOEDESK_HOME": str(tmp_path)}

    def cli(*args: str, chat_input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], input=chat_input,
                              capture_output=True, text=True, timeout=120, env=env)

    assert cli("library", "import", str(tiny_moe_gguf)).returncode == 0
    name = tiny_moe_gguf.name.removesuffix(".gguf")
    done = cli("chat", "--model", name, "--max-tokens", "4", "--threads", "2", chat_input="Hi\n\n")
    assert done.returncode == 0, done.stderr
    # no placement flag: the advisor's plan (no autotune here), with the option given applied
    assert "placement (advisor, with your options): context 4,096" in done.stderr
    assert "threads 2" in done.stderr and "decode" in done.stderr
    # naming where the experts go makes it the user's own placement
    done = cli("chat", "--model", name, "--experts-in-ram", "all", "--ctx", "512", "--max-tokens", "2",
               chat_input="Hi\n\n")
    assert done.returncode == 0, done.stderr
    assert "placement (as given): context 512, GPU layers all, routed experts in RAM: all" in done.stderr
    # a name that is neither a file nor in the library says where the names are
    done = cli("chat", "--model", "someone/model:Q4_K_M")
    assert done.returncode == 1 and "moedesk-cli library" in done.stderr
    assert "Traceback" not in done.stderr


def test_continue_answer_goes_on_from_the_last_word(engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf)
    question = [ChatMessage("user", "Tell me a long story")]

    def greedy(messages: list[ChatMessage], n: int, **more: object) -> ChatResult:
        stream = engine.chat(ChatParams(messages=messages, sampling=Sampling(
            temperature=0.0, max_tokens=n, ignore_eos=True), **more))  # type: ignore[arg-type]
        for _ in stream:
            pass
        return stream.result

    partial = "Once upon a time"
    more = greedy([*question, ChatMessage("assistant", partial)], 12, continue_answer=True)
    # the same as the raw text of the chat through its template (ChatML-like here) with the
    # answer so far after the generation prompt
    raw = greedy([], 12, prompt="<|im_start|>user\nTell me a long story<|im_end|>\n"
                               "<|im_start|>assistant\n" + partial)
    assert more.text == raw.text and more.prompt_tokens == raw.prompt_tokens
    fresh = greedy(question, 12)
    assert more.prompt_tokens > fresh.prompt_tokens and more.text != fresh.text
    with pytest.raises(EngineError, match="continue_answer needs the answer"):
        greedy(question, 4, continue_answer=True)
