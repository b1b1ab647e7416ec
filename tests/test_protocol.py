"""The wire protocol against a real engine process, over real sockets, byte by byte.

A client that breaks the rules gets an error event with the right code, and the engine goes
on serving: the same connection where the stream is still in step, a new one otherwise.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan, TensorOverride
from app.engine.protocol import (
    EVENTS,
    HEADER,
    MAX_MESSAGE_BYTES,
    METHODS,
    PROTOCOL_VERSION,
    ChatMessage,
    ChatParams,
    LoadParams,
    Sampling,
    decode_body,
    encode_frame,
    from_wire,
    to_wire,
)
from app.engine.transport import Address, connect, new_token, recv_message
from app.errors import (
    ERRORS_BY_CODE,
    AuthenticationError,
    MessageTooLargeError,
)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60.0  # generous: a loaded 2-core machine must not make these flaky


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    address: Address
    token: str
    log_path: Path


def start_engine(socket_path: Path, log_path: Path, *extra: str) -> Engine:
    """``python -m app.engine --socket PATH``, as docs/protocol.md tells a client to start it."""
    token = new_token()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.engine", "--socket", str(socket_path), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(token.encode() + b"\n")
    process.stdin.flush()
    line = process.stdout.readline()
    assert line, log_path.read_text()
    ready = json.loads(line)
    assert ready["event"] == "ready" and ready["protocol"] == PROTOCOL_VERSION
    assert ready["pid"] == process.pid
    return Engine(process, Address.parse(ready["address"]), token, log_path)


def stop_engine(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        assert raw.call("shutdown")["event"] == "done"
    assert engine.process.wait(TIMEOUT_S) == 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("protocol")
    running = start_engine(folder / "run" / "engine.sock", folder / "engine.log")
    yield running
    stop_engine(running)


class Raw:
    """A hand-driven connection: frames and bytes exactly as the test writes them."""

    def __init__(self, address: Address) -> None:
        self.sock = connect(address, TIMEOUT_S)
        self.sock.settimeout(TIMEOUT_S)
        self.stream = self.sock.makefile("rb")
        self.ids = itertools.count(1)

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self.sock.close()

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(HEADER.pack(len(body)) + body)

    def send(self, message: Any) -> None:
        self.send_frame(json.dumps(message).encode())

    def recv(self) -> dict[str, Any] | None:
        try:
            return recv_message(self.stream)
        except ConnectionResetError:
            return None

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request; its terminal event (pushed events in between are skipped)."""
        request_id = next(self.ids)
        self.send({"id": request_id, "method": method, "params": params or {}})
        while True:
            message = self.recv()
            assert message is not None, "the engine closed the connection"
            if message["request"] == request_id and message["event"] in ("done", "error"):
                return message

    def hello(self, token: str, protocol: int = PROTOCOL_VERSION) -> dict[str, Any]:
        return self.call("hello", {"token": token, "protocol": protocol, "client": "test"})

    def still_serves(self) -> bool:
        reply = self.call("info")
        return reply["event"] == "done" and "CPU" in reply["data"]["backends"]


def error_code(message: dict[str, Any] | None) -> str:
    assert message is not None and message["event"] == "error", message
    return str(message["data"]["code"])


# --- framing and data -------------------------------------------------------------------------


def test_frames_and_dataclasses_round_trip() -> None:
    message = {"id": 1, "method": "chat", "params": to_wire(ChatParams(
        messages=[ChatMessage(role="user", content="Grüß dich, 世界 🧠")]))}
    frame = encode_frame(message)
    (length,) = HEADER.unpack(frame[:HEADER.size])
    assert length == len(frame) - HEADER.size
    assert decode_body(frame[HEADER.size:]) == message
    assert from_wire(ChatParams, message["params"]).messages[0].content == "Grüß dich, 世界 🧠"

    load = LoadParams(model="/m.gguf", placement=PlacementPlan(
        experts_in_ram=12, overrides=[TensorOverride(pattern=r"blk\.1\.", device="CUDA0")]))
    assert from_wire(LoadParams, json.loads(json.dumps(to_wire(load)))) == load
    with pytest.raises(MessageTooLargeError):
        encode_frame({"blob": "x" * MAX_MESSAGE_BYTES})


