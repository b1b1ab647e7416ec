"""Memory per device of a plan, as a table model: weights, KV cache, compute, total, usable."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from app.advisor.memory import DeviceMemory
from app.units import gib

Index = QModelIndex | QPersistentModelIndex


@dataclass
class MemoryRow:
    memory: DeviceMemory
    usable: int | None  # bytes the device may give the model (None: unknown)
    label: str = ""  # "CUDA0 (RTX 4090)"
    streamed: bool = False  # RAM of a plan streaming from the SSD: what does not fit is read from it


def _gib(n: int | None) -> str:
    return "?" if n is None else gib(n)


class MemoryTableModel(QAbstractTableModel):
    HEADERS = ("Device", "Weights", "KV cache", "Compute", "Total", "Usable", "Use")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[MemoryRow] = []

    def set_rows(self, rows: list[MemoryRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's API
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt's API
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        m, column = row.memory, index.column()
        if role == Qt.ItemDataRole.TextAlignmentRole and column > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and column == 6 and self.over(row):
            if row.streamed:
                return "the weights that do not fit stay in the model file and are read from the SSD"
            return "more than this device can give: the load would fail or swap"
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if column == 0:
            return row.label or m.device
        if column <= 4:
            return _gib((m.weights, m.kv, m.compute, m.total)[column - 1])
        if column == 5:
            return _gib(row.usable)
        if not row.usable:
            return ""
        share = m.total / row.usable
        if share > 1:
            return f"{share:.0%} — rest from the SSD" if row.streamed else f"{share:.0%} — too much"
        return f"{share:.0%}"

    @staticmethod
    def over(row: MemoryRow) -> bool:
        return row.usable is not None and row.memory.total > row.usable
