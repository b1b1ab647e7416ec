"""Tables of the Models page: Hub search hits, a repo's quantizations, the local library.

Thin QAbstractTableModels over plain data (``RepoSummary``, ``Quant``, ``LocalModel``), and
``table_view``, the read-only view each is shown in; the views stay dumb. Sizes are decimal
(GB), as the Hub shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from app.advisor.planner import FITTING
from app.hub.folder import LocalState
from app.hub.library import LocalModel
from app.hub.quants import Quant
from app.hub.repo import RepoSummary
from app.units import file_size

Index = QModelIndex | QPersistentModelIndex
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def human_count(n: int) -> str:
    """1234567 -> 1.2M, as download counts are shown."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


VERDICT_WORDS = {
    "fits_on_gpu": "fits on GPU",
    "fits_with_expert_offload": "fits with expert offload",
    "fits_in_ram": "fits in RAM (CPU only)",
    "fits_streaming_from_ssd": "streams from SSD (slow)",
    "does_not_fit": "does not fit",
}


class _Table(QAbstractTableModel):
    HEADERS: tuple[str, ...] = ()
    NUMERIC: frozenset[int] = frozenset()

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's names
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,  # noqa: N802
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def _align(self, column: int) -> int | None:
        return _RIGHT if column in self.NUMERIC else None


class SearchResultsModel(_Table):
    """Hub search hits: repo, downloads, likes, last update, gated."""

    HEADERS = ("Repository", "Downloads", "Likes", "Updated", "Access")
    NUMERIC = frozenset({1, 2})

    def __init__(self) -> None:
        super().__init__()
        self.repos: list[RepoSummary] = []

    def set_repos(self, repos: list[RepoSummary]) -> None:
        self.beginResetModel()
        self.repos = list(repos)
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.repos)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        repo = self.repos[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            updated = repo.last_modified.date().isoformat() if repo.last_modified else ""
            return (
                repo.repo_id,
                human_count(repo.downloads),
                human_count(repo.likes),
                updated,
                "gated" if repo.gated else "open",
            )[index.column()]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._align(index.column())
        return None


@dataclass
class QuantRow:
    """A quant with what the page learned about it: the advisor's verdict, what is on disk."""

    quant: Quant
    verdict: str | None = None  # a Verdict, or None while the advisor works
    verdict_note: str = ""  # why there is no verdict (gated, incomplete) or the plan's first reason
    state: LocalState | None = None
    recommended: bool = False


class QuantTableModel(_Table):
    """A repo's quantizations: name, size, shards, verdict on this machine, on disk."""

    HEADERS = ("Quant", "Size", "Shards", "On this machine", "On disk")
    NUMERIC = frozenset({1, 2})

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[QuantRow] = []

    def set_quants(self, quants: list[Quant], states: dict[str, LocalState] | None = None) -> None:
        self.beginResetModel()
        self.rows = [QuantRow(q, state=(states or {}).get(q.name)) for q in quants]
        for row in self.rows:
            if not row.quant.complete:
                row.verdict_note = f"incomplete: shard(s) {list(row.quant.missing_shards)} missing"
        self.endResetModel()

    def row_of(self, name: str) -> int:
        return next(i for i, r in enumerate(self.rows) if r.quant.name == name)

    def set_verdict(self, name: str, verdict: str | None, note: str = "") -> None:
        row = self.row_of(name)
        self.rows[row].verdict, self.rows[row].verdict_note = verdict, note
        self._changed(row)

    def set_state(self, name: str, state: LocalState) -> None:
        row = self.row_of(name)
        self.rows[row].state = state
        self._changed(row)

    def recommend(self) -> int | None:
        """Mark the quant to pick: the best verdict that runs at full speed here (on the GPU, then with
        experts in RAM, then CPU only), and within it the largest (the best quality); None if none fits.
        """
        fitting = [i for i, r in enumerate(self.rows) if r.verdict in FITTING and r.quant.complete]
        rank = {verdict: n for n, verdict in enumerate(VERDICT_WORDS)}  # fits_on_gpu first
        best = min(
            fitting,
            key=lambda i: (rank[self.rows[i].verdict], -self.rows[i].quant.total_size),  # type: ignore[index]
            default=None,
        )
        for i, row in enumerate(self.rows):
            row.recommended = i == best
            self._changed(i)
        return best

    def _changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.HEADERS) - 1))

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return f"★ {row.quant.name}" if row.recommended else row.quant.name
            if column == 1:
                return file_size(row.quant.total_size)
            if column == 2:
                return str(row.quant.shard_count)
            if column == 3:
                return self.verdict_text(row)
            return self.disk_text(row.state)
        if role == Qt.ItemDataRole.ToolTipRole and column == 3:
            return row.verdict_note or None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._align(column)
        return None

    @staticmethod
    def verdict_text(row: QuantRow) -> str:
        if row.verdict is None:
            return row.verdict_note or "checking…"
        words = VERDICT_WORDS.get(row.verdict, row.verdict.replace("_", " "))
        return f"{words} (recommended)" if row.recommended else words

    @staticmethod
    def disk_text(state: LocalState | None) -> str:
        if state is None or state.done == 0:
            return ""
        if state.complete:
            return "in library"
        return f"{state.done / max(state.total, 1):.0%} downloaded"


SOURCE_WORDS = {"download": "downloaded", "file": "imported file", "hf-cache": "HF cache"}


class LibraryTableModel(_Table):
    """Local models: name, architecture, quant, size, shards, source, status."""

    HEADERS = ("Model", "Architecture", "Quant", "Size", "Shards", "Source", "Status")
    NUMERIC = frozenset({3, 4})

    def __init__(self) -> None:
        super().__init__()
        self.models: list[LocalModel] = []

    def set_models(self, models: list[LocalModel]) -> None:
        self.beginResetModel()
        self.models = list(models)
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.models)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        model = self.models[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            status = "ready" if model.available else "not loadable"
            return (
                model.name,
                model.architecture or "—",
                model.quant or "—",
                file_size(model.size) if model.size else "—",
                str(len(model.shards)),
                SOURCE_WORDS[model.source],
                status,
            )[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return model.problem or str(model.path)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._align(index.column())
        return None


def table_view(model: object, stretch: int = 0) -> QTableView:
    """A read-only, row-selecting table; column ``stretch`` takes the spare width."""
    view = QTableView()
    view.setModel(model)  # type: ignore[arg-type]
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.verticalHeader().hide()
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    view.setAlternatingRowColors(True)
    return view
