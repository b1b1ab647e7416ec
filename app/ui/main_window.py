"""The main window: side navigation over the pages, the engine's status bar, the died banner,
and the wiring between the EngineController and the pages (docs: helper ui-contract).

Pages other engineers build (Models, Advisor, Dashboard) are imported if their package is
there; otherwise a placeholder says so and the rest of the app runs.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.engine.protocol import EngineStats, LoadResult
from app.hardware import Hardware
from app.store import FIRST_RUN_DONE, LOAD_CONTEXT, Store
from app.ui.app_state import AppState
from app.ui.chat import ChatPage
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState
from app.ui.serve_control import ServeControl
from app.ui.settings import SettingsPage
from app.ui.settings.page import DEFAULT_LOAD_CONTEXT
from app.ui.widgets.background import run_in_background
from app.ui.widgets.engine_status import DiedBanner, EngineStatus
from app.ui.widgets.theme import apply_theme

if TYPE_CHECKING:
    from app.load_plan import LoadPlan

log = logging.getLogger("moedesk.ui")

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "moedesk.svg"


def app_icon() -> QIcon:
    """The installed theme icon (a non-editable install has no checkout), else the repo's."""
    return QIcon.fromTheme("moedesk", QIcon(str(ICON)) if ICON.exists() else QIcon())
# (navigation label, package, class) of the pages other engineers build
PLUGGED_PAGES = {"Models": ("app.ui.models", "ModelsPage"),
                 "Advisor": ("app.ui.advisor", "AdvisorPage"),
                 "Dashboard": ("app.ui.dashboard", "DashboardPage")}
PAGE_ORDER = ("Chat", "Models", "Advisor", "Dashboard", "Settings")


def placeholder(name: str, why: str) -> QWidget:
    page = QLabel(f"The {name} page is not installed in this build.\n\n{why}")
    page.setAlignment(Qt.AlignmentFlag.AlignCenter)
    page.setWordWrap(True)
    return page


