"""The library: models on this machine, with load, reveal, delete (confirmed) and import."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.hub.library import ImportReport, Library, LocalModel, reveal
from app.ui.background import Tasks
from app.ui.models.messages import MessageBanner
from app.ui.models.tables import LibraryTableModel, table_view
from app.ui.widgets.empty_state import EmptyState
from app.ui.widgets.look import SPACING, tighten
from app.ui.widgets.theme import primary
from app.units import file_size


class LibraryPanel(QWidget):
    """The library table and its actions; every disk call on the page's thread pool."""

    load_requested = Signal(object)  # Path of the model's first shard
    get_models_requested = Signal()  # the empty library's button: to the Get models tab
    refreshed = Signal()

    def __init__(
        self,
        tasks: Tasks,
        banner: MessageBanner,
        library: Library,
        hf_cache_dir: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.tasks, self.banner, self.library, self.hf_cache_dir = tasks, banner, library, hf_cache_dir
        self.confirm_box: QMessageBox | None = None
        self.model = LibraryTableModel()
        self.view = table_view(self.model)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._update())
        self.view.doubleClicked.connect(lambda _i: self.load_selected())
        self.detail = QLabel()
        self.detail.setWordWrap(True)

        self.load_button = primary(QPushButton("Load"))
        self.reveal_button = QPushButton("Show in folder")
        self.delete_button = QPushButton("Delete…")
        self.import_file_button = QPushButton("Import file…")
        self.import_folder_button = QPushButton("Import folder…")
        self.import_hf_button = QPushButton("Import from HF cache")
        self.import_hf_button.setToolTip(
            "Use the GGUF models already downloaded with huggingface_hub, where they are (no copy)"
        )
        self.load_button.clicked.connect(self.load_selected)
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.import_file_button.clicked.connect(self._pick_file)
        self.import_folder_button.clicked.connect(self._pick_folder)
        self.import_hf_button.clicked.connect(self.import_hf_cache)

        actions = QHBoxLayout()
        for button in (self.load_button, self.reveal_button, self.delete_button):
            actions.addWidget(button)
        actions.addStretch(1)
        for button in (self.import_file_button, self.import_folder_button, self.import_hf_button):
            actions.addWidget(button)
        self.empty = EmptyState(
            "models", "No models on this computer yet",
            "Download one on the Get models tab (the quant that suits this machine is picked for you), "
            "or import GGUF files you already have: Import file…, Import folder…, or the Hugging Face "
            "cache.", "Get models")
        self.empty.action_clicked.connect(self.get_models_requested)
        self.listing = QStackedWidget()  # the table, or the empty library's word
        self.listing.addWidget(self.view)
        self.listing.addWidget(self.empty)
        self.model.modelReset.connect(self._show_listing)
        self._show_listing()
        layout = tighten(QVBoxLayout(self))
        layout.setContentsMargins(0, SPACING, 0, 0)
        layout.addLayout(actions)
        layout.addWidget(self.listing, 1)
        layout.addWidget(self.detail)
        self._update()

    # -- listing -------------------------------------------------------------------------------
    def refresh(self, select: Path | None = None) -> None:
        """Read the library again (headers of new files are read: on a worker)."""

        def done(models: object) -> None:
            current = self.selected()
            self.model.set_models(models)  # type: ignore[arg-type]
            wanted = select or (current.path if current else None)
            for row, model in enumerate(self.model.models):
                if model.path == wanted:
                    self.view.selectRow(row)
            self._update()
            self.refreshed.emit()

        self.tasks.run(lambda: self.library.models(include_unavailable=True), done, self.banner.show_error)

    def selected(self) -> LocalModel | None:
        rows = self.view.selectionModel().selectedRows()
        return self.model.models[rows[0].row()] if rows else None

    def _show_listing(self) -> None:
        """The table, or the empty library's word (without the buttons that need a model)."""
        listed = bool(self.model.models)
        self.listing.setCurrentWidget(self.view if listed else self.empty)
        for button in (self.load_button, self.reveal_button, self.delete_button):
            button.setVisible(listed)

    def _update(self) -> None:
        model = self.selected()
        self.load_button.setEnabled(bool(model and model.available))
        self.reveal_button.setEnabled(model is not None)
        self.delete_button.setEnabled(model is not None)
        self.delete_button.setText("Remove…" if model and model.imported else "Delete…")
        if not self.model.models:
            self.detail.setText(f"Downloads go to {self.library.models_dir}.")
        elif model is None:
            total = sum(m.size for m in self.model.models)
            self.detail.setText(
                f"{len(self.model.models)} model(s), {file_size(total)} on disk. "
                f"Downloads go to {self.library.models_dir}."
            )
        elif model.problem:
            self.detail.setText(f"{model.path}\nNot loadable: {model.problem}")
        else:
            self.detail.setText(
                f"{model.path}"
                + (f" (+{len(model.shards) - 1} more shards beside it)" if len(model.shards) > 1 else "")
            )

    # -- actions -------------------------------------------------------------------------------
    def load_selected(self) -> None:
        model = self.selected()
        if model is not None and model.available:
            self.load_requested.emit(model.path)

    def reveal_selected(self) -> None:
        model = self.selected()
        if model is not None:
            self.tasks.run(lambda: reveal(model.path), lambda _r: None, self.banner.show_error)

    def delete_selected(self) -> None:
        """Ask first (a non-blocking dialog); a download's files are deleted, an import is forgotten."""
        model = self.selected()
        if model is None:
            return
        if model.imported:
            question = (
                f"Remove {model.name} from the library? Its files stay where they are:\n{model.path.parent}"
            )
        else:
            question = (
                f"Delete {model.name}? Its {len(model.shards)} file(s), {file_size(model.size)}, "
                f"in {model.path.parent} will be deleted."
            )
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Delete model" if not model.imported else "Remove model",
            question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.buttonClicked.connect(
            lambda button: (
                box.standardButton(button) == QMessageBox.StandardButton.Yes and self._delete(model)
            )
        )
        self.confirm_box = box
        box.open()

    def _delete(self, model: LocalModel) -> None:
        def done(_: object) -> None:
            verb = "Removed from the library" if model.imported else "Deleted"
            self.banner.show_message("info", f"{verb}: {model.name}")
            self.refresh()

        self.tasks.run(lambda: self.library.delete(model.name), done, self.banner.show_error)

    def import_paths(self, paths: list[Path]) -> None:
        """Import files or folders (by reference) on a worker, then show what was added or skipped."""

        def work() -> ImportReport:
            total = ImportReport()
            for path in paths:
                report = self.library.import_path(path)
                total.added += report.added
                total.already += report.already
                total.skipped += report.skipped
            return total

        self.tasks.run(work, self._imported, self.banner.show_error)

    def import_hf_cache(self) -> None:
        self.tasks.run(
            lambda: self.library.import_hf_cache(self.hf_cache_dir), self._imported, self.banner.show_error
        )

    def _imported(self, report: object) -> None:
        assert isinstance(report, ImportReport)
        lines = [f"Added {m.name}" for m in report.added]
        lines += [f"Already in the library: {m.name}" for m in report.already]
        lines += [f"Skipped {path.name}: {why}" for path, why in report.skipped]
        kind = "warning" if report.skipped else "info"
        headline = (
            f"Imported {len(report.added)} model(s)"
            if report.added or report.already or report.skipped
            else "No GGUF models found"
        )
        self.banner.show_message(kind, headline, "\n".join(lines))
        self.refresh(select=report.added[0].path if report.added else None)

    def _pick_file(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, "Import a GGUF model", str(Path.home()), "GGUF models (*.gguf)"
        )
        if path:
            self.import_paths([Path(path)])

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Import the GGUF models in a folder", str(Path.home()))
        if path:
            self.import_paths([Path(path)])
