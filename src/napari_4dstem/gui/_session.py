"""The layer controller: mirrors a viewer's :class:`SessionState` into napari layers, in two canvases.

Scan space is the main viewer (navigator, maps, the selection marker, the scan region). Detector space is a
:class:`napari.components.ViewerModel` of the session's own (``detector_model``), drawn by the Detector dock:
the pattern (at the selection, the mean, or the mean of a drawn scan region) and the virtual detectors.
This object is also the public scripting surface, ``napari_4dstem.gui.session(viewer)`` (docs/gui.md).
"""
from __future__ import annotations

import math
import weakref

import numpy as np
from napari.components import ViewerModel

from napari_4dstem.dataset import Dataset4D
from napari_4dstem.errors import DataError

from ._layers import (
    MARKER_NAME, META_KEY, NAVIGATOR_NAME, PATTERN_NAME, REGION_NAME, SCAN_ROLES, dataset_layers,
    detector_layer_kwargs, detector_units, iter_cached_navigator, ours, role_of, scan_layer_kwargs,
)
from ._state import SessionState
from ._workers import WorkerRegistry

PLUGIN = "napari-4dstem"
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Pattern display: value scaling and contrast of the detector view.
SCALINGS = ("linear", "log", "power")
CONTRASTS = ("percentile", "min-max")
SOURCES = ("selection", "mean", "region")


def unwrap(viewer):
    """The viewer behind napari's public-only proxy (docks receive a proxy; wrapt's ``__wrapped__``)."""
    return getattr(viewer, "__wrapped__", viewer)


def get_session(viewer) -> Session:
    """The session of ``viewer`` (created on first use)."""
    v = unwrap(viewer)
    s = _SESSIONS.get(v)
    if s is None:
        s = _SESSIONS[v] = Session(v)
        if len(_SESSIONS) == 1:
            from ._gc import refreeze
            from ._vispy_mesh import install

            install()  # dragged shapes keep their shaders linked (see _vispy_mesh.py)
            refreeze()  # napari and Qt are loaded, no data yet (see _gc.py)
    return s


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def _overlays(model):
    return model.canvas.overlays


def display_image(frame: np.ndarray, scaling: str = "log") -> np.ndarray:
    """The pattern as displayed: ``log`` is ``log10(1 + I - min)``; linear and power show the values."""
    f = np.asarray(frame, dtype=np.float32)
    if scaling == "log":
        lo = float(np.nanmin(f)) if f.size else 0.0
        return np.log10(1.0 + np.maximum(f - min(lo, 0.0), 0.0))
    return f


def display_limits(img: np.ndarray, contrast: str = "percentile", percentile: float = 99.5) -> tuple[float, float]:
    """Contrast limits: the ``100 - p``..``p`` percentiles (a hot pixel cannot blacken the frame), or min-max."""
    if contrast == "percentile":
        lo, hi = (float(v) for v in np.nanpercentile(img, (100.0 - percentile, percentile)))
    else:
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


