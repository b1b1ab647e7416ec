"""Hostile HTTP at the OpenAI-compatible server: every request gets a status line and, when it
fails, an OpenAI-shaped error; a web page cannot reach the server under another host name; a
client that stalls is dropped. Real sockets against a real engine (no model loaded: requests
that pass every check end in 503 model_not_loaded, so none waits for a generation)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.engine.client import EngineClient
from app.serve.http import OpenAIServer

READ_TIMEOUT_S = 1.0


class Records(logging.Handler):
    """What the server logged at ERROR: a bug hit by a request (its traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(engine: EngineClient) -> Iterator[tuple[OpenAIServer, Records]]:
    errors = Records()
    logger = logging.getLogger("moedesk.serve")
    logger.addHandler(errors)
    with OpenAIServer(engine, port=0, read_timeout_s=READ_TIMEOUT_S) as running:
        yield running, errors
    logger.removeHandler(errors)


def exchange(server: OpenAIServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the status, headers and body of the answer (http.client parses it, so
    an answer without a status line fails the test)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def assert_openai_error(status: int, body: bytes) -> dict[str, Any]:
    assert 400 <= status < 600
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    return error  # type: ignore[no-any-return]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
FIELDS = ["model", "messages", "prompt", "stream", "stream_options", "max_tokens", "temperature",
          "top_p", "stop", "seed", "n", "tools", "logit_bias", "ignore_eos", "max_completion_tokens"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["chat", "chat", "fields", "deep", "bytes"]))
    if kind == "deep":
        depth = draw(st.integers(500, 300_000))
        return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    body: dict[str, Any] = {"model": draw(st.one_of(st.just("m"), json_values))}
    if kind == "chat":
        body["messages"] = draw(st.lists(st.fixed_dictionaries(
            {"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), json_values),
             "content": st.one_of(st.text(max_size=8), json_values)}), max_size=3))
    body.update(draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)))
    return json.dumps(body).encode()


@st.composite
def requests(draw: st.DrawFn, port: int) -> bytes:
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"]))
    path = draw(st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/models", "/",
                                 "/v1/chat/completions?x=1", "/%00", "/v1/" + "a" * 200]))
    host = draw(st.sampled_from([f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", None]))
    body = draw(bodies())
    length = draw(st.one_of(st.just(str(len(body))), st.just(None), st.sampled_from(
        ["²", "١٢", "-1", "0x10", " 12", "99999999999999999999", "1e3", ""])))
    lines = [f"{method} {path} HTTP/1.1"] + ([f"Host: {host}"] if host else [])
    if length is not None:
        lines.append(f"Content-Length: {length}")
    head = "\r\n".join(lines + ["Connection: close", "", ""]).encode("utf-8")
    return head + (body if length == str(len(body)) else b"")


@given(data=st.data())
@example(data=None)
@settings(max_examples=60)
def test_every_hostile_request_gets_a_status_and_an_openai_error(
        server: tuple[OpenAIServer, Records], data: st.DataObject | None) -> None:
    running, errors = server
    errors.records.clear()
    if data is None:  # issue 18's three: a role that is a list, deep JSON, a Unicode digit
        for request in (b'{"model": "m", "messages": [{"role": ["user"], "content": "hi"}]}',
                        b'{"model": "m", "messages": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"):
            status, _, body = exchange(running, b"POST /v1/chat/completions HTTP/1.1\r\nHost: "
                                       b"localhost\r\nContent-Length: " + str(len(request)).encode()
                                       + b"\r\n\r\n" + request)
            assert status == 400 and assert_openai_error(status, body)["type"] == "invalid_request_error"
        status, _, body = exchange(running, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
                                   "Content-Length: ²\r\n\r\n".encode())
        assert status == 411 and assert_openai_error(status, body)
        return
    status, _, body = exchange(running, data.draw(requests(running.port)))
    if status >= 400:
        assert_openai_error(status, body)
    assert not errors.records, [r.getMessage() for r in errors.records]  # no bug was hit


def test_a_web_page_cannot_reach_the_server_through_dns_rebinding(server: tuple[OpenAIServer, Records],
                                                                  engine: EngineClient) -> None:
    running, _ = server
    for host in ("evil.example", f"evil.example:{running.port}", "127.0.0.1.evil.example",
                 "localhost.evil.example", "127.0.0.1:x"):
        status, _, body = exchange(running, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 403, host
        assert assert_openai_error(status, body)["code"] == "host_not_allowed"
    for host in (f"127.0.0.1:{running.port}", "localhost", f"[::1]:{running.port}", "LOCALHOST"):
        status, _, body = exchange(running, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 200 and json.loads(body)["object"] == "list", host
    with OpenAIServer(engine, port=0, allowed_hosts=["mybox.local"]) as allowing:
        status, _, _ = exchange(allowing, b"GET /v1/models HTTP/1.1\r\nHost: mybox.local:80\r\n\r\n")
        assert status == 200
    with OpenAIServer(engine, host="0.0.0.0", port=0) as everywhere:
        name = socket.gethostname()
        status, _, _ = exchange(everywhere, f"GET /v1/models HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        assert status == 200
        status, _, _ = exchange(everywhere, b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert status == 403


def test_a_stalled_upload_is_answered_408_and_its_thread_freed(server: tuple[OpenAIServer, Records]) -> None:
    running, _ = server
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")  # ... and nothing more
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 408
        assert assert_openai_error(408, response.read())["code"] == "request_timeout"
    assert time.monotonic() - start < READ_TIMEOUT_S + 5
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: loc")  # stalls in the headers
        assert sock.recv(1024) == b""  # closed by the server, not held open
    assert time.monotonic() - start < 2 * READ_TIMEOUT_S + 5


def test_unsupported_methods_and_malformed_request_lines_get_json_errors(
        server: tuple[OpenAIServer, Records]) -> None:
    running, _ = server
    status, headers, body = exchange(running, b"DELETE /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 501 and headers["Content-Type"] == "application/json"
    assert "DELETE is not supported" in assert_openai_error(status, body)["message"]
    status, _, body = exchange(running, b"GARBAGE\r\n\r\n")  # no version: HTTP/0.9 to http.server
    assert status == 400 and assert_openai_error(status, body)


def test_allowed_host_names_are_a_setting_the_app_keeps(tmp_path: Any) -> None:
    from app.store import Store
    from app.ui.serve_control import ServeConfig, load_config, save_config

    store = Store(tmp_path / "moedesk.sqlite3")
    save_config(store, ServeConfig(enabled=True, allowed_hosts=("mybox.local", "10.0.0.5")))
    assert load_config(store, None).allowed_hosts == ("mybox.local", "10.0.0.5")
    store.close()
