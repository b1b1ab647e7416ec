"""The dashboard's pyqtgraph plots: made once, then only given new data.

``DashboardPlots.redraw`` is called by the page's timer at a fixed rate; it hands numpy
arrays to the items it keeps (``setData``, ``setImage``, ``setOpts``) and never creates
items, except a memory curve the first time a device shows up.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGraphicsItem, QWidget

from app.ui.dashboard.series import SeriesStore

GiB = float(2**30)
# Plot colours (the only hard-coded colours of the page): readable on light and dark.
DECODE = "#1f77b4"
PREFILL = "#ff7f0e"
CPU = "#2ca02c"
HIT = "#9467bd"
HIT_WINDOW = "#d62728"
DEVICE_COLOURS = ("#17becf", "#e377c2", "#bcbd22", "#8c564b", "#7f7f7f", "#1f77b4")
ON_GPU = "#2ca02c"
IN_RAM = "#8c8c8c"
CACHED = "#ff4040"  # marks on the heatmap: experts held in VRAM by the cache
LAYER_KEY = (f'<span style="color:{ON_GPU}">&#9632;</span> GPU &nbsp;'
             f'<span style="color:{IN_RAM}">&#9632;</span> RAM')


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k not below ``value`` (1 for nothing to show)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= value * (1 - 1e-12))


def _top(curve: pg.PlotDataItem) -> float:
    """The largest finite value a curve was given (0 for none)."""
    _x, y = curve.getOriginalDataset()
    if y is None or not len(y):
        return 0.0
    top = np.nanmax(y) if np.isfinite(y).any() else 0.0
    return float(top)


def memory_series(device: str) -> str:
    """The series name of a device's used memory, in bytes ("RAM", "CUDA0", ...)."""
    return f"mem_used_{device}_bytes"