class Session(SessionState):
    """A viewer's state plus the layers that show it (see the module docstring)."""

    def __init__(self, viewer):
        super().__init__()
        self._viewer = weakref.ref(viewer)  # the session lives in a WeakKeyDictionary keyed by the viewer
        self.workers = WorkerRegistry()
        self.drag_scrubs = True
        self.auto_dock = True  # add the Detector dock when a dataset arrives in a windowed viewer
        self._adopting = False
        self.display = {"source": "selection", "scaling": "log", "gamma": 0.5, "contrast": "percentile",
                        "percentile": 99.5}
        self.region_pattern: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.live = None  # ReducedCopy of the dataset for live virtual images
        self._live_for = None
        self._live_worker = None
        self._exact: dict = {}  # detector name -> running exact worker
        self._syncing = False
        self.detector_model = ViewerModel(title="detector space")
        _overlays(self.detector_model).scale_bar.visible = True
        _overlays(viewer).scale_bar.visible = True
        viewer.mouse_drag_callbacks.append(self._on_mouse)
        viewer.layers.events.inserted.connect(self._on_inserted)
        for key, (dy, dx) in {"Up": (-1, 0), "Down": (1, 0), "Left": (0, -1), "Right": (0, 1)}.items():
            viewer.bind_key(key, self._mover(dy, dx), overwrite=True)
        for layer in list(viewer.layers):
            self._adopt(layer)

    @property
    def viewer(self):
        return self._viewer()

    # -- workers -------------------------------------------------------------------------------
    def track(self, worker):
        """Compatibility: a worker started elsewhere, stopped with the session's (prefer ``workers.start``)."""
        self.workers._workers[worker] = None
        from ._workers import _ALL

        _ALL.add(worker)
        worker.finished.connect(lambda: self.workers._forget(worker))
        return worker

    def stop_workers(self, timeout: float = 30.0) -> bool:
        """Quit every worker of this session and wait for them (the viewer is closing)."""
        return self.workers.stop(timeout)

    def run_steps(self, steps_factory, **kw):
        """Run a core ``iter_*`` step in a worker (see ``_common.run_steps_in_worker``)."""
        from ._common import run_steps_in_worker

        return run_steps_in_worker(self, steps_factory, **kw)

    # -- adopting the reader's layers -------------------------------------------------------------
    def _on_inserted(self, event):
        self._adopt(event.value)

    def _adopt(self, layer):
        if self._adopting or not ours(layer):
            return
        meta = layer.metadata[META_KEY]
        role = meta.get("role")
        if role == "navigator" and isinstance(meta.get("dataset"), Dataset4D):
            state = meta.get("results") or {}
            if meta["dataset"] is not self.dataset:
                self.set_dataset(meta["dataset"], navigator=layer, scan_offset=meta.get("scan_offset", (0, 0)),
                                 source=meta.get("source_dataset"))
                if layer.name != NAVIGATOR_NAME and self._find(NAVIGATOR_NAME) is None:
                    layer.name = NAVIGATOR_NAME
            if meta.get("pending"):
                self._fill_navigator(layer, meta["dataset"])
            else:
                self.maps["navigator"] = np.asarray(layer.data)
            self.com = state.get("com", self.com)  # reopened results: what the Inspector shows
            self.encoded = state.get("encoded", self.encoded)
            for name, spec in (state.get("detectors") or {}).items():
                try:
                    self._detector_shapes(name, spec)
                    self.detectors[name] = spec
                except (DataError, KeyError, TypeError, ValueError):
                    pass  # a detector the file describes badly: its map still shows
            if state.get("detectors"):
                self.detectors_changed.emit(self.detectors)
        elif role == "map":
            if meta.get("dataset") is not None and meta.get("dataset") is not self.dataset:
                return
            self.maps[layer.name] = layer.data

    # -- the dataset ---------------------------------------------------------------------------
    def set_dataset(self, ds: Dataset4D, navigator=None, keep_results: bool = False, scan_offset=(0, 0),
                    source: Dataset4D | None = None):
        """Make ``ds`` the current dataset; derived state and its layers are cleared unless ``keep_results``.

        ``scan_offset``: (y, x) of the dataset's first scan pixel in ``source``, the whole file's dataset, when
        ``ds`` is a scan window of it. Saved results then record the window against the file's shape.
        """
        old = self.dataset
        if old is not None and old is not ds:
            self.workers.quit()  # steps of the old dataset (encoding, virtual images) are void now
        self.dataset = ds
        self.scan_offset = tuple(int(v) for v in scan_offset)
        self.source = source if source is not None and tuple(source.shape) != tuple(ds.shape) else None
        if not keep_results:
            self.clear_results()
        self.mean = self.region_pattern = None
        self.live = self._live_for = None
        self.display["source"] = "selection"
        # the selection belongs to the new scan before anyone hears of the dataset (a smaller scan)
        sy, sx = ds.scan_shape
        self.selected = (sy // 2, sx // 2)
        if old is not None and old is not ds:
            self._remove_stale(keep=navigator)
        if navigator is None:
            self._adopting = True
            try:
                for data, kw, _ in dataset_layers(ds, in_viewer=True):
                    layer = self.show_map(kw.pop("name"), data, role="navigator", **kw)
                    if kw["metadata"][META_KEY].get("pending"):
                        self.maps.pop(layer.name, None)
                        self._fill_navigator(layer, ds)
            finally:
                self._adopting = False
        self._ensure_marker()
        self._ensure_pattern()
        self.apply_units()
        self.dataset_changed.emit(ds)
        self.select(*self.selected)
        self.fit()
        self._ensure_detector_dock()
        from ._gc import refreeze

        refreeze()  # the old dataset's layers are freed now, the new ones kept out of full collections

    def _fill_navigator(self, layer, ds):
        """Compute a big file's navigator in a worker and put it into ``layer`` when done."""
        from ._common import update_image

        def fill(nav):
            if self.dataset is not ds:
                return  # another dataset was opened meanwhile
            update_image(layer, np.asarray(nav, dtype=layer.data.dtype))
            layer.reset_contrast_limits()
            layer.metadata[META_KEY]["pending"] = False
            self.maps[layer.name] = np.asarray(layer.data)

        return self.run_steps(lambda: iter_cached_navigator(ds), on_return=fill)

    def set_preprocessed(self, preprocessing, patterns: Dataset4D):
        """New preprocessed patterns: the model and its maps (made from the old ones) go, layers too."""
        self.preprocessing, self.preprocessed = preprocessing, patterns
        self.clear_model()
        self.preprocessed_changed.emit(patterns)
        self.select(*self.selected)

    def clear_model(self):
        """Forget the model, its maps and their layers (they describe other patterns)."""
        had = self.model is not None or self.encoded is not None
        self.model = self.encoded = self.history = None
        for layer in list(self.viewer.layers):
            if ours(layer, "map") and layer.name.startswith("rrVAE"):
                self.viewer.layers.remove(layer)
                self.maps.pop(layer.name, None)
        if had:
            self.model_changed.emit(None)
            self.maps_changed.emit(None)

    def update_calibration(self, calibration):
        """Correct the calibration: every layer of both canvases is rescaled and both views are refitted."""
        ds = self.dataset
        ds.calibration = calibration
        if self.source is not None:
            self.source.calibration = calibration
        self.apply_units()
        self.calibration_changed.emit(calibration)
        self.dataset_changed.emit(ds)
        self.fit()

    def apply_units(self):
        """One unit per canvas: scan step (Å, nm or px) for scan space, mrad, 1/Å or px for detector space."""
        if self.dataset is None:
            return
        kw = scan_layer_kwargs(self.dataset.calibration)
        for layer in self.viewer.layers:
            if role_of(layer) in SCAN_ROLES:
                layer.scale = kw["scale"]
                layer.units = kw["units"]
        dkw = detector_layer_kwargs(self.dataset.calibration)
        for layer in self.detector_model.layers:
            layer.units = dkw["units"]
            layer.scale = dkw["scale"]
        self._sync_detector_shapes()

    def fit(self):
        """Fit both canvases to their layers."""
        self.viewer.reset_view()
        self.detector_model.reset_view()

    # -- layers --------------------------------------------------------------------------------
    def scan_layer_kwargs(self) -> dict:
        return scan_layer_kwargs(self.dataset.calibration)

    def _find(self, name, model=None):
        for layer in (model or self.viewer).layers:
            if layer.name == name and ours(layer):
                return layer
        return None

    def show_map(self, name: str, data, colormap: str = "gray", role: str = "map", **kwargs):
        """Add or update (in place) a scan-space image layer linked to the others.

        A layer of the same shape is updated in place (its own copy of the data; a hidden one costs no redraw,
        see :func:`._common.replace_data`); a placeholder made by :meth:`prepare_maps` becomes visible then
        when ``visible=True`` is asked for.
        """
        from ._common import replace_data

        layer = self._find(name)
        data = np.asarray(data)
        if layer is not None and layer.data.shape == data.shape:
            meta = layer.metadata.setdefault(META_KEY, {})
            fresh = meta.pop("placeholder", False)
            if "metadata" in kwargs:
                meta.update(kwargs["metadata"].get(META_KEY, {}))
            replace_data(layer, data, kwargs.get("contrast_limits"))
            if fresh and kwargs.get("visible") and not layer.visible:
                layer.visible = True
            self.maps[name] = data
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = self._insert_maps([(name, np.array(data, copy=True), colormap, role, kwargs)])[0]
        self.maps[name] = data
        return layer

    def _insert_maps(self, items) -> list:
        """Insert image layers ``(name, data, colormap, role, kwargs)`` straight under the marker, in one batch,
        without making them the selected layer (each selection change rebuilds napari's layer controls)."""
        from napari.layers import Image

        layers = self.viewer.layers
        out = []
        activate = getattr(layers, "_activate_on_insert", None)
        self._adopting = True
        try:
            if activate is not None:
                layers._activate_on_insert = False
            for name, data, colormap, role, kwargs in items:
                kw = self.scan_layer_kwargs()
                kw.update(kwargs)
                meta = kw.pop("metadata", None) or {META_KEY: {"role": role, "dataset": self.dataset}}
                meta = {**meta, META_KEY: {**meta.get(META_KEY, {}), "owned": True}}  # the layer's own copy
                layer = Image(data, name=name, colormap=colormap, metadata=meta, **kw)
                marker = self._find(MARKER_NAME)
                # under the marker: one insert, not an add and a move (each redraws the canvas)
                layers.insert(layers.index(marker) if marker is not None else len(layers), layer)
                out.append(layer)
        finally:
            self._adopting = False
            if activate is not None:
                layers._activate_on_insert = activate
        self._raise_marker()
        return out

    def prepare_maps(self, specs) -> list:
        """Make sure the scan-space layers ``specs`` (``(name, colormap, kwargs)``) exist before their maps do.

        Missing ones are added now, hidden, holding zeros of the scan's shape (placeholders, not in ``maps``,
        so never saved), in one batch. Maps that arrive later (``show_map``) then only update them in place:
        adding a layer costs napari its controls and vispy node (0.1-1 s under a software renderer), which
        froze the GUI when the rrVAE maps arrived (issue 10, Deliver 8). Returns the layers added.
        """
        if self.dataset is None:
            return []
        shape = tuple(self.dataset.scan_shape)
        todo = []
        for name, colormap, kwargs in specs:
            if not self.needs_map_layer(name):
                continue
            layer = self._find(name)
            if layer is not None:
                self.viewer.layers.remove(layer)
            kw = {k: v for k, v in kwargs.items() if k != "visible"}
            kw["metadata"] = {META_KEY: {"role": "map", "dataset": self.dataset, "placeholder": True}}
            todo.append((name, np.zeros(shape, np.float32), colormap, "map", {**kw, "visible": False}))
        return self._insert_maps(todo) if todo else []

    def needs_map_layer(self, name: str) -> bool:
        """True when :meth:`prepare_maps` would add (or remake) layer ``name``."""
        layer = self._find(name)
        return self.dataset is not None and (layer is None or layer.data.shape != tuple(self.dataset.scan_shape))

    def remove_placeholders(self, prefix: str = "") -> None:
        """Remove the placeholders (see :meth:`prepare_maps`) whose maps never came."""
        for layer in list(self.viewer.layers):
            if ours(layer, "map") and layer.name.startswith(prefix) and layer.metadata[META_KEY].get("placeholder"):
                self.viewer.layers.remove(layer)

    def _remove_stale(self, keep=None):
        # layers of a previous dataset would be indexed with the new one's pixels: drop them
        for layer in list(self.viewer.layers):
            if layer is keep or not ours(layer) or role_of(layer) in ("marker", "region"):
                continue
            if layer.metadata[META_KEY].get("dataset") is not self.dataset:
                self.viewer.layers.remove(layer)
        for layer in list(self.detector_model.layers):
            if role_of(layer) == "detector":
                self.detector_model.layers.remove(layer)
        region = self._find(REGION_NAME)
        if region is not None:
            region.data = []

    def _ensure_marker(self):
        marker = self._find(MARKER_NAME)
        kw = self.scan_layer_kwargs()
        if marker is None:
            self._adopting = True
            try:
                marker = self.viewer.add_points(
                    np.zeros((1, 2)), name=MARKER_NAME, symbol="square", size=1.5, face_color="transparent",
                    border_color="red", border_width=0.2, metadata={META_KEY: {"role": "marker"}}, **kw)
            finally:
                self._adopting = False
        self._raise_marker()
        return marker

    def _raise_marker(self):
        marker = self._find(MARKER_NAME)
        if marker is not None:
            layers = self.viewer.layers
            i = layers.index(marker)
            if i != len(layers) - 1:
                layers.move(i, len(layers))

    def _ensure_pattern(self):
        ds = self.dataset
        layer = self._find(PATTERN_NAME, self.detector_model)
        frame = display_image(ds.frame(*self.selected), self.display["scaling"])
        if layer is None or layer.data.shape != frame.shape:
            if layer is not None:
                self.detector_model.layers.remove(layer)
            layer = self.detector_model.add_image(
                frame, name=PATTERN_NAME, colormap="magma", metadata={META_KEY: {"role": "pattern", "dataset": ds}},
                **detector_layer_kwargs(ds.calibration))
            layer.colorbar.visible = True
            layer.colorbar.size = (12, 110)  # napari's default (25 x 150) met the scale bar in a small canvas
            self.detector_model.layers.move(self.detector_model.layers.index(layer), 0)
        layer.metadata[META_KEY]["dataset"] = ds
        return layer

    @property
    def pattern_layer(self):
        return self._find(PATTERN_NAME, self.detector_model)

    def _ensure_detector_dock(self):
        """Windowed viewers get the Detector dock (detector space) with their first dataset."""
        viewer = self.viewer
        if not self.auto_dock or getattr(viewer, "window", None) is None:
            return
        if getattr(self, "_detector_dock", None) is not None:
            return
        try:
            self._detector_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Detector")
        except Exception:  # noqa: BLE001 - no window (headless model) or manifest not registered
            self._detector_dock = None
            return
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._fit_if_alive)  # once the dock is laid out, the canvases have their size

    def _fit_if_alive(self):
        if self.viewer is not None and self.dataset is not None:
            try:
                self.fit()
            except RuntimeError:  # the window closed meanwhile
                pass

    # -- the pattern shown in detector space ------------------------------------------------------
    def set_display(self, **changes):
        """Change the detector view: ``source`` (selection/mean/region), ``scaling`` (linear/log/power),
        ``gamma``, ``contrast`` (percentile/min-max), ``percentile``."""
        for k, v in changes.items():
            if k not in self.display:
                raise DataError(f"unknown display setting {k!r}", hint=f"use {', '.join(self.display)}")
            self.display[k] = v
        if self.display["source"] == "mean" and self.mean is None and self.dataset is not None:
            self.compute_mean()
            return
        self.refresh_pattern()

    def shown_pattern(self) -> np.ndarray | None:
        """The pattern the detector view shows (raw values, before the display scaling)."""
        if self.dataset is None:
            return None
        src = self.display["source"]
        if src == "mean" and self.mean is not None:
            return self.mean
        if src == "region" and self.region_pattern is not None:
            return self.region_pattern
        return self.dataset.frame(*self.selected)

    def refresh_pattern(self):
        from ._common import update_image

        layer = self.pattern_layer
        frame = self.shown_pattern()
        if layer is None or frame is None:
            return
        from ._common import set_limits

        img = display_image(frame, self.display["scaling"])
        update_image(layer, img)
        gamma = float(self.display["gamma"]) if self.display["scaling"] == "power" else 1.0
        if layer.gamma != gamma:
            layer.gamma = gamma
        set_limits(layer, *display_limits(img, self.display["contrast"], float(self.display["percentile"])),
                   keep_close=True)
        src = self.display["source"]
        # no pixel in the title: a text that changes with every click re-lays out the canvas overlays (the
        # marker on the scan and the Inspector give the pixel)
        title = {"selection": "pattern at the selected pixel", "mean": "mean pattern",
                 "region": "mean of the scan region"}.get(src, src)
        text = _overlays(self.detector_model).text
        label = f"{title} · {self.display['scaling']} · {detector_units(self.dataset.calibration)[1]}"
        if text.text != label:
            text.text = label
        if not text.visible:
            text.position = "top_left"
            text.visible = True

    def compute_mean(self, wait: bool = False):
        """The mean pattern of the whole scan (a worker with progress; ``wait`` for scripts)."""
        from napari_4dstem.blocks import iter_mean_pattern
        from napari_4dstem.progress import run_steps

        ds = self.dataset

        def done(mean):
            if self.dataset is ds:
                self.mean = np.asarray(mean)
                self.display["source"] = "mean"
                self.refresh_pattern()

        if wait:
            done(run_steps(iter_mean_pattern(ds)))
            return None
        return self.run_steps(lambda: iter_mean_pattern(ds), on_return=done)

    def region_mean(self, vertices=None, mask=None, wait: bool = True):
        """Mean pattern of a scan region (``vertices`` ``(n, 2)`` in scan pixels, or a boolean ``mask``); the
        detector view shows it. Returns the pattern when ``wait``, else the worker."""
        from napari_4dstem.detector_rois import iter_region_mean, polygon_mask
        from napari_4dstem.progress import run_steps

        ds = self.dataset
        if ds is None:
            raise DataError("no dataset is open", hint="open a file or the sample first")
        if mask is None:
            mask = polygon_mask(ds.scan_shape, vertices)

        def done(p):
            if self.dataset is ds:
                self.region_pattern = np.asarray(p)
                self.display["source"] = "region"
                self.refresh_pattern()
            return p

        if wait:
            return done(run_steps(iter_region_mean(ds, mask)))
        return self.run_steps(lambda: iter_region_mean(ds, mask), on_return=done)

    def ensure_region_layer(self):
        """The scan-space Shapes layer in which a rectangle or polygon selects a region to average."""
        layer = self._find(REGION_NAME)
        if layer is None:
            self._adopting = True
            try:
                layer = self.viewer.add_shapes(name=REGION_NAME, edge_color="cyan", face_color="transparent",
                                               edge_width=0.4, metadata={META_KEY: {"role": "region"}},
                                               **self.scan_layer_kwargs())
            finally:
                self._adopting = False
            layer.events.data.connect(self._on_region_changed)
        return layer

    def _on_region_changed(self, event):
        action = str(getattr(event, "action", "changed"))
        if "ing" in action.split(".")[-1].lower() or self.dataset is None:
            return  # adding/changing/removing: wait for the finished edit
        layer = self._find(REGION_NAME)
        if layer is None or not len(layer.data):
            return
        verts = np.asarray(layer.data[-1])[:, -2:]  # scan pixels (data coordinates; the layer has the scan scale)
        try:
            self.region_mean(vertices=verts, wait=False)
        except DataError as e:
            from ._common import notify_error

            notify_error(e)

    # -- selection -----------------------------------------------------------------------------
    def select(self, iy: int, ix: int):
        """Select a scan pixel: move the marker, update the detector view in place, tell the docks."""
        if self.dataset is None:
            return
        iy, ix = self.clamp(iy, ix)
        self.selected = (iy, ix)
        marker = self._find(MARKER_NAME)
        if marker is not None:
            # move the one point in place: replacing Points data (or translate) re-runs napari's dims update
            marker.data[0] = (iy, ix)
            marker.refresh(thumbnail=False, extent=False)
        if self.display["source"] == "selection":
            self.refresh_pattern()
        self.selection_changed.emit(iy, ix)

    def _mover(self, dy, dx):
        def move(viewer=None):
            iy, ix = self.selected
            self.select(iy + dy, ix + dx)
        move.__name__ = f"move_selection_{dy}_{dx}"
        return move

    def _on_mouse(self, viewer, event):
        if self.dataset is None or getattr(event, "button", 1) != 1:
            return
        active = viewer.layers.selection.active
        if active is not None and active._type_string == "shapes" and str(active.mode) not in ("pan_zoom",):
            return  # drawing or editing a region: not a selection
        idx = self.scan_index(event.position)
        if idx is None:
            return
        self.select(*idx)
        if not self.drag_scrubs:
            return
        camera = _camera(viewer)
        pan = camera.mouse_pan
        camera.mouse_pan = False  # while scrubbing, the map must not move under the cursor
        try:
            yield
            while event.type == "mouse_move":
                idx = self.scan_index(event.position)
                if idx is not None and idx != self.selected:
                    self.select(*idx)
                yield
        finally:
            camera.mouse_pan = pan

    # -- virtual detectors -----------------------------------------------------------------------
    def add_virtual_detector(self, name: str, kind: str = "annulus", wait: bool = True, **geometry):
        """Add (or replace) a named virtual detector and compute its image exactly.

        ``kind`` and the geometry keywords are those of :func:`napari_4dstem.virtual_image` (``bf``, ``abf``,
        ``adf``, ``annulus`` with ``inner``/``outer``/``center``/``units``; ``mask`` with ``mask=``), plus the
        drawn shapes ``point`` (``center``), ``circle`` (``center``, ``outer``), ``rectangle`` (``corners``)
        and ``polygon`` (``vertices``), in detector pixels. The detector appears as a Shapes layer
        ``detector <name>`` in detector space and its image as ``virtual <name>`` in scan space.
        ``wait=False``: the image comes from a worker (progress, cancel).
        """
        spec = self._normalise_spec(kind, geometry)
        self.detectors[name] = spec
        self._detector_shapes(name, spec)
        self.detectors_changed.emit(self.detectors)
        return self._compute_exact(name, wait=wait)

    def _normalise_spec(self, kind: str, geometry: dict) -> dict:
        """A detector spec in detector pixels that both the shapes and ``virtual_image`` understand."""
        from napari_4dstem.detector_rois import ROI_KINDS
        from napari_4dstem.virtual import KINDS, detector_mask

        ds = self.dataset
        if ds is None:
            raise DataError("no dataset is open", hint="open a file or the sample first")
        if kind in ROI_KINDS and kind != "annulus":
            spec = {"kind": kind, **geometry}
            if kind in ("point", "circle"):
                spec["center"] = [float(c) for c in spec.get("center") or ds.detector_center]
            return spec
        if kind not in KINDS + ("annulus",):
            raise DataError(f"unknown detector kind {kind!r}", hint=f"use one of {', '.join(KINDS + ROI_KINDS)}")
        if kind == "mask":
            m = np.asarray(geometry.get("mask"))
            if m.shape != tuple(ds.detector_shape):
                raise DataError(f"the mask has shape {m.shape}, the detector is {ds.detector_shape}")
            return {"kind": "mask", "mask": m}
        # bf/abf/adf/annulus: resolve the radii and centre in pixels (the core's defaults, e.g. the
        # convergence angle), so the drawn annulus and the exact image agree
        _, params = detector_mask(ds, kind, **geometry)
        if geometry.get("units", "px") == "mrad":
            from napari_4dstem.virtual import detector_pixel_mrad

            k = float(np.mean(detector_pixel_mrad(ds)))
            params["inner"] = params["inner"] / k
            params["outer"] = None if params["outer"] is None else params["outer"] / k
        outer = params["outer"]
        cy, cx = params["center"]
        if outer is None:  # to the detector edge
            dy, dx = ds.detector_shape
            outer = float(max(math.hypot(y - cy, x - cx) for y in (0, dy - 1) for x in (0, dx - 1)))
        return {"kind": "annulus", "center": [float(cy), float(cx)], "inner": float(params["inner"]),
                "outer": float(outer), "preset": kind if kind != "annulus" else None}

    def detector_mask(self, name: str) -> np.ndarray:
        from napari_4dstem.detector_rois import roi_mask

        spec = dict(self.detectors[name])
        kind = spec.pop("kind")
        spec.pop("preset", None)
        if kind == "mask":
            return np.asarray(spec["mask"])
        return roi_mask(self.dataset.detector_shape, kind, **spec)

    def _exact_steps(self, name: str):
        from napari_4dstem.detector_rois import virtual_spec
        from napari_4dstem.virtual import iter_virtual_image

        spec = dict(self.detectors[name])
        kind = spec.pop("kind")
        spec.pop("preset", None)
        ds = self.dataset
        kw = spec if kind == "mask" else virtual_spec(ds.detector_shape, kind, **spec)
        if kind == "mask":
            kw = {"kind": "mask", "mask": spec["mask"]}
        return lambda: iter_virtual_image(ds, **kw)

    def _compute_exact(self, name: str, wait: bool = True, progress_bar=None):
        from napari_4dstem.progress import run_steps

        ds = self.dataset
        steps = self._exact_steps(name)

        def show(res):
            if self.dataset is not ds or name not in self.detectors:
                return
            layer = self.show_map(f"virtual {name}", np.asarray(res.image, dtype=np.float64), colormap="gray",
                                  metadata={META_KEY: {"role": "map", "dataset": ds, "detector": name,
                                                       "exact": True}})
            layer.metadata[META_KEY]["exact"] = True

        old = self._exact.pop(name, None)
        if old is not None:
            old.quit()  # a newer geometry replaces the pass still running
        if wait:
            show(run_steps(steps()))
            return self._find(f"virtual {name}")
        w = self.run_steps(steps, on_return=show, progress_bar=progress_bar)
        self._exact[name] = w
        w.finished.connect(lambda: self._exact.pop(name, None) if self._exact.get(name) is w else None)
        return w

    def virtual_image(self, name: str) -> np.ndarray:
        """The scan map of virtual detector ``name`` (numpy)."""
        layer = self._find(f"virtual {name}")
        if layer is None:
            raise DataError(f"no virtual detector named {name!r}", hint=f"have {sorted(self.detectors)}")
        return np.asarray(layer.data)

    def remove_virtual_detector(self, name: str):
        self.detectors.pop(name, None)
        for layer, model in ((self._find(f"detector {name}", self.detector_model), self.detector_model),
                             (self._find(f"virtual {name}"), self.viewer)):
            if layer is not None:
                model.layers.remove(layer)
        self.detectors_changed.emit(self.detectors)

    # shapes in detector space <-> specs in detector pixels
    def _shape_data(self, spec: dict) -> tuple[list, list]:
        from napari_4dstem.detector_rois import rectangle_vertices

        kind = spec["kind"]
        if kind in ("point", "circle", "annulus"):
            cy, cx = spec["center"]
            radii = [0.5] if kind == "point" else [float(spec["outer"])]
            if kind == "annulus" and float(spec.get("inner") or 0) > 0:
                radii.append(float(spec["inner"]))
            return [np.array([[cy - r, cx - r], [cy - r, cx + r], [cy + r, cx + r], [cy + r, cx - r]])
                    for r in radii], ["ellipse"] * len(radii)
        if kind == "rectangle":
            (y0, x0), (y1, x1) = spec["corners"]
            return [rectangle_vertices(y0, x0, y1, x1)], ["rectangle"]
        if kind == "polygon":
            return [np.asarray(spec["vertices"], dtype=np.float64)], ["polygon"]
        m = np.asarray(spec["mask"], dtype=bool)  # a mask: its bounding box, for orientation
        ys, xs = np.nonzero(m)
        if not len(ys):
            return [], []
        return [rectangle_vertices(ys.min(), xs.min(), ys.max(), xs.max())], ["rectangle"]

    def _detector_shapes(self, name: str, spec: dict):
        """The Shapes layer ``detector <name>`` showing ``spec`` (created or rewritten)."""
        data, types = self._shape_data(spec)
        lname = f"detector {name}"
        layer = self._find(lname, self.detector_model)
        dkw = detector_layer_kwargs(self.dataset.calibration)
        world = data  # in detector pixels: the layer has the pattern's scale and units
        self._syncing = True
        try:
            if layer is None:
                layer = self.detector_model.add_shapes(
                    world, shape_type=types, name=lname, edge_color="cyan", face_color="transparent",
                    edge_width=0.6, metadata={META_KEY: {"role": "detector", "name": name}}, **dkw)
                layer.events.set_data.connect(lambda e, n=name: self._on_detector_drag(n))
                layer.events.data.connect(lambda e, n=name: self._on_detector_edit(n, e))
            else:
                layer.data = []
                if world:
                    layer.add(world, shape_type=types)
        finally:
            self._syncing = False
        return layer

    def _sync_detector_shapes(self):
        pass  # shapes are in detector pixels: the new scale (set with every layer's) places them

    def spec_from_layer(self, name: str) -> dict | None:
        """The detector's geometry read back from its (dragged) shapes, in detector pixels."""
        layer = self._find(f"detector {name}", self.detector_model)
        if layer is None or not len(layer.data):
            return None
        shapes = [np.asarray(d)[:, -2:] for d in layer.data]  # detector pixels (data coordinates)
        types = list(layer.shape_type)
        old = self.detectors.get(name, {})
        if all(t == "ellipse" for t in types):
            c = shapes[0].mean(axis=0)
            radii = sorted((float(np.abs(s - s.mean(axis=0)).max(axis=0).mean()) for s in shapes), reverse=True)
            if old.get("kind") == "point":
                return {"kind": "point", "center": [float(c[0]), float(c[1])]}
            if len(radii) >= 2:
                return {"kind": "annulus", "center": [float(c[0]), float(c[1])], "inner": radii[1],
                        "outer": radii[0]}
            return {"kind": "circle", "center": [float(c[0]), float(c[1])], "outer": radii[0]}
        s = shapes[-1]
        if types[-1] == "rectangle":
            return {"kind": "rectangle", "corners": [s.min(axis=0).tolist(), s.max(axis=0).tolist()]}
        return {"kind": "polygon", "vertices": s.tolist()}

    def _on_detector_drag(self, name: str):
        """While a detector's shape moves: the approximate image from the reduced copy (milliseconds)."""
        if self._syncing or self.dataset is None or name not in self.detectors:
            return
        spec = self.spec_from_layer(name)
        if spec is None or spec == self.detectors.get(name):
            return
        self.live_update(name, spec)

    def live_update(self, name: str, spec: dict) -> bool:
        """Show the approximate image of ``spec`` for detector ``name``; False while the copy is being built."""
        from napari_4dstem.detector_rois import roi_mask

        from ._common import update_image

        live = self.ensure_live()
        if live is None:
            return False
        kw = dict(spec)
        kind = kw.pop("kind")
        kw.pop("preset", None)
        try:
            mask = np.asarray(kw["mask"]) if kind == "mask" else roi_mask(self.dataset.detector_shape, kind, **kw)
        except (DataError, KeyError, ValueError):
            return False
        img = live.image(mask)
        layer = self._find(f"virtual {name}")
        if layer is None or layer.data.shape != img.shape:
            layer = self.show_map(f"virtual {name}", img.astype(np.float64), colormap="gray")
        else:
            data = img.astype(layer.data.dtype, copy=False)
            update_image(layer, data)
            lo, hi = float(data.min()), float(data.max())
            layer.contrast_limits = (lo, hi if hi > lo else lo + 1.0)
        layer.metadata[META_KEY]["exact"] = False
        return True

    def _on_detector_edit(self, name: str, event):
        """A finished edit (drag released, shape drawn): keep the geometry and compute the image exactly."""
        if self._syncing or self.dataset is None or name not in self.detectors:
            return
        action = str(getattr(event, "action", "changed")).split(".")[-1].lower()
        if action.endswith("ing"):
            return
        spec = self.spec_from_layer(name)
        if spec is None:
            return
        self.detectors[name] = spec
        self.detectors_changed.emit(self.detectors)
        self._compute_exact(name, wait=False)

    def ensure_live(self, wait: bool = False):
        """The reduced copy for live images: built in a worker the first time (None until ready)."""
        from napari_4dstem.detector_rois import iter_reduced_copy
        from napari_4dstem.progress import run_steps

        ds = self.dataset
        if self.live is not None and self._live_for is ds:
            return self.live
        if wait:
            self.live, self._live_for = run_steps(iter_reduced_copy(ds)), ds
            return self.live
        if self._live_worker is None:
            def done(rc):
                if self.dataset is ds:
                    self.live, self._live_for = rc, ds

            def finished():
                self._live_worker = None

            self._live_worker = self.run_steps(lambda: iter_reduced_copy(ds), on_return=done, on_finish=finished)
        return None

    def preset(self, kind: str, wait: bool = False):
        """BF / ABF / ADF detector from the calibrated convergence angle (else the bright-field disc found)."""
        return self.add_virtual_detector(kind.upper(), kind.lower(), wait=wait)
