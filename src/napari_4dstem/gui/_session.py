"""One small state object per viewer, shared by the reader's layers, the docks and the click handler.

The session holds the dataset, the preprocessed patterns, the COM result, the model, its encoded
maps and the selected scan pixel. Docks read and write it; it owns the linked scan-space layers
(navigator, maps, the selected-pixel marker) and the pattern layer of the main viewer.
"""
from __future__ import annotations

import weakref

import numpy as np
from psygnal import Signal

from napari_4dstem.dataset import Dataset4D

from ._common import update_image

#: Key of our entry in ``layer.metadata``: ``{"role": ..., "dataset": Dataset4D}``.
META_KEY = "napari_4dstem"
MARKER_NAME = "selected pixel"
PATTERN_NAME = "diffraction pattern"
NAVIGATOR_NAME = "navigator"
SCAN_LABELS = ("scan_y", "scan_x")

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_UNIT_NAMES = {"Å": "angstrom", "A": "angstrom", "angstrom": "angstrom", "nm": "nm", "pm": "pm", "µm": "um",
               "um": "um"}


def unwrap(viewer):
    """The viewer behind napari's public-only proxy (docks receive a proxy; wrapt's ``__wrapped__``)."""
    return getattr(viewer, "__wrapped__", viewer)


def get_session(viewer) -> Session:
    """The session of ``viewer`` (created on first use)."""
    v = unwrap(viewer)
    s = _SESSIONS.get(v)
    if s is None:
        s = _SESSIONS[v] = Session(v)
    return s


def napari_units(unit: str | None):
    """A unit napari (pint) understands, or None."""
    return _UNIT_NAMES.get(unit) if unit else None


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def ours(layer, role: str | None = None) -> bool:
    m = layer.metadata.get(META_KEY) if hasattr(layer, "metadata") else None
    return isinstance(m, dict) and (role is None or m.get("role") == role)


