"""The placement in use, as a table: bytes of each tensor class on each device."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from app.engine.protocol import LoadResult
from app.units import memory_size

Index = QModelIndex | QPersistentModelIndex


def layer_ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive layers
    for layer in sorted(set(layers)):
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def placement_summary(result: LoadResult) -> str:
    """One paragraph: the model, its context, where its routed experts are."""
    model = result.model
    on_gpu = result.expert_layers_on_gpu
    if on_gpu:
        experts = (f"routed experts of {len(on_gpu)} of {model.n_layer} layers on the GPU "
                   f"(layers {layer_ranges(on_gpu)}), the rest in RAM")
    else:
        experts = "all routed experts in RAM"
    return (f"{model.name}: {model.n_expert} experts, {model.n_expert_used} active per token; "
            f"{experts}. Context {result.n_ctx:,} tokens, loaded in {result.load_seconds:.1f} s.")


class PlacementTableModel(QAbstractTableModel):
    """Rows: tensor classes (routed experts first); columns: devices, then the total."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._classes: list[str] = []
        self._devices: list[str] = []
        self._bytes: dict[tuple[str, str], int] = {}
        self._tensors: dict[tuple[str, str], int] = {}

    def set_result(self, result: LoadResult | None) -> None:
        """Show where ``result``'s tensors landed (None: no model loaded)."""
        self.beginResetModel()
        placement = result.placement if result is not None else []
        self._bytes = {(p.tensor_class, p.device): p.bytes for p in placement}
        self._tensors = {(p.tensor_class, p.device): p.tensors for p in placement}
        by_size: dict[str, int] = {}
        for p in placement:
            by_size[p.tensor_class] = by_size.get(p.tensor_class, 0) + p.bytes
        # the class that matters most to expert offload first, then the biggest
        self._classes = sorted(by_size, key=lambda c: (c != "routed_experts", -by_size[c]))
        devices = {p.device for p in placement}
        self._devices = sorted(devices, key=lambda d: (d == "CPU", d))  # GPUs, then RAM
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._classes)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or not self._classes else len(self._devices) + 1

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Vertical:
            return self._classes[section].replace("_", " ")
        if section < len(self._devices):
            device = self._devices[section]
            return "RAM" if device == "CPU" else device
        return "total"

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        tensor_class = self._classes[index.row()]
        devices = self._devices if index.column() == len(self._devices) else \
            [self._devices[index.column()]]
        size = sum(self._bytes.get((tensor_class, d), 0) for d in devices)
        tensors = sum(self._tensors.get((tensor_class, d), 0) for d in devices)
        if role == Qt.ItemDataRole.DisplayRole:
            return memory_size(size) if tensors else ""
        if role == Qt.ItemDataRole.ToolTipRole and tensors:
            return f"{tensors} tensors, {size:,} bytes"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None
