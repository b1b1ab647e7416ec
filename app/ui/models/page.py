"""The Models page: get a model from the Hub (search, quants with verdicts, download) and the library."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QCoreApplication, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QTabWidget, QWidget

from app.hardware import Hardware
from app.hub.library import Library
from app.hub.token import hub_endpoint
from app.paths import default_models_dir
from app.ui.app_state import AppState
from app.ui.background import Tasks
from app.ui.models.find_panel import FindPanel
from app.ui.models.library_panel import LibraryPanel
from app.ui.models.messages import MessageBanner
from app.ui.widgets.look import PageHeader, page_layout


class ModelsPage(QWidget):
    """Find, download and manage GGUF models. Says what the user wants through ``load_requested``.

    The verdicts are for the app ``state``'s hardware. ``models_dir`` is where downloads go
    (default: app.paths; or pass a ``library``), ``endpoint`` the Hub (default: HF_ENDPOINT or
    huggingface.co), ``hf_cache_dir`` the Hugging Face cache to import from (default:
    huggingface_hub's). The first time the page is shown it lists the most downloaded GGUF repos
    (``search_on_show=False`` turns that off).
    """

    load_requested = Signal(object)  # pathlib.Path of the model's first shard

    def __init__(
        self,
        state: AppState,
        parent: QWidget | None = None,
        *,
        models_dir: Path | None = None,
        library: Library | None = None,
        endpoint: str | None = None,
        hf_cache_dir: Path | None = None,
        search_on_show: bool = True,
    ) -> None:
        super().__init__(parent)
        self.library = library or Library(models_dir=Path(models_dir) if models_dir else default_models_dir())
        self.models_dir = self.library.models_dir
        self.tasks = Tasks(self, threads=4)  # downloads and Hub calls; waited for at exit
        self.banner = MessageBanner()
        self.find = FindPanel(
            self.tasks,
            self.banner,
            models_dir=self.models_dir,
            endpoint=endpoint or hub_endpoint(),
        )
        self.library_panel = LibraryPanel(self.tasks, self.banner, self.library, hf_cache_dir)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.find, "Get models")
        self.tabs.addTab(self.library_panel, "Library")
        self.header = PageHeader("Models", "Find GGUF models on Hugging Face, download them, and load "
                                           "them from your library.")
        layout = page_layout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)

        self.library_panel.load_requested.connect(self.load_requested)
        self.library_panel.get_models_requested.connect(lambda: self.tabs.setCurrentWidget(self.find))
        self.find.downloaded.connect(lambda paths: self.library_panel.refresh(select=paths[0]))
        self._search_on_show = search_on_show
        self.library_panel.refresh()
        state.connect_hardware(self.set_hardware)  # the app's hardware, found once for every page
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def set_hardware(self, hardware: Hardware) -> None:
        """The machine the verdicts are for (the app state's)."""
        self.find.set_hardware(hardware)

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
        self.tasks.close(wait_ms)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._search_on_show:
            self._search_on_show = False
            self.find.search("")
