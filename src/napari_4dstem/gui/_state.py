"""What one viewer's analysis holds, without napari: the dataset, its results, the selection and the detectors.

:class:`SessionState` is a plain object with psygnal signals (testable without a viewer); the layer controller
(:class:`~napari_4dstem.gui._session.Session`) subclasses it and mirrors the state into layers.
"""
from __future__ import annotations

import numpy as np
from psygnal import Signal

from napari_4dstem.dataset import Dataset4D
from napari_4dstem.errors import DataError


class SessionState:
    """State shared by the docks of one viewer. Signals fire on the GUI thread."""

    dataset_changed = Signal(object)
    calibration_changed = Signal(object)
    preprocessed_changed = Signal(object)
    com_changed = Signal(object)
    model_changed = Signal(object)
    maps_changed = Signal(object)  # the rrVAE maps (encoded) changed or were cleared
    selection_changed = Signal(int, int)
    detectors_changed = Signal(object)
    training_changed = Signal(bool)  # a model started (True) or stopped (False) training in a worker

    def __init__(self):
        self.dataset: Dataset4D | None = None
        self.source: Dataset4D | None = None  # the whole file's dataset when ``dataset`` is a scan window of it
        self.scan_offset = (0, 0)
        self.preprocessing = None  # the fitted Preprocessing
        self.preprocessed: Dataset4D | None = None
        self.com = None  # COMResult
        self.model = None  # RRVAE (the last good one)
        self.training = None  # the RRVAE a worker trains now (see training_changed)
        self.encoded = None  # LatentMaps of the maps shown
        self.history = None
        self.maps: dict[str, np.ndarray] = {}  # name -> scan-space map shown
        self.detectors: dict[str, dict] = {}  # name -> {"kind": ..., geometry in detector px}
        self.selected = (0, 0)

    # -- the dataset ---------------------------------------------------------------------------
    def clear_results(self):
        self.preprocessing = self.preprocessed = self.com = self.model = self.encoded = self.history = None
        self.maps = {}
        self.detectors = {}

    def clamp(self, iy: int, ix: int) -> tuple[int, int]:
        if self.dataset is None:
            return (0, 0)
        ny, nx = self.dataset.scan_shape
        return int(np.clip(iy, 0, ny - 1)), int(np.clip(ix, 0, nx - 1))

    @property
    def selection(self) -> tuple[int, int]:
        """The selected scan pixel ``(y, x)`` of :attr:`dataset`."""
        return self.selected

    def pattern(self) -> np.ndarray:
        """The raw diffraction pattern at the selection (numpy, source dtype)."""
        if self.dataset is None:
            raise DataError("no dataset is open", hint="open a file or the sample first")
        return self.dataset.frame(*self.selected)

    def scan_index(self, world_pos) -> tuple[int, int] | None:
        """Scan pixel under a scan-space world position, or None outside the scan."""
        if self.dataset is None:
            return None
        sy, sx = self.scan_scale()
        iy = int(round(float(world_pos[-2]) / sy))
        ix = int(round(float(world_pos[-1]) / sx))
        ny, nx = self.dataset.scan_shape
        if 0 <= iy < ny and 0 <= ix < nx:
            return iy, ix
        return None

    def scan_scale(self) -> tuple[float, float]:
        from ._layers import scan_layer_kwargs

        return tuple(scan_layer_kwargs(self.dataset.calibration)["scale"])  # type: ignore[return-value]
