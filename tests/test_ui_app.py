"""The whole app window with the real engine, as a user meets it: load a model the way the
Models page asks for it, chat, watch the status bar, survive a killed engine, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.exceptions import TimeoutError as QtTimeoutError
from pytestqt.qtbot import QtBot

from app.hardware import Cpu, Gpu, Hardware, Memory
from app.store import FIRST_RUN_DONE, THEME, ChatDefaults, Store
from app.ui.engine_controller import EngineController
from app.ui.first_run.recommend import recommend
from app.ui.main_window import MainWindow
from app.ui.widgets.theme import apply_theme

WAIT_MS = 60_000


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MainWindow]:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    store = Store.open_default()
    store.set_setting(FIRST_RUN_DONE, True)
    store.set_setting("load_context", 4096)
    store.set_chat_defaults(ChatDefaults(preset="custom", temperature=0.0, max_tokens=3000))
    main = MainWindow(store, EngineController())
    qtbot.addWidget(main)
    main.show()
    yield main
    main.close()


def load_like_the_models_page(qtbot: QtBot, window: MainWindow, model: Path) -> None:
    loaded: list[object] = []
    window.engine.model_loaded.connect(loaded.append)
    window.load_model_file(model)  # what ModelsPage.load_requested(Path) is wired to
    # a failed plan or load shows the error box: fail with its words, not after a bare timeout
    try:
        qtbot.waitUntil(lambda: bool(loaded) or getattr(window, "load_error_box", None) is not None,
                        timeout=WAIT_MS)
    except QtTimeoutError as exc:  # where it stuck (a load hung once on a busy 2-core CI machine)
        raise AssertionError(f"no load after {WAIT_MS} ms: engine {window.status.state.text()!r}, "
                             f"status bar {window.statusBar().currentMessage()!r}") from exc
    box = getattr(window, "load_error_box", None)
    assert loaded, f"the load failed: {box.text()} {box.informativeText()}" if box else "no load"


def chat_text(window: MainWindow, text: str) -> None:
    window.chat.compose.setPlainText(text)
    window.chat.send()


def test_load_chat_status_kill_and_restart(qtbot: QtBot, window: MainWindow, tiny_moe_gguf: Path) -> None:
    load_like_the_models_page(qtbot, window, tiny_moe_gguf)
    status, chat = window.status, window.chat
    assert "synthetic tiny" in status.model.text() and "ctx 4,096" in status.model.text()
    assert status.state.text() == "Engine ready"

    # a short exchange (greedy, fixed length: the history below is the same on every run)
    conversation_id = chat.new_conversation().id
    window.store.update_conversation(conversation_id, max_tokens=32)
    chat_text(window, "Tell me about experts")
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "t/s" in status.speed.text(), timeout=WAIT_MS)  # live stats push
    assert status.speed.text().startswith(("decode", "last decode"))
    assert status.memory.text().startswith("RAM ")
    first = window.store.messages(conversation_id)[-1]
    chat.view.widgets()[-1].regenerate_button.click()
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    regenerated = window.store.messages(conversation_id)[-1]
    assert regenerated.id != first.id and regenerated.state == "complete"

    # an answer in flight when the engine is killed (as the OOM killer would)
    window.store.update_conversation(conversation_id, max_tokens=3000)
    chat_text(window, "Another long one, please")
    qtbot.waitUntil(lambda: chat.answer is not None and len(chat.answer.text) > 40, timeout=WAIT_MS)
    assert window.engine.client is not None and window.engine.client.process is not None
    with qtbot.waitSignal(window.engine.engine_died, timeout=WAIT_MS):
        os.kill(window.engine.client.process.popen.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    assert window.banner.isVisible()
    assert "killed by signal 9" in window.banner.message.text()
    # the model went with the engine: the app state and the pages say so
    assert window.state.loaded is None and chat.model is None
    assert window.dashboard.placement_label.text() == "No model loaded."
    assert status.state.text() == "Engine stopped unexpectedly"
    # the conversation is intact; the interrupted answer is kept, marked, with its text
    messages = window.store.messages(conversation_id)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1].state == "partial" and len(messages[-1].content) > 40
    assert "killed by signal 9" in messages[-1].error
    assert not chat.send_button.isEnabled() and "Restart" in chat.notice.text()
    assert chat.view.widgets()[-1].badge.text().startswith("partial answer")

    with qtbot.waitSignal(window.engine.model_loaded, timeout=WAIT_MS):
        window.banner.restart.click()
    assert not window.banner.isVisible()
    # the same model again, with the plan it was first loaded by
    loaded = window.state.loaded
    assert loaded is not None and loaded.path == tiny_moe_gguf
    assert loaded.plan is not None and loaded.plan.source == "advisor"
    window.store.update_conversation(conversation_id, max_tokens=8)
    chat_text(window, "Are you back?")
    qtbot.waitUntil(lambda: chat.answer is None, timeout=WAIT_MS)
    messages = window.store.messages(conversation_id)
    assert len(messages) == 6 and messages[-1].state == "complete" and messages[-1].content


def test_the_models_page_load_plans_with_the_advisor_and_loads(qtbot: QtBot, window: MainWindow,
                                                               tiny_moe_gguf: Path) -> None:
    """The Models page's Load (as its library's Load button sends it): the window plans it like
    File > Load, and the plan goes with the model into the app state."""
    with qtbot.waitSignal(window.engine.model_loaded, timeout=WAIT_MS) as loaded:
        window.models.load_requested.emit(tiny_moe_gguf)
    result = loaded.args[0]
    assert result.n_ctx == 4096  # the Settings context went through the planner
    assert window.engine.last_load is not None
    assert window.engine.last_load.placement.n_gpu_layers == 0  # no GPU here: all in RAM
    state = window.state.loaded
    assert state is not None and state.result is result and state.path == tiny_moe_gguf
    assert state.plan is not None and state.plan.source == "advisor"
    assert state.plan.plan.verdict == "fits_in_ram" and state.params.placement.n_ctx == 4096


def test_first_run_recommends_and_is_done_once(qtbot: QtBot, window: MainWindow) -> None:
    window.store.set_setting(FIRST_RUN_DONE, False)
    window.maybe_show_first_run()
    dialog = window.first_run_dialog
    qtbot.waitUntil(lambda: dialog.recommendation is not None, timeout=WAIT_MS)  # detected off-thread
    assert dialog.recommendation.repo in dialog.recommendation_label.text()
    dialog.models_button.click()
    assert window.stack.currentWidget() is window.pages["Models"]
    assert window.store.setting(FIRST_RUN_DONE) is True


def test_recommendation_grows_with_memory() -> None:
    def machine(ram_gb: int, vram_gb: int) -> Hardware:
        gpus = [Gpu("nvidia", "GPU", vram_gb * 10**9, vram_gb * 10**9)] if vram_gb else []
        return Hardware(cpu=Cpu("cpu", "x86_64", 8, 16, ()), memory=Memory(ram_gb * 10**9, 0, 0),
                        numa_nodes=[], gpus=gpus)

    assert recommend(machine(16, 0)).quant == "UD-Q2_K_XL"
    assert recommend(machine(32, 8)).name == "Qwen3-30B-A3B"
    assert recommend(machine(128, 24)).name == "gpt-oss-120b"
    assert recommend(machine(256, 24)).name == "Qwen3-235B-A22B"


def test_theme_switch_applies_and_persists(qtbot: QtBot, window: MainWindow) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    index = window.settings.theme.findData("dark")
    window.settings.theme.setCurrentIndex(index)
    assert window.store.setting(THEME) == "dark"
    assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80
    apply_theme(app, "light")
    assert app.palette().color(QPalette.ColorRole.Window).lightness() > 200


def test_qt_binding_keeps_bool_refcounts() -> None:
    """PySide6 6.12.0 dropped a reference to True on every signal emit and aborted the app
    after a few thousand; pyproject pins it below 6.12. This fails on such a binding."""

    class Emitter(QObject):
        fired = Signal(object)

    emitter = Emitter()
    emitter.fired.connect(lambda _value: None)
    before = sys.getrefcount(True)
    for _ in range(200):
        emitter.fired.emit(1)
    assert sys.getrefcount(True) >= before - 5


@pytest.mark.parametrize("flag, expected", [("--help", "usage: moedesk"), ("--version", "MoE Desk ")])
def test_help_and_version_answer_on_the_terminal_without_a_display(flag: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-m", "app.ui.main", flag], env=env, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected)
    assert "moedesk-cli --help" in " ".join(done.stdout.split()) or flag == "--version"


def test_the_hardware_is_found_once_and_every_page_follows_it(
        qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.hardware
    import app.ui.app_state as app_state
    import app.ui.tune.runner as runner
    from app.hardware.bandwidth import RamBandwidth
    from app.ui.advisor import AdvisorPage
    from app.ui.models import ModelsPage
    from app.ui.models.demo import demo_hardware

    found: list[int] = []
    machine = demo_hardware()

    def detect_once(*_: object, **__: object) -> Hardware:
        found.append(1)
        return machine

    def not_again(*_: object, **__: object) -> None:
        raise AssertionError("a page looked at the machine again")

    ram = RamBandwidth(read_bw=50e9, read_bw_1=12e9, copy_bw_1=9e9, matmul_flops=400e9,
                       threads=8, buffer_bytes=0)
    monkeypatch.setattr(app_state, "detect", detect_once)
    monkeypatch.setattr(app_state, "ram_bandwidth", lambda: ram)
    for module, name in ((app.hardware, "detect"), (runner, "detect")):
        monkeypatch.setattr(module, name, not_again)
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    store = Store.open_default()
    store.set_setting(FIRST_RUN_DONE, True)
    window = MainWindow(store, EngineController())
    qtbot.addWidget(window)
    advisor, models = window.pages["Advisor"], window.pages["Models"]
    assert isinstance(advisor, AdvisorPage) and isinstance(models, ModelsPage)
    qtbot.waitUntil(lambda: advisor.hardware is machine and advisor.ram is ram, timeout=10_000)
    assert models.find.hardware is machine and window.hardware is machine
    window.show_first_run()  # opened after the hardware was found: it is shown at once
    assert "AMD Ryzen 9 7950X" in window.first_run_dialog.hardware_label.text()
    assert found == [1]
    window.first_run_dialog.reject()
    window.close()