class Session:
    """State shared by the docks of one viewer. Signals fire on the GUI thread."""

    dataset_changed = Signal(object)
    preprocessed_changed = Signal(object)
    com_changed = Signal(object)
    model_changed = Signal(object)
    selection_changed = Signal(int, int)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)  # the session lives in a WeakKeyDictionary keyed by the viewer
        self.dataset: Dataset4D | None = None
        self.preprocessing = None  # the fitted Preprocessing
        self.preprocessed: Dataset4D | None = None
        self.com = None  # COMResult
        self.model = None  # RRVAE (the last good one)
        self.encoded = None  # dict of maps from model.encode
        self.history = None
        self.maps: dict[str, np.ndarray] = {}  # name -> scan-space map shown
        self.selected = (0, 0)
        self.scan_offset = (0, 0)
        self.source: Dataset4D | None = None  # the whole file's dataset when ``dataset`` is a scan window of it
        self.drag_scrubs = True
        self.workers: set = set()
        self._adopting = False
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
        """Remember a running worker so that closing the dock or viewer can stop it."""
        self.workers.add(worker)
        worker.finished.connect(lambda: self.workers.discard(worker))
        return worker

    def stop_workers(self):
        for w in list(self.workers):
            w.quit()

    # -- dataset -------------------------------------------------------------------------------
    def _on_inserted(self, event):
        self._adopt(event.value)

    def _adopt(self, layer):
        if self._adopting or not ours(layer):
            return
        meta = layer.metadata[META_KEY]
        role = meta.get("role")
        if role == "navigator" and isinstance(meta.get("dataset"), Dataset4D):
            if meta["dataset"] is not self.dataset:
                self.set_dataset(meta["dataset"], navigator=layer, scan_offset=meta.get("scan_offset", (0, 0)),
                                 source=meta.get("source_dataset"))
                if layer.name != NAVIGATOR_NAME and self._find(NAVIGATOR_NAME) is None:
                    layer.name = NAVIGATOR_NAME
            if meta.get("pending"):
                self._fill_navigator(layer, meta["dataset"])
            else:
                self.maps["navigator"] = np.asarray(layer.data)
            state = meta.get("results") or {}
            self.com = state.get("com", self.com)  # reopened results: what the Inspector shows
            self.encoded = state.get("encoded", self.encoded)
        elif role == "map":
            self.maps[layer.name] = layer.data
        elif role == "pattern" and self.dataset is not None and meta.get("dataset") is self.dataset:
            self.select(*self.selected)

    def set_dataset(self, ds: Dataset4D, navigator=None, keep_results: bool = False, scan_offset=(0, 0),
                    source: Dataset4D | None = None):
        """Make ``ds`` the current dataset; derived state is cleared unless ``keep_results``.

        ``scan_offset``: (y, x) of the dataset's first scan pixel in ``source``, the whole file's dataset, when
        ``ds`` is a scan window of it (a scan crop, or reopened results of a cropped analysis). Saved results
        then record the window (``info["scan_window"]``) against the file's shape, as the pipeline does.
        """
        old = self.dataset
        self.dataset = ds
        self.scan_offset = tuple(int(v) for v in scan_offset)
        self.source = source if source is not None and tuple(source.shape) != tuple(ds.shape) else None
        if not keep_results:
            self.preprocessing = self.preprocessed = self.com = self.model = self.encoded = self.history = None
            self.maps = {}
        if old is not None and old is not ds:
            self._remove_stale(keep=navigator)
        if navigator is None:
            from ._reader import dataset_layers

            self._adopting = True
            try:
                for data, kw, _ in dataset_layers(ds):
                    layer = self.show_map(kw.pop("name"), data, role=kw["metadata"][META_KEY]["role"], **kw)
                    if kw["metadata"][META_KEY].get("pending"):
                        self.maps.pop(layer.name, None)
                        self._fill_navigator(layer, ds)
            finally:
                self._adopting = False
        self._ensure_marker()
        sy, sx = ds.scan_shape
        self.dataset_changed.emit(ds)
        self.select(sy // 2, sx // 2)

    def _fill_navigator(self, layer, ds):
        """Compute a big file's navigator in a worker and put it into ``layer`` when done."""
        from ._common import run_steps_in_worker
        from ._reader import iter_cached_navigator

        def fill(nav):
            if self.dataset is not ds:
                return  # another dataset was opened meanwhile
            update_image(layer, np.asarray(nav, dtype=layer.data.dtype))
            layer.reset_contrast_limits()
            layer.metadata[META_KEY]["pending"] = False
            self.maps[layer.name] = np.asarray(layer.data)

        return run_steps_in_worker(self, lambda: iter_cached_navigator(ds), on_return=fill)

    def set_preprocessed(self, preprocessing, patterns: Dataset4D):
        self.preprocessing, self.preprocessed = preprocessing, patterns
        self.model = self.encoded = self.history = None
        self.preprocessed_changed.emit(patterns)
        self.select(*self.selected)

    def update_calibration(self, calibration):
        """Correct the calibration in place and rescale every linked scan-space layer."""
        ds = self.dataset
        ds.calibration = calibration
        kw = self.scan_layer_kwargs()
        for layer in self.viewer.layers:
            if ours(layer) and layer.metadata[META_KEY].get("role") in ("navigator", "map", "marker"):
                layer.scale = kw["scale"]
                if "units" in kw:
                    layer.units = kw["units"]
        pattern = self._find(PATTERN_NAME)
        if pattern is not None:
            from ._reader import pattern_placement

            for k, v in pattern_placement(ds).items():
                setattr(pattern, k, v)
        self.dataset_changed.emit(ds)

    # -- layers --------------------------------------------------------------------------------
    def scan_layer_kwargs(self) -> dict:
        cal = self.dataset.calibration
        kw = {"scale": cal.scan_scale(), "axis_labels": SCAN_LABELS}
        units = napari_units(cal.scan_unit)
        if units:
            kw["units"] = (units, units)
        return kw

    def _find(self, name):
        for layer in self.viewer.layers:
            if layer.name == name and ours(layer):
                return layer
        return None

    def show_map(self, name: str, data, colormap: str = "gray", role: str = "map", **kwargs):
        """Add or update (in place) a scan-space image layer linked to the others."""
        layer = self._find(name)
        if layer is not None and layer.data.shape == np.shape(data):
            layer.data = data
            if "metadata" in kwargs:
                layer.metadata.update(kwargs["metadata"])
            for k in ("scale", "translate"):
                if k in kwargs:
                    setattr(layer, k, kwargs[k])
            if role != "pattern":
                layer.reset_contrast_limits()
            if role in ("map", "navigator"):
                self.maps[name] = np.asarray(data)
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        kw = self.scan_layer_kwargs()
        kw.update(kwargs)
        kw.setdefault("metadata", {META_KEY: {"role": role, "dataset": self.dataset}})
        self._adopting = True
        try:
            layer = self.viewer.add_image(np.asarray(data), name=name, colormap=colormap, **kw)
        finally:
            self._adopting = False
        if role in ("map", "navigator"):
            self.maps[name] = np.asarray(data)
        self._raise_marker()
        return layer

    def _remove_stale(self, keep=None):
        # layers of a previous dataset would be indexed with the new one's pixels: drop them
        for layer in list(self.viewer.layers):
            if layer is keep or not ours(layer) or layer.metadata[META_KEY].get("role") == "marker":
                continue
            if layer.metadata[META_KEY].get("dataset") is not self.dataset:
                self.viewer.layers.remove(layer)

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
        else:
            marker.scale = kw["scale"]
        return marker

    def _raise_marker(self):
        marker = self._find(MARKER_NAME)
        if marker is not None:
            layers = self.viewer.layers
            i = layers.index(marker)
            if i != len(layers) - 1:
                layers.move(i, len(layers))

    # -- selection -----------------------------------------------------------------------------
    def scan_index(self, world_pos) -> tuple[int, int] | None:
        """Scan pixel under a world position, or None outside the scan."""
        if self.dataset is None:
            return None
        sy, sx = self.dataset.calibration.scan_scale()
        iy = int(round(float(world_pos[-2]) / sy))
        ix = int(round(float(world_pos[-1]) / sx))
        ny, nx = self.dataset.scan_shape
        if 0 <= iy < ny and 0 <= ix < nx:
            return iy, ix
        return None

    def select(self, iy: int, ix: int):
        """Select a scan pixel: move the marker, update the pattern layer in place, tell the docks."""
        if self.dataset is None:
            return
        ny, nx = self.dataset.scan_shape
        iy, ix = int(np.clip(iy, 0, ny - 1)), int(np.clip(ix, 0, nx - 1))
        self.selected = (iy, ix)
        marker = self._find(MARKER_NAME)
        if marker is not None:
            # move the one point in place: replacing Points data (or translate) re-runs napari's dims update
            marker.data[0] = (iy, ix)
            marker.refresh()
        pattern = self._find(PATTERN_NAME)
        if pattern is not None:
            frame = self.dataset.frame(iy, ix)
            update_image(pattern, frame)
            lo, hi = float(frame.min()), float(frame.max())
            pattern.contrast_limits = (lo, hi if hi > lo else lo + 1)
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
