"""Other tools use the loaded model through the OpenAI-compatible server.

The official ``openai`` client (and plain HTTP where it would refuse to send a bad request)
against the real server, the real engine process and the tiny synthetic model. The engine
runs one chat at a time, so which request runs is observable without timing: only the
running one streams.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.engine.client import EngineClient
from app.engine.protocol import ChatMessage, ChatParams, Sampling
from app.serve import OpenAIServer
from tests.openai_testing import client_for, engine_with, model_name, user
from tests.test_engine_queue import DEADLINE_S, wait_until

N_CTX = 65536  # an answer without max_tokens outlasts any test step
ENDLESS = 60000  # max_tokens of answers that only a cancel ends within a test
# greedy, and as long as asked: random weights may otherwise end an answer at any token
EXACT: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def engine(tiny_moe_gguf: Path) -> Iterator[EngineClient]:
    """The engine the GUI would hold, with the tiny model loaded."""
    with engine_with(tiny_moe_gguf, N_CTX) as client:
        yield client


@pytest.fixture(scope="module")
def server(engine: EngineClient) -> Iterator[OpenAIServer]:
    with OpenAIServer(engine, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def model(engine: EngineClient) -> str:
    return model_name(engine)


@pytest.fixture
def client(server: OpenAIServer) -> openai.OpenAI:
    return client_for(server)


def post(server: OpenAIServer, path: str, body: bytes | dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Plain HTTP, for requests the openai client would not send."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE_S)
    try:
        conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- answers ------------------------------------------------------------------------------


def test_models_lists_the_loaded_model(client: openai.OpenAI, model: str) -> None:
    assert [m.id for m in client.models.list().data] == [model]


def test_chat_answers_as_the_engine_does_with_usage_counts(
        client: openai.OpenAI, engine: EngineClient, model: str) -> None:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, *user("Hello")],
        max_tokens=8, **EXACT)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == model
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8
    # the same greedy answer straight from the engine: the server added nothing, lost nothing
    direct = engine.chat(ChatParams(
        messages=[ChatMessage("system", "Be brief."), ChatMessage("user", "Hello")],
        sampling=Sampling(temperature=0.0, max_tokens=8, ignore_eos=True))).result
    assert choice.message.content == direct.text
    assert answer.usage.prompt_tokens == direct.prompt_tokens


def test_streamed_chat_is_the_whole_answer_in_pieces(client: openai.OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=user("Tell a story"),
                                           max_tokens=12, **EXACT)
    chunks = list(client.chat.completions.create(
        model=model, messages=user("Tell a story"), max_tokens=12, **EXACT, stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_a_stream_has_no_empty_pieces(client: openai.OpenAI, model: str) -> None:
    # the engine sends an event for every token, also one with no text yet: here the first,
    # whose text a stop string it begins holds back; a client sees pieces of text only, after
    # the first chunk's role
    first = client.chat.completions.create(model=model, messages=user("Write a long story"),
                                           max_tokens=1, **EXACT).choices[0].message.content
    assert first
    chunks = list(client.chat.completions.create(model=model, messages=user("Write a long story"),
                                                 max_tokens=40, stop=[first + "\x01"], **EXACT,
                                                 stream=True))
    middle = [c for c in chunks[1:] if c.choices and c.choices[0].finish_reason is None]
    assert len(middle) > 10 and all(c.choices[0].delta.content for c in middle)
    assert "".join(c.choices[0].delta.content for c in middle).startswith(first)


def test_completions_continue_raw_text_and_stop_at_a_stop_string(
        client: openai.OpenAI, model: str) -> None:
    full = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16,
                                     **EXACT)
    assert full.object == "text_completion" and full.choices[0].finish_reason == "length"
    text = full.choices[0].text
    assert full.usage is not None and full.usage.completion_tokens == 16
    # raw text: far fewer prompt tokens than the same words wrapped in the chat template
    chat = client.chat.completions.create(model=model, messages=user("Once upon a time"),
                                          max_tokens=1, **EXACT)
    assert chat.usage is not None and full.usage.prompt_tokens < chat.usage.prompt_tokens
    cut_at = text[len(text) // 2: len(text) // 2 + 3]
    streamed = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16,
                                         **EXACT, stop=[cut_at], stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == text[: text.index(cut_at)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_seed_makes_sampling_repeatable(client: openai.OpenAI, model: str) -> None:
    def sample(seed: int) -> str | None:
        return client.chat.completions.create(
            model=model, messages=user("Surprise me"), max_tokens=12, temperature=1.5,
            top_p=1.0, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)


# --- several at once ------------------------------------------------------------------------


def test_concurrent_requests_all_complete(client: openai.OpenAI, server: OpenAIServer,
                                          model: str) -> None:
    answers: queue.Queue[Any] = queue.Queue()

    def ask(i: int) -> None:
        try:
            answers.put(client.chat.completions.create(
                model=model, messages=user(f"Question {i}"), max_tokens=10, **EXACT))
        except Exception as exc:  # reported below, not lost in the thread
            answers.put(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    done = [answers.get(timeout=DEADLINE_S) for _ in threads]
    assert [type(a).__name__ for a in done] == ["ChatCompletion"] * 6
    assert all(a.usage.completion_tokens == 10 for a in done)
    for thread in threads:
        thread.join()
    wait_until(lambda: server.requests_in_flight == 0, "the server to count them done")


def test_server_requests_and_the_guis_chats_take_turns(
        client: openai.OpenAI, engine: EngineClient, server: OpenAIServer, model: str) -> None:
    def open_stream(name: str) -> Any:
        return client.chat.completions.create(model=model, messages=user(name),
                                              max_tokens=ENDLESS, **EXACT, stream=True)

    first = open_stream("first")  # returns once it runs: its first piece is on its way
    next(iter(first))
    started: queue.Queue[tuple[str, Callable[[], None]]] = queue.Queue()

    def http_waits(name: str) -> None:
        stream = open_stream(name)
        next(iter(stream))
        started.put((name, stream.close))  # closing it is the client disconnecting

    for waiting, name in enumerate(("http-1", "http-2"), start=1):
        threading.Thread(target=http_waits, args=(name,), daemon=True).start()
        wait_until(lambda n=waiting: engine.stats().chats_waiting == n, f"{name} to wait")
    assert server.requests_in_flight == 3
    gui = engine.chat(ChatParams(messages=[ChatMessage("user", "gui")],
                                 sampling=Sampling(max_tokens=ENDLESS, ignore_eos=True)))
    threading.Thread(target=lambda: (next(iter(gui)), started.put(("gui", gui.cancel))),
                     daemon=True).start()
    wait_until(lambda: engine.stats().chats_waiting == 3, "the GUI's chat to wait")
    first.close()  # the first client hangs up mid-stream: the next turn comes
    order = []
    for _ in range(3):
        name, stop = started.get(timeout=DEADLINE_S)
        order.append(name)
        stop()
    # the server's connection was just served: the GUI's chat goes before its other requests
    assert order == ["gui", "http-1", "http-2"]
    assert gui.result.finish_reason == "cancelled"
    wait_until(lambda: server.requests_in_flight == 0, "every request to end")


def test_a_client_that_hangs_up_mid_stream_frees_the_engine(
        client: openai.OpenAI, engine: EngineClient, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=user("Go on forever"),
                                            max_tokens=ENDLESS, **EXACT, stream=True)
    pieces = iter(stream)
    next(pieces), next(pieces)
    stream.close()
    wait_until(lambda: engine.stats().chats_running == 0, "the engine to be free")
    # it stopped near where the client left, far from the answer it was asked for
    assert engine.stats().tokens_generated < ENDLESS // 2
    answer = client.chat.completions.create(model=model, messages=user("Next"), max_tokens=3,
                                            **EXACT)
    assert answer.usage is not None and answer.usage.completion_tokens == 3


def test_a_client_that_gives_up_while_waiting_never_runs(
        client: openai.OpenAI, engine: EngineClient, server: OpenAIServer, model: str) -> None:
    gui = engine.chat(ChatParams(messages=[ChatMessage("user", "gui")],
                                 sampling=Sampling(max_tokens=ENDLESS, ignore_eos=True)))
    next(iter(gui))
    impatient = client.with_options(timeout=0.5)
    with pytest.raises(openai.APITimeoutError):  # it hangs up after half a second of waiting
        impatient.chat.completions.create(model=model, messages=user("hurry"), max_tokens=5)
    # dropped from the queue while the GUI's chat still runs: it will never run
    wait_until(lambda: engine.stats().chats_waiting == 0, "the request to be dropped")
    assert engine.stats().chats_running == 1
    wait_until(lambda: server.requests_in_flight == 0, "the server to forget it")
    gui.cancel()
    assert gui.result.finish_reason == "cancelled"


def test_stopping_the_server_ends_its_streams_with_an_error_and_frees_the_engine(
        engine: EngineClient, model: str) -> None:
    server = OpenAIServer(engine, port=0)
    server.start()
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model=model, messages=user("Go on forever"),
                                            max_tokens=ENDLESS, **EXACT, stream=True)
    pieces = iter(stream)
    next(pieces)
    server.stop()  # as the GUI does when the user turns the server off
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in pieces:
            pass
    assert server.requests_in_flight == 0 and not server.running
    wait_until(lambda: engine.stats().chats_running == 0, "the engine to be free")
    assert engine.stats().tokens_generated < ENDLESS // 2
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "MODEL"}, 400, "messages"),
    ({"messages": user("hi")}, 400, "model"),
    ({"model": "MODEL", "messages": []}, 400, "messages"),
    ({"model": "MODEL", "messages": [{"role": "robot", "content": "hi"}]}, 400,
     "messages[0].role"),
    ({"model": "MODEL", "messages": user("hi"), "temperature": 5}, 400, "temperature"),
    ({"model": "MODEL", "messages": user("hi"), "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "MODEL", "messages": user("hi"), "n": 2}, 400, "n"),
    ({"model": "MODEL", "messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "MODEL", "messages": user("hi"), "tools": [{"type": "function"}]}, 400,
     "tools[0]"),
    ({"model": "MODEL", "messages": user("hi"), "ignore_eos": "yes"}, 400, "ignore_eos"),
    ({"model": "MODEL", "messages": user("hi"), "mirostat": 2}, 400, "mirostat"),
    (b'{"model": "MODEL", "messages": [', 400, None),
    (b'["a list"]', 400, None),
], ids=["no messages", "no model", "empty messages", "bad role", "temperature", "max_tokens",
        "n", "too many stops", "tools", "ignore_eos", "unsupported sampler", "bad JSON",
        "not an object"])
def test_bad_requests_get_openai_style_errors(server: OpenAIServer, model: str,
                                             body: bytes | dict[str, Any], status: int,
                                             param: str | None) -> None:
    if isinstance(body, dict):
        body = {k: (model if v == "MODEL" else v) for k, v in body.items()}
    got, reply = post(server, "/v1/chat/completions", body)
    assert got == status
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]


def test_any_model_name_is_answered_by_the_loaded_model(client: openai.OpenAI,
                                                       model: str) -> None:
    # clients with a fixed model name (an editor's "gpt-4o") work, and are told what answered
    answer = client.chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=2,
                                            **EXACT)
    assert answer.model == model
    assert answer.usage is not None and answer.usage.completion_tokens == 2


def test_an_oversized_body_is_refused_before_it_is_read(server: OpenAIServer,
                                                        model: str) -> None:
    huge = {"model": model, "messages": user("x" * (server.max_body_bytes + 1))}
    status, reply = post(server, "/v1/chat/completions", huge)
    assert status == 413 and reply["error"]["code"] == "request_too_large"


def test_unknown_paths_are_not_found(server: OpenAIServer) -> None:
    status, reply = post(server, "/v1/embeddings", {"input": "hi"})
    assert status == 404 and reply["error"]["code"] == "unknown_url"


def test_a_prompt_longer_than_the_context_is_a_bad_request(server: OpenAIServer,
                                                           model: str) -> None:
    status, reply = post(server, "/v1/completions",
                         {"model": model, "prompt": "word " * (N_CTX + 10), "max_tokens": 1})
    assert status == 400 and "does not fit the context" in reply["error"]["message"]


def test_a_wrong_or_missing_api_key_is_refused(engine: EngineClient, model: str) -> None:
    with OpenAIServer(engine, port=0, api_key="sk-right") as guarded:
        wrong = openai.OpenAI(base_url=guarded.url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
        body = {"model": model, "messages": user("hi")}
        for headers in ({}, {"Authorization": "Basic sk-right"}):  # missing; not a bearer key
            status, reply = post(guarded, "/v1/chat/completions", body, headers)
            assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        right = openai.OpenAI(base_url=guarded.url, api_key="sk-right", max_retries=0)
        answer = right.chat.completions.create(model=model, messages=user("hi"), max_tokens=2,
                                               **EXACT)
        assert answer.usage is not None and answer.usage.completion_tokens == 2


def test_without_a_model_requests_get_503(tiny_moe_gguf: Path) -> None:
    with EngineClient.spawn() as bare, OpenAIServer(bare, port=0) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        assert client.models.list().data == []
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="any", messages=user("hi"))
        assert caught.value.status_code == 503 and caught.value.code == "model_not_loaded"


# --- the command ------------------------------------------------------------------------------


@contextlib.contextmanager
def cli_serve(model: Path, *options: str, api_key: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``moedesk-cli serve MODEL --port 0 OPTIONS`` in a subprocess (key from the environment),
    once it serves: the process and the first line it printed ("serving MODEL at URL").
    Killed at the end if it still runs."""
    command = [sys.executable, "-m", "app.cli", "serve", str(model), "--port", "0", *options]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "MOEDESK_API_KEY": api_key})
    try:
        assert serve.stdout is not None
        yield serve, serve.stdout.readline()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_cli_serve_loads_serves_and_stops_on_sigterm(tiny_moe_gguf: Path) -> None:
    options = ("--ctx", "1024", "--threads", "2")
    with cli_serve(tiny_moe_gguf, *options, api_key="sk-from-env") as (serve, line):
        assert line.startswith("serving MoE Desk synthetic tiny at http://127.0.0.1:"), line
        client = openai.OpenAI(base_url=line.split()[-1], api_key="sk-from-env", max_retries=0)
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(model=model, messages=user("hi"), max_tokens=3,
                                                **EXACT)
        assert answer.usage is not None and answer.usage.completion_tokens == 3
        # a second server on the same port says why it cannot start
        port = line.split(":")[-1].split("/")[0]
        taken = subprocess.run([sys.executable, "-m", "app.cli", "serve", str(tiny_moe_gguf),
                                "--port", port, *options],
                               env={**os.environ, "MOEDESK_API_KEY": "sk-from-env"},
                               capture_output=True, text=True, timeout=DEADLINE_S)
        assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=DEADLINE_S) == 0
