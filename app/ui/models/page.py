"""The Models page: get a model from the Hub (search, quants with verdicts, download) and the library."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QCoreApplication, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from app.hardware import Hardware
from app.hub.library import Library
from app.hub.token import hub_endpoint
from app.paths import default_models_dir
from app.ui.app_state import AppState
from app.ui.models.find_panel import FindPanel
from app.ui.models.library_panel import LibraryPanel
from app.ui.models.messages import MessageBanner
from app.ui.models.workers import Tasks


class ModelsPage(QWidget):
    """Find, download and manage GGUF models. Says what the user wants through ``load_requested``.

    ``models_dir`` is where downloads go (default: app.paths; or pass a ``library``), ``endpoint``
    the Hub (default: HF_ENDPOINT or huggingface.co), ``hf_cache_dir`` the Hugging Face cache to
    import from (default: huggingface_hub's). The first time the page is shown it lists the most
    downloaded GGUF repos (``search_on_show=False`` turns that off).
    """

    load_requested = Signal(object)  # pathlib.Path of the model's first shard

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        models_dir: Path | None = None,
        library: Library | None = None,
        endpoint: str | None = None,
        hf_cache_dir: Path | None = None,
        hardware: Hardware | None = None,
        search_on_show: bool = True,
        state: AppState | None = None,
    ) -> None:
        super().__init__(parent)
        self.library = library or Library(models_dir=Path(models_dir) if models_dir else default_models_dir())
        self.models_dir = self.library.models_dir
        self.tasks = Tasks(self)
        self.banner = MessageBanner()
        self.find = FindPanel(
            self.tasks,
            self.banner,
            models_dir=self.models_dir,
            endpoint=endpoint or hub_endpoint(),
            hardware=hardware,
        )
        self.library_panel = LibraryPanel(self.tasks, self.banner, self.library, hf_cache_dir)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.find, "Get models")
        self.tabs.addTab(self.library_panel, "Library")
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)

        self.library_panel.load_requested.connect(self.load_requested)
        self.find.downloaded.connect(lambda paths: self.library_panel.refresh(select=paths[0]))
        self._search_on_show = search_on_show
        self.library_panel.refresh()
        if state is not None:  # the app's hardware, found once for every page
            state.connect_hardware(self.set_hardware)
        elif hardware is None:
            self._detect_hardware()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def set_hardware(self, hardware: Hardware) -> None:
        """The machine the verdicts are for (the main window passes what it detected)."""
        self.find.hardware = hardware

    def show_repo(self, repo_id: str) -> None:
        """Open a Hub repo's quants (what the first-run screen recommends): its name in the
        search box, its quants listed with the advisor's verdicts."""
        self.tabs.setCurrentWidget(self.find)
        self._search_on_show = False  # the first show would list the popular repos over it
        self.find.search_edit.setText(repo_id)
        self.find.open_repo(repo_id)

    def shutdown(self, wait_ms: int = 10_000) -> None:
        """Pause a running download (its .part files stay for next time) and wait for the workers."""
        if self.find.job is not None:
            self.find.job.pause()
        self.tasks.wait(wait_ms)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._search_on_show:
            self._search_on_show = False
            self.find.search("")

    def _detect_hardware(self) -> None:
        from app import hardware

        def detected(machine: object) -> None:
            if self.find.hardware is None:
                self.find.hardware = machine  # type: ignore[assignment]

        self.tasks.run(lambda: hardware.detect(models_dir=self.models_dir), detected, lambda _e: None)
