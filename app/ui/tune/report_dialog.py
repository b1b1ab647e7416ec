"""A benchmark report (``moedesk-cli bench``'s report.csv) shown in the app: the chart and the
table, so a run made in a terminal, or on another machine, can be read on the dashboard."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from app.tune.report import CSV_COLUMNS, read_csv
from app.ui.bench_chart import render_report_png

HEADERS = dict(zip(CSV_COLUMNS, ("Strategy", "Placement", "GPU GB", "Prefill 512 t/s", "Prefill 4096 t/s",
                                  "Decode t/s", "Decode deep t/s", "Depth", "Runs", "Fits", "Note",
                                  "SSD GB/token", "RAM cache hits", "VRAM cache hits", "Predicted hits"),
                   strict=True))
# reports written before deep decode, rounds, SSD figures or hot experts were measured lack
# those columns; they open
REQUIRED = tuple(c for c in CSV_COLUMNS if c not in ("decode_deep_tps", "decode_depth", "runs",
                                                     "ssd_gb_per_token", "ram_hit_rate",
                                                     "vram_hit_rate", "predicted_hit_rate"))


class ReportError(Exception):
    """The file is not a benchmark report."""


class BenchReportDialog(QDialog):
    def __init__(self, csv_path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        try:
            rows = read_csv(csv_path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ReportError(f"{csv_path} could not be read: {exc}") from exc
        if not rows or not set(REQUIRED) <= set(rows[0]):
            raise ReportError(f"{csv_path.name} is not a report written by 'moedesk-cli bench' "
                              f"(expected the columns {', '.join(REQUIRED)}).")
        columns = [c for c in CSV_COLUMNS if c in rows[0]]
        self.setWindowTitle(f"Benchmark report: {csv_path.parent.name}/{csv_path.name}")
        with tempfile.TemporaryDirectory() as folder:
            png = render_report_png(csv_path, Path(folder) / "chart.png", title=csv_path.parent.name)
            self.chart = QLabel()
            self.chart.setPixmap(QPixmap(str(png)))
        self.table = QTableWidget(len(rows), len(columns))
        self.table.setHorizontalHeaderLabels([HEADERS[c] for c in columns])
        for r, row in enumerate(rows):
            for c, key in enumerate(columns):
                self.table.setItem(r, c, QTableWidgetItem(row[key]))
        self.table.resizeColumnsToContents()
        layout = QVBoxLayout(self)
        layout.addWidget(self.chart)
        layout.addWidget(self.table, 1)
        self.resize(1040, 900)
