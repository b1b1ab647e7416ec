"""The OpenAI-compatible server as a desktop user meets it (issue 7): turned on in Settings,
shown in the status bar, following the engine through a restart, off again, and the clear
word when the port is taken or the address needs a key."""

from __future__ import annotations

import json
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from pytestqt.qtbot import QtBot

from app.engine.placement import PlacementPlan
from app.engine.protocol import ContextPolicy, LoadParams
from app.paths import data_dir
from app.store import FIRST_RUN_DONE, Store
from app.ui.engine_controller import EngineController
from app.ui.main_window import MainWindow
from app.ui.serve_control import KEYRING_SERVICE, KEYRING_USER, load_config
from tests import hub_server
from tests.hub_server import MemoryKeyring

memory_keyring = hub_server.memory_keyring  # the fixture, where pytest looks for it

WAIT_MS = 60_000
KEY = "sk-local-test-key-123"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_models(port: int, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           memory_keyring: MemoryKeyring, tiny_moe_gguf: Path) -> Iterator[MainWindow]:
    """The app with the engine started and the tiny model loaded (room for long answers)."""
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    store = Store.open_default()
    store.set_setting(FIRST_RUN_DONE, True)
    main = MainWindow(store, EngineController())
    qtbot.addWidget(main)
    main.show()
    with qtbot.waitSignal(main.engine.model_loaded, timeout=WAIT_MS):
        main.engine.load(LoadParams(model=str(tiny_moe_gguf),
                                    placement=PlacementPlan(n_ctx=65536, n_threads=2)))
    yield main
    main.close()


def turn_on(window: MainWindow, port: int, host: str = "127.0.0.1") -> None:
    """What the user does in Settings: address, port, then the checkbox."""
    group = window.settings.serve
    group.host.setText(host)
    group.host.editingFinished.emit()
    group.port.setValue(port)
    group.port.editingFinished.emit()
    group.enabled.setChecked(True)


def test_serve_from_settings_with_a_key_through_a_restart(
        qtbot: QtBot, window: MainWindow, memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    group, label = window.settings.serve, window.serve_status
    assert not group.enabled.isChecked() and not label.isVisible()  # off by default
    assert group.url.text() == "http://127.0.0.1:8000/v1"
    port = free_port()
    group.key.setText(KEY)
    group.save_key.click()
    assert memory_keyring.passwords[(KEYRING_SERVICE, KEYRING_USER)] == KEY
    assert group.key.text() == "" and "keyring" in group.key_status.text()
    turn_on(window, port)
    qtbot.waitUntil(lambda: window.serve.running, timeout=WAIT_MS)
    assert group.url.text() == f"http://127.0.0.1:{port}/v1"
    assert label.isVisible() and label.text() == f"API on :{port}, 0 in flight"
    assert "Serving at" in group.status.text()

    # the key is required, and it is nowhere in the app's database
    assert get_models(port)[0] == 401
    status, body = get_models(port, KEY)
    assert status == 200 and body["data"][0]["id"] == window.engine.loaded.model.name
    database = (data_dir() / "moedesk.sqlite3").read_bytes()
    assert KEY.encode() not in database
    with sqlite3.connect(data_dir() / "moedesk.sqlite3") as db:
        assert KEY not in repr(db.execute("SELECT * FROM settings").fetchall())

    # a streamed answer in flight shows in the status bar, and its end too
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=body["data"][0]["id"], messages=[{"role": "user", "content": "Go on forever"}],
        max_tokens=60000, temperature=0, extra_body={"ignore_eos": True}, stream=True)
    next(iter(stream))
    qtbot.waitUntil(lambda: label.text() == f"API on :{port}, 1 in flight", timeout=WAIT_MS)
    stream.close()
    qtbot.waitUntil(lambda: label.text() == f"API on :{port}, 0 in flight", timeout=WAIT_MS)

    # a restarted engine is served again, by a server on the new engine's client
    old_client = window.engine.client
    window.engine.restart()
    qtbot.waitUntil(lambda: window.engine.client is not old_client and window.serve.running
                    and window.engine.loaded is not None, timeout=WAIT_MS)
    assert get_models(port, KEY)[0] == 200

    # off: the port closes and the status bar says nothing
    group.enabled.setChecked(False)
    qtbot.waitUntil(lambda: not port_open(port), timeout=WAIT_MS)
    assert not label.isVisible() and group.status.text() == "Off"
    assert window.store.setting("openai_server_enabled") is False


def test_a_taken_port_is_said_clearly(qtbot: QtBot, window: MainWindow) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        turn_on(window, port)
        qtbot.waitUntil(lambda: window.serve.error is not None, timeout=WAIT_MS)
    assert not window.serve.running
    assert f"Port {port} is in use by another program" in window.settings.serve.status.text()
    assert "choose another port in Settings" in window.settings.serve.status.text()
    assert window.serve_status.text() == f"API off: Port {port} is in use by another program"
    # another port, and it serves
    other = free_port()
    turn_on(window, other)
    qtbot.waitUntil(lambda: window.serve.running, timeout=WAIT_MS)
    assert get_models(other)[0] == 200 and window.serve.error is None


def test_another_address_warns_and_needs_a_key(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page("Settings")
    group = window.settings.serve
    assert not group.warning.isVisible()
    turn_on(window, free_port(), host="0.0.0.0")
    assert group.warning.isVisible() and "other machines" in group.warning.text()
    assert "An API key is needed to serve on 0.0.0.0" in group.status.text()
    assert not window.serve.running and window.serve_status.text().startswith("API off")


def test_web_origins_and_the_long_conversation_policy_are_settings(
        qtbot: QtBot, window: MainWindow) -> None:
    group = window.settings.serve
    port = free_port()
    group.allowed_origins.setText("https://chat.example, ")
    group.allowed_origins.editingFinished.emit()
    group.context_policy.setCurrentIndex(group.context_policy.findData("drop_middle"))
    group.context_policy.activated.emit(group.context_policy.currentIndex())
    turn_on(window, port)
    qtbot.waitUntil(lambda: window.serve.running, timeout=WAIT_MS)
    server = window.serve.server
    assert server is not None and server.context_policy == ContextPolicy.DROP_MIDDLE
    # a page of the allowed site may call it from a browser (CORS preflight), another may not
    preflight = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="OPTIONS",
                                       headers={"Origin": "https://chat.example",
                                                "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(preflight, timeout=30) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://chat.example"
    preflight.remove_header("Origin")
    preflight.add_header("Origin", "https://elsewhere.example")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(preflight, timeout=30)
    assert refused.value.code == 403
    # kept for the next start of the app
    again = load_config(window.store, None)
    assert again.allowed_origins == ("https://chat.example",)
    assert again.context_policy == ContextPolicy.DROP_MIDDLE
    group.enabled.setChecked(False)
    qtbot.waitUntil(lambda: not port_open(port), timeout=WAIT_MS)
