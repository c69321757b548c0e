"""The rrVAE dock's live training curves, drawn with pyqtgraph in the GUI thread.

The former plot rendered matplotlib (Agg) in a worker thread after each epoch: ~300 ms of C code that holds
the GIL (text layout, Agg paths), so the event loop stalled 0.3-0.6 s per epoch while a model trained
(benchmarks/bench_gui.py). pyqtgraph updates a few curves in place in a few milliseconds.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtWidgets import QHBoxLayout, QSizePolicy, QWidget

from ._common import BG, FG

#: per-epoch fields that are no curves
NOT_PLOTTED = {"epoch", "epoch_done", "batch", "seconds", "elapsed", "eta", "r_best"}
#: fields plotted on the right (correlations); the loss terms go left
CORRELATIONS = ("r", "circ_r")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def history_curves(reports: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """``{"loss": {label: values}, "r": {label: values}}`` and the epochs under ``"epoch"``: the numbers the
    plot shows (one curve per field, one per latent for per-latent fields such as ``r``)."""
    out: dict = {"loss": {}, "r": {}, "epoch": np.array([r.get("epoch") for r in reports], dtype=float)}
    for key in sorted(reports[-1]) if reports else []:
        vals = [r.get(key) for r in reports]
        if key in NOT_PLOTTED or not all(isinstance(v, (int, float, list, tuple)) for v in vals):
            continue
        try:
            arr = np.array(vals, dtype=float)
        except ValueError:  # ragged (a field whose length changed): not a curve
            continue
        side = out["r"] if key in CORRELATIONS else out["loss"]
        if arr.ndim == 1:
            side[key] = arr
        elif arr.ndim == 2:
            for k in range(arr.shape[1]):
                side[f"{key}[z{k + 1}]"] = arr[:, k]
    return out


class HistoryPlot(QWidget):
    """Loss terms (left) and correlations (right) per epoch; ``show(reports)`` updates the curves in place."""

    def __init__(self, height_px: int = 180):
        super().__init__()
        self.setFixedHeight(height_px)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.panels = {}
        for side, title in (("loss", "loss terms"), ("r", "r(latent, |COM|), circular r")):
            w = pg.PlotWidget(background=BG)
            item = w.getPlotItem()
            item.setTitle(title, color=FG, size="8pt")
            item.setLabel("bottom", "epoch", color=FG)
            for ax in ("left", "bottom"):
                item.getAxis(ax).setTextPen(FG)
                item.getAxis(ax).setPen(FG)
            item.showGrid(x=False, y=True, alpha=0.15)
            item.addLegend(offset=(-5, 5), labelTextSize="7pt", labelTextColor=FG)
            w.setMouseEnabled(x=False, y=False)
            w.setMenuEnabled(False)
            lay.addWidget(w)
            self.panels[side] = (w, {})
        self.rendered = 0  # updates shown so far (tests wait on it)
        self.curves: dict = {}

    def show_history(self, reports: list[dict]) -> None:
        data = history_curves(reports)
        ep = data["epoch"]
        for side in ("loss", "r"):
            w, items = self.panels[side]
            for label, values in data[side].items():
                if label not in items:
                    color = _COLORS[len(items) % len(_COLORS)]
                    items[label] = w.plot(name=label, pen=pg.mkPen(color, width=1), symbol="o", symbolSize=4,
                                          symbolBrush=color, symbolPen=None)
                items[label].setData(ep, values)
            for label in [k for k in items if k not in data[side]]:
                w.removeItem(items.pop(label))
        self.curves = {**data["loss"], **data["r"]}
        self.rendered += 1
