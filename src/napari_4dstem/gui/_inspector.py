"""Inspector dock: what the rrVAE makes of the selected pattern, in a canvas of its own.

Four panels in grid mode of a separate :class:`napari.components.ViewerModel`: the model's input (the
preprocessed pattern on the model's grid), its reconstruction as measured (at the pattern's own rotation), the
canonical reconstruction (rotation 0) and the residual (input - reconstruction, on the input's grid). Each is
titled, has a colourbar, and is drawn in the detector geometry the data came from (detector unit, binning,
crop), so panels of different grids cover the same area. Input and reconstructions share one contrast unless
"per-panel contrast" is ticked; the residual is symmetric about 0. The Pearson r between input and
reconstruction is printed beside them.
"""
from __future__ import annotations

import math
import time

import numpy as np
from napari.components import ViewerModel
from napari.qt import QtViewer
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QLabel, QSizePolicy, QVBoxLayout

from ._common import guarded, update_image
from ._dock import CanvasDock
from ._layers import detector_layer_kwargs

PANELS = ("model input", "reconstruction", "canonical", "residual")
#: Minimum width and height of the Inspector's canvas (px): four panels of about 170 px.
MIN_CANVAS = 360
SHARED = ("model input", "reconstruction", "canonical")


def _grid(model):
    canvas = getattr(model, "canvas", None)  # napari >= 0.9; model.grid before
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else model.grid


def pixel_reconstructions(model, pattern: np.ndarray) -> dict:
    """The Inspector's panels for one preprocessed pattern, in the units of the model's input.

    ``model input``: the pattern on the model's grid (binned to ``size``, PCA-projected when the model does;
    before its scaling); ``reconstruction`` / ``canonical``: the decoder on the full grid at the pattern's
    pose / at rotation 0; ``residual``: input minus the reconstruction binned to the input's grid;
    ``r``: their Pearson correlation.
    """
    import torch

    from napari_4dstem.rrvae.maps import pearson_r

    x = np.asarray(pattern, dtype=np.float32)[None, None]  # (1, 1, det_y, det_x): a 1 x 1 scan
    recon = np.asarray(model.reconstruct(x, as_measured=True))[0, 0]
    canon = np.asarray(model.reconstruct(x, as_measured=False))[0, 0]
    view = model.view
    with torch.no_grad():
        inp = view._project(view.bin(torch.from_numpy(x[0]))).reshape(view.size, view.size).numpy()
        rb = view.bin(torch.from_numpy(recon[None].astype(np.float32))).reshape(view.size, view.size).numpy()
    return {"model input": inp, "reconstruction": recon, "canonical": canon, "residual": inp - rb,
            "r": pearson_r(inp, rb)}


def panel_geometry(session, shape) -> dict:
    """Scale and translate of a panel of ``shape`` over the preprocessed detector, in detector units."""
    ds, pp, pre = session.dataset, session.preprocessing, session.preprocessed
    (dsy, dsx) = detector_layer_kwargs(ds.calibration)["scale"]
    f = int(getattr(pp, "bin_factor_", 1) or 1)
    crop = getattr(pp, "bin_crop_", (0, 0)) or (0, 0)
    h, w = pre.detector_shape if pre is not None else ds.detector_shape
    py, px = f * h / shape[0], f * w / shape[1]  # raw detector pixels per panel pixel
    return {"scale": (py * dsy, px * dsx),
            "translate": ((crop[0] + (py - 1) / 2) * dsy, (crop[1] + (px - 1) / 2) * dsx),
            "units": detector_layer_kwargs(ds.calibration)["units"]}


