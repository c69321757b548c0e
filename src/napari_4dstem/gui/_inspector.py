"""Inspector dock: the selected pixel's patterns in detector space, in a second napari canvas.

A separate :class:`napari.components.ViewerModel` drawn by its own :class:`napari.qt.QtViewer` (the pattern
napari's multiple-viewer example uses) shows raw, preprocessed, reconstruction as measured, canonical
(unrotated) reconstruction and residual side by side in grid mode; its layers are updated in place.
"""
from __future__ import annotations

import math
import time

import numpy as np
from napari.components import ViewerModel
from napari.qt import QtViewer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QCheckBox, QLabel, QVBoxLayout

from ._common import error_message, guarded, update_image
from ._widgets import DockBase

PANELS = ("raw", "preprocessed", "reconstruction", "canonical", "residual")


def _grid(model):
    canvas = getattr(model, "canvas", None)  # napari >= 0.9; model.grid before
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else model.grid


class InspectorWidget(DockBase):
    """Patterns and numbers for the selected scan pixel; follows clicks, arrow keys and drags."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        self.model = ViewerModel(title="inspector")
        grid = _grid(self.model)
        grid.enabled = True
        grid.stride = 1
        self.canvas = QtViewer(self.model)
        self.canvas.setMinimumSize(240, 150)
        # numbers and controls first: when the dock is short, only the canvas is squeezed
        self.text = QLabel("select a scan pixel: click a map, use the arrow keys or drag")
        self.text.setWordWrap(True)
        lay.addWidget(self.text)
        self.scrub = QCheckBox("dragging on a map scrubs the selection (uncheck to pan)")
        self.scrub.setChecked(self.session.drag_scrubs)
        self.scrub.toggled.connect(lambda on: setattr(self.session, "drag_scrubs", bool(on)))
        lay.addWidget(self.scrub)
        legend = QLabel("panels: " + " · ".join(PANELS))
        legend.setToolTip("left to right, top to bottom. reconstruction: decoded at the pattern's own rotation; "
                          "canonical: at rotation 0; residual: preprocessed - reconstruction")
        lay.addWidget(legend)
        lay.addWidget(self.canvas, stretch=1)
        # all panels exist from the start and stay visible (a panel with nothing to show is transparent):
        # adding a layer, or toggling its visibility, re-lays the grid out, ~1 s under a software renderer
        # while torch trains; this way a click only updates layers in place
        self.layers: dict = {}
        self._extent = None
        for name in PANELS:
            self.layers[name] = self.model.add_image(np.zeros((2, 2), np.float32), name=name, opacity=0.0,
                                                     colormap="PiYG" if name == "residual" else "magma")
        self.last_update_s = float("nan")  # click -> raw and preprocessed panels and numbers updated
        self.last_recon_s = float("nan")  # click -> reconstructions shown
        self.recon_pixel = None  # the pixel whose reconstructions are shown
        self._recon_seq = 0
        self._recon_busy = False
        self._pending = None
        # the second canvas is closed with the main window (napari tracks every QtViewer): on_window_close
        self.session.selection_changed.connect(self.update_pixel)
        for sig in (self.session.model_changed, self.session.preprocessed_changed, self.session.dataset_changed,
                    self.session.com_changed):
            sig.connect(self._refresh)
        self._refresh()

    def on_window_close(self):
        super().on_window_close()
        self.close_canvas()

    def close_canvas(self):
        """Close the inspector's canvas (called when the main window closes)."""
        if self.canvas is not None:
            canvas, self.canvas = self.canvas, None
            try:
                canvas.close()
            except RuntimeError:  # deleted with the window already
                pass

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.close_canvas()
        super().closeEvent(event)

    def _refresh(self, *_):
        self.update_pixel(*self.session.selected)

    def _set(self, name: str, image: np.ndarray | None, extent: tuple[int, int]):
        """Update panel ``name`` in place; ``image=None`` blanks it (transparent)."""
        layer = self.layers.get(name)
        if image is None:
            if layer.opacity != 0.0:
                layer.opacity = 0.0
            return
        image = np.asarray(image, dtype=np.float32)
        scale = (extent[0] / image.shape[0], extent[1] / image.shape[1])
        update_image(layer, image)
        if tuple(layer.scale) != scale:
            layer.scale = scale
        if layer.opacity != 1.0:
            layer.opacity = 1.0
        if self._extent != tuple(extent):
            self._extent = tuple(extent)
            self.model.reset_view()
        lo, hi = float(image.min()), float(image.max())
        if name == "residual":
            m = max(abs(lo), abs(hi), 1e-12)
            lo, hi = -m, m
        layer.contrast_limits = (lo, hi if hi > lo else lo + 1e-12)

    def update_pixel(self, iy: int, ix: int):
        """Show pixel ``(iy, ix)``; the time it took is kept in ``last_update_s``."""
        t0 = time.perf_counter()
        s = self.session
        ds = s.dataset
        if ds is None:
            return
        extent = ds.detector_shape
        raw = ds.frame(iy, ix)
        pre = s.preprocessed.frame(iy, ix) if s.preprocessed is not None else None
        lines = [f"pixel (y, x) = ({iy}, {ix})"]
        oy, ox = s.scan_offset
        if oy or ox:
            lines[0] += f" of the scan window; ({iy + oy}, {ix + ox}) in the file"
        sy, sx = ds.calibration.scan_step
        if sy and sx:
            lines[0] += f" = ({iy * sy:.3g}, {ix * sx:.3g}) {ds.calibration.scan_unit or ''}"
        self._recon_seq += 1
        if s.model is not None and pre is not None:
            self._request_reconstructions(self._recon_seq, (iy, ix), s.model, pre, t0)
        if s.encoded is not None:
            enc = s.encoded
            z = np.asarray(enc.latents)[:, iy, ix]  # latents are (K, scan_y, scan_x)
            sd = np.asarray(enc.latent_sd)[:, iy, ix]
            ang = math.degrees(float(np.asarray(enc.angle)[iy, ix]))
            lines.append("latents " + ", ".join(f"z{k + 1} = {v:+.3f} (sd {d:.3f})" for k, (v, d) in
                                                enumerate(zip(np.atleast_1d(z), np.atleast_1d(sd)))))
            lines.append(f"rrVAE angle {ang:+.1f}°")
        if s.com is not None:
            cx, cy = float(s.com.x[iy, ix]), float(s.com.y[iy, ix])
            lines.append(f"COM (x, y) = ({cx:+.3g}, {cy:+.3g}) {s.com.units}, |COM| = {math.hypot(cx, cy):.3g}")
        self._set("raw", raw, extent)
        self._set("preprocessed", pre, extent)
        if s.model is None or pre is None:
            like = pre if pre is not None else raw
            for name in ("reconstruction", "canonical", "residual"):
                self._set(name, None, extent)
                layer = self.layers[name]
                if layer.data.shape != like.shape:  # sized now, not on the first reconstruction (see __init__)
                    layer.data = np.zeros(like.shape, np.float32)
                    layer.scale = (extent[0] / like.shape[0], extent[1] / like.shape[1])
            self.recon_pixel = None
        self.text.setText("<br>".join(lines))
        self.last_update_s = time.perf_counter() - t0

    def _request_reconstructions(self, seq, pixel, model, pattern, t0):
        # torch runs in a worker: a click never waits for the model. One worker at a time, and only the
        # latest click is computed: clicks made while one runs replace each other (no stale work competes
        # with training for the CPU)
        self._pending = (seq, pixel, model, pattern, t0)
        if self._recon_busy:
            return
        self._pending = None
        self._recon_busy = True
        from ._rrvae_widget import pixel_reconstructions

        worker = create_worker(pixel_reconstructions, model, pattern, _ignore_errors=True)

        def done():
            self._recon_busy = False
            if self._pending is not None:
                self._request_reconstructions(*self._pending)

        def show(out):
            if seq != self._recon_seq or self.session.dataset is None:
                return
            recon, canon, target = out
            extent = self.session.dataset.detector_shape
            self._set("reconstruction", recon, extent)
            self._set("canonical", canon, extent)
            self._set("residual", target - recon, extent)
            self.recon_pixel = pixel
            self.last_recon_s = time.perf_counter() - t0

        worker.returned.connect(guarded(self, show))
        worker.errored.connect(lambda e: show_error(error_message(e)))
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)
        worker.finished.connect(guarded(self, done))
        worker.start()

