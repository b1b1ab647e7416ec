"""Find and download: search the Hub, open a repo, see its quants with this machine's verdicts, download.

Every Hub and disk call runs on the page's thread pool; answers that arrive after the user opened
another repo are dropped (a generation number says which repo they were for). The Hub token those
calls send, and the dialog that asks for one, are ``HubSignIn``'s (hub_sign_in.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import hf_hub_url
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.advisor.planner import plan_for
from app.advisor.report import load_model_header
from app.errors import EngineError
from app.hardware import Hardware
from app.hub.errors import GatedRepoError
from app.hub.folder import local_state
from app.hub.quants import Quant
from app.hub.repo import check_download_access, list_gguf_quants, parse_repo_id, search_gguf_repos
from app.ui.background import Tasks
from app.ui.models.download_bar import DownloadBar
from app.ui.models.download_job import DownloadJob
from app.ui.models.hub_sign_in import HubSignIn
from app.ui.models.messages import MessageBanner
from app.ui.models.tables import QuantTableModel, SearchResultsModel, table_view
from app.ui.widgets.empty_state import EmptyState
from app.ui.widgets.look import SPACING, tighten
from app.ui.widgets.theme import primary

SORTS = (
    ("Most downloads", "downloads"),
    ("Recently updated", "last_modified"),
    ("Most likes", "likes"),
    ("Trending", "trending_score"),
)
DEFAULT_CTX = 8192  # the context the verdicts plan for, as `moedesk-cli advise` does


class FindPanel(QWidget):
    """Search results on top, the open repo's quants and the download below."""

    downloaded = Signal(object)  # list[Path]: a quant finished and is in the library
    _verdict = Signal(int, str, object, str)  # from the advice worker: generation, quant, verdict, note

    def __init__(
        self,
        tasks: Tasks,
        banner: MessageBanner,
        *,
        models_dir: Path,
        endpoint: str,
        hardware: Hardware | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.tasks, self.banner = tasks, banner
        self.models_dir, self.endpoint, self.hardware = models_dir, endpoint, hardware
        self._pending_advice: tuple[int, str, list[Quant]] | None = None
        self.free_space: Callable[[Path], int] | None = None  # free bytes of a folder (None: the disk's)
        self.repo_id: str | None = None
        self.job: DownloadJob | None = None
        self.sign_in = HubSignIn(tasks, banner, endpoint, self)
        self.sign_in.signed_in.connect(self._after_sign_in)
        self._generation = 0
        self._verdict.connect(self._show_verdict)
        self._build()

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search GGUF models, or paste a repo name or Hub URL")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.returnPressed.connect(self.submit)
        self.sort_combo = QComboBox()
        for text, key in SORTS:
            self.sort_combo.addItem(text, key)
        self.sort_combo.currentIndexChanged.connect(lambda _i: self.search())
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(lambda: self.search())
        self.open_button = QPushButton("Open repo")
        self.open_button.clicked.connect(lambda: self.open_repo(self.search_edit.text()))
        self.sign_in_button = QPushButton("Hub token…")
        self.sign_in_button.setToolTip("Sign in for gated and private repos (kept in the system keyring)")
        self.sign_in_button.clicked.connect(
            lambda: self.sign_in.ask("Sign in to download gated or private models.", lambda: None)
        )
        top = QHBoxLayout()
        top.addWidget(self.search_edit, 1)
        for widget in (self.sort_combo, self.search_button, self.open_button, self.sign_in_button):
            top.addWidget(widget)

        self.results_model = SearchResultsModel()
        self.results_view = table_view(self.results_model)
        self.results_view.activated.connect(self._open_result)
        self.results_view.doubleClicked.connect(self._open_result)
        self.results_view.selectionModel().currentRowChanged.connect(
            lambda index, _p: self._open_result(index)
        )

        self.repo_label = QLabel("Open a repository to see its quantizations.")
        self.repo_label.setWordWrap(True)
        self.quant_model = QuantTableModel()
        self.quant_view = table_view(self.quant_model, stretch=3)
        self.quant_view.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        self.quant_view.doubleClicked.connect(lambda _i: self.download_selected())
        self.download_button = primary(QPushButton("Download"))
        self.download_button.clicked.connect(self.download_selected)
        self.download_bar = DownloadBar()
        actions = QHBoxLayout()
        actions.addWidget(self.repo_label, 1)
        actions.addWidget(self.download_button)
        self.repo_box = QWidget()  # the open repo's quants and the download
        below = tighten(QVBoxLayout(self.repo_box))
        below.setContentsMargins(0, SPACING // 2, 0, 0)
        below.addLayout(actions)
        below.addWidget(self.quant_view, 1)
        below.addWidget(self.download_bar)
        self.no_repo = EmptyState(
            "download", "Pick a model to download",
            "Choose a repository above, or paste a repo name (owner/name) or a Hub URL into the search "
            "box: its quantizations are listed with whether each fits this machine.")
        self.repo_area = QStackedWidget()  # the quants once a repo is open, what to do before
        self.repo_area.addWidget(self.repo_box)
        self.repo_area.addWidget(self.no_repo)
        self.repo_area.setCurrentWidget(self.no_repo)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.results_view)
        splitter.addWidget(self.repo_area)
        splitter.setStretchFactor(1, 2)
        layout = tighten(QVBoxLayout(self))
        layout.setContentsMargins(0, SPACING, 0, 0)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        self._update_buttons()

    # -- search and open -----------------------------------------------------------------------
    def submit(self) -> None:
        """Enter in the search box: open a repo name or URL, search anything else."""
        text = self.search_edit.text()
        if parse_repo_id(text):
            self.open_repo(text)
        else:
            self.search(text)

    def search(self, text: str | None = None) -> None:
        query = self.search_edit.text() if text is None else text
        sort = self.sort_combo.currentData()
        self.search_button.setEnabled(False)

        def done(repos: object) -> None:
            self.search_button.setEnabled(True)
            self.results_model.set_repos(repos)  # type: ignore[arg-type]
            if not repos:
                self.banner.show_message(
                    "info", "No GGUF repositories match", f"Nothing found for '{query}'."
                )

        def failed(error: Exception) -> None:
            self.search_button.setEnabled(True)
            self.banner.show_error(error, action=("Retry", lambda: self.search(query)))

        self.tasks.run(
            lambda: search_gguf_repos(query, sort=sort, token=self.sign_in.token(), endpoint=self.endpoint),
            done,
            failed,
        )

    def open_repo(self, text: str) -> None:
        """Open ``owner/name`` or a Hub URL: list its quants, then ask the advisor about each."""
        repo_id = parse_repo_id(text)
        if repo_id is None:
            self.banner.show_message(
                "error",
                "Not a repository",
                f"'{text}' is neither owner/name nor a "
                "Hub URL (like https://huggingface.co/unsloth/Qwen3-30B-A3B-GGUF).",
            )
            return
        if repo_id == self.repo_id and self.quant_model.rows:
            return
        self._generation += 1
        generation, self.repo_id = self._generation, repo_id
        self.repo_area.setCurrentWidget(self.repo_box)
        self.repo_label.setText(f"<b>{repo_id}</b>: reading the file list…")
        self.quant_model.set_quants([])

        def listed(result: object) -> None:
            if generation != self._generation:
                return
            quants, states = result  # type: ignore[misc]
            self.quant_model.set_quants(quants, states)
            self.repo_label.setText(f"<b>{repo_id}</b>: {len(quants)} quantization(s)")
            if not quants:
                self.banner.show_message(
                    "info",
                    "No GGUF models in this repository",
                    f"{repo_id} has no .gguf model files: MoE Desk runs GGUF models.",
                )
            self._update_buttons()
            self.advise(generation, repo_id, quants)

        def failed(error: Exception) -> None:
            if generation == self._generation:
                self.repo_label.setText(f"<b>{repo_id}</b>: could not be opened")
                self.banner.show_error(error, action=("Retry", lambda: self._reopen(repo_id)))

        self.tasks.run(lambda: self._list(repo_id), listed, failed)

    def _list(self, repo_id: str) -> tuple[list[Quant], dict]:
        quants = list_gguf_quants(repo_id, token=self.sign_in.token(), endpoint=self.endpoint)
        return quants, {q.name: local_state(repo_id, q, self.models_dir) for q in quants}

    def _reopen(self, repo_id: str) -> None:
        self.repo_id = None
        self.open_repo(repo_id)

    def _open_result(self, index: object) -> None:
        if getattr(index, "isValid", lambda: False)():
            self.open_repo(self.results_model.repos[index.row()].repo_id)  # type: ignore[attr-defined]

    # -- verdicts ------------------------------------------------------------------------------
    def set_hardware(self, hardware: Hardware) -> None:
        """The machine the verdicts are for (the app state's, found once); verdicts asked for
        before it was found follow now."""
        self.hardware = hardware
        pending, self._pending_advice = self._pending_advice, None
        if pending is not None:
            self.advise(*pending)

    def advise(self, generation: int, repo_id: str, quants: list[Quant]) -> None:
        """The advisor's verdict for each quant, from its first shard's header (HTTP Range), on a
        worker; held until the app state has found the machine (never detected a second time)."""
        if self.hardware is None:
            self._pending_advice = (generation, repo_id, quants)
            return
        machine = self.hardware

        def work() -> None:
            token = self.sign_in.token()
            check_download_access(repo_id, token, self.endpoint)  # gated: ask for a token first
            for quant in quants:
                if generation != self._generation:
                    return
                if not quant.complete:
                    continue
                try:
                    model = load_model_header(
                        hf_hub_url(repo_id, quant.first_file, endpoint=self.endpoint), token
                    )
                    plan = plan_for(model, machine, DEFAULT_CTX)
                    self._verdict.emit(generation, quant.name, plan.verdict, "\n".join(plan.reasons))
                except EngineError as error:
                    self._verdict.emit(generation, quant.name, None, f"header not readable: {error}")

        def done(_: object) -> None:
            if generation == self._generation:
                best = self.quant_model.recommend()
                if best is not None and not self.quant_view.selectionModel().hasSelection():
                    self.quant_view.selectRow(best)

        def failed(error: Exception) -> None:
            if generation != self._generation:
                return
            for row in self.quant_model.rows:
                if row.quant.complete:
                    self.quant_model.set_verdict(row.quant.name, None, "needs access to check")
            if isinstance(error, GatedRepoError):
                # signing in reads the verdicts again (_after_sign_in)
                self.banner.show_error(
                    error, action=("Sign in…", lambda: self.sign_in.ask(str(error), lambda: None))
                )
            else:
                self.banner.show_error(error)

        self.tasks.run(work, done, failed)

    def _show_verdict(self, generation: int, name: str, verdict: object, note: str) -> None:
        if generation == self._generation:
            self.quant_model.set_verdict(name, verdict, note)  # type: ignore[arg-type]

    def _after_sign_in(self) -> None:
        """Verdicts that needed access can be read now."""
        rows = self.quant_model.rows
        if self.repo_id and any(r.quant.complete and r.verdict is None for r in rows):
            self.advise(self._generation, self.repo_id, [r.quant for r in rows])

    # -- download ------------------------------------------------------------------------------
    def selected_quant(self) -> Quant | None:
        rows = self.quant_view.selectionModel().selectedRows()
        return self.quant_model.rows[rows[0].row()].quant if rows else None

    def download_selected(self) -> None:
        quant = self.selected_quant()
        if quant is None or self.repo_id is None or not quant.complete:
            return
        if self.job is not None and self.job.state in ("running", "paused", "cancelling"):
            self.banner.show_message(
                "info",
                "One download at a time",
                f"Finish, or cancel, {self.job.quant.name} of {self.job.repo_id} first.",
            )
            return
        row = self.quant_model.rows[self.quant_model.row_of(quant.name)]
        self.job = DownloadJob(
            self.tasks,
            self.repo_id,
            quant,
            self.models_dir,
            self.sign_in.token,
            self.endpoint,
            self,
            self._free_space,
        )
        self.job.state_changed.connect(lambda _s: self._update_buttons())
        self.job.state_changed.connect(self._job_state)
        self.job.failed.connect(self._job_failed)
        self.job.finished.connect(self._job_finished)
        self.download_bar.attach(self.job, already=row.state.done if row.state else 0)
        self.banner.hide()
        self.job.start()

    def _job_state(self, state: str) -> None:
        job = self.job
        if job is not None and state in ("paused", "cancelled", "failed") and job.repo_id == self.repo_id:
            self._refresh_state(job.repo_id, job.quant)

    def _job_failed(self, error: Exception) -> None:
        job = self.job
        if isinstance(error, GatedRepoError) and job is not None:
            self.sign_in.ask(str(error), job.start)
        elif job is not None:
            self.banner.show_error(error, action=("Resume", job.start))

    def _job_finished(self, paths: object) -> None:
        job = self.job
        if job is not None and job.repo_id == self.repo_id:
            self._refresh_state(job.repo_id, job.quant)
        self.downloaded.emit(paths)

    def _refresh_state(self, repo_id: str, quant: Quant) -> None:
        def done(state: object) -> None:
            if repo_id == self.repo_id and any(r.quant.name == quant.name for r in self.quant_model.rows):
                self.quant_model.set_state(quant.name, state)  # type: ignore[arg-type]
                self._update_buttons()

        self.tasks.run(lambda: local_state(repo_id, quant, self.models_dir), done, self.banner.show_error)

    def _update_buttons(self) -> None:
        quant = self.selected_quant()
        busy = self.job is not None and self.job.state in ("running", "paused", "cancelling")
        row = self.quant_model.rows[self.quant_model.row_of(quant.name)] if quant else None
        state = row.state if row else None
        if state is not None and state.complete:
            self.download_button.setText("In library")
        elif state is not None and state.done:
            self.download_button.setText("Resume download")
        else:
            self.download_button.setText("Download")
        self.download_button.setEnabled(
            bool(quant and quant.complete and not busy and not (state and state.complete))
        )

    def _free_space(self, folder: Path) -> int:
        return self.free_space(folder) if self.free_space else shutil.disk_usage(folder).free