class MainWindow(QMainWindow):
    def __init__(self, store: Store, controller: EngineController | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.engine = controller or EngineController(self)
        # what the pages share, found once (hardware, RAM speed, the engine build)
        self.state = AppState(self)
        self.setWindowTitle("MoE Desk")
        self.setWindowIcon(app_icon())
        self.chat = ChatPage(store)
        self.settings = SettingsPage(store)
        self.pages: dict[str, QWidget] = {"Chat": self.chat, "Settings": self.settings}
        for name, (package, cls) in PLUGGED_PAGES.items():
            self.pages[name] = self._plugged_page(name, package, cls)
        self._build()
        self._menus()
        self._wire()
        self.state.detect()

    @property
    def hardware(self) -> Hardware | None:
        """This machine's hardware, once found (the app state's)."""
        return self.state.hardware

    # --- building -------------------------------------------------------------------------

    def _plugged_page(self, name: str, package: str, cls: str) -> QWidget:
        try:
            page_class = getattr(importlib.import_module(package), cls)
            # a page that shares the app's hardware and build takes the state and follows it
            wants_state = "state" in inspect.signature(page_class).parameters
            return page_class(state=self.state) if wants_state else page_class()
        except ImportError as exc:
            return placeholder(name, f"({exc})")
        except Exception as exc:  # a page that fails to build must not take the app down
            log.exception("the %s page failed to build", name)
            return placeholder(name, f"It failed to start: {exc}")

    def _build(self) -> None:
        self.nav = QListWidget()
        self.nav.addItems(PAGE_ORDER)
        self.nav.setFixedWidth(self.nav.fontMetrics().horizontalAdvance("Dashboard") * 2)
        self.stack = QStackedWidget()
        for name in PAGE_ORDER:
            self.stack.addWidget(self.pages[name])
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.banner = DiedBanner()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.stack, 1)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.nav)
        layout.addWidget(right, 1)
        self.setCentralWidget(central)
        self.status = EngineStatus()
        self.statusBar().addPermanentWidget(self.status, 1)
        self.serve_status = QLabel()  # "API on :8000, 1 in flight"; empty while off
        self.statusBar().addPermanentWidget(self.serve_status)
        self.show_page("Chat")
        self.resize(1200, 780)

    def _menus(self) -> None:
        engine = self.menuBar().addMenu("&Engine")
        self.start_action = engine.addAction("Start engine", self.engine.start)
        engine.addAction("Load model file…", self._choose_model_file)
        self.unload_action = engine.addAction("Unload model", self.engine.unload)
        engine.addAction("Switch model…", lambda: self.show_page("Models"))
        engine.addAction("Restart engine", self.engine.restart)
        engine.addSeparator()
        engine.addAction("Quit", QKeySequence.StandardKey.Quit, self.close)
        chat = self.menuBar().addMenu("&Chat")
        new_chat = QAction("New chat", self, shortcut=QKeySequence("Ctrl+N"))
        new_chat.triggered.connect(self.new_chat)
        chat.addAction(new_chat)
        view = self.menuBar().addMenu("&View")
        for i, name in enumerate(PAGE_ORDER, start=1):
            action = QAction(name, self, shortcut=QKeySequence(f"Ctrl+{i}"))
            action.triggered.connect(lambda _checked=False, n=name: self.show_page(n))
            view.addAction(action)

    def _wire(self) -> None:
        e = self.engine
        self.chat.attach(e)
        e.build_info.connect(self.state.set_build)
        e.state_changed.connect(self._state_changed)
        e.load_progress.connect(self.status.set_progress)
        e.model_loaded.connect(self._model_loaded)
        e.model_unloaded.connect(lambda: self._model_loaded(None))
        e.load_failed.connect(self._load_failed)
        e.stats.connect(self._stats)
        e.engine_died.connect(self.banner.show_death)
        self.banner.restart_requested.connect(e.restart)
        self.serve = ServeControl(e, self)
        self.serve.changed.connect(self._serve_changed)
        self.settings.serve.config_changed.connect(self.serve.apply)
        self.serve.apply(self.settings.serve.config())
        self._serve_changed()
        self.settings.theme_changed.connect(lambda theme: apply_theme(QApplication.instance(), theme))
        self._call("Advisor", "show_load_progress", signal=e.load_progress)
        self._call("Advisor", "show_loaded", signal=e.model_loaded)
        self._call("Advisor", "show_load_failed", signal=e.load_failed)
        self._call("Dashboard", "add_stats", signal=e.stats)
        self._call("Dashboard", "add_routing", signal=e.routing)
        self._call("Dashboard", "set_loaded", signal=e.model_loaded)
        dashboard_loaded = getattr(self.pages["Dashboard"], "set_loaded", None)
        if callable(dashboard_loaded):  # unloaded, or gone with the engine
            e.model_unloaded.connect(lambda: dashboard_loaded(None))
            e.engine_died.connect(lambda _message, _hint: dashboard_loaded(None))
        self._call("Dashboard", "add_chat_result", signal=self.chat.answer_finished)
        models, advisor = self.pages["Models"], self.pages["Advisor"]
        if hasattr(models, "load_requested"):
            models.load_requested.connect(self.load_model_file)
        if hasattr(advisor, "load_requested"):
            advisor.load_requested.connect(self.engine.load)
        if hasattr(advisor, "tune_requested"):
            from app.ui.tune import TuneRunner

            self.tuner = TuneRunner(self.engine, advisor.tune_panel)
            advisor.tune_requested.connect(self.tuner.start)

    def _call(self, page: str, method: str, signal: Any) -> None:
        """Connect ``signal`` to ``pages[page].method`` if that page has it."""
        slot = getattr(self.pages[page], method, None)
        if callable(slot):
            signal.connect(slot)

    # --- actions --------------------------------------------------------------------------

    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(PAGE_ORDER.index(name))

    def new_chat(self) -> None:
        self.show_page("Chat")
        self.chat.new_conversation()

    def load_model_file(self, path: Path) -> None:
        """Plan a load with the advisor (off the UI thread), then load it."""
        path = Path(path)
        n_ctx = int(self.store.setting(LOAD_CONTEXT, DEFAULT_LOAD_CONTEXT))
        advisor = self.pages["Advisor"]
        if hasattr(advisor, "set_model"):
            advisor.set_model(path)
        self.statusBar().showMessage(f"Planning {path.name}…", 5000)

        def planned(result: LoadPlan) -> None:
            params, plan = result.params, result.plan
            if plan.verdict == "does_not_fit":
                self._load_failed(f"{path.name} does not fit this machine: {'; '.join(plan.reasons)}.",
                                  "Open the Advisor page to change the plan, or pick a smaller quant.")
                return
            self.engine.load(params)

        from app.load_plan import plan_load  # the advisor and the tuner: imported when first used

        run_in_background(lambda: plan_load(path, n_ctx, self.hardware, self.engine.last_build_info), planned,
                          lambda exc: self._load_failed(str(exc), ""), owner=self)

    def show_first_run(self) -> None:
        """The welcome screen (non-modal); it marks the first run done when closed."""
        from app.ui.first_run import FirstRunDialog

        dialog = FirstRunDialog(self.store, self, state=self.state)
        dialog.models_requested.connect(self._open_models_for)
        dialog.open()
        self.first_run_dialog = dialog

    def maybe_show_first_run(self) -> None:
        if not self.store.setting(FIRST_RUN_DONE, False):
            self.show_first_run()

    def _open_models_for(self, repo_id: str) -> None:
        """The first-run screen's "Open the Models page": its recommended repo, opened there."""
        from app.ui.models import ModelsPage

        models = self.pages["Models"]
        if repo_id and isinstance(models, ModelsPage):
            models.show_repo(repo_id)
        self.show_page("Models")

    def _choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a model", str(self.store.models_folder()),
                                              "GGUF models (*.gguf)")
        if path:
            self.load_model_file(Path(path))

    # --- engine signals -------------------------------------------------------------------

    def _state_changed(self, state: EngineState) -> None:
        self.status.set_state(state)
        self.chat.set_engine_state(state)
        if state != EngineState.DIED:
            self.banner.hide()
        self.start_action.setEnabled(state.can_start)
        self.unload_action.setEnabled(self.engine.loaded is not None)

    def _model_loaded(self, result: LoadResult | None) -> None:
        self.status.set_model(result)
        self.chat.set_model(result)
        self.unload_action.setEnabled(result is not None)
        if result is not None:
            self.statusBar().showMessage(f"Loaded {result.model.name} in {result.load_seconds:.1f} s", 5000)

    def _load_failed(self, message: str, hint: str) -> None:
        self.status.set_model(None)
        self.chat.set_model(None)
        box = QMessageBox(QMessageBox.Icon.Warning, "The model did not load", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setInformativeText(hint)
        box.open()
        self.load_error_box = box

    def _stats(self, stats: EngineStats) -> None:
        self.status.set_stats(stats)

    def _serve_changed(self) -> None:
        text = self.serve.status_text()
        self.serve_status.setText(text)
        self.serve_status.setVisible(bool(text))
        self.serve_status.setToolTip(self.serve.error or (self.serve.server.url if self.serve.server else ""))
        if self.serve.server is not None:
            n = self.serve.in_flight
            detail = f"Serving at {self.serve.server.url}, {n} request{'' if n == 1 else 's'} in flight"
        elif self.serve.error:
            detail = self.serve.error
        elif self.serve.config.enabled:
            detail = "On; waiting for the engine to start"
        else:
            detail = "Off"
        self.settings.serve.show_status(detail)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.serve.shutdown()  # before the engine: its requests end cleanly
        self.engine.shutdown()
        super().closeEvent(event)
