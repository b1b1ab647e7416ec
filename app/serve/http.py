"""The OpenAI-compatible HTTP server: other tools use the model the engine has loaded.

    server = OpenAIServer(engine, port=8000, api_key="sk-local")   # engine: an EngineClient
    server.start()            # serves on its own threads; returns at once
    server.requests_in_flight # for a status bar
    server.stop()

Standard library only (``http.server``): one thread per HTTP connection, each blocking on its
engine request. The server opens its own connection to the engine (``connect_again``), so in
the engine's round-robin its requests, together, take turns with the GUI's chats. A client
that disconnects, while its request waits or while it streams, cancels that request.

Every request gets an HTTP status and an OpenAI-shaped error body when it fails, also one
http.server itself refuses (a malformed request line, an unsupported method) and one that hits
a bug (500, the traceback in the log). A browser page cannot use the server through DNS
rebinding: the Host header must name an address the server is bound to (or a name allowed
with ``allowed_hosts``). Browser pages may use it (CORS, with OPTIONS preflights) from
loopback origins, and from others only as ``allowed_origins`` says. A client that stalls
mid-request is dropped after ``READ_TIMEOUT_S``.

Routes work with and without ``/v1`` (clients differ in the base URL they take); any
``model`` name is served by the loaded model (clients with fixed names work).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.engine.client import ChatStream, EngineClient
from app.engine.protocol import ContextPolicy
from app.errors import (
    ChatTemplateError,
    ContextOverflowError,
    EngineBusyError,
    EngineDiedError,
    EngineError,
    GrammarError,
    NoModelLoadedError,
)
from app.serve import openai_api, openai_responses
from app.serve.errors import ApiError
from app.serve.openai_api import CompletionRequest

log = logging.getLogger("moedesk.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LINGER_S = 5.0  # how long a refused body is drained before the connection closes
LINGER_MAX_BYTES = 64 * 1024 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024  # well under the engine's 4 MiB frame: an accepted body fits
DISCONNECT_POLL_S = 0.2
STOP_DRAIN_S = 10.0  # how long stop() lets cancelled requests send their end
# A client silent this long while the server waits for its request line, headers or body (or
# for it to read the answer) is dropped: a stalled upload must not hold a thread for ever.
READ_TIMEOUT_S = 30.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# every route also answers without its /v1 (clients differ in the base URL they take)
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
GET_ROUTES = ("/v1/models", "/v1/health")
ENDPOINTS = ("GET /v1/models, GET /health, POST /v1/chat/completions and POST "
             "/v1/completions (each also without /v1)")
CORS_MAX_AGE_S = 600
ALLOW_HEADERS = "Authorization, Content-Type"


class OpenAIServer:
    """OpenAI's /v1 API over an engine; ``start`` and ``stop`` from any thread."""

    def __init__(self, engine: EngineClient, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, api_key: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, allowed_hosts: Iterable[str] = (),
                 read_timeout_s: float = READ_TIMEOUT_S,
                 allowed_origins: Iterable[str] = (),
                 context_policy: ContextPolicy = ContextPolicy.STOP) -> None:
        """``port`` 0 picks a free one (see ``port`` after ``start``); ``api_key`` set: every
        request must carry ``Authorization: Bearer <api_key>``. ``allowed_hosts``: names besides
        the bound addresses that requests may give as their Host (a name this machine has on
        the network, a reverse proxy's). ``allowed_origins``: web origins
        (``https://app.example``, or ``*`` for any) whose pages may call the server from a
        browser, besides loopback ones (``http://localhost:3000``...). ``context_policy``:
        what a chat longer than the context gets when its request names none (STOP: a 400
        naming the request field; clients opt in per request or with this)."""
        self.engine = engine
        self.host = host
        self.api_key = api_key or None
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
        self.read_timeout_s = read_timeout_s
        self.allowed_origins = {o.strip().rstrip("/").lower() for o in allowed_origins
                                if o.strip()}
        self.context_policy = context_policy
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connection: EngineClient | None = None
        self._lock = threading.Condition()
        self._streams: set[ChatStream] = set()
        self._created = int(time.time())

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``.../v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def requests_in_flight(self) -> int:
        """Completions started and not yet answered (running or waiting in the engine)."""
        with self._lock:
            return len(self._streams)

    def start(self) -> None:
        """Bind and serve on a background thread (OSError if the port is taken)."""
        if self._httpd is not None:
            return
        connection = self.engine.connect_again("openai-server")
        try:
            httpd = _HTTPServer((self.host, self._port), _Handler, self)
        except BaseException:
            connection.close()
            raise
        self._connection, self._httpd = connection, httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="openai-server",
                                        daemon=True)
        self._thread.start()
        log.info("OpenAI-compatible server on %s", self.url)

    def stop(self) -> None:
        """Stop accepting, cancel the requests in flight, close; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()
        with self._lock:  # let them tell their clients, before the engine connection goes
            self._lock.wait_for(lambda: not self._streams, STOP_DRAIN_S)
        if self._thread is not None:
            self._thread.join()
        if self._connection is not None:
            self._connection.close()  # a handler still waiting fails at once
        self._connection = None

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- used by the handler ------------------------------------------------------------

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this server, not a name a web page's DNS
        pointed here (DNS rebinding: the browser would send it the page's own Host).

        Allowed: the bound address; loopback names when bound to loopback; this machine's
        addresses and names when bound to every interface; ``allowed_hosts``. A request without
        a Host header is from no browser (they always send one), so it passes.
        """
        if header is None:
            return True
        name = _host_name(header)
        if name is None:
            return False
        bound = self.host.strip().lower().strip("[]")
        if name == bound or name in self.allowed_hosts:
            return True
        if _is_loopback(bound):
            return name in LOOPBACK_NAMES or _is_loopback(name)
        if bound in ("0.0.0.0", "::", ""):
            return name in LOOPBACK_NAMES or name in _machine_names()
        return False

    def host_refusal(self, header: str | None) -> ApiError:
        return ApiError(403, f"This server does not answer requests for the host {header!r}: it "
                        f"answers to {self.host} (the address it listens on). To reach it under "
                        "another name, allow that name (moedesk-cli serve --allow-host NAME, or "
                        "Settings > OpenAI-compatible server > Allowed host names).",
                        code="host_not_allowed")

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser page from ``origin`` may use the server (CORS). Loopback pages
        (a tool's web UI on this machine) may; others only when allowed by name or ``*``:
        a page from the web could otherwise use the model of anyone who opens it."""
        text = origin.strip().rstrip("/").lower()
        if "*" in self.allowed_origins or text in self.allowed_origins:
            return True
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False  # "null" (a file, a sandboxed frame), or not an origin
        name = _host_name(rest)
        return name is not None and _is_loopback(name)

    def origin_refusal(self, origin: str) -> ApiError:
        return ApiError(403, f"This server does not answer web pages from {origin!r} (only from "
                        "this machine's own, http://localhost...). To let that site use it, "
                        "allow its origin (moedesk-cli serve --allow-origin ORIGIN; the desktop "
                        "app's server takes pages from this machine only).",
                        code="origin_not_allowed")

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            key.strip().encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8"))

    def model_id(self) -> str | None:
        """The loaded model's name (what requests name as ``model``), or None."""
        return self._engine().stats().model

    def model_list(self) -> dict[str, Any]:
        return openai_responses.model_list(self.model_id(), self._created)

    def _engine(self) -> EngineClient:
        if self._connection is None:
            raise EngineDiedError("the server is stopping.")
        return self._connection

    def loaded_model(self) -> str:
        """The loaded model's name; a 503 if none is loaded."""
        model = self.model_id()
        if model is None:
            raise ApiError(503, "no model is loaded in MoE Desk; load one, then try again.",
                           code="model_not_loaded", kind="server_error")
        return model

    @contextlib.contextmanager
    def completion(self, request: CompletionRequest) -> Iterator[tuple[ChatStream, str]]:
        """Start a request on the engine (whatever model it names: one is loaded, and clients
        with a fixed model name must work); yields the stream and the loaded model's name. On
        the way out it is over or cancelled."""
        model = self.loaded_model()
        stream = self._engine().chat(request.params)
        with self._lock:
            self._streams.add(stream)
        try:
            yield stream, model
        finally:
            stream.cancel()  # nothing if it has ended; else (a client gone) it stops now
            with contextlib.suppress(EngineError):
                stream.result  # noqa: B018 (drain its events, so its slot in the engine is free)
            with self._lock:
                self._streams.discard(stream)
                self._lock.notify_all()


def _host_name(header: str) -> str | None:
    """The host of a Host header ("example.com:8000", "[::1]:8000"), lower-case, or None if it
    is not one."""
    text = header.strip().lower()
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        return name if sep and (not rest or rest[1:].isdigit() and rest[0] == ":") else None
    name, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name or None


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def _machine_names() -> set[str]:
    """This machine's addresses and names, for a server bound to every interface."""
    import psutil

    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.split("%")[0].lower())
    return names


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 app: OpenAIServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failure outside a request's own handling (socketserver would print it): the log."""
        log.exception("OpenAI server: connection from %s failed", client_address)


