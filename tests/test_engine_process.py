"""The engine process as a client sees it: spawn, load, chat, cancel, watch, crash, shut down.

Real processes, real sockets, a tiny synthetic model. Long answers are made long by a large
context and max_tokens; every wait has a generous deadline and nothing asserts a speed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.process import EngineProcess
from app.engine.protocol import (
    ChatMessage,
    ChatParams,
    EngineStats,
    LoadParams,
    Progress,
    RoutingSnapshot,
    Sampling,
    SubscribeParams,
)
from app.errors import (
    EngineBusyError,
    EngineDiedError,
    NoModelLoadedError,
)

DEADLINE_S = 60.0
LONG_CONTEXT = 65536  # room for an answer that outlasts any test step on a slow machine


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def load_tiny(engine: EngineClient, model: Path, n_ctx: int = 1024,
              on_progress: Callable[[Progress], None] | None = None) -> None:
    engine.load(LoadParams(model=str(model), placement=PlacementPlan(n_ctx=n_ctx, n_threads=2)),
                on_progress=on_progress)


def question(text: str = "Tell me about experts", max_tokens: int = 16) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=text)],
                      sampling=Sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))


def endless() -> ChatParams:
    """An answer that only a cancel (or the context filling up) ends."""
    return question("Go on forever", max_tokens=10**9)


@pytest.fixture(scope="module")
def engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    with EngineClient.spawn() as client:
        load_tiny(client, tiny_moe_gguf, n_ctx=LONG_CONTEXT)
        yield client


@pytest.fixture
def own_engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    """An engine this test may kill or shut down."""
    with EngineClient.spawn() as client:
        load_tiny(client, tiny_moe_gguf, n_ctx=LONG_CONTEXT)
        yield client


# --- a normal session ---------------------------------------------------------------------------


def test_spawned_engine_reports_its_build_and_logs_to_a_file() -> None:
    with EngineClient.spawn() as engine:
        info = engine.info()
        assert "CPU" in info.backends
        assert any(d.kind == "cpu" and d.memory_total > 0 for d in info.devices)
        assert engine.process is not None and engine.pid == engine.process.popen.pid
        assert engine.stats().state == "idle" and engine.stats().model is None
        with pytest.raises(NoModelLoadedError):
            engine.routing()
        log_path = engine.log_path
        assert log_path is not None and "serving on" in log_path.read_text()
    assert engine.process.popen.returncode == 0  # closing the client stopped its engine
    assert not log_path.exists()  # the temporary log went with it


def test_spawn_over_tcp(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "engine.log"
    with EngineClient.spawn(tcp=True, log_path=log_path) as engine:
        assert engine.address.kind == "tcp" and engine.address.host == "127.0.0.1"
        assert engine.info().devices
    assert "serving on" in log_path.read_text()  # a log the caller named is kept


def test_an_engine_that_does_not_start_in_time_is_reported() -> None:
    with pytest.raises(EngineDiedError, match="did not start within"):
        EngineClient.spawn(ready_timeout=0.001)


def test_a_relative_model_path_means_the_caller_s_folder(
        tiny_moe_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_moe_gguf.parent)
    with EngineClient.spawn() as engine:
        load_tiny(engine, Path(tiny_moe_gguf.name))
        assert engine.stats().model is not None


def test_load_then_stream_a_chat(tiny_moe_gguf: Path) -> None:
    with EngineClient.spawn() as engine:
        progress: list[Progress] = []
        load_tiny(engine, tiny_moe_gguf, on_progress=progress.append)
        assert progress and progress[-1].fraction == 1.0
        assert engine.stats().model is not None

        stream = engine.chat(question(max_tokens=24))
        tokens = list(stream)
        result = stream.result
        assert tokens and "".join(t.text for t in tokens) == result.text
        assert [t.n for t in tokens] == sorted(t.n for t in tokens)
        assert result.finish_reason == "length" and result.completion_tokens == 24
        assert list(stream) == []  # a finished stream stays finished

        # the result alone, without iterating, waits for the end too
        assert engine.chat(question(max_tokens=5)).result.completion_tokens == 5
        engine.unload()
        with pytest.raises(NoModelLoadedError):
            _ = engine.chat(question()).result


def test_cancel_stops_a_long_answer(engine: EngineClient) -> None:
    stream = engine.chat(endless())
    seen = 0
    for _token in stream:
        seen += 1
        if seen == 3:
            stream.cancel()
    result = stream.result
    assert result.finish_reason == "cancelled"
    assert 3 <= result.completion_tokens < LONG_CONTEXT
    # the engine is free again at once
    assert engine.chat(question(max_tokens=4)).result.finish_reason == "length"


def test_cancel_by_request_id(engine: EngineClient) -> None:
    stream = engine.chat(endless())
    next(iter(stream))
    assert engine.cancel(stream.request_id) is True
    assert stream.result.finish_reason == "cancelled"
    assert engine.cancel(stream.request_id) is False  # already over


def test_one_job_at_a_time_while_quick_requests_answer_mid_generation(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    stream = engine.chat(endless())
    next(iter(stream))
    second = engine.chat(question())  # waits its turn (tests/test_engine_queue.py)
    wait_until(lambda: engine.stats().chats_waiting == 1, "the second chat to wait")
    with pytest.raises(EngineBusyError):
        load_tiny(engine, tiny_moe_gguf)
    with pytest.raises(EngineBusyError):
        engine.unload()
    # these answer at once, even while a token is being generated
    assert engine.stats().state == "generating"
    assert engine.info().backends
    assert engine.routing().tokens > 0
    stream.cancel()
    assert stream.result.finish_reason == "cancelled"
    assert second.result.finish_reason == "length"


def test_subscribed_stats_and_routing_arrive_until_unsubscribed(engine: EngineClient) -> None:
    stats: list[EngineStats] = []
    routing: list[RoutingSnapshot] = []
    engine.subscribe(SubscribeParams(interval_s=0.05), on_stats=stats.append,
                     on_routing=routing.append)
    stream = engine.chat(endless())
    wait_until(lambda: any(s.state == "generating" and s.tokens_generated > 0 for s in stats),
               "a stats event of the running generation")
    wait_until(lambda: len(routing) >= 2, "routing events")
    stream.cancel()
    assert stream.result.finish_reason == "cancelled"
    assert all(s.rss > 0 and s.memory for s in stats)
    assert routing[-1].n_expert == 8 and routing[-1].layers == [0, 1, 2, 3]

    engine.subscribe(SubscribeParams(stats=False, routing=False))
    count = len(stats) + len(routing)
    time.sleep(0.3)
    assert len(stats) + len(routing) == count  # pushes end with the unsubscribe reply


def test_several_threads_share_one_client(engine: EngineClient) -> None:
    stream = engine.chat(endless())
    failures: list[BaseException] = []

    def poll() -> None:
        try:
            for _ in range(20):
                assert engine.stats().rss > 0
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    stream.cancel()
    assert stream.result.finish_reason == "cancelled"
    assert not failures


def test_a_vanished_client_does_not_hold_the_engine(tiny_moe_gguf: Path) -> None:
    process, address, token = EngineProcess.start()
    try:
        with EngineClient.connect(address, token) as first:
            load_tiny(first, tiny_moe_gguf, n_ctx=LONG_CONTEXT)
            stream = first.chat(endless())
            next(iter(stream))
        # the first client went away mid-answer: its chat is cancelled, the engine free
        with EngineClient.connect(address, token) as second:
            wait_until(lambda: second.stats().state == "idle", "the orphaned chat to stop")
            assert second.chat(question(max_tokens=3)).result.completion_tokens == 3
    finally:
        process.stop()
        process.cleanup()


def test_a_client_that_stops_reading_does_not_block_the_engine(tiny_moe_gguf: Path) -> None:
    process, address, token = EngineProcess.start()
    try:
        with EngineClient.connect(address, token) as sleeper, \
                EngineClient.connect(address, token) as worker:
            load_tiny(worker, tiny_moe_gguf)
            blocked = threading.Event()

            def stuck(_stats: EngineStats) -> None:
                blocked.wait(DEADLINE_S)  # the reader thread stops reading the socket

            sleeper.subscribe(SubscribeParams(interval_s=0.05), on_stats=stuck)
            for _ in range(5):
                assert worker.chat(question(max_tokens=50)).result.completion_tokens == 50
            assert worker.stats().state == "idle"
            blocked.set()
    finally:
        process.stop()
        process.cleanup()


# --- the end of an engine ----------------------------------------------------------------------


def test_kill_9_fails_a_waiting_chat_and_every_later_call(own_engine: EngineClient) -> None:
    stream = own_engine.chat(endless())
    next(iter(stream))
    outcome: list[BaseException] = []

    def wait_for_answer() -> None:
        try:
            _ = stream.result
        except BaseException as exc:  # checked in the test's thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_answer)
    waiter.start()
    os.kill(own_engine.pid, signal.SIGKILL)
    waiter.join(DEADLINE_S)
    assert not waiter.is_alive()
    (error,) = outcome
    assert isinstance(error, EngineDiedError)
    assert "signal 9 (SIGKILL)" in str(error)
    assert str(own_engine.log_path) in str(error) and "chat request" in str(error)  # log tail
    with pytest.raises(EngineDiedError, match="SIGKILL"):
        own_engine.stats()
    with pytest.raises(EngineDiedError):
        own_engine.chat(question())


def test_death_while_idle_is_seen_by_the_next_call(own_engine: EngineClient) -> None:
    assert own_engine.process is not None
    own_engine.process.popen.kill()
    own_engine.process.popen.wait(DEADLINE_S)
    with pytest.raises(EngineDiedError, match="killed by signal"):
        own_engine.info()


def test_shutdown_ends_the_process_cleanly(own_engine: EngineClient) -> None:
    socket_path = Path(own_engine.address.path)
    assert socket_path.exists()
    own_engine.shutdown()
    assert own_engine.process is not None and own_engine.process.popen.returncode == 0
    assert not socket_path.exists()
    with pytest.raises(EngineDiedError, match="shut down"):
        own_engine.stats()


def test_shutdown_mid_generation_ends_the_answer_first(own_engine: EngineClient) -> None:
    stream = own_engine.chat(endless())
    next(iter(stream))
    own_engine.shutdown()
    assert own_engine.process is not None and own_engine.process.popen.returncode == 0
    assert stream.result.finish_reason == "cancelled"  # its own end, before the connection's
