"""The local socket under the protocol: addresses, listening, peer checks, frame I/O.

The server listens and keeps one ``Connection`` (asyncio) per client; the client connects and
uses blocking ``send_message`` / ``recv_message``. Where the platform has Unix domain sockets
the engine listens on one, mode 0600 inside a 0700 directory, so only its own user can reach
it; elsewhere (Windows) on TCP 127.0.0.1 with an ephemeral port. Either way the first message
must carry the engine's secret token (see docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from app.engine.protocol import HEADER, MAX_MESSAGE_BYTES, decode_body, encode_frame, event
from app.errors import EngineError, MessageTooLargeError, ProtocolError

log = logging.getLogger("moedesk.engine.server")

# A client more than this far behind on reading is dropped rather than buffered for.
SEND_BUFFER_LIMIT = 16 * 1024 * 1024
# Before hello, a peer is a stranger: small frames only.
PRE_AUTH_MAX_BYTES = 64 * 1024
DISCARD_CHUNK = 64 * 1024

HAS_UNIX_SOCKETS = hasattr(socket, "AF_UNIX") and sys.platform != "win32"
SOCKET_NAME = "engine.sock"


def new_token() -> str:
    """A fresh secret for one engine process (256 bits, hex)."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class Address:
    """Where an engine listens: ``unix:/path/to/engine.sock`` or ``tcp:127.0.0.1:PORT``."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"tcp:{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        kind, sep, rest = text.partition(":")
        if sep and kind == "unix" and rest:
            return cls("unix", path=rest)
        if sep and kind == "tcp":
            host, sep, port = rest.rpartition(":")
            if sep and host and port.isdigit():
                return cls("tcp", host=host, port=int(port))
        raise ValueError(f"not an engine address: {text!r} (expected unix:PATH or tcp:HOST:PORT)")


# --- listening (engine side) ---------------------------------------------------------------


def ensure_private_dir(folder: Path) -> None:
    """Create ``folder`` 0700, or check that an existing one is ours and closed to others.

    The directory, not only the socket's own mode, is what keeps other users out: some
    systems ignore a socket file's permission bits.
    """
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{folder} is not a directory")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{folder} must belong to this user with mode 0700 (it has "
            f"{stat.S_IMODE(info.st_mode):04o}): the engine's socket must be ours alone"
        )


def listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (mode 0600) in a private directory."""
    ensure_private_dir(path.parent)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        if _listening(path):
            raise FileExistsError(f"another engine already listens on {path}")
        path.unlink()  # a stale socket of an engine that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600: no window where it is wider
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def listen_tcp() -> socket.socket:
    """A listening TCP socket on the loopback interface, on a port the OS picks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def address_of(sock: socket.socket) -> Address:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return Address("unix", path=sock.getsockname())
    host, port = sock.getsockname()[:2]
    return Address("tcp", host=host, port=port)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), else None."""
    if sys.platform != "linux" or sock.family != getattr(socket, "AF_UNIX", None):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# --- one client, as the server sees it (reads on the event loop, sends from any thread) -----


class Answered:
    """The type of ANSWERED: a frame the connection refused itself; nothing to dispatch."""


ANSWERED = Answered()


