"""Detector dock: detector space in a canvas of its own, with virtual detectors drawn on it.

The canvas draws the session's ``detector_model`` (a napari ViewerModel, in mrad, 1/Å or pixels): the pattern
at the selection, the mean pattern or the mean of a region drawn in scan space, displayed linear, log or
power (gamma) with percentile or min-max contrast, a colourbar and a scale bar. Virtual detectors (point,
circle, annulus, rectangle, polygon; BF / ABF / ADF presets) are Shapes layers there: dragging one updates its
scan image from a reduced copy of the data, releasing it computes the image exactly in a worker.
"""
from __future__ import annotations

from napari.qt import QtViewer
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
)

from napari_4dstem.detector_rois import ROI_KINDS
from napari_4dstem.errors import FourDSTEMError

from ._common import notify_error, progress_bar
from ._dock import CanvasDock
from ._session import CONTRASTS, SCALINGS, SOURCES


class DetectorWidget(CanvasDock):
    """Detector space: the pattern display and the virtual detectors."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        s = self.session
        s._detector_dock = self  # the session adds this dock only when there is none
        lay = QVBoxLayout(self)
        self.canvas = QtViewer(s.detector_model)
        self.canvas.setMinimumSize(240, 300)
        lay.addWidget(self.canvas, stretch=1)

        row = QHBoxLayout()
        self.source = QComboBox()
        self.source.addItems(list(SOURCES))
        self.source.setToolTip("selection: the clicked scan pixel; mean: the whole scan; region: the mean of the "
                               "region drawn in scan space")
        row.addWidget(QLabel("show"))
        row.addWidget(self.source)
        self.scaling = QComboBox()
        self.scaling.addItems(list(SCALINGS))
        self.scaling.setCurrentText(s.display["scaling"])
        row.addWidget(self.scaling)
        self.gamma = QDoubleSpinBox()
        self.gamma.setRange(0.05, 5.0)
        self.gamma.setSingleStep(0.05)
        self.gamma.setValue(s.display["gamma"])
        self.gamma.setPrefix("γ ")
        row.addWidget(self.gamma)
        self.contrast = QComboBox()
        self.contrast.addItems(list(CONTRASTS))
        row.addWidget(self.contrast)
        self.percentile = QDoubleSpinBox()
        self.percentile.setRange(50.0, 100.0)
        self.percentile.setDecimals(2)
        self.percentile.setValue(s.display["percentile"])
        self.percentile.setSuffix(" %")
        row.addWidget(self.percentile)
        lay.addLayout(row)

        box = QGroupBox("Virtual detectors (drag them on the pattern)")
        form = QFormLayout(box)
        add_row = QHBoxLayout()
        self.kind = QComboBox()
        self.kind.addItems(list(ROI_KINDS))
        self.kind.setCurrentText("annulus")
        self.name = QLineEdit()
        self.name.setPlaceholderText("name (e.g. ring)")
        self.add_btn = QPushButton("Add")
        add_row.addWidget(self.kind)
        add_row.addWidget(self.name, stretch=1)
        add_row.addWidget(self.add_btn)
        form.addRow(add_row)
        presets = QHBoxLayout()
        self.preset_btns = {}
        for k in ("bf", "abf", "adf"):
            b = QPushButton(k.upper())
            b.setToolTip("from the convergence angle when the detector is calibrated, else the bright-field disc")
            b.clicked.connect(lambda _=False, k=k: self.add_preset(k))
            presets.addWidget(b)
            self.preset_btns[k] = b
        self.region_btn = QPushButton("Draw scan region")
        self.region_btn.setToolTip("draw a rectangle or polygon on the scan: the detector view shows its mean "
                                   "pattern")
        presets.addWidget(self.region_btn)
        form.addRow(presets)
        bar_row = QHBoxLayout()
        self.bar = progress_bar()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        bar_row.addWidget(self.bar, stretch=1)
        bar_row.addWidget(self.cancel_btn)
        form.addRow(bar_row)
        self.list = QLabel("no detectors")
        self.list.setWordWrap(True)
        form.addRow(self.list)
        lay.addWidget(box)

        self.source.currentTextChanged.connect(lambda v: self._display(source=v))
        self.scaling.currentTextChanged.connect(lambda v: self._display(scaling=v))
        self.gamma.valueChanged.connect(lambda v: self._display(gamma=float(v)))
        self.contrast.currentTextChanged.connect(lambda v: self._display(contrast=v))
        self.percentile.valueChanged.connect(lambda v: self._display(percentile=float(v)))
        self.add_btn.clicked.connect(lambda: self.add_detector())
        self.region_btn.clicked.connect(self.draw_region)
        self.cancel_btn.clicked.connect(self.cancel)
        s.detectors_changed.connect(self._list)
        s.dataset_changed.connect(self._on_dataset)
        self._on_dataset()

    # -- display -------------------------------------------------------------------------------
    def _display(self, **changes):
        try:
            self.session.set_display(**changes)
        except FourDSTEMError as e:
            notify_error(e)

    def _on_dataset(self, *_):
        s = self.session
        self.source.blockSignals(True)
        self.source.setCurrentText(s.display["source"])
        self.source.blockSignals(False)
        self._list()
        s.detector_model.reset_view()

    def _list(self, *_):
        names = sorted(self.session.detectors)
        self.list.setText("detectors: " + ", ".join(names) if names else "no detectors")

    # -- detectors ------------------------------------------------------------------------------
    def default_geometry(self, kind: str) -> dict:
        ds = self.session.dataset
        cy, cx = ds.detector_center
        r = max(1.0, min(ds.detector_shape) / 6.0)
        return {"point": {"center": (cy, cx)}, "circle": {"center": (cy, cx), "outer": r},
                "annulus": {"center": (cy, cx), "inner": r, "outer": 2 * r},
                "rectangle": {"corners": ((cy - r, cx - r), (cy + r, cx + r))},
                "polygon": {"vertices": [(cy - r, cx), (cy + r, cx + r), (cy + r, cx - r)]}}[kind]

    def add_detector(self, kind: str | None = None, name: str | None = None, **geometry):
        """Add a detector (the dock's kind and name unless given) and compute its image in a worker."""
        s = self.session
        if s.dataset is None:
            notify_error(FourDSTEMError("no dataset is open", hint="open a file or load the sample first"))
            return None
        kind = kind or self.kind.currentText()
        name = name or self.name.text().strip() or self._free_name(kind)
        geometry = geometry or self.default_geometry(kind)
        try:
            w = s.add_virtual_detector(name, kind, wait=False, **geometry)
        except FourDSTEMError as e:
            notify_error(e)
            return None
        self._watch(w)
        s.ensure_live()  # the reduced copy, so that dragging is live
        return w

    def add_preset(self, kind: str):
        s = self.session
        if s.dataset is None:
            notify_error(FourDSTEMError("no dataset is open", hint="open a file or load the sample first"))
            return None
        try:
            w = s.preset(kind, wait=False)
        except FourDSTEMError as e:
            notify_error(e)
            return None
        self._watch(w)
        return w

    def _free_name(self, kind: str) -> str:
        k = 1
        while f"{kind} {k}" in self.session.detectors:
            k += 1
        return f"{kind} {k}"

    def _watch(self, worker):
        """Progress and Cancel for an exact pass."""
        if worker is None or not hasattr(worker, "yielded"):
            return
        self.cancel_btn.setEnabled(True)
        self._current = worker

        def step(p):
            from ._common import alive, set_progress

            if alive(self.bar) and getattr(p, "total", 0):
                set_progress(self.bar, p.done, p.total, 0.0, p.message)

        def done():
            from ._common import alive

            if alive(self.cancel_btn):
                self.cancel_btn.setEnabled(False)

        worker.yielded.connect(step)
        worker.finished.connect(done)

    def cancel(self):
        w = getattr(self, "_current", None)
        if w is not None:
            w.quit()

    def draw_region(self):
        """Put the scan region layer in rectangle mode: the next rectangle drawn is averaged."""
        s = self.session
        if s.dataset is None:
            return None
        layer = s.ensure_region_layer()
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer
