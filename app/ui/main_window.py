"""The main window: the navigation rail and the pages, the menus, the status bar and the banners.

The window makes the app state and owns the EngineController; it hands both to each page, and
each page connects itself to what it needs (napari's views take their model the same way). What
is left here is the app's frame: going from page to page (the rail, the View menu, a page
asking for another), File > Load, the died banner with its Restart, and the load error dialog.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.hardware import Hardware
from app.store import FIRST_RUN_DONE, LOAD_CONTEXT, Store
from app.ui.advisor import AdvisorPage
from app.ui.app_state import AppState, LoadedModel
from app.ui.background import Tasks
from app.ui.chat import ChatPage
from app.ui.dashboard import DashboardPage
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState
from app.ui.models import ModelsPage
from app.ui.serve_control import ServeControl
from app.ui.settings import SettingsPage
from app.ui.settings.page import DEFAULT_LOAD_CONTEXT
from app.ui.widgets.engine_status import DiedBanner, EngineStatus
from app.ui.widgets.nav_rail import NavItem, NavRail
from app.ui.widgets.theme import apply_theme

if TYPE_CHECKING:
    from app.load_plan import LoadPlan

log = logging.getLogger("moedesk.ui")

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "moedesk.svg"

# the rail, top to bottom; Ctrl+1 ... Ctrl+5 in the same order
NAVIGATION = (
    NavItem("Chat", "chat", "Talk to the loaded model (Ctrl+1)"),
    NavItem("Models", "models", "Find, download and load models (Ctrl+2)"),
    NavItem("Advisor", "advisor", "Will it fit, how fast, and where each part goes (Ctrl+3)"),
    NavItem("Dashboard", "dashboard", "Speed, memory and expert routing, live (Ctrl+4)"),
    NavItem("Settings", "settings", "Folders, theme, chat defaults, the OpenAI server (Ctrl+5)"),
)


def app_icon() -> QIcon:
    """The installed theme icon (a non-editable install has no checkout), else the repo's."""
    return QIcon.fromTheme("moedesk", QIcon(str(ICON)) if ICON.exists() else QIcon())


class MainWindow(QMainWindow):
    def __init__(self, store: Store, controller: EngineController | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.engine = controller or EngineController(self)
        # what the pages share, found once (hardware, RAM speed, the engine build, the loaded model)
        self.state = AppState(self)
        self.state.follow(self.engine)
        self._tasks = Tasks(self)
        self.setWindowTitle("MoE Desk")
        self.setWindowIcon(app_icon())
        self.chat = ChatPage(store, self.state, self.engine)
        self.models = ModelsPage(self.state)
        self.advisor = AdvisorPage(self.state, self.engine)
        self.dashboard = DashboardPage(self.state, self.engine)
        self.settings = SettingsPage(store)
        self.pages: dict[str, QWidget] = {"Chat": self.chat, "Models": self.models, "Advisor": self.advisor,
                                          "Dashboard": self.dashboard, "Settings": self.settings}
        self._build()
        self._menus()
        self._wire()
        self.state.detect()

    @property
    def hardware(self) -> Hardware | None:
        """This machine's hardware, once found (the app state's)."""
        return self.state.hardware

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        self.nav = NavRail(NAVIGATION)
        self.stack = QStackedWidget()
        for item in NAVIGATION:
            self.stack.addWidget(self.pages[item.name])
        self.banner = DiedBanner()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.setSpacing(0)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.stack, 1)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(right, 1)
        self.setCentralWidget(central)
        self.status = EngineStatus(self.state, self.engine)
        self.statusBar().addPermanentWidget(self.status, 1)
        self.serve_status = QLabel()  # "API on :8000, 1 in flight"; empty while off
        self.statusBar().addPermanentWidget(self.serve_status)
        self.show_page("Chat")
        self.resize(1240, 800)

    def _menus(self) -> None:
        engine = self.menuBar().addMenu("&Engine")
        self.start_action = engine.addAction("Start engine", self.engine.start)
        engine.addAction("Load model file…", self._choose_model_file)
        self.unload_action = engine.addAction("Unload model", self.engine.unload)
        self.unload_action.setEnabled(False)
        engine.addAction("Switch model…", lambda: self.show_page("Models"))
        engine.addAction("Restart engine", self.engine.restart)
        engine.addSeparator()
        engine.addAction("Quit", QKeySequence.StandardKey.Quit, self.close)
        chat = self.menuBar().addMenu("&Chat")
        new_chat = QAction("New chat", self, shortcut=QKeySequence("Ctrl+N"))
        new_chat.triggered.connect(self.new_chat)
        chat.addAction(new_chat)
        view = self.menuBar().addMenu("&View")
        for i, item in enumerate(NAVIGATION, start=1):
            action = QAction(item.name, self, shortcut=QKeySequence(f"Ctrl+{i}"))
            action.triggered.connect(lambda _checked=False, name=item.name: self.show_page(name))
            view.addAction(action)

    def _wire(self) -> None:
        e = self.engine
        self.nav.page_chosen.connect(self.show_page)
        for page in (self.chat, self.dashboard):
            page.page_requested.connect(self.show_page)
        self.models.load_requested.connect(self.load_model_file)
        e.state_changed.connect(self._state_changed)
        e.load_failed.connect(self._load_failed)
        e.engine_died.connect(self.banner.show_death)
        self.banner.restart_requested.connect(e.restart)
        self.state.loaded_changed.connect(self._loaded_changed)
        self.serve = ServeControl(e, self)
        self.serve.changed.connect(self._serve_changed)
        self.settings.serve.config_changed.connect(self.serve.apply)
        self.serve.apply(self.settings.serve.config())
        self._serve_changed()
        self.settings.theme_changed.connect(lambda theme: apply_theme(QApplication.instance(), theme))

    # --- actions --------------------------------------------------------------------------

    def show_page(self, name: str) -> None:
        """Show the page named in the rail (Chat, Models, Advisor, Dashboard, Settings)."""
        self.nav.set_current(name)
        self.stack.setCurrentWidget(self.pages[name])

    def current_page(self) -> str:
        return next(name for name, page in self.pages.items() if page is self.stack.currentWidget())

    def new_chat(self) -> None:
        self.show_page("Chat")
        self.chat.new_conversation()

    def load_model_file(self, path: Path) -> None:
        """File > Load and the Models page's Load: plan the load (off the UI thread: the
        autotuned placement, else the advisor's, at the Settings' context), then load it."""
        path = Path(path)
        n_ctx = int(self.store.setting(LOAD_CONTEXT, DEFAULT_LOAD_CONTEXT))
        self.statusBar().showMessage(f"Planning {path.name}…", 5000)

        def planned(result: LoadPlan) -> None:
            if result.plan.verdict == "does_not_fit":
                self._load_failed(f"{path.name} does not fit this machine: {'; '.join(result.plan.reasons)}.",
                                  "Open it in the Advisor to change the plan, or pick a smaller quant.",
                                  advise=path)
                return
            self.engine.load(result.params, result)

        from app.load_plan import plan_load  # the advisor and the tuner: imported when first used

        hardware, build = self.hardware, self.engine.last_build_info
        self._tasks.run(lambda: plan_load(path, n_ctx, hardware, build), planned,
                        lambda exc: self._load_failed(str(exc), getattr(exc, "hint", "")))

    def show_first_run(self) -> None:
        """The welcome screen (non-modal); it marks the first run done when closed."""
        from app.ui.first_run import FirstRunDialog

        dialog = FirstRunDialog(self.store, self.state, self)
        dialog.models_requested.connect(self._open_models_for)
        dialog.open()
        self.first_run_dialog = dialog

    def maybe_show_first_run(self) -> None:
        if not self.store.setting(FIRST_RUN_DONE, False):
            self.show_first_run()

    def _open_models_for(self, repo_id: str) -> None:
        """The first-run screen's "Open the Models page": its recommended repo, opened there."""
        if repo_id:
            self.models.show_repo(repo_id)
        self.show_page("Models")

    def _open_in_advisor(self, path: Path) -> None:
        self.advisor.set_model(path)
        self.show_page("Advisor")

    def _choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a model", str(self.store.models_folder()),
                                              "GGUF models (*.gguf)")
        if path:
            self.load_model_file(Path(path))

    # --- what the engine and the app state say --------------------------------------------

    def _state_changed(self, state: EngineState) -> None:
        if state != EngineState.DIED:
            self.banner.hide()
        self.start_action.setEnabled(state.can_start)

    def _loaded_changed(self, loaded: LoadedModel | None) -> None:
        self.unload_action.setEnabled(loaded is not None)
        if loaded is not None:
            result = loaded.result
            self.statusBar().showMessage(f"Loaded {result.model.name} in {result.load_seconds:.1f} s", 5000)

    def _load_failed(self, message: str, hint: str, advise: Path | None = None) -> None:
        """The dialog that says why a load failed; ``advise``: a model the Advisor can re-plan."""
        box = QMessageBox(QMessageBox.Icon.Warning, "The model did not load", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setInformativeText(hint)
        if advise is not None:
            button = box.addButton("Open in Advisor", QMessageBox.ButtonRole.ActionRole)
            button.clicked.connect(lambda: self._open_in_advisor(advise))
        box.open()
        self.load_error_box = box

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
