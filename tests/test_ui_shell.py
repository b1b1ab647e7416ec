"""The app's shell as a user meets it: the navigation rail goes from page to page, every page
says what to do while it has nothing to show, a real load of the tiny model reaches every page
through the app state (and an unload takes it away again), and both themes reach every page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPalette
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.store import FIRST_RUN_DONE, Store
from app.ui.engine_controller import EngineController
from app.ui.main_window import NAVIGATION, MainWindow
from app.ui.widgets.theme import apply_theme

WAIT_MS = 60_000


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MainWindow]:
    """The window of a first start: no model, no conversations, nothing downloaded."""
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    store = Store.open_default()
    store.set_setting(FIRST_RUN_DONE, True)
    store.set_setting("load_context", 4096)
    main = MainWindow(store, EngineController())
    qtbot.addWidget(main)
    main.resize(1240, 800)
    main.show()
    yield main
    main.close()


@pytest.fixture
def app() -> Iterator[QApplication]:
    instance = QApplication.instance()
    assert isinstance(instance, QApplication)
    yield instance
    apply_theme(instance, "light")  # as the other tests expect it


def test_the_rail_goes_to_every_page_and_marks_it(qtbot: QtBot, window: MainWindow) -> None:
    assert [b.text() for b in window.nav.buttons.values()] == [item.name for item in NAVIGATION]
    assert window.current_page() == "Chat" and window.nav.current() == "Chat"
    for item in reversed(NAVIGATION):
        qtbot.mouseClick(window.nav.buttons[item.name], Qt.MouseButton.LeftButton)
        assert window.stack.currentWidget() is window.pages[item.name]
        assert window.nav.current() == item.name
        assert sum(b.isChecked() for b in window.nav.buttons.values()) == 1
        assert not window.nav.buttons[item.name].icon().isNull()
    window.show_page("Dashboard")  # the View menu's Ctrl+4 and a page's own request go here
    assert window.nav.current() == "Dashboard" and window.current_page() == "Dashboard"


def test_every_page_says_what_to_do_while_it_is_empty(qtbot: QtBot, window: MainWindow) -> None:
    chat, models, advisor, dashboard = window.chat, window.models, window.advisor, window.dashboard
    # Chat: no conversations yet; its button starts one, which then asks for a model
    assert chat.messages.currentWidget() is chat.empty
    assert chat.empty.title.text() == "No conversations yet" and chat.empty.button.text() == "New chat"
    assert chat.header.isHidden()
    qtbot.mouseClick(chat.empty.button, Qt.MouseButton.LeftButton)
    assert chat.conversation is not None and chat.header.isVisible()
    assert chat.messages.currentWidget() is chat.empty
    assert chat.empty.title.text() == "No model loaded" and chat.empty.button.text() == "Open Models"
    qtbot.mouseClick(chat.empty.button, Qt.MouseButton.LeftButton)
    assert window.current_page() == "Models"
    # Models: nothing downloaded, no repository open
    library = models.library_panel
    qtbot.waitUntil(lambda: library.listing.currentWidget() is library.empty, timeout=WAIT_MS)
    assert "No models on this computer" in library.empty.title.text()
    assert models.find.repo_area.currentWidget() is models.find.no_repo
    models.tabs.setCurrentWidget(library)
    qtbot.mouseClick(library.empty.button, Qt.MouseButton.LeftButton)
    assert models.tabs.currentWidget() is models.find
    # Advisor: no model chosen; Dashboard: no model loaded, and a way to the Models page
    assert advisor.body.currentWidget() is advisor.empty
    window.show_page("Advisor")
    assert advisor.empty.button.isVisible() and advisor.empty.button.text() == "Choose model file…"
    window.show_page("Dashboard")
    assert dashboard.body.currentWidget() is dashboard.empty
    qtbot.mouseClick(dashboard.empty.button, Qt.MouseButton.LeftButton)
    assert window.current_page() == "Models"


def test_a_real_load_reaches_every_page_through_the_app_state_and_an_unload_clears_it(
        qtbot: QtBot, window: MainWindow, tiny_moe_gguf: Path) -> None:
    seen: list[object] = []
    window.state.loaded_changed.connect(seen.append)
    chat, advisor, dashboard = window.chat, window.advisor, window.dashboard
    chat.new_conversation()
    with qtbot.waitSignal(window.engine.model_loaded, timeout=WAIT_MS):
        window.load_model_file(tiny_moe_gguf)  # File > Load, as the Models page's Load
    loaded = window.state.loaded
    assert loaded is not None and seen == [loaded]
    assert loaded.path == tiny_moe_gguf and loaded.result.n_ctx == 4096
    assert loaded.plan is not None and loaded.plan.source == "advisor"
    name = loaded.result.model.name
    # Chat: the model answers now; its empty conversation says so
    assert chat.model is loaded.result and chat.meter.isVisible()
    assert chat.empty.title.text() == f"Ask {name} anything" and chat.empty.button.isHidden()
    qtbot.waitUntil(chat._can_answer, timeout=WAIT_MS)
    # Dashboard: the plots instead of the empty state, the placement and how it was chosen
    assert dashboard.body.currentWidget() is dashboard.live
    assert name in dashboard.placement_label.text()
    assert "Placement: the advisor's plan. The advisor predicted decode" in dashboard.placement_label.text()
    assert dashboard.placement.rowCount() > 0
    # Advisor: it plans the loaded model and says it is loaded
    qtbot.waitUntil(lambda: advisor.path == tiny_moe_gguf and advisor.plan is not None, timeout=WAIT_MS)
    assert advisor.body.currentWidget() is advisor.content
    assert advisor.status.text().startswith(f"Loaded {name} in ")
    # the status bar and the Engine menu
    assert window.status.model.text() == f"{name} · ctx 4,096" and window.unload_action.isEnabled()

    with qtbot.waitSignal(window.engine.model_unloaded, timeout=WAIT_MS):
        window.unload_action.trigger()
    assert window.state.loaded is None and seen[-1] is None
    assert chat.model is None and chat.empty.title.text() == "No model loaded"
    assert not chat.meter.isVisible()
    assert dashboard.placement_label.text() == "No model loaded."
    assert dashboard.body.currentWidget() is dashboard.live  # what was drawn stays to be read
    assert advisor.status.text() == ""
    assert window.status.model.text() == "no model" and not window.unload_action.isEnabled()


def mean_lightness(widget: QWidget) -> float:
    """How light the widget is drawn, 0 (black) to 255 (white), on average."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    pixels = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * image.height())
    return float(pixels.reshape(image.height(), image.bytesPerLine())[:, :image.width()].mean())


