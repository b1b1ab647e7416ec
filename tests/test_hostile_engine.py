"""Hostile input at the engine: model files llama.cpp would abort on, bad placements, frames
built to break the protocol. The real engine answers each with an error naming the cause and
goes on serving; when it does die, the log its error names is still there to read."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import HEADER, LoadParams
from app.errors import ERRORS_BY_CODE, EngineDiedError, ModelFileError, PlacementError
from tests.test_hostile_gguf import issue_files
from tests.test_protocol import Engine, Raw, start_engine, stop_engine


def test_the_engine_refuses_the_files_of_issue_18_and_serves_on(engine: EngineClient,
                                                                tmp_path: Path) -> None:
    for what, (path, words) in issue_files(tmp_path).items():
        with pytest.raises(ModelFileError) as refused:
            engine.load(LoadParams(model=str(path)))
        assert path.name in refused.value.message and words in refused.value.message, what
    assert engine.stats().state == "idle"  # alive: no SIGABRT, no "internal engine error"


def test_a_negative_context_is_a_placement_error_not_a_damaged_file(engine: EngineClient,
                                                                   tiny_moe_gguf: Path) -> None:
    for plan in (PlacementPlan(n_ctx=-4096), PlacementPlan(n_batch=0), PlacementPlan(n_threads=-1)):
        with pytest.raises(PlacementError, match="must be a whole number"):
            engine.load(LoadParams(model=str(tiny_moe_gguf), placement=plan))
    with pytest.raises(PlacementError, match="no routed experts|between 1 and 8"):
        engine.load(LoadParams(model=str(tiny_moe_gguf), placement=PlacementPlan(n_expert_used=0)))
    assert engine.stats().state == "idle"


def test_the_log_named_by_a_dead_engines_error_is_still_there(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    client = EngineClient.spawn()  # its log is a temporary file in the engine's run folder
    assert client.process is not None
    os.kill(client.process.popen.pid, signal.SIGABRT)  # as llama.cpp's GGML_ASSERT ends it
    with pytest.raises(EngineDiedError) as died:
        client.stats()
    client.close()  # removes the run folder
    match = re.search(r"Its log \((.+?)\)", died.value.hint)
    assert match, died.value.hint
    log = Path(match.group(1))
    assert log.is_file() and log.parent == tmp_path / "home" / "cache" / "logs"
    assert "signal 6 (SIGABRT)" in died.value.message
    assert log.stat().st_mode & 0o777 == 0o600


# --- frames built by Hypothesis ----------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("hostile-protocol")
    running = start_engine(folder / "run" / "engine.sock", folder / "engine.log")
    yield running
    stop_engine(running)


KEYS = st.sampled_from(["id", "method", "params", "model", "messages", "request", "role"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    """A frame body: a request with hostile params, JSON nested past any parser's depth, or noise."""
    kind = draw(st.sampled_from(["request", "deep", "noise", "value"]))
    if kind == "deep":
        depth = draw(st.integers(900, 200_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + "1" + closer * depth
        return ('{"id": 5, "method": "chat", "params": ' + inner + "}").encode()
    if kind == "noise":
        return draw(st.binary(max_size=64))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    method = draw(st.sampled_from(["info", "load", "chat", "cancel", "stats", "routing",
                                   "subscribe", "unload", "hello", "nope"]))
    params = draw(json_values)
    return json.dumps({"id": draw(st.integers(1, 2**31)), "method": method, "params": params}).encode()


@given(body=hostile_frames())
@example(body=b'{"id": 1, "method": "chat", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@settings(max_examples=60)
def test_every_hostile_frame_gets_one_answer_and_the_connection_goes_on(raw_engine: Engine,
                                                                       body: bytes) -> None:
    with Raw(raw_engine.address) as raw:
        assert raw.hello(raw_engine.token)["event"] == "done"
        raw.send_frame(body)
        while True:
            reply = raw.recv()
            assert reply is not None, "the engine dropped the connection"
            if reply["event"] in ("done", "error"):
                break  # pushed stats of a valid subscribe are skipped
        if reply["event"] == "error":
            assert reply["data"]["code"] in ERRORS_BY_CODE
            assert "internal engine error" not in reply["data"]["message"], reply
        assert raw.still_serves()
    assert raw_engine.process.poll() is None


def test_deeply_nested_json_is_a_bad_request(raw_engine: Engine) -> None:
    with Raw(raw_engine.address) as raw:
        raw.hello(raw_engine.token)
        raw.send_frame(b"[" * 50_000 + b"]" * 50_000)
        reply = raw.recv()
        assert reply is not None and reply["event"] == "error" and reply["request"] is None
        assert reply["data"]["code"] == "bad_request" and "nested too deeply" in reply["data"]["message"]
        raw.send_bytes(HEADER.pack(2) + b"{}")  # then a frame without an id: still answered
        assert raw.recv()["data"]["code"] == "bad_request"  # type: ignore[index]
        assert raw.still_serves()
