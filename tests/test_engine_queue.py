"""Chats of several clients share the engine: they wait their turn, round-robin, and a chat
cancelled (or whose client left) while waiting never runs.

Real engine process, real sockets, the tiny synthetic model. The engine generates one chat at
a time, so which chat runs is observable without timing: only the running one streams tokens.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.engine.client import ChatStream, EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling
from app.engine.scheduler import FairQueue
from app.errors import EngineBusyError

DEADLINE_S = 60.0
LONG_CONTEXT = 65536  # an endless answer outlasts any test step


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def question(text: str, max_tokens: int) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=text)],
                      sampling=Sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))


def endless(text: str = "Go on forever") -> ChatParams:
    return question(text, 10**9)


def load(engine: EngineClient, model: Path) -> None:
    engine.load(LoadParams(model=str(model),
                           placement=PlacementPlan(n_ctx=LONG_CONTEXT, n_threads=2)))


@pytest.fixture(scope="module")
def engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    with EngineClient.spawn() as client:
        load(client, tiny_moe_gguf)
        yield client


@pytest.fixture
def other(engine: EngineClient) -> Iterator[EngineClient]:
    """A second client of the same engine (as the OpenAI server is beside the GUI)."""
    with engine.connect_again("second client") as client:
        yield client


def started(stream: ChatStream) -> None:
    next(iter(stream))  # the first token: this chat is the one running


def first_tokens(streams: dict[str, ChatStream]) -> queue.Queue[str]:
    """Names of the streams, in the order their first token arrives (one thread each)."""
    order: queue.Queue[str] = queue.Queue()
    for name, stream in streams.items():
        threading.Thread(target=lambda n=name, s=stream: (started(s), order.put(n)),
                         daemon=True).start()
    return order


def test_waiting_chats_take_turns_round_robin_over_clients(engine: EngineClient,
                                                           other: EngineClient) -> None:
    running = engine.chat(endless())
    started(running)
    # the first client queues two more before the second client queues one
    waiting = {"first-1": engine.chat(endless("one")), "first-2": engine.chat(endless("two"))}
    wait_until(lambda: engine.stats().chats_waiting == 2, "two waiting chats")
    waiting["second-1"] = other.chat(endless("three"))
    stats = other.stats()
    assert (stats.chats_running, stats.chats_waiting) == (1, 3)
    order = first_tokens(waiting)
    running.cancel()
    assert running.result.finish_reason == "cancelled"
    runs = []
    for _ in waiting:
        name = order.get(timeout=DEADLINE_S)
        runs.append(name)
        waiting[name].cancel()
        assert waiting[name].result.finish_reason == "cancelled"
        assert waiting[name].result.completion_tokens >= 1  # it ran
    # first in, but the first client has just been served: the second client goes first
    assert runs == ["second-1", "first-1", "first-2"]
    assert engine.stats().chats_running == 0


def test_a_chat_that_waited_for_a_slot_says_how_long_apart_from_its_first_token(
        engine: EngineClient, other: EngineClient) -> None:
    running = engine.chat(endless())
    started(running)
    sent = time.perf_counter()
    waiting = other.chat(question("after you", max_tokens=4))
    wait_until(lambda: engine.stats().chats_waiting == 1, "the chat to wait")
    time.sleep(0.3)
    running.cancel()
    received = []
    for _token in waiting:
        received.append(time.perf_counter())
    result = waiting.result
    assert result.queued_s >= 0.3  # the slot was taken for at least that long
    assert 0 < result.ttft_s < result.queued_s
    # the client's time to first token holds both, and the way across the socket
    assert received[0] - sent >= result.queued_s + result.ttft_s
    alone = other.chat(question("no wait", max_tokens=2)).result
    assert 0 < alone.queued_s < 0.3  # only the template and the tokenizer

def test_a_chat_cancelled_while_waiting_never_runs(engine: EngineClient,
                                                   other: EngineClient) -> None:
    running = engine.chat(endless())
    started(running)
    waiting = other.chat(question("never mind", max_tokens=8))
    wait_until(lambda: engine.stats().chats_waiting == 1, "the chat to wait")
    assert other.cancel(waiting.request_id) is True
    ended = waiting.result
    assert (ended.finish_reason, ended.text, ended.completion_tokens) == ("cancelled", "", 0)
    assert engine.stats().chats_waiting == 0
    assert other.cancel(waiting.request_id) is False  # already over
    running.cancel()
    running.result  # noqa: B018 (wait for its end)
    # the routing counts see every token evaluated: the next chat's own, and nothing else
    before = engine.routing().tokens
    after = other.chat(question("and now?", max_tokens=4)).result
    evaluated = after.prompt_tokens - after.cached_tokens + after.completion_tokens - 1
    assert engine.routing().tokens - before == evaluated


def test_a_client_that_leaves_takes_its_waiting_chats_with_it(engine: EngineClient) -> None:
    running = engine.chat(endless())
    started(running)
    leaving = engine.connect_again("leaves")
    leaving.chat(endless("one"))
    leaving.chat(endless("two"))
    wait_until(lambda: engine.stats().chats_waiting == 2, "its chats to wait")
    leaving.close()
    # gone while the first client's chat still runs: dropped, not run
    wait_until(lambda: engine.stats().chats_waiting == 0, "its chats to be dropped")
    assert engine.stats().chats_running == 1
    running.cancel()
    assert running.result.finish_reason == "cancelled"
    assert engine.chat(question("still here?", max_tokens=3)).result.finish_reason == "length"


def test_load_and_unload_never_wait_they_are_refused_while_chats_run_or_wait(
        engine: EngineClient, other: EngineClient, tiny_moe_gguf: Path) -> None:
    running = engine.chat(endless())
    started(running)
    waiting = engine.chat(question("after you", max_tokens=3))
    with pytest.raises(EngineBusyError, match="1 waiting"):
        load(other, tiny_moe_gguf)
    with pytest.raises(EngineBusyError):
        other.unload()
    running.cancel()
    assert waiting.result.finish_reason == "length"  # the model it waited for is still there
    load(other, tiny_moe_gguf)  # and with nothing running or waiting, a load goes ahead


def test_shutdown_ends_waiting_chats_as_cancelled(tiny_moe_gguf: Path) -> None:
    with EngineClient.spawn() as engine:
        load(engine, tiny_moe_gguf)
        running = engine.chat(endless())
        started(running)
        waiting = engine.chat(endless("never"))
        wait_until(lambda: engine.stats().chats_waiting == 1, "the chat to wait")
        engine.shutdown()
        assert waiting.result.finish_reason == "cancelled"
        assert waiting.result.completion_tokens == 0
        assert running.result.finish_reason == "cancelled"


def test_fair_queue_serves_the_least_recently_served_owner_first() -> None:
    fair: FairQueue[str, str] = FairQueue()
    for owner, item in [("gui", "g1"), ("http", "h1"), ("http", "h2"), ("http", "h3"),
                        ("cli", "c1"), ("gui", "g2")]:
        fair.push(owner, item)
    assert len(fair) == 6 and fair.count("http") == 3
    assert [fair.pop() for _ in range(3)] == [("gui", "g1"), ("http", "h1"), ("cli", "c1")]
    assert fair.remove("http", lambda item: item == "h3") == "h3"
    assert fair.remove("http", lambda item: item == "h3") is None
    fair.push("cli", "c2")
    assert fair.drain() == [("gui", "g2"), ("http", "h2"), ("cli", "c2")]
    assert fair.pop() is None and len(fair) == 0
    fair.push("gone", "x")
    assert fair.forget("gone") == ["x"] and len(fair) == 0