def test_a_frame_near_the_limit_is_read_whole(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        big = ChatParams(messages=[ChatMessage(role="user", content="x" * (3 << 20))])
        assert error_code(raw.call("chat", to_wire(big))) == "no_model"  # parsed, then refused
        assert raw.still_serves()


def test_the_documentation_names_every_method_event_and_error_code() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for name in (*METHODS, *EVENTS, *ERRORS_BY_CODE):
        assert f"`{name}`" in doc, name
    assert f"Protocol version {PROTOCOL_VERSION}" in doc


# --- the socket and who may use it ---------------------------------------------------------


def test_socket_is_reachable_by_its_user_alone(engine: Engine) -> None:
    path = Path(engine.address.path)
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    folder = path.parent.stat()
    assert stat.S_IMODE(folder.st_mode) == 0o700
    assert info.st_uid == folder.st_uid == os.getuid()


def test_engine_refuses_a_socket_folder_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "app.engine", "--socket",
                           str(shared / "engine.sock")], input=b"token\n", capture_output=True,
                          cwd=ROOT, timeout=TIMEOUT_S)
    assert done.returncode == 2
    assert b"0700" in done.stderr and not (shared / "engine.sock").exists()


def test_a_second_engine_cannot_take_over_a_live_socket(engine: Engine) -> None:
    done = subprocess.run([sys.executable, "-m", "app.engine", "--socket", engine.address.path],
                          input=b"token\n", capture_output=True, cwd=ROOT, timeout=TIMEOUT_S)
    assert done.returncode == 2 and b"already listens" in done.stderr
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        assert raw.still_serves()


PROBE = """
import json, socket, struct, sys
token = sys.stdin.readline().strip()
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    sys.exit(f"connect: errno {exc.errno}")
body = json.dumps({"id": 1, "method": "hello", "params": {"token": token, "protocol": 1}})
try:
    sock.sendall(struct.pack(">I", len(body)) + body.encode())
    reply = sock.recv(65536)
except (BrokenPipeError, ConnectionResetError):
    reply = b""
print(f"reply: {reply!r}")
"""


def test_another_user_cannot_connect_even_with_the_token() -> None:
    """As root (CI containers), a process of user nobody tries; as anyone else the test can
    only check the modes that keep other users out."""
    base = Path(tempfile.mkdtemp(prefix="moedesk-test-"))
    base.chmod(0o755)  # others may reach the engine's folder, not enter it
    running = start_engine(base / "run" / "engine.sock", base / "engine.log")
    socket_path = Path(running.address.path)
    try:
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        if os.geteuid() != 0:
            return

        def probe_as_nobody() -> subprocess.CompletedProcess[str]:
            python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
            return subprocess.run([python, "-c", PROBE, str(socket_path)], user=65534,
                                  group=65534, input=running.token + "\n", text=True,
                                  capture_output=True, timeout=TIMEOUT_S)

        denied = probe_as_nobody()
        assert f"errno {errno.EACCES}" in denied.stderr, denied  # the 0700 folder
        if sys.platform == "linux":
            # open the folder and the socket up: the engine still checks who is calling
            socket_path.parent.chmod(0o755)
            socket_path.chmod(0o666)
            dropped = probe_as_nobody()
            assert dropped.stdout.strip() == "reply: b''", dropped  # closed without a word
            assert "refused a peer of uid 65534" in running.log_path.read_text()
    finally:
        socket_path.parent.chmod(0o700)
        stop_engine(running)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("first", [
    {"id": 1, "method": "hello", "params": {"token": "not-the-token", "protocol": 1}},
    {"id": 1, "method": "hello", "params": {"protocol": 1}},
    {"id": 1, "method": "info", "params": {}},
], ids=["wrong token", "no token", "not hello"])
def test_a_client_without_the_token_is_refused(engine: Engine, first: dict[str, Any]) -> None:
    with Raw(engine.address) as raw:
        raw.send(first)
        reply = raw.recv()
        assert error_code(reply) == "unauthorized" and reply is not None
        assert reply["request"] == 1
        assert raw.recv() is None  # and disconnected
    with pytest.raises(AuthenticationError):
        EngineClient.connect(engine.address, "not-the-token")
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        assert raw.still_serves()


