"""The dashboard's data, without Qt: time series in numpy ring buffers, the recent routing
window, and the CSV export.

The page's slots only append here (cheap, any rate); its redraw timer reads from here at a
fixed rate. Times are seconds since the page started (or was last reset).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from app.engine.protocol import RoutingSnapshot

EMPTY = np.empty(0)


class Ring:
    """The last ``capacity`` (time, value) samples of one series.

    Each sample is written twice, at ``i`` and ``i + capacity``, so the newest ``len(self)``
    samples are always one contiguous slice: reading costs no copy and no reordering.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ring needs room for at least one sample")
        self.capacity = capacity
        self._t = np.zeros(2 * capacity)
        self._v = np.zeros(2 * capacity)
        self._count = 0  # samples ever appended (since clear)

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def append(self, t: float, value: float) -> None:
        i = self._count % self.capacity
        self._t[i] = self._t[i + self.capacity] = t
        self._v[i] = self._v[i + self.capacity] = value
        self._count += 1

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Times and values, oldest first (read-only views: copy before keeping them)."""
        n = len(self)
        start = self._count % self.capacity if self._count > self.capacity else 0
        t, v = self._t[start:start + n], self._v[start:start + n]
        t.flags.writeable = v.flags.writeable = False
        return t, v

    def clear(self) -> None:
        self._count = 0


class SeriesStore:
    """Named time series; a series appears with its first sample (a GPU's memory, say)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._series: dict[str, Ring] = {}

    def add(self, t: float, values: Mapping[str, float]) -> None:
        """One sample of several series, all taken at time ``t``."""
        for name, value in values.items():
            ring = self._series.get(name)
            if ring is None:
                ring = self._series[name] = Ring(self.capacity)
            ring.append(t, value)

    def names(self) -> list[str]:
        """The series, in the order they first appeared."""
        return list(self._series)

    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Times and values of one series (empty if it has no samples)."""
        ring = self._series.get(name)
        return ring.data() if ring is not None else (EMPTY, EMPTY)

    def last(self, name: str) -> float | None:
        t, v = self.data(name)
        return float(v[-1]) if len(v) else None

    def __len__(self) -> int:
        """The number of samples of the longest series."""
        return max((len(r) for r in self._series.values()), default=0)

    def clear(self) -> None:
        self._series.clear()

    def write_csv(self, path: str | Path) -> int:
        """Every series as one CSV table (``time_s`` then one column per series, a row per
        sampling time, empty cells where a series has no sample then). The file appears
        whole or not at all. Returns the number of data rows."""
        names = self.names()
        times = np.unique(np.concatenate([self.data(n)[0] for n in names])) if names else EMPTY
        columns = []
        for name in names:
            t, v = self.data(name)
            column = np.full(len(times), np.nan)
            # several samples at one time (not expected): the last one wins
            column[np.searchsorted(times, t)] = v
            columns.append(column)
        with atomic_write(path, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time_s", *names])
            for row, t in enumerate(times):
                writer.writerow([_cell(t), *(_cell(c[row]) for c in columns)])
        return len(times)


def _cell(value: float) -> str:
    """A CSV cell: empty for no value, integers without a fraction, else full precision."""
    if math.isnan(value):
        return ""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@contextlib.contextmanager
def atomic_write(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file written under a temporary name in the same folder, renamed into place
    only when the block ends without an error (so no half-written file is ever left)."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class RoutingWindow:
    """Routed expert selections of the last seconds, from cumulative routing snapshots.

    Each snapshot's counts minus the previous snapshot's are added into one-second bins; the
    heatmap is the sum of the newest ``window_s`` bins (the newest snapshot's time decides
    what is recent, so a paused or recorded feed keeps its window). Bins older than
    ``max_window_s`` are dropped. The selections served from VRAM are binned the same way, so
    the window's hit rate is its own tokens' (a long prompt read from RAM before them, or a
    cache that has since taken in the experts routing asks for, does not weigh on it).
    """

    def __init__(self, window_s: float = 30.0, max_window_s: float = 300.0,
                 bin_s: float = 1.0) -> None:
        self.bin_s = bin_s
        self.max_window_s = max_window_s
        self.window_s = window_s
        self.layers: list[int] = []
        self.layer_hit_rate = EMPTY  # of the newest snapshot; NaN where a layer had no uses
        self.cached: list[list[int]] = []  # per layer: experts the hot-expert cache holds now
        # bin number -> [layer, expert] selections, then a column: the layer's served from VRAM
        self._bins: dict[int, np.ndarray] = {}
        self._previous: np.ndarray | None = None
        self._served = False  # the snapshots count selections served from VRAM (``served``)
        self._from_zero = False
        self._newest_bin: int | None = None
        # the window's sum, kept until a snapshot or the window's length changes it: a redraw
        # reads it for the heatmap, the bars and the hit rate
        self._summed: tuple[tuple[int, float], np.ndarray] | None = None
        self._added = 0  # snapshots taken in (and restarts): the sum's age

    @property
    def window_s(self) -> float:
        return self._window_s

    @window_s.setter
    def window_s(self, seconds: float) -> None:
        if not 0 < seconds <= self.max_window_s:
            raise ValueError(f"the routing window must be within (0, {self.max_window_s}] s")
        self._window_s = seconds

    def restart(self, from_zero: bool) -> None:
        """Forget every bin. ``from_zero``: a model was just loaded, so the next snapshot's
        counts all happened since; otherwise the next snapshot is only the new baseline."""
        self._bins.clear()
        self._previous = None
        self._newest_bin = None
        self._from_zero = from_zero
        self.layers = []
        self.layer_hit_rate = EMPTY
        self.cached = []
        self._served = False
        self._added += 1

    def add(self, t: float, snapshot: RoutingSnapshot) -> None:
        self._added += 1
        n_layer = len(snapshot.layers)
        self._served = len(snapshot.served) == n_layer
        served = snapshot.served if self._served else [0] * n_layer
        counts = np.column_stack([
            np.asarray(snapshot.counts, dtype=np.int64).reshape(n_layer, snapshot.n_expert),
            np.asarray(served, dtype=np.int64)])
        previous = self._previous
        if previous is None:
            difference = counts if self._from_zero else None
        elif previous.shape != counts.shape or (counts < previous).any():
            # counts went back: another model (or the same one) was loaded since the last
            # snapshot, and counting restarted at zero then
            self._bins.clear()
            difference = counts
        else:
            difference = counts - previous
        self._previous, self._from_zero = counts, False
        self.layers = list(snapshot.layers)
        self.cached = [list(held) for held in snapshot.cached]
        self.layer_hit_rate = np.array(
            [np.nan if h is None else h for h in snapshot.layer_hit_rate], dtype=float)
        number = math.floor(t / self.bin_s)
        self._newest_bin = number if self._newest_bin is None else max(self._newest_bin, number)
        if difference is not None:
            if number in self._bins:
                self._bins[number] = self._bins[number] + difference
            else:
                self._bins[number] = difference.copy()
        oldest_kept = self._newest_bin - math.ceil(self.max_window_s / self.bin_s) + 1
        for old in [n for n in self._bins if n < oldest_kept]:
            del self._bins[old]

    def _window(self) -> np.ndarray:
        """The window's bins summed: [layer, expert] selections, then the served column."""
        key = (self._added, self.window_s)
        if self._summed is not None and self._summed[0] == key:
            return self._summed[1]
        shape = self._previous.shape if self._previous is not None else (0, 1)
        total = np.zeros(shape, dtype=np.int64)
        if self._newest_bin is not None:
            first = self._newest_bin - math.ceil(self.window_s / self.bin_s) + 1
            for number, counts in self._bins.items():
                if number >= first and counts.shape == shape:
                    total += counts
        total.setflags(write=False)  # callers get views of it
        self._summed = (key, total)
        return total

    def counts(self) -> np.ndarray:
        """Selections per [layer, expert] in the window (zeros before any routing)."""
        return self._window()[:, :-1]

    def _uses(self) -> np.ndarray:
        """Per layer, the window's selections."""
        return self.counts().sum(axis=1)

    def window_layer_hit_rate(self) -> np.ndarray:
        """Per layer, the share of the window's selections served from GPU memory; NaN where
        the layer had none in the window. Snapshots without served counts: their own rates."""
        uses = self._uses()
        if not self._served:
            return np.where(uses > 0, self.layer_hit_rate, np.nan) if uses.size else EMPTY
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(uses > 0, self._window()[:, -1] / uses, np.nan)

    def shown_layer_hit_rate(self) -> tuple[np.ndarray, bool]:
        """The per-layer bars: the window's rates where any layer had selections in it (True),
        else, the model idle for longer than the window, the rates since load (False)."""
        recent = self.window_layer_hit_rate()
        if recent.size and not np.isnan(recent).all():
            return recent, True
        return self.layer_hit_rate, False

    def hit_rate(self) -> float | None:
        """Share of the window's expert uses served from GPU memory (None: no uses)."""
        uses = self._uses()
        if not uses.sum():
            return None
        # each layer's share weighted by its uses (a layer with uses but no rate counts as RAM)
        return float(np.nansum(uses * self.window_layer_hit_rate()) / uses.sum())