class InspectorWidget(CanvasDock):
    """The model's view of the selected scan pixel; follows clicks, arrow keys and drags."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        self.model = ViewerModel(title="inspector")
        grid = _grid(self.model)
        grid.enabled = True
        grid.stride = 1
        grid.spacing = 14  # screen pixels between the panels: titles, colourbars and scale bars stay apart
        bar = self.model.canvas.overlays.scale_bar
        bar.visible = True
        bar.gridded = True  # one per panel, in its own corner (a canvas-wide one lay over the residual)
        bar.font_size = 8
        self.canvas = QtViewer(self.model)
        self.canvas.setMinimumSize(MIN_CANVAS, MIN_CANVAS)  # four readable panels
        self.text = QLabel("select a scan pixel: click a map, use the arrow keys or drag")
        self.text.setWordWrap(True)
        # room for the usual lines from the start: a label that grows with its text re-lays the dock out and
        # resizes the canvas below it (a full GL redraw) on a click
        # (measured: each new text re-laid out and repainted the whole dock, three window composites under a
        # software renderer); a fixed height and an ignored width hint keep the layout out of it
        self.text.setFixedHeight(7 * self.text.fontMetrics().lineSpacing())
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        lay.addWidget(self.text)
        self.scrub = QCheckBox("drag on a map scrubs the selection (untick to pan)")
        self.scrub.setChecked(self.session.drag_scrubs)
        self.scrub.toggled.connect(lambda on: setattr(self.session, "drag_scrubs", bool(on)))
        lay.addWidget(self.scrub)
        self.per_panel = QCheckBox("per-panel contrast")
        self.per_panel.setToolTip("default: one contrast for the input and the reconstructions")
        self.per_panel.toggled.connect(lambda _: self._apply_contrast())
        lay.addWidget(self.per_panel)
        lay.addWidget(self.canvas, stretch=1)
        # all panels exist from the start (a panel with nothing to show is transparent): adding a layer
        # re-lays the grid out, ~1 s under a software renderer while torch trains; a click updates in place
        self.layers: dict = {}
        for name in PANELS:
            layer = self.model.add_image(np.zeros((2, 2), np.float32), name=name, opacity=0.0,
                                         colormap="PiYG" if name == "residual" else "magma")
            layer.name_overlay.visible = True
            layer.name_overlay.font_size = 9
            layer.colorbar.visible = True
            layer.colorbar.size = (10, 90)  # napari's default (25 x 150) covered most of a panel
            layer.colorbar.font_size = 8
            self.layers[name] = layer
        self.images: dict = {}
        self._units: dict = {}
        self.r = float("nan")
        self.last_update_s = float("nan")  # click -> numbers (and the input panel before training) updated
        self.last_recon_s = float("nan")  # click -> reconstructions shown
        self.recon_pixel = None  # the pixel whose reconstructions are shown
        self._recon_seq = 0
        self._recon_busy = False
        self._pending = None
        self._geometry_key = None
        self._range_of, self._range = None, None  # see stack_range
        self.training = False  # a model trains in a worker: reconstructions wait (see update_pixel)
        self._stale = False  # a selection arrived while the canvas was hidden
        s = self.session
        s.selection_changed.connect(self.update_pixel)
        s.training_changed.connect(self._on_training)
        for sig in (s.model_changed, s.preprocessed_changed, s.dataset_changed, s.com_changed, s.maps_changed,
                    s.calibration_changed):
            sig.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_):
        if self.session.dataset is not None:
            self.update_pixel(*self.session.selected)

    def _on_training(self, running: bool):
        self.training = bool(running)
        if running:  # in a turn of its own, not in the Train button's
            model = self.session.training
            QTimer.singleShot(0, guarded(self, lambda: self._presize(model)))
        else:
            self._refresh()

    def _presize(self, model):
        """Give the reconstruction panels the shapes the model's will have, hidden, when training starts: the
        first reconstructions after training then only fill them in place (new shapes re-lay the grid out:
        a 320 ms stall when the maps of the first model arrived)."""
        pre = self.session.preprocessed
        if model is None or pre is None or self.canvas_hidden():
            return
        from napari_4dstem.rrvae.data import grid_size

        h, w = pre.detector_shape
        size = grid_size(h, model.config.detector_size)
        for name, shape in (("reconstruction", (h, w)), ("canonical", (h, w)), ("residual", (size, size))):
            layer = self.layers[name]
            if name in self.images or layer.data.shape == shape:
                continue
            layer.data = np.zeros(shape, np.float32)
            self._place(name, shape)

    def canvas_hidden(self) -> bool:
        """True when the window is shown but this canvas is not (its dock closed, or behind another tab)."""
        c = self.canvas
        try:
            return c is None or (self.window().isVisible() and not c.isVisible())
        except RuntimeError:  # deleted with the window
            return True

    def showEvent(self, event):  # noqa: N802 - Qt name
        super().showEvent(event)
        if self._stale:
            self._stale = False
            self._refresh()

    def _set(self, name: str, image: np.ndarray | None):
        """Update panel ``name`` in place; ``image=None`` blanks it (transparent)."""
        layer = self.layers[name]
        units = detector_layer_kwargs(self.session.dataset.calibration)["units"]
        if self._units.get(name) != units:  # every panel in the detector unit, shown or not: one unit per canvas
            layer.units = units
            self._units[name] = units
        if image is None:
            self.images.pop(name, None)
            if layer.opacity != 0.0:
                layer.opacity = 0.0
            return
        image = np.asarray(image, dtype=np.float32)
        self.images[name] = image
        update_image(layer, image)
        self._place(name, image.shape)
        if layer.opacity != 1.0:
            layer.opacity = 1.0

    def _place(self, name: str, shape) -> None:
        """Scale and translate panel ``name`` for an image of ``shape``; refit the view when the
        reconstruction's extent changes."""
        layer = self.layers[name]
        geo = panel_geometry(self.session, shape)
        if not np.allclose(layer.scale, geo["scale"]):
            layer.scale = geo["scale"]
        if not np.allclose(layer.translate, geo["translate"]):
            layer.translate = geo["translate"]
        key = (geo["units"], tuple(np.multiply(shape, geo["scale"]).round(6)))
        if name == "reconstruction" and key != self._geometry_key:
            self._geometry_key = key
            self.model.reset_view()

    def stack_range(self) -> tuple[float, float] | None:
        """Value range (0.5-99.5 percentiles) of the preprocessed patterns (a strided sample of at most
        ~4096, once per preprocessing): the shared contrast starts from it, so that every pixel is shown on
        the same scale and a click changes no colourbar (each change redraws the canvas twice, ~60 ms more
        per click under a software renderer)."""
        pre = self.session.preprocessed
        if pre is None:
            return None
        if self._range_of is not pre:
            ny, nx = pre.scan_shape
            step = max(1, int(math.ceil(math.sqrt(ny * nx / 4096))))
            sample = np.asarray(pre.data[::step, ::step], dtype=np.float32)
            finite = sample[np.isfinite(sample)]
            # percentiles, not min-max: a few extreme patterns (a defect, a hot pixel) would squeeze every
            # other pattern into a sliver of the colour scale; a pattern beyond them widens the limits
            self._range = tuple(float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else None
            self._range_of = pre
        return self._range

    def contrast(self) -> dict:
        """Contrast limits per panel: one range for input and reconstructions (unless per-panel), which holds
        the preprocessed patterns' range and the panels shown; the residual symmetric about 0."""
        out = {}
        shared = [self.images[n] for n in SHARED if n in self.images]
        if shared:
            lo = min(float(np.nanmin(a)) for a in shared)
            hi = max(float(np.nanmax(a)) for a in shared)
            rng = self.stack_range()
            if rng is not None:
                lo, hi = min(lo, rng[0]), max(hi, rng[1])
        for name, img in self.images.items():
            if name == "residual":
                m = max(float(np.nanmax(np.abs(img))), 1e-12)
                out[name] = (-m, m)
            elif self.per_panel.isChecked():
                a, b = float(img.min()), float(img.max())
                out[name] = (a, b if b > a else a + 1e-12)
            else:
                out[name] = (lo, hi if hi > lo else lo + 1e-12)
        return out

    def _apply_contrast(self):
        from ._common import nice_limits, set_limits

        lims = self.contrast()
        shared = [n for n in SHARED if n in lims]
        if shared and not self.per_panel.isChecked():
            # one decision for the shared panels, so that they always keep one contrast
            lo, hi = lims[shared[0]]
            a, b = (float(v) for v in self.layers[shared[0]].contrast_limits)
            # the range holds the whole stack's: keep the limits while they hold it and are not much wider
            keep = all(tuple(self.layers[n].contrast_limits) == (a, b) for n in shared) and a <= lo and hi <= b \
                and (hi - lo) >= 0.7 * (b - a)
            if not keep:
                lim = nice_limits(lo, hi)
                for n in shared:
                    if tuple(self.layers[n].contrast_limits) != lim:
                        self.layers[n].contrast_limits = lim
            lims = {n: v for n, v in lims.items() if n not in shared}
        for name, lim in lims.items():
            # keep limits that still hold the range (each change redraws that panel's colourbar); the residual's
            # while they are less than 4x wider (residuals vary more from pixel to pixel than patterns)
            set_limits(self.layers[name], *lim, keep_close=True, keep_fraction=0.25 if name == "residual" else 0.7)

    def update_pixel(self, iy: int, ix: int):
        """Show pixel ``(iy, ix)``; the time it took is kept in ``last_update_s``."""
        t0 = time.perf_counter()
        s = self.session
        ds = s.dataset
        if ds is None:
            return
        iy, ix = s.clamp(iy, ix)
        pre = s.preprocessed.frame(iy, ix) if s.preprocessed is not None else None
        lines = [f"pixel (y, x) = ({iy}, {ix})"]
        oy, ox = s.scan_offset
        if oy or ox:
            lines[0] += f" of the scan window; ({iy + oy}, {ix + ox}) in the file"
        sy, sx = ds.calibration.scan_step
        if sy and sx:
            lines[0] += f" = ({iy * sy:.3g}, {ix * sx:.3g}) {ds.calibration.scan_unit or ''}"
        self._recon_seq += 1
        hidden = self.canvas_hidden()
        self._stale = hidden
        if s.model is not None and pre is not None:
            if self.training:
                # torch would compete with the training thread (and its thread pool) for the cores, and the
                # panels would be redrawn on every click: they wait until training ends
                lines.append("reconstructions paused while the model trains (they show the previous model's)")
            elif not hidden:
                self._request_reconstructions(self._recon_seq, (iy, ix), s.model, pre, t0)
            if self.recon_pixel is not None and not math.isnan(self.r):
                lines.append(f"r(input, reconstruction) = {self.r:.3f} at {self.recon_pixel}")
        enc = s.encoded
        if enc is not None and np.asarray(enc.angle).shape == tuple(ds.scan_shape):
            z = np.asarray(enc.latents)[:, iy, ix]  # latents are (K, scan_y, scan_x)
            sd = np.asarray(enc.latent_sd)[:, iy, ix]
            ang = math.degrees(float(np.asarray(enc.angle)[iy, ix]))
            lines.append("latents " + ", ".join(f"z{k + 1} = {v:+.3f} (sd {d:.3f})" for k, (v, d) in
                                                enumerate(zip(np.atleast_1d(z), np.atleast_1d(sd)))))
            lines.append(f"rrVAE angle {ang:+.1f}°")
        if s.com is not None and np.shape(s.com.x) == tuple(ds.scan_shape):
            cx, cy = float(s.com.x[iy, ix]), float(s.com.y[iy, ix])
            lines.append(f"COM (x, y) = ({cx:+.3g}, {cy:+.3g}) {s.com.units}, |COM| = {math.hypot(cx, cy):.3g}")
        if (s.model is None or pre is None) and not hidden:
            self._set("model input", pre)
            for name in PANELS[1:]:
                self._set(name, None)
            self.recon_pixel = None
            self._apply_contrast()
            if pre is None:
                lines.append("preprocess the data to see the model's input here")
        self.text.setText("<br>".join(lines))
        self.last_update_s = time.perf_counter() - t0

    def _request_reconstructions(self, seq, pixel, model, pattern, t0):
        # torch runs in a worker: a click never waits for the model. One worker at a time, and only the
        # latest click is computed: clicks made while one runs replace each other
        self._pending = (seq, pixel, model, pattern, t0)
        if self._recon_busy:
            return
        self._pending = None
        self._recon_busy = True

        def done():
            self._recon_busy = False
            if self._pending is not None:
                self._request_reconstructions(*self._pending)

        def show(out):
            s = self.session
            if seq != self._recon_seq or s.dataset is None or s.model is not model:
                return
            for name in PANELS:
                self._set(name, out[name])
            self._apply_contrast()
            self.r = float(out["r"])
            self.recon_pixel = pixel
            text = self.text.text()
            line = f"r(input, reconstruction) = {self.r:.3f} at {pixel}"
            if "r(input, reconstruction)" in text:
                parts = [line if p.startswith("r(input") else p for p in text.split("<br>")]
            else:
                parts = text.split("<br>")
                parts.insert(1, line)
            self.text.setText("<br>".join(parts))
            self.last_recon_s = time.perf_counter() - t0

        self.session.workers.start(pixel_reconstructions, model, pattern, owner=self, connect={
            "returned": guarded(self, show), "finished": guarded(self, done)})