def test_a_client_of_another_protocol_version_is_refused(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        reply = raw.hello(engine.token, protocol=PROTOCOL_VERSION + 1)
        assert error_code(reply) == "version_mismatch"
        assert raw.recv() is None


def test_a_stranger_gets_no_large_frames(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        raw.send_bytes(HEADER.pack(1 << 20))  # 1 MiB announced before hello
        assert error_code(raw.recv()) == "too_large"
        assert raw.recv() is None


# --- bad messages from an authenticated client ----------------------------------------------


BAD_MESSAGES = {
    "malformed JSON": (b'{"id": 1, "method": "info"', "bad_request", None),
    "not UTF-8": (b"\xff\xfe\x00", "bad_request", None),
    "empty frame": (b"", "bad_request", None),
    "not an object": (b"[1, 2, 3]", "bad_request", None),
    "no id": (b'{"method": "info", "params": {}}', "bad_request", None),
    "id not an integer": (b'{"id": "7", "method": "info"}', "bad_request", None),
    "unknown method": (b'{"id": 7, "method": "fly", "params": {}}', "bad_request", 7),
    "method not a string": (b'{"id": 7, "method": 12}', "bad_request", 7),
    "params not an object": (b'{"id": 7, "method": "load", "params": [1]}', "bad_request", 7),
    "bad param type": (b'{"id": 7, "method": "load", "params": {"model": 5}}', "bad_request", 7),
    "missing param": (b'{"id": 7, "method": "cancel", "params": {}}', "bad_request", 7),
    "unknown param": (b'{"id": 7, "method": "chat", "params": {"messages": [], "x": 1}}',
                      "bad_request", 7),
    "params where none are taken": (b'{"id": 7, "method": "stats", "params": {"all": true}}',
                                    "bad_request", 7),
    "bad subscribe interval": (b'{"id": 7, "method": "subscribe", "params": {"interval_s": 0}}',
                               "bad_request", 7),
    "no model loaded": (b'{"id": 7, "method": "routing"}', "no_model", 7),
}


@pytest.mark.parametrize("body,code,request_id", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_a_bad_message_is_answered_and_the_connection_goes_on(
        engine: Engine, body: bytes, code: str, request_id: int | None) -> None:
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        raw.send_frame(body)
        reply = raw.recv()
        assert error_code(reply) == code and reply is not None
        assert reply["request"] == request_id
        assert reply["data"]["message"]
        assert raw.still_serves()


def test_an_oversized_frame_is_refused_and_skipped(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        size = MAX_MESSAGE_BYTES + 1
        raw.send_bytes(HEADER.pack(size))
        chunk = b"x" * 65536
        for start in range(0, size, len(chunk)):  # the engine reads and drops it as it comes
            raw.send_bytes(chunk[: size - start])
        reply = raw.recv()
        assert error_code(reply) == "too_large" and reply is not None
        assert reply["request"] is None
        assert raw.still_serves()  # the stream is still in step


def test_a_malformed_first_frame_closes_only_that_connection(engine: Engine) -> None:
    with Raw(engine.address) as raw:
        raw.send_frame(b"not json")
        assert error_code(raw.recv()) == "bad_request"
        assert raw.recv() is None
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        assert raw.still_serves()


# --- fuzz -------------------------------------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63, 10**30, rng.randint(-1000, 1000)])
    if kind == 2:
        return rng.choice([0.5, -1e308, 1e-9, float(rng.random())])
    if kind in (3, 4):
        return rng.choice(["", "info", "\ud800", "ünïcødé", "x" * rng.randint(0, 300),
                           "token", "model", "messages"])
    if kind in (5, 6):
        keys = ["id", "method", "params", "model", "request", "interval_s", "messages", "\udfff"]
        return {rng.choice(keys) if rng.random() < 0.5 else str(random_json(rng, 3)):
                random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]


def random_request(rng: random.Random) -> dict[str, Any]:
    methods = [m for m in METHODS if m != "shutdown"] + ["", "fly", "HELLO"]
    params: Any = random_json(rng) if rng.random() < 0.5 else {
        rng.choice(["model", "messages", "request", "interval_s", "stats", "token"]):
        random_json(rng) for _ in range(rng.randint(0, 3))}
    return {"id": rng.choice([rng.randint(0, 2**31), -5, "1", None]),
            "method": rng.choice(methods), "params": params}


def fuzz_frame(rng: random.Random, token: str) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 64))  # raw noise: often an absurd length header
    if kind == 1:
        body = rng.randbytes(rng.randint(0, 64))
        return HEADER.pack(len(body)) + body
    if kind == 2:
        body = json.dumps(random_json(rng)).encode()
    elif kind == 3:
        body = json.dumps(random_request(rng)).encode()
    else:  # a hello, sometimes the right one: the frames after it reach the methods
        params = ({"token": token, "protocol": PROTOCOL_VERSION} if rng.random() < 0.5
                  else random_json(rng))
        body = json.dumps({"id": 1, "method": "hello", "params": params}).encode()
    return HEADER.pack(len(body)) + body


def test_fuzz_never_takes_the_engine_down(engine: Engine) -> None:
    rng = random.Random(20240611)
    for _ in range(80):
        with Raw(engine.address) as raw:
            if rng.random() < 0.6:
                assert raw.hello(engine.token)["event"] == "done"
            try:
                for _ in range(rng.randint(1, 10)):
                    raw.send_bytes(fuzz_frame(rng, engine.token))
                if rng.random() < 0.3:
                    raw.send_bytes(HEADER.pack(40))  # vanish in the middle of a frame
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed by the engine: fine
    assert engine.process.poll() is None
    with EngineClient.connect(engine.address, engine.token) as client:
        assert "CPU" in client.info().backends
        assert client.stats().state == "idle"


def test_every_fuzzed_request_gets_exactly_one_answer(engine: Engine) -> None:
    rng = random.Random(7)
    with Raw(engine.address) as raw:
        raw.hello(engine.token)
        for request_id in range(1, 301):
            request = random_request(rng)
            request["id"] = request_id
            raw.send(request)
            while True:
                reply = raw.recv()
                assert reply is not None
                if reply["request"] is None and reply["event"] in ("stats", "routing"):
                    continue  # a fuzzed subscribe that happened to be valid
                break
            assert reply["event"] in ("done", "error") and reply["request"] == request_id
            assert isinstance(reply["data"], dict)
            if reply["event"] == "error":
                assert reply["data"]["code"] in ERRORS_BY_CODE
        assert raw.still_serves()


# --- the process, by hand ---------------------------------------------------------------------


def test_engine_started_by_hand_serves_then_shuts_down_cleanly(tmp_path: Path) -> None:
    socket_path = tmp_path / "run" / "engine.sock"
    running = start_engine(socket_path, tmp_path / "engine.log")
    assert running.address == Address("unix", path=str(socket_path))
    with EngineClient.connect(str(running.address), running.token) as client:
        assert client.pid == running.process.pid
        assert client.info().devices
    stop_engine(running)
    assert not socket_path.exists()
    log = running.log_path.read_text()
    assert running.token not in log  # the secret never reaches the log


def test_an_answer_its_client_does_not_read_yet_arrives_whole_and_in_order(
        tmp_path: Path, tiny_moe_gguf: Path) -> None:
    """Tokens go from the batch loop's thread straight into the socket; when its buffer is full
    the rest waits in the event loop's transport, and later tokens queue behind it. Stats
    pushed from the event loop's thread meanwhile come whole, between tokens."""
    running = start_engine(tmp_path / "run" / "engine.sock", tmp_path / "engine.log")
    n = 4_000  # ~280 kB of small frames: a Unix socket holds a few hundred (each costs ~1 kB)
    try:
        with Raw(running.address) as reader, Raw(running.address) as other:
            reader.hello(running.token)
            other.hello(running.token)
            loaded = reader.call("load", to_wire(LoadParams(model=str(tiny_moe_gguf), placement=PlacementPlan(
                n_ctx=32768, n_threads=2))))
            assert loaded["event"] == "done", loaded
            subscribed = reader.call("subscribe", {"stats": True, "routing": False, "interval_s": 0.05})
            assert subscribed["event"] == "done", subscribed
            reader.send({"id": 99, "method": "chat", "params": to_wire(ChatParams(
                messages=[ChatMessage(role="user", content="Go on")],
                sampling=Sampling(temperature=0.0, max_tokens=n, ignore_eos=True)))})
            # nothing read meanwhile: the engine finishes the answer and answers others
            deadline = time.monotonic() + 120
            while (stats := other.call("stats")["data"])["tokens_generated"] < n \
                    or stats["state"] != "idle":
                assert time.monotonic() < deadline, stats
                time.sleep(0.1)
            numbers, text, sent, pushed = [], [], 0, 0
            while (message := reader.recv()) is not None and message["event"] in ("token", "stats"):
                if message["event"] == "stats":
                    pushed += 1
                    continue
                assert message["request"] == 99
                numbers.append(message["data"]["n"])
                text.append(message["data"]["text"])
                sent += HEADER.size + len(json.dumps(message))
            assert message is not None and message["event"] == "done", message
            assert pushed >= 2  # frames of two threads, each whole
            assert sent > 200_000
            assert numbers == sorted(set(numbers)) and numbers[-1] == n  # none lost, none swapped
            assert "".join(text) == message["data"]["text"]
            assert reader.still_serves()  # and the connection serves on
    finally:
        stop_engine(running)