class Connection:
    """One client of the server: framed reads with size limits (event loop thread), and
    bounded non-blocking sends from any thread.

    A frame goes straight into the socket from the thread that sends it (a token from the
    batch loop's thread: no hop to the event loop, whose wake-up waits for a core while
    llama.cpp's threads hold them). Only when the socket's buffer is full does the rest go
    through asyncio's transport, in order, and so does every frame after it until the
    transport has sent them all. The direct sends use a duplicate of the socket's descriptor,
    so a descriptor the transport closes is never written to. On Windows' proactor loop
    every frame goes through the transport, as frames of other threads hop to the loop."""

    def __init__(self, number: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.name = f"#{number}"
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.closed = False
        self.subscription: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()  # the fields below, and each direct send
        self._direct = _duplicate_socket(writer) if isinstance(
            self._loop, asyncio.SelectorEventLoop) else None
        self._via_loop = self._direct is None  # frames go through the transport, in order
        self._queued = 0  # frames handed to the loop thread and not yet given to the transport
        self._watching = False  # a _back_to_direct check is scheduled

    async def read_message(self) -> dict[str, Any] | Answered | None:
        """The next message; ANSWERED for a bad frame already answered with an error;
        None at the end of the stream, or after refusing a stranger's bad frame."""
        try:
            header = await self.reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        (length,) = HEADER.unpack(header)
        limit = MAX_MESSAGE_BYTES if self.authenticated else PRE_AUTH_MAX_BYTES
        if length > limit:
            self.fail(None, MessageTooLargeError(
                f"a {length}-byte message exceeds the {limit}-byte limit",
                "Split the request." if self.authenticated else "Send hello first."))
            if not self.authenticated:
                self.close()
                return None
            await self._discard(length)
            return ANSWERED
        body = await self.reader.readexactly(length)
        try:
            return decode_body(body)
        except ProtocolError as exc:
            self.fail(None, exc)
            if not self.authenticated:
                self.close()
                return None
            return ANSWERED

    async def _discard(self, length: int) -> None:
        """Skip an oversized body a chunk at a time, never holding it, so the stream stays
        in step and the next frame is read as one."""
        remaining = length
        while remaining:
            chunk = await self.reader.read(min(remaining, DISCARD_CHUNK))
            if not chunk:
                raise ConnectionError("closed while sending an oversized message")
            remaining -= len(chunk)

    def send(self, message: dict[str, Any]) -> bool:
        """Send one message without waiting (any thread); False if the connection is gone."""
        try:
            frame = encode_frame(message)
        except MessageTooLargeError as exc:
            log.error("connection %s: a reply exceeded the frame limit: %s", self.name, exc)
            frame = encode_frame(event("error", message.get("request"), EngineError(
                "the engine's reply was too large to send.", "Report this as a bug.").to_wire()))
        in_loop = threading.get_ident() == self._loop_thread
        with self._lock:
            if self.closed or self.writer.transport.is_closing():
                return False
            if not self._via_loop:
                assert self._direct is not None
                try:
                    sent = self._direct.send(frame)
                except BlockingIOError:
                    sent = 0
                except OSError:  # the client is gone; the reading side drops the connection
                    return False
                if sent == len(frame):
                    return True
                frame, self._via_loop = frame[sent:], True
            if in_loop and not self._queued:
                return self._give_transport(frame)
            self._queued += 1
        try:
            self._loop.call_soon_threadsafe(self._from_queue, frame)
        except RuntimeError:  # the loop closed: nobody to send to
            return False
        return True

    def _from_queue(self, frame: bytes) -> None:
        """A frame another thread queued (loop thread), after every frame queued before it."""
        with self._lock:
            self._queued -= 1
            if not self.writer.transport.is_closing():
                self._give_transport(frame)

    def _give_transport(self, frame: bytes) -> bool:
        """Hand a frame to asyncio's transport (loop thread, lock held); once it has sent
        everything and nothing waits in the queue, frames go straight to the socket again."""
        if self.writer.transport.get_write_buffer_size() + len(frame) > SEND_BUFFER_LIMIT:
            log.warning("connection %s: the client stopped reading; dropping it", self.name)
            self._abort_locked()
            return False
        self.writer.write(frame)
        if self._direct is not None and not self._watching:
            self._watching = True
            self._loop.call_soon(self._back_to_direct)
        return True

    def _back_to_direct(self) -> None:
        with self._lock:
            if self._direct is None or self.closed:
                self._watching = False
            elif self._queued or self.writer.transport.get_write_buffer_size():
                self._loop.call_later(0.005, self._back_to_direct)  # the client reads slowly
            else:
                self._via_loop = self._watching = False

    def backlogged(self) -> bool:
        """Whether earlier messages still wait to be sent (the client reads slowly)."""
        with self._lock:
            return self._via_loop and (bool(self._queued) or
                                       self.writer.transport.get_write_buffer_size() > 0)

    def reply(self, request_id: int | None, data: Any = None) -> None:
        self.send(event("done", request_id, data))

    def fail(self, request_id: int | None, error: EngineError) -> None:
        self.send(event("error", request_id, error.to_wire()))

    def close(self) -> None:
        """Close after what is queued has been sent (loop thread)."""
        with self._lock:
            self.closed = True
            self._close_direct()
        # after the frames other threads queued before this: FIFO
        self._loop.call_soon(self._close_transport)

    def _close_transport(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        with self._lock:
            self._abort_locked()

    def _abort_locked(self) -> None:
        self.closed = True
        self._close_direct()
        self.writer.transport.abort()

    def _close_direct(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None


def _duplicate_socket(writer: asyncio.StreamWriter) -> socket.socket | None:
    """A second descriptor of the transport's socket, for direct sends; None if unavailable."""
    transport_socket = writer.get_extra_info("socket")
    if transport_socket is None:
        return None
    try:
        duplicate = socket.socket(fileno=os.dup(transport_socket.fileno()))
    except OSError:
        return None
    duplicate.setblocking(False)
    return duplicate


# --- connecting and blocking frame I/O (client side) ---------------------------------------


def connect(address: Address, timeout: float = 10.0) -> socket.socket:
    """A connected, blocking socket to the engine at ``address``."""
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (address.host, address.port)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    if address.kind == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # tokens are tiny frames
    return sock


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode_frame(message))


def recv_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message from a buffered reader on the socket (``sock.makefile("rb")``: one
    system call per many small frames), or None when the peer closed between messages."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ConnectionError("connection closed in the middle of a message")
    (length,) = HEADER.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(f"the engine sent a {length}-byte message")
    body = stream.read(length)
    if len(body) < length:
        raise ConnectionError("connection closed in the middle of a message")
    return decode_body(body)
