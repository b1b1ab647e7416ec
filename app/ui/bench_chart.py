"""The benchmark report as a PNG bar chart (decode and prefill t/s per strategy), drawn with
QPainter into an image, so it needs no window and runs offscreen."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPainter
from PySide6.QtWidgets import QApplication

from app.tune.report import read_csv

DECODE = (("decode_tps", "decode t/s (128 tokens)", "#2f7ed8"),
          ("decode_deep_tps", "decode t/s, deep in the context", "#7b4fb0"))
PREFILL = (("prefill_512_tps", "prefill t/s (512)", "#8bbc21"),
           ("prefill_4096_tps", "prefill t/s (4096)", "#f28f43"))


def _value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def render_report_png(csv_path: Path, png_path: Path, title: str = "") -> Path:
    """Draw report.csv as two panels of bars (decode; prefill) and save it as ``png_path``."""
    if QGuiApplication.instance() is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        # fonts need an application object, kept until exit; a QApplication (not the lighter
        # QGuiApplication) so that widgets can still be made in this process afterwards
        QApplication([])
    rows = [r for r in read_csv(csv_path) if r["strategy"] != "sweep"] or read_csv(csv_path)
    width, height = 1000, 620
    image = QImage(width, height, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setFont(QFont("Sans", 11))
    painter.drawText(QRectF(0, 8, width, 24), Qt.AlignmentFlag.AlignCenter, title or csv_path.stem)
    # a series only where some row has it (reports from before deep decode lack the column)
    decode = tuple((key, _deep_label(rows) if key == "decode_deep_tps" else label, colour)
                   for key, label, colour in DECODE if any(_value(r.get(key, "")) for r in rows))
    decode = decode or DECODE[:1]
    panels = ((decode, QRectF(70, 50, width - 100, 220)), (PREFILL, QRectF(70, 330, width - 100, 220)))
    for series, area in panels:
        _panel(painter, rows, series, area)
    painter.end()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    if not image.save(str(tmp)):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, png_path)
    return png_path


def _deep_label(rows: list[dict[str, str]]) -> str:
    depth = max((int(r["decode_depth"]) for r in rows if r.get("decode_depth", "-").isdigit()), default=0)
    return f"decode t/s at depth {depth}"


def _panel(painter: QPainter, rows: list[dict[str, str]], series: tuple, area: QRectF) -> None:
    top = max((_value(r[key]) for r in rows for key, _, _ in series), default=0.0) or 1.0
    painter.setPen(QColor("#444"))
    painter.drawLine(area.bottomLeft(), area.bottomRight())
    painter.drawText(QRectF(area.left() - 65, area.top() - 6, 60, 14),
                     Qt.AlignmentFlag.AlignRight, f"{top:.0f}")
    group = area.width() / max(len(rows), 1)
    bar = group * 0.7 / len(series)
    for i, row in enumerate(rows):
        x0 = area.left() + i * group + group * 0.15
        for j, (key, _label, colour) in enumerate(series):
            value = _value(row.get(key, ""))
            h = area.height() * value / top
            rect = QRectF(x0 + j * bar, area.bottom() - h, bar * 0.95, h)
            painter.fillRect(rect, QColor(colour))
            if value:
                painter.drawText(QRectF(rect.left() - 10, rect.top() - 16, rect.width() + 20, 14),
                                 Qt.AlignmentFlag.AlignCenter, f"{value:.0f}")
        painter.drawText(QRectF(area.left() + i * group, area.bottom() + 4, group, 16),
                         Qt.AlignmentFlag.AlignCenter, row["strategy"])
    for j, (_key, label, colour) in enumerate(series):  # legend
        x = area.left() + j * 330
        painter.fillRect(QRectF(x, area.bottom() + 26, 12, 12), QColor(colour))
        painter.drawText(QRectF(x + 18, area.bottom() + 24, 310, 16), Qt.AlignmentFlag.AlignLeft, label)
