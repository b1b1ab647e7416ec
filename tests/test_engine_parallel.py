"""Parallel sequences: a model loaded with n_parallel=N generates N chats at once.

Real engine process, real llama.cpp, the tiny synthetic model. Which chats run is seen in
the engine's own figures (``chats_running``, ``chats_waiting``) and in the order token events
arrive, never in timings. Answers that only a cancel ends (``endless``) keep chats running
for as long as a test step needs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.advisor.memory import memory_by_device
from app.engine.client import ChatStream, EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling, Token
from app.errors import PlacementError
from app.gguf.info import read_model
from tests.test_engine_queue import DEADLINE_S, endless, question, started, wait_until
from tests.test_openai_server import cli_serve

N_CTX = 32768  # per sequence: an endless answer outlasts any test step
SAME_TOKENS = 24  # greedy tokens compared with the same chat run alone


def load(engine: EngineClient, model: Path, n_parallel: int, **plan: Any) -> LoadResult:
    placement = PlacementPlan(**{"n_ctx": N_CTX, "n_threads": 2, "n_parallel": n_parallel,
                                 **plan})
    return engine.load(LoadParams(model=str(model), placement=placement))


@pytest.fixture(scope="module")
def engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    """An engine with two slots: two chats at once."""
    with EngineClient.spawn() as client:
        loaded = load(client, tiny_moe_gguf, n_parallel=2)
        assert (loaded.n_parallel, loaded.n_ctx) == (2, N_CTX)  # each sequence its own n_ctx
        yield client


class Recorder:
    """Reads streams on threads of their own, keeping each one's tokens."""

    def __init__(self) -> None:
        self.tokens: dict[str, list[Token]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def read(self, name: str, stream: ChatStream) -> None:
        self.tokens[name] = []

        def drain() -> None:
            for token in stream:
                with self._lock:
                    self.tokens[name].append(token)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        self._threads.append(thread)

    def count(self, name: str) -> int:
        with self._lock:
            return len(self.tokens[name])

    def join(self) -> None:
        for thread in self._threads:
            thread.join(3 * DEADLINE_S)  # a long answer on a busy machine
            assert not thread.is_alive(), "a stream did not end in time"

    def first(self, name: str, n: int) -> list[tuple[int, str]]:
        return [(t.n, t.text) for t in self.tokens[name] if t.n <= n]


def alone(engine: EngineClient, text: str, n: int) -> list[tuple[int, str]]:
    """The first ``n`` tokens of a greedy answer, with no other chat running."""
    stream = engine.chat(question(text, n + 1))
    return [(t.n, t.text) for t in stream if t.n <= n]


def overlapped(order: list[int], i: int) -> int:
    """Pieces of other answers that arrived while answer ``i`` was arriving."""
    first, last = order.index(i), len(order) - 1 - order[::-1].index(i)
    return sum(j != i for j in order[first:last])


def test_two_chats_stream_at_once_each_as_it_would_alone(engine: EngineClient,
                                                       tiny_moe_gguf: Path) -> None:
    # Each run on a fresh context (a new load). Greedy answers are then the same token for
    # token: on a CPU, llama.cpp computes each row of a batch with the same arithmetic
    # whatever else is in it, and in a fresh KV cache each sequence's cells lie in position
    # order, so attention adds the same terms in the same order (the other sequence's cells
    # are masked out and skipped). In a cache where freed cells are reused, a sequence's
    # cells may lie out of order and attention's f16 sums round differently: random weights
    # have near ties that such a rounding flips, so only fresh runs are compared. Compared
    # over the first tokens only: on a GPU, kernels chosen by batch size may round apart.
    expected = {}
    for name in ("first", "second"):
        load(engine, tiny_moe_gguf, n_parallel=2)
        expected[name] = alone(engine, name, SAME_TOKENS)
    load(engine, tiny_moe_gguf, n_parallel=2)
    streams = {name: engine.chat(endless(name)) for name in ("first", "second")}
    record = Recorder()
    for name, stream in streams.items():
        record.read(name, stream)
    # both stream, neither waiting for the other to end (one slot: the second would get no
    # token before the first ended, and endless answers end only when cancelled)
    wait_until(lambda: min(record.count(n) for n in streams) > SAME_TOKENS, "both to stream")
    stats = engine.stats()
    assert (stats.chats_running, stats.chats_waiting, stats.n_parallel) == (2, 0, 2)
    for stream in streams.values():
        stream.cancel()
    record.join()
    results = {name: stream.result for name, stream in streams.items()}
    assert all(r.finish_reason == "cancelled" for r in results.values())
    for name in streams:
        assert record.first(name, SAME_TOKENS) == expected[name]
        assert "".join(t.text for t in record.tokens[name]) == results[name].text
    # every token was evaluated once, in batches shared with the other chat: the whole
    # prompt, then each generated token but the last (sampled, never decoded)
    evaluated = sum(r.prompt_tokens + r.completion_tokens - 1 for r in results.values())
    routing = engine.routing()
    assert routing.tokens == evaluated
    # each of those tokens' experts counted in every layer (two of eight per token), whether
    # a step's ids were copied out (prompt batches) or written in place (two decoding chats);
    # the last layer only for the tokens sampled from, one per answer token
    sampled = sum(r.completion_tokens for r in results.values())
    assert [sum(row) for row in routing.counts] == [evaluated * 2] * 3 + [sampled * 2]


def test_each_conversation_finds_its_own_cached_turn(engine: EngineClient,
                                                     tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf, n_parallel=2)
    first_turns = {name: engine.chat(question(name, 12)).result
                   for name in ("Tell me about routers", "What is a shared expert")}
    for name, turn in first_turns.items():  # the two conversations go on, in turn
        history = [ChatMessage("user", name), ChatMessage("assistant", turn.text)]
        follow_up = engine.chat(ChatParams(
            messages=[*history, ChatMessage("user", "go on")],
            sampling=Sampling(temperature=0.0, max_tokens=4, ignore_eos=True))).result
        # its slot still holds its first turn: the prompt and more are not evaluated again
        assert follow_up.cached_tokens >= turn.prompt_tokens


def test_cancelling_one_chat_leaves_the_other_to_finish(engine: EngineClient) -> None:
    stopped = engine.chat(endless("stopped"))
    started(stopped)
    finishing = engine.chat(question("finishing", 800))
    record = Recorder()
    record.read("finishing", finishing)
    wait_until(lambda: record.count("finishing") > 0, "the second chat to stream")
    stopped.cancel()
    assert stopped.result.finish_reason == "cancelled"
    # the other one is still at it (800 tokens take far longer than a cancel)
    assert engine.stats().chats_running == 1
    record.join()  # it ends on its own: its stream ends, then its result is there
    result = finishing.result
    assert (result.finish_reason, result.completion_tokens) == ("length", 800)
    assert "".join(t.text for t in record.tokens["finishing"]) == result.text
    assert engine.stats().chats_running == 0


def test_a_third_chat_waits_for_a_free_slot(engine: EngineClient) -> None:
    one, two = engine.chat(endless("one")), engine.chat(endless("two"))
    started(one)
    started(two)
    with engine.connect_again("another client") as other:
        third = other.chat(question("three", 5))
        wait_until(lambda: engine.stats().chats_waiting == 1, "the third chat to wait")
        assert engine.stats().chats_running == 2
        one.cancel()  # a slot frees: the third chat takes it, beside the second
        assert third.result.finish_reason == "length"
        assert third.result.completion_tokens == 5
        assert engine.stats().chats_running == 1
        two.cancel()
        assert two.result.finish_reason == "cancelled"
        assert one.result.finish_reason == "cancelled"


def test_stop_strings_and_lengths_are_per_chat(engine: EngineClient, tiny_moe_gguf: Path) -> None:
    load(engine, tiny_moe_gguf, n_parallel=2)  # fresh contexts: see the first test
    full = engine.chat(question("cut me", 40)).result
    cut_at = full.text[len(full.text) // 2: len(full.text) // 2 + 3]
    load(engine, tiny_moe_gguf, n_parallel=2)
    other = engine.chat(endless("beside"))
    started(other)
    cut = engine.chat(ChatParams(messages=[ChatMessage("user", "cut me")], stop=[cut_at],
                                 sampling=Sampling(temperature=0.0, max_tokens=40,
                                                   ignore_eos=True)))
    short = engine.chat(question("short", 4))  # waits: both slots are taken
    assert cut.result.finish_reason == "stop"
    assert cut.result.text == full.text[: full.text.index(cut_at)]
    assert (short.result.finish_reason, short.result.completion_tokens) == ("length", 4)
    assert engine.stats().chats_running == 1  # the endless one, untouched by the others
    other.cancel()
    assert other.result.finish_reason == "cancelled"


def test_the_kv_cache_holds_n_ctx_for_each_sequence(tiny_moe_gguf: Path) -> None:
    with EngineClient.spawn() as engine:
        kv = {}
        for n_parallel in (1, 3):
            plan = PlacementPlan(n_ctx=1024, n_threads=2, n_parallel=n_parallel)
            loaded = engine.load(LoadParams(model=str(tiny_moe_gguf), placement=plan))
            assert (loaded.n_ctx, loaded.n_parallel) == (1024, n_parallel)
            kv[n_parallel] = sum(a.bytes for a in loaded.allocations if a.kind == "kv_cache")
            (cpu,) = memory_by_device(read_model(tiny_moe_gguf), plan, [])
            assert cpu.kv == pytest.approx(kv[n_parallel], rel=0.01)  # the advisor counts it
        assert kv[3] == pytest.approx(3 * kv[1], rel=0.01)
        with pytest.raises(PlacementError, match="1 to 256"):
            load(engine, tiny_moe_gguf, n_parallel=0)
        with pytest.raises(PlacementError, match="batch of 4 tokens"):
            load(engine, tiny_moe_gguf, n_parallel=8, n_batch=4)


def test_cli_serve_parallel_answers_four_requests_two_at_a_time(tiny_moe_gguf: Path) -> None:
    options = ("--ctx", "2048", "--threads", "2", "--parallel", "2")
    with cli_serve(tiny_moe_gguf, *options, api_key="sk-test") as (serve, line):
        assert line.startswith("serving "), line
        client = openai.OpenAI(base_url=line.split()[-1], api_key="sk-test", max_retries=0)
        model = client.models.list().data[0].id
        order: list[int] = []
        usage: dict[int, int] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def ask(i: int) -> None:
            try:
                stream = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"Question {i}"}],
                    max_tokens=120, temperature=0, extra_body={"ignore_eos": True},
                    stream=True, stream_options={"include_usage": True})
                for chunk in stream:
                    with lock:
                        if chunk.choices and chunk.choices[0].delta.content:
                            order.append(i)
                        if chunk.usage is not None:
                            usage[i] = chunk.usage.completion_tokens
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(3 * DEADLINE_S)
            assert not thread.is_alive(), "a request did not end in time"
        assert not errors, errors
        assert usage == {i: 120 for i in range(4)}
        # two at a time: while an answer arrives, much of another one arrives too (one slot
        # would give each answer to the end before the next one's first piece, give or take
        # a reading thread's lag); the last one may end alone
        assert sum(overlapped(order, i) > 50 for i in range(4)) >= 3
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=DEADLINE_S) == 0
        assert serve.stderr is not None
        assert "for each of 2 requests at once" in serve.stderr.read()