class DashboardPlots(pg.GraphicsLayoutWidget):
    """Six plots in a grid: throughput, memory, CPU, hit rate over time; hit rate per layer;
    the layer x expert heatmap of recent routing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.throughput = self._time_plot(0, 0, "Tokens per second", "t/s")
        self.decode = self.throughput.plot(name="decode", pen=pg.mkPen(DECODE, width=2),
                                           connect="finite")
        self.prefill = self.throughput.plot(name="prefill", pen=pg.mkPen(PREFILL, width=2),
                                            connect="finite")
        # one marker per finished answer: its final decode / prefill speed
        self.answer_decode = self.throughput.plot(pen=None, symbol="o", symbolSize=7,
                                                  symbolBrush=DECODE, symbolPen=None)
        self.answer_prefill = self.throughput.plot(pen=None, symbol="t", symbolSize=7,
                                                   symbolBrush=PREFILL, symbolPen=None)

        self.memory = self._time_plot(0, 1, "Memory used", "GiB")
        self.rss = self.memory.plot(name="engine RSS", pen=pg.mkPen("#7f7f7f", width=2,
                                                                    style=Qt.PenStyle.DashLine))
        self.memory_curves: dict[str, pg.PlotDataItem] = {}

        self.cpu = self._time_plot(1, 0, "CPU load", "% of all cores")
        self.cpu.setYRange(0, 100)
        self.cpu.enableAutoRange(axis="y", enable=False)
        self.cpu_curve = self.cpu.plot(pen=pg.mkPen(CPU, width=2))

        self.hits = self._time_plot(1, 1, "Expert hit rate", "% served from GPU")
        self.hits.setYRange(0, 100)
        self.hits.enableAutoRange(axis="y", enable=False)
        self.hit_total = self.hits.plot(name="since load", pen=pg.mkPen(HIT, width=2),
                                        connect="finite")
        # dashed over the solid line: where both are equal, both still show
        self.hit_window = self.hits.plot(name="recent window", connect="finite",
                                         pen=pg.mkPen(HIT_WINDOW, width=2, style=Qt.PenStyle.DashLine))

        self.per_layer = self.addPlot(row=2, col=0, title=f"Expert uses: {LAYER_KEY}")
        self.per_layer.setLabel("left", "% of uses")
        self.per_layer.setLabel("bottom", "layer")
        self.per_layer.setYRange(0, 100)
        self.per_layer.enableAutoRange(axis="y", enable=False)
        self.per_layer.setMouseEnabled(x=True, y=False)
        # stacked: the layer's hit rate (served from GPU memory), then the rest (from RAM)
        self.layer_hits = pg.BarGraphItem(x=[], height=[], width=0.8, brush=ON_GPU, pen=None)
        self.layer_misses = pg.BarGraphItem(x=[], height=[], width=0.8, brush=IN_RAM, pen=None)
        self.per_layer.addItem(self.layer_hits)
        self.per_layer.addItem(self.layer_misses)

        self.heatmap_plot = self.addPlot(row=2, col=1, title="Expert selections")
        self.heatmap_plot.setLabel("left", "layer")
        self.heatmap_plot.setLabel("bottom", "expert")
        self.heatmap_plot.invertY(True)  # layer 0 on top, as in a table
        self.heatmap = pg.ImageItem(axisOrder="row-major")  # image[layer, expert]
        self.heatmap_plot.addItem(self.heatmap)
        # experts the hot-expert cache holds in VRAM: an outlined square on their cell
        self.cached_marks = pg.ScatterPlotItem(symbol="s", size=7, brush=None,
                                               pen=pg.mkPen(CACHED, width=1.5), pxMode=True)
        self.heatmap_plot.addItem(self.cached_marks)
        self._cached_shown: tuple[tuple[int, ...], ...] | None = None
        self.colour_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"),
                                          interactive=False, width=12)
        self.colour_bar.setImageItem(self.heatmap, insert_in=self.heatmap_plot)
        self._heatmap_shape: tuple[int, int, int] | None = None
        self._layers_shown: tuple[list[int], bytes] | None = None
        for col in (0, 1):
            self.ci.layout.setColumnStretchFactor(col, 1)
        # Axes whose size follows their tick labels make the whole grid lay itself out again
        # when a range grows a digit; fixed sizes keep a redraw to repainting the plots.
        digits = self.fontMetrics().horizontalAdvance("0") * 5
        for plot in (self.throughput, self.memory, self.cpu, self.hits, self.per_layer,
                     self.heatmap_plot):
            plot.getAxis("left").setWidth(digits + self.fontMetrics().height())
            for name in ("left", "bottom"):
                # drawn once into a pixmap, redrawn only when the axis itself changes: tick
                # labels are most of what a frame costs in Qt's software rasterizer
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # The time plots follow the data with axis ends that change rarely (1, 2, 2.5, 5 x
        # 10^k), so their axes are not redrawn every frame, until the user zooms or pans one
        # ("A", pyqtgraph's auto-range button, makes them follow again).
        self.following = True
        self._ranges: dict[str, tuple[float, float]] = {}
        for plot in (self.throughput, self.memory, self.cpu, self.hits):
            plot.enableAutoRange(x=False, y=False)
            plot.vb.sigRangeChangedManually.connect(self._stop_following)
        self.apply_palette(self.palette())

    def _stop_following(self, *_args: object) -> None:
        self.following = False

    def _time_plot(self, row: int, col: int, title: str, unit: str) -> pg.PlotItem:
        plot = self.addPlot(row=row, col=col, title=title)
        plot.setLabel("left", unit)
        plot.getAxis("left").enableAutoSIPrefix(False)  # GiB stay GiB, never "x0.001"
        plot.setLabel("bottom", "time (s)")
        # no grid: pyqtgraph draws grid lines as axis ticks across the whole plot, and in
        # Qt's software rasterizer they cost more than all the rest of a frame
        # long runs: draw only what is in view, one point per pixel (keeping the peaks)
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        plot.addLegend(offset=(8, 4), labelTextSize="8pt")
        if (row, col) != (0, 0):
            plot.setXLink(self.throughput)
        return plot

    def apply_palette(self, palette: QPalette) -> None:
        """Follow the application's light or dark theme (background, axes, titles)."""
        text = palette.color(QPalette.ColorRole.WindowText)
        self.setBackground(palette.color(QPalette.ColorRole.Base))
        self.colour_bar.axis.setPen(text)
        self.colour_bar.axis.setTextPen(text)
        for plot in (self.throughput, self.memory, self.cpu, self.hits, self.per_layer,
                     self.heatmap_plot):
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.setPen(text)
                axis.setTextPen(text)
            plot.titleLabel.setAttr("color", text.name())
            plot.titleLabel.setText(plot.titleLabel.text)
            if plot.legend is not None:
                plot.legend.setLabelTextColor(text)
                for _sample, label in plot.legend.items:  # the colour shows once re-rendered
                    label.setText(label.text)
                background = QColor(palette.color(QPalette.ColorRole.Base))
                background.setAlpha(200)
                plot.legend.setBrush(background)

    # --- the timer's work -----------------------------------------------------------------

    def redraw(self, store: SeriesStore, counts: np.ndarray, layers: list[int],
               layer_hit_rate: np.ndarray, window_s: float,
               cached: list[list[int]] | None = None, layers_recent: bool = False) -> None:
        """Show the store's series and the routing window (copies: the rings move on).
        ``layers_recent``: ``layer_hit_rate`` is the window's (else since load)."""
        self._curve(self.decode, store, "decode_tps")
        self._curve(self.prefill, store, "prefill_tps")
        self._curve(self.answer_decode, store, "answer_decode_tps")
        self._curve(self.answer_prefill, store, "answer_prefill_tps")
        self._curve(self.rss, store, "engine_rss_bytes", 1 / GiB)
        devices = [n for n in store.names() if n.startswith("mem_used_")]
        for name in dict.fromkeys([*self.memory_curves, *devices]):  # emptied ones too
            self._curve(self._memory_curve(name), store, name, 1 / GiB)
        self._curve(self.cpu_curve, store, "cpu_percent")
        self._curve(self.hit_total, store, "hit_rate", 100.0)
        self._curve(self.hit_window, store, "hit_rate_window", 100.0)
        self._layers(layers, layer_hit_rate, f"last {window_s:g} s" if layers_recent else "since load")
        self._heatmap(counts, layers, window_s, cached or [])
        self._follow(store)
        # Fit the auto-ranged views now rather than in the coming paint: done there, the new
        # ranges move the axes after the paint has begun, and Qt paints everything twice.
        self.scene().prepareForPaint()

    def _follow(self, store: SeriesStore) -> None:
        plots = (self.throughput, self.memory, self.cpu, self.hits)
        if any(p.vb.autoRangeEnabled()[0] for p in plots):  # the user pressed "A"
            self.following = True
            for plot in plots:
                plot.enableAutoRange(x=False, y=False)
        if not self.following:
            return
        ends = [store.data(n)[0][-1] for n in store.names() if len(store.data(n)[0])]
        self._set_range("x", self.throughput, nice_ceiling(max([5.0, *ends])))
        self._set_range("throughput", self.throughput, nice_ceiling(1.05 * max(
            [_top(c) for c in (self.decode, self.prefill, self.answer_decode,
                              self.answer_prefill)])))
        self._set_range("memory", self.memory, nice_ceiling(1.05 * max(
            [_top(c) for c in (self.rss, *self.memory_curves.values())])))
        self._set_range("cpu", self.cpu, 100.0)
        self._set_range("hits", self.hits, 100.0)

    def _set_range(self, key: str, plot: pg.PlotItem, top: float) -> None:
        if self._ranges.get(key) == (0.0, top):
            return
        self._ranges[key] = (0.0, top)
        if key == "x":
            plot.setXRange(0.0, top, padding=0)  # the other time plots are linked to it
        else:
            plot.setYRange(0.0, top, padding=0.02)

    def _curve(self, curve: pg.PlotDataItem, store: SeriesStore, name: str,
               scale: float = 1.0) -> None:
        t, v = store.data(name)
        curve.setData(t.copy(), v * scale)  # v * scale is a new array as well

    def _memory_curve(self, name: str) -> pg.PlotDataItem:
        curve = self.memory_curves.get(name)
        if curve is None:  # once per device, never per sample
            device = name.removeprefix("mem_used_").removesuffix("_bytes")
            colour = DEVICE_COLOURS[len(self.memory_curves) % len(DEVICE_COLOURS)]
            label = "RAM used (system)" if device == "RAM" else f"{device} used"
            curve = self.memory.plot(name=label, pen=pg.mkPen(colour, width=2))
            self.memory_curves[name] = curve
        return curve

    def _layers(self, layers: list[int], layer_hit_rate: np.ndarray, span: str) -> None:
        shown = (layers, layer_hit_rate.tobytes(), span)
        if shown == self._layers_shown:
            return  # bars redraw their whole picture: only when they change
        self._layers_shown = shown
        self.per_layer.setTitle(f"Expert uses, {span}: {LAYER_KEY}")
        known = ~np.isnan(layer_hit_rate)  # a layer no token has used yet gets no bar
        x = np.asarray(layers, dtype=float)[known]
        hits = layer_hit_rate[known] * 100.0
        self.layer_hits.setOpts(x=x, height=hits)
        self.layer_misses.setOpts(x=x, y0=hits, height=100.0 - hits)

    def _heatmap(self, counts: np.ndarray, layers: list[int], window_s: float,
                 cached: list[list[int]]) -> None:
        top = float(counts.max()) if counts.size else 0.0
        levels = (0.0, max(top, 1.0))
        self.heatmap.setImage(counts, autoLevels=False, levels=levels)
        self.colour_bar.setLevels(levels)
        held = sum(len(experts) for experts in cached)
        title = f"Expert selections, last {window_s:g} s: {int(counts.sum()):,}" + (
            f"; {held:,} held in VRAM (squares)" if held else "")
        if self.heatmap_plot.titleLabel.text != title:
            self.heatmap_plot.setTitle(title)
        if counts.size:
            # rows are layers: label them by layer number where the MoE layers run on
            first = layers[0] if layers == list(range(layers[0], layers[0] + len(layers))) else 0
            shape = (first, *counts.shape)
            if shape != self._heatmap_shape:
                self._heatmap_shape = shape
                self.heatmap.setRect(QRectF(-0.5, first - 0.5, counts.shape[1], counts.shape[0]))
                self.heatmap_plot.autoRange()
            self._cached(cached, first)

    def _cached(self, cached: list[list[int]], first: int) -> None:
        shown = tuple(tuple(experts) for experts in cached)
        if shown == self._cached_shown:
            return  # the marks change only when the cache takes experts in
        self._cached_shown = shown
        x = [expert for experts in cached for expert in experts]
        y = [first + row for row, experts in enumerate(cached) for _ in experts]
        self.cached_marks.setData(x=x, y=y)
