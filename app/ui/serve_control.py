"""The desktop app's OpenAI-compatible server (issue 7): on when the user turns it on in
Settings, following the engine through restarts, off at exit.

``ServeControl`` owns one ``OpenAIServer`` at a time, always over the EngineController's
current client: it starts one when the server is enabled and an engine is up
(``state_changed`` to idle), stops it when the engine goes away (``starting`` on a restart, ``died``,
``stopped``) and starts a fresh one on the next engine. Binding and stopping (which lets
cancelled requests end, up to a few seconds) run on a worker thread, never on the UI thread.

The settings live in the Store (enabled, host, port); the API key lives only in the system
keyring (``api_key``/``save_api_key``), or for this session only where there is no keyring.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from app.engine.protocol import ContextPolicy
from app.serve.cli import LOOPBACK
from app.serve.http import DEFAULT_HOST, DEFAULT_PORT, OpenAIServer
from app.store import Store
from app.ui.background import Tasks
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState

log = logging.getLogger("moedesk.ui.serve")

SERVE_ENABLED, SERVE_HOST, SERVE_PORT = "openai_server_enabled", "openai_server_host", "openai_server_port"
SERVE_ALLOWED_HOSTS = "openai_server_allowed_hosts"  # Host names besides the bound address
SERVE_ALLOWED_ORIGINS = "openai_server_allowed_origins"  # web pages of other sites that may call it
SERVE_CONTEXT_POLICY = "openai_server_context_policy"  # for requests that name none
KEYRING_SERVICE, KEYRING_USER = "moedesk", "openai-api-key"
POLL_MS = 500  # the status bar's in-flight count, twice a second


@dataclass(frozen=True)
class ServeConfig:
    """What the user chose in Settings."""

    enabled: bool = False
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    # names the server also answers to (its Host header check refuses others: DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    # web origins (https://app.example, or *) whose pages may call it besides this machine's
    allowed_origins: tuple[str, ...] = ()
    # a conversation longer than the context, for requests that name no policy
    context_policy: ContextPolicy = ContextPolicy.STOP

    @property
    def exposed(self) -> bool:
        """Other machines can reach a server bound to this host."""
        return self.host.strip() not in LOOPBACK

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def problem(self) -> str | None:
        """Why this configuration must not serve, or None."""
        if not self.host.strip():
            return "Enter the address to listen on (127.0.0.1: this machine only)."
        if self.exposed and not self.api_key:
            return (f"An API key is needed to serve on {self.host}: other machines can reach "
                    "it. Save a key, or listen on 127.0.0.1.")
        return None


def load_config(store: Store, api_key: str | None) -> ServeConfig:
    return ServeConfig(enabled=bool(store.setting(SERVE_ENABLED, False)),
                       host=str(store.setting(SERVE_HOST, DEFAULT_HOST)),
                       port=int(store.setting(SERVE_PORT, DEFAULT_PORT)), api_key=api_key,
                       allowed_hosts=tuple(str(h) for h in store.setting(SERVE_ALLOWED_HOSTS, [])),
                       allowed_origins=tuple(str(o) for o in store.setting(SERVE_ALLOWED_ORIGINS, [])),
                       context_policy=ContextPolicy.or_default(store.setting(SERVE_CONTEXT_POLICY),
                                                               ContextPolicy.STOP))


def save_config(store: Store, config: ServeConfig) -> None:
    """Everything but the key (the key goes to the keyring only)."""
    store.set_setting(SERVE_ENABLED, config.enabled)
    store.set_setting(SERVE_HOST, config.host)
    store.set_setting(SERVE_PORT, config.port)
    store.set_setting(SERVE_ALLOWED_HOSTS, list(config.allowed_hosts))
    store.set_setting(SERVE_ALLOWED_ORIGINS, list(config.allowed_origins))
    store.set_setting(SERVE_CONTEXT_POLICY, config.context_policy.value)


class KeyringUnavailable(RuntimeError):
    """No system keyring backend: the key can be kept for this session only."""


def keyring_api_key() -> str | None:
    """The saved API key; KeyringUnavailable where there is no keyring to read."""
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER) or None
    except KeyringError as exc:
        raise KeyringUnavailable(str(exc)) from None


def save_keyring_api_key(key: str | None) -> None:
    """Save (or, with None, remove) the API key; KeyringUnavailable where there is no keyring."""
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        if key:
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, key)
        else:
            with contextlib.suppress(PasswordDeleteError):
                keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
    except PasswordDeleteError:
        pass
    except KeyringError as exc:
        raise KeyringUnavailable(str(exc)) from None


def listen_error(host: str, port: int, exc: OSError) -> str:
    """An OSError from binding, in words with the fix."""
    if exc.errno == errno.EADDRINUSE:
        return (f"Port {port} is in use by another program: choose another port in Settings, "
                "or stop that program.")
    return f"Cannot listen on {host}:{port} ({exc.strerror or exc}): check the address and port."


class ServeControl(QObject):
    """Runs the OpenAI server over the engine the controller holds now."""

    changed = Signal()  # running / port / error / in-flight changed: read status_text, error

    def __init__(self, engine: EngineController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.config = ServeConfig()
        self.server: OpenAIServer | None = None  # set and cleared on the UI thread only
        self._starting: OpenAIServer | None = None  # binding on the worker
        self.error: str | None = None
        self.in_flight = 0
        # binding and stopping, one after the other: a restart's stop frees the port its start binds
        self._tasks = Tasks(self, threads=1)
        self._generation = 0  # bumped whenever what should run changes: late results are dropped
        self._poll = QTimer(self, interval=POLL_MS)
        self._poll.timeout.connect(self._poll_in_flight)
        engine.state_changed.connect(self._engine_state)

    @property
    def running(self) -> bool:
        return self.server is not None

    def status_text(self) -> str:
        """For the status bar: '' when off."""
        if self.server is not None:
            return f"API on :{self.server.port}, {self.in_flight} in flight"
        if self.config.enabled and self.error:
            return "API off: " + self.error.split(":", 1)[0]
        return ""

    @Slot(object)
    def apply(self, config: ServeConfig) -> None:
        """Serve with ``config`` from now on (restarting a running server if it changed)."""
        if config == self.config:
            return
        self.config = config
        self._stop()
        self._sync()

    def shutdown(self) -> None:
        """At application exit: stop serving now (blocks while requests are cancelled)."""
        self._generation += 1
        self._poll.stop()
        server, self.server = self.server, None
        self._tasks.close(30_000)
        if server is not None:
            server.stop()

    # --- internals ------------------------------------------------------------------------

    def _should_run(self) -> bool:
        return (self.config.enabled and self.config.problem() is None
                and self.engine.client is not None and not self.engine.state.client_gone)

    def _engine_state(self, state: EngineState) -> None:
        if state.client_gone:
            self._stop()
            self.changed.emit()
        else:  # "idle" after "starting": a new engine (and client) is up
            self._sync()

    def _sync(self) -> None:
        """Start a server if one should run and none does."""
        self.error = self.config.problem() if self.config.enabled else None
        if self.server is None and self._starting is None and self._should_run():
            client, config = self.engine.client, self.config
            server = OpenAIServer(client, host=config.host.strip(), port=config.port,  # type: ignore[arg-type]
                                  api_key=config.api_key, allowed_hosts=config.allowed_hosts,
                                  allowed_origins=config.allowed_origins,
                                  context_policy=config.context_policy)
            generation, self._starting = self._generation, server
            self._submit(server.start, lambda _: self._started(generation, server),
                         lambda exc: self._failed(generation, config, exc))
        self.changed.emit()

    def _stop(self) -> None:
        self._generation += 1
        server, self.server, self._starting = self.server, None, None
        self._poll.stop()
        self.in_flight = 0
        if server is not None:
            self._submit(server.stop, lambda _: None, lambda exc: log.warning("stop: %s", exc))

    def _started(self, generation: int, server: OpenAIServer) -> None:
        if generation != self._generation:  # stopped or reconfigured meanwhile
            self._submit(server.stop, lambda _: None, lambda exc: None)
            return
        self.server, self.error, self._starting = server, None, None
        self._poll.start()
        self.changed.emit()

    def _failed(self, generation: int, config: ServeConfig, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self._starting = None
        if isinstance(exc, OSError):
            self.error = listen_error(config.host, config.port, exc)
        else:
            self.error = f"The server did not start: {exc}"
        log.warning("OpenAI server: %s", self.error)
        self.changed.emit()

    def _poll_in_flight(self) -> None:
        if self.server is not None:
            count = self.server.requests_in_flight
            if count != self.in_flight:
                self.in_flight = count
                self.changed.emit()

    def _submit(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
                on_error: Callable[[BaseException], None]) -> None:
        self._tasks.run(fn, on_done, on_error)  # nothing runs after shutdown()