def _stopped() -> EngineBusyError:
    """A request cancelled while its client is still there: the server or engine is stopping."""
    return EngineBusyError("the engine stopped this request: MoE Desk's server or engine is "
                           "shutting down.", "Try again when it is back.")


class _ClientGone(Exception):
    """The HTTP client closed its connection."""


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams close when done
    server_version = "MoEDesk"
    _unread_body = 0  # bytes of a refused request body still on their way
    _cors_origin: str | None = None  # an allowed browser origin: answers carry CORS headers
    error_content_type = "application/json"
    # a request line without a version is HTTP/0.9 to http.server, whose answers have no status
    # line; every answer here has one
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.timeout = self.server.app.read_timeout_s  # StreamRequestHandler sets it on the socket
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long, a method
        this server has not) as OpenAI-shaped errors, like the rest."""
        self.close_connection = True
        error = ApiError(code, explain or message or HTTPStatus(code).phrase,
                         code="unsupported_method" if code == 501 else None)
        if code == 501:
            error.message = f"{self.command} is not supported: this server has {ENDPOINTS}."
        self._json(code, error.body())

    def do_PUT(self) -> None:  # noqa: N802
        self.send_error(501)

    do_DELETE = do_PATCH = do_HEAD = do_PUT  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self._path()
        if path == "/v1/health":  # for load balancers and launchers: no API key needed
            self._serve(self._health, public=True)
        else:
            self._serve(lambda: self._json(200, self.server.app.model_list())
                        if path == "/v1/models" else self._not_found())

    def do_POST(self) -> None:  # noqa: N802
        self._serve(self._post)

    def do_OPTIONS(self) -> None:  # noqa: N802
        """A browser's CORS preflight: which methods and headers a page may use. It carries
        no API key (browsers never send one here), so it needs none."""
        self._serve(self._preflight, public=True)

    def _path(self) -> str:
        """The request's path without query and trailing slash, with /v1 in front: routes
        answer with and without it."""
        path = self.path.split("?", 1)[0].rstrip("/")
        return path if path.startswith("/v1/") or path == "/v1" else "/v1" + path

    def _serve(self, work: Any, public: bool = False) -> None:
        try:
            if not self.server.app.host_allowed(self.headers.get("Host")):
                raise self.server.app.host_refusal(self.headers.get("Host"))
            origin = self.headers.get("Origin")
            if origin is not None:  # a browser page: allowed origins only
                if not self.server.app.origin_allowed(origin):
                    raise self.server.app.origin_refusal(origin)
                self._cors_origin = origin
            if not public and not self.server.app.authorized(self.headers.get("Authorization")):
                raise ApiError(401, "Incorrect API key provided. Send it as 'Authorization: "
                               "Bearer <key>' (the key MoE Desk's server was started with).",
                               code="invalid_api_key")
            work()
        except ApiError as exc:
            self._json(exc.status, exc.body())
        except _ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except EngineError as exc:
            self._json(*_engine_error(exc))
        except TimeoutError:
            self._json(408, ApiError(408, f"the request was not sent within "
                                     f"{self.server.app.read_timeout_s:g} s; send it whole.",
                                     code="request_timeout").body())
        except Exception:  # a bug: an answer for the client, the traceback for the log
            log.exception("OpenAI server: %s %s failed", self.command, self._path())
            self._json(500, ApiError(500, "MoE Desk's server failed on this request (a bug; "
                                     "the details are in its log).", kind="server_error").body())

    def finish(self) -> None:
        """A lingering close, as Apache and nginx make: a client refused with 413 is usually
        still sending its body, and closing a socket with unread data makes the kernel reset
        the connection, so the client would see a broken pipe instead of the answer. What
        arrives is read and dropped, up to 64 MiB and for at most 5 seconds."""
        if self._unread_body:
            deadline = time.monotonic() + LINGER_S
            left = min(self._unread_body, LINGER_MAX_BYTES)
            with contextlib.suppress(OSError):
                self.connection.settimeout(1.0)
                while left > 0 and time.monotonic() < deadline:
                    chunk = self.rfile.read1(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
        super().finish()

    def _not_found(self) -> None:
        raise ApiError(404, f"Unknown path {self.command} {self.path.split('?', 1)[0]}: this "
                       f"server has {ENDPOINTS}.", code="unknown_url")

    def _health(self) -> None:
        """200 with the model's name while one is loaded, else 503 (llama-server's rule)."""
        self._json(200, {"status": "ok", "model": self.server.app.loaded_model()})

    def _preflight(self) -> None:
        asked = self.headers.get("Access-Control-Request-Headers", "")
        # echo the headers asked for when they are plain header names (a page may send its
        # own, e.g. the openai library's x-stainless-*); anything else gets the usual two
        names = [h.strip() for h in asked.split(",") if h.strip()]
        ok = names and all(h.isascii() and h.replace("-", "").replace("_", "").isalnum()
                           for h in names)
        headers = {"Allow": "GET, POST, OPTIONS",
                   "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                   "Access-Control-Allow-Headers": ", ".join(names) if ok else ALLOW_HEADERS,
                   "Access-Control-Max-Age": str(CORS_MAX_AGE_S)}
        if self._cors_origin is not None and self.headers.get(
                "Access-Control-Request-Private-Network", "").lower() == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome's PNA preflight
        self.send_response(204)
        for name, value in headers.items():
            self.send_header(name, value)
        self._cors_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cors_headers(self) -> None:
        if self._cors_origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._cors_origin)
            self.send_header("Vary", "Origin")

    def _post(self) -> None:
        kind = ROUTES.get(self._path())
        if kind is None:
            self._not_found()
            return
        request = openai_api.parse_request(kind, self._body(),  # type: ignore[arg-type]
                                           self.server.app.context_policy)
        with self.server.app.completion(request) as (stream, model), self._watch(stream):
            if request.stream:
                self._stream(request, stream, model)
            else:
                result = stream.result
                if result.finish_reason == "cancelled":
                    raise _stopped()
                self._json(200, openai_responses.response(
                    request, openai_responses.new_id(kind), model, result))

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        # ASCII digits only: str.isdigit() also takes "²" or "٣", which int() refuses or reads
        if length is None or not (length.isascii() and length.isdigit()):
            self.close_connection = True
            raise ApiError(411, "send the request body with a Content-Length header.")
        if int(length) > self.server.app.max_body_bytes:
            self.close_connection = True  # the body is not read: finish() discards it
            self._unread_body = int(length)
            raise ApiError(413, f"the request body has {int(length):,} bytes; this server takes "
                           f"at most {self.server.app.max_body_bytes:,}. Shorten the prompt.",
                           code="request_too_large")
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):
            self.close_connection = True
            raise ApiError(400, f"the request body ended after {len(raw):,} of the "
                           f"{int(length):,} bytes its Content-Length announced.")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc}).") from None
        except RecursionError:
            raise ApiError(400, "the request body nests JSON too deeply to read.") from None

    def _stream(self, request: CompletionRequest, stream: ChatStream, model: str) -> None:
        """Server-sent events: one chunk per piece of the answer (content, reasoning or a
        tool call), the end, then ``[DONE]``. The status line waits for the first piece, so
        an error before it is a proper error."""
        responses = openai_responses
        request_id = responses.new_id(request.kind)
        split = responses.splitter(request)
        started = False
        n_calls = 0

        def send(deltas: list[Any]) -> None:
            nonlocal started, n_calls
            if not started:
                self._start_events()
                started = True
                if request.kind == "chat":
                    self._event(responses.delta_chunk(request, request_id, model, first=True))
            for delta in deltas:
                self._event(responses.delta_chunk(request, request_id, model, delta,
                                                  call_index=n_calls))
                n_calls += delta.call is not None

        try:
            for text in stream.texts():
                send(split.feed(text))
            result = stream.result
            if result.finish_reason == "cancelled":
                raise _stopped()
        except EngineError as exc:
            if not started:
                raise
            self._event(_engine_error(exc)[1])  # mid-stream: OpenAI clients raise this
            return
        send(split.finish())
        self._event(responses.end_chunk(request, request_id, model, result, n_calls > 0))
        if request.include_usage:
            self._event(responses.usage_chunk(request, request_id, model, result))
        self._write(b"data: [DONE]\n\n")

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # no length: the end of the stream says it
        self._cors_headers()
        self.end_headers()
        self.close_connection = True

    def _event(self, data: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            raise _ClientGone from None

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        if status >= 400:
            self.close_connection = True  # its body may be unread: start afresh
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self._cors_headers()
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    @contextlib.contextmanager
    def _watch(self, stream: ChatStream) -> Iterator[None]:
        """Cancel ``stream`` when the client hangs up, also while the request still waits in
        the engine (no write would notice then)."""
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                try:
                    readable, _, _ = select.select([self.connection], [], [], DISCONNECT_POLL_S)
                    if not readable:
                        continue
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        stream.cancel()  # end of file: the client is gone
                except (OSError, ValueError):  # reset, or the socket closed under us
                    stream.cancel()
                return  # gone, or it sent more (pipelining): either way, stop looking

        threading.Thread(target=watch, name="openai-server-watch", daemon=True).start()
        try:
            yield
        finally:
            # not joined: it ends within a poll, and a late cancel of an ended stream is a no-op
            done.set()


def _engine_error(exc: EngineError) -> tuple[int, dict[str, Any]]:
    """An engine failure as an HTTP status and an OpenAI error body."""
    if isinstance(exc, GrammarError):
        error = ApiError(400, str(exc), param="response_format", code="invalid_grammar")
    elif isinstance(exc, ChatTemplateError):
        error = ApiError(400, str(exc), code="chat_template")
    elif isinstance(exc, NoModelLoadedError):
        error = ApiError(503, str(exc), code="model_not_loaded", kind="server_error")
    elif isinstance(exc, (EngineBusyError, EngineDiedError)):
        error = ApiError(503, str(exc), code="engine_unavailable", kind="server_error")
    elif isinstance(exc, ContextOverflowError):
        # OpenAI's code for it; the fix is this server's opt-in, not the engine's wording
        error = ApiError(400, f"{exc.message} Send \"context_policy\": \"drop_middle\" (or "
                         "\"rolling_window\") with the request to leave earlier turns out of "
                         "the prompt, or start the server with --context-policy drop_middle.",
                         param="messages", code="context_length_exceeded")
    elif type(exc) is EngineError and not exc.message.startswith("internal"):
        # the request's own content: too long for the context, refused by the template
        error = ApiError(400, str(exc))
    else:
        error = ApiError(500, str(exc), kind="server_error")
    return error.status, error.body()