@pytest.mark.parametrize("theme, dark", [("dark", True), ("light", False)])
def test_both_themes_reach_every_page(qtbot: QtBot, window: MainWindow, app: QApplication,
                                      theme: str, dark: bool) -> None:
    apply_theme(app, theme)
    qtbot.wait(10)
    window_colour = app.palette().color(QPalette.ColorRole.Window)
    assert (window_colour.lightness() < 80) if dark else (window_colour.lightness() > 200)
    for item in NAVIGATION:
        window.show_page(item.name)
        page = window.pages[item.name]
        assert page.palette().color(QPalette.ColorRole.Window) == window_colour
        # the page as drawn, not only its palette: no part of it kept the other theme
        lightness = mean_lightness(page)
        assert lightness < 90 if dark else lightness > 190, (item.name, lightness)
    rail = mean_lightness(window.nav)
    assert rail < 90 if dark else rail > 190


def test_the_theme_changes_live_from_settings(qtbot: QtBot, window: MainWindow, app: QApplication) -> None:
    light_sheet = window.nav.styleSheet()
    window.settings.theme.setCurrentIndex(window.settings.theme.findData("dark"))
    assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80
    qtbot.waitUntil(lambda: window.nav.styleSheet() != light_sheet, timeout=5_000)
    assert mean_lightness(window.chat) < 90
    assert 'QPushButton[primary="true"]' in app.styleSheet()
