"""Autotune from the Advisor page: the user presses Autotune, sees the runs go by, and ends with
the fastest placement loaded in the app's own engine and remembered for the next load."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.hardware import detect
from app.hardware.bandwidth import measure_ram
from app.hardware.expert_read import ExpertReadRate
from app.hardware.probe_cache import cpu_key
from app.tune.autotune import machine_id, remembered, tune_key
from app.ui.advisor import AdvisorPage
from app.ui.app_state import AppState
from app.ui.engine_controller import EngineController
from tests.ui_testing import app_parts as shared_parts


@pytest.fixture
def moedesk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def app_parts(qtbot: QtBot, moedesk_home: Path, tiny_moe_gguf: Path):
    """The Advisor page as the app makes it: its autotune drives the app's own engine."""
    with shared_parts(detect(nvml=False), moedesk_home / "engine.log") as (state, controller):
        page = AdvisorPage(state, controller, n_ctx=2048, probe_disk=False)
        qtbot.addWidget(page)
        page.set_model(tiny_moe_gguf)
        qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
        yield controller, page


def test_autotune_loads_the_winner_and_remembers_it(qtbot: QtBot, app_parts, tiny_moe_gguf: Path) -> None:
    controller, page = app_parts
    panel = page.tune_panel
    assert panel.start_button.isEnabled()
    with qtbot.waitSignal(controller.model_loaded, timeout=120_000) as loaded:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        assert panel.stop_button.isEnabled() and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    assert panel.status.text().startswith("Kept: "), panel.status.text()
    assert "candidates ran" in panel.status.text()
    assert controller.state == "idle" and controller.loaded is loaded.args[0]
    key = tune_key(tiny_moe_gguf, machine_id(detect(nvml=False).cpu.model, None), None)
    tuned = remembered(key)
    assert tuned is not None and controller.last_load is not None
    assert controller.last_load.placement == tuned
    # the engine really has that model loaded: a chat runs
    from app.engine.protocol import ChatMessage, ChatParams, Sampling

    with qtbot.waitSignal(controller.chat_finished, timeout=30_000) as done:
        controller.chat(ChatParams([ChatMessage("user", "hi")], Sampling(max_tokens=4, ignore_eos=True)))
    assert done.args[1].completion_tokens == 4


def test_autotune_for_long_chats_ranks_by_decode_deep_in_the_context(qtbot: QtBot, app_parts) -> None:
    controller, page = app_parts
    panel = page.tune_panel
    assert panel.depth.maximum() == 1024  # the page's context of 2048, less room to decode in
    panel.depth.setValue(5000)
    assert panel.depth.value() == 1024
    panel.minutes.setValue(1)
    with qtbot.waitSignal(controller.model_loaded, timeout=120_000):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    assert "at depth 1,024)" in panel.status.text(), panel.status.text()


def test_stop_ends_autotune_early_keeping_the_best_so_far(qtbot: QtBot, app_parts) -> None:
    controller, page = app_parts
    panel = page.tune_panel
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Run 2"), timeout=60_000)
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "(cancelled)" in panel.status.text(), panel.status.text()
    assert controller.loaded is not None  # the best so far is loaded


RECORDED_REPORT = Path(__file__).parent / "data" / "bench" / "q30-12gb-h100.csv"


def test_the_dashboard_shows_a_benchmark_report_from_the_gpu_machine(qtbot: QtBot,
                                                                    moedesk_home: Path) -> None:
    from app.ui.dashboard import DashboardPage

    page = DashboardPage(AppState(), EngineController())
    qtbot.addWidget(page)
    dialog = page.open_report(RECORDED_REPORT)
    assert dialog is not None
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 12
    assert dialog.table.item(0, 0).text() == "classic" and dialog.table.item(0, 5).text() == "48.6"
    assert not dialog.chart.pixmap().isNull() and dialog.chart.pixmap().width() > 500


def test_a_report_with_decode_deep_in_the_context_shows_it(qtbot: QtBot, moedesk_home: Path,
                                                           tmp_path: Path) -> None:
    from app.tune.report import write_csv
    from app.ui.dashboard import DashboardPage
    from tests.test_tune import deep_rows

    write_csv(deep_rows(), 48, tmp_path / "report.csv")
    page = DashboardPage(AppState(), EngineController())
    qtbot.addWidget(page)
    dialog = page.open_report(tmp_path / "report.csv")
    assert dialog is not None
    qtbot.addWidget(dialog)
    headers = [dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount())]
    assert headers[6:9] == ["Decode deep t/s", "Depth", "Runs"]
    assert dialog.table.item(1, 6).text() == "25.0" and dialog.table.item(1, 7).text() == "16384"
    assert dialog.chart.pixmap().width() > 500


def test_a_file_that_is_not_a_report_is_explained(qtbot: QtBot, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from app.ui.dashboard import DashboardPage

    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text: warnings.append(text))
    page = DashboardPage(AppState(), EngineController())
    qtbot.addWidget(page)
    other = tmp_path / "prices.csv"
    other.write_text("item,price\napple,1\n")
    assert page.open_report(other) is None
    assert warnings and "is not a report written by 'moedesk-cli bench'" in warnings[0]


def test_a_kernel_rate_timed_by_autotune_reaches_the_advisor_page(qtbot: QtBot, app_parts) -> None:
    # beside a GPU the first tuning times the CPU's kernels (app/tune/expert_read_probe.py): the
    # engine worker hands the rate over, the app state's RAM figures carry it, the page re-plans
    _, page = app_parts
    page.tuner._probe_step.emit("decoding with 8 experts a token (round 2 of 3)")
    qtbot.waitUntil(lambda: "timing this CPU's kernels" in page.tune_panel.status.text(), timeout=5_000)
    assert page.tune_panel.status.text().endswith("(round 2 of 3)")
    page.state.set_ram(measure_ram(buffer_bytes=16 << 20))  # the RAM probe's answer
    rate = ExpertReadRate(bytes_per_s=61e9, threads=16, quant="Q4_0", cpu=cpu_key())
    with qtbot.waitSignal(page.state.ram_changed, timeout=5_000):
        page.tuner._kernels_timed.emit(rate)
    qtbot.waitUntil(lambda: page.ram is not None and page.ram.expert_read == rate, timeout=5_000)
    with qtbot.assertNotEmitted(page.state.ram_changed, wait=200):  # the same rate again: no re-plan
        page.tuner._kernels_timed.emit(rate)
