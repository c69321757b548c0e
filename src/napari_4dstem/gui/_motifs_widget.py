"""Motifs dock: Zernike motifs of the open 4D-STEM scan (order, radius, classes), as layers.

Thin on purpose: it finds the dataset in the viewer's layers (the navigator's metadata), runs
:func:`napari_4dstem.motifs.iter_motifs` in a worker and shows the label and outlier maps over the navigator
(same scale and offset), the class average of the picked class where the diffraction pattern is shown, and
(Atoms) the patch mode's classes at the atom columns of the navigator as a Points layer.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout,
                            QWidget)

META = "napari_4dstem"  # the metadata key of the package's layers
LABELS, OUTLIER, MEAN, ATOMS = "Zernike classes", "Zernike outlier", "Zernike class average", "Zernike atoms"


def _layer(viewer, role: str):
    for layer in viewer.layers:
        md = getattr(layer, "metadata", {}).get(META)
        if isinstance(md, dict) and md.get("role") == role:
            return layer
    return None


def find_dataset(viewer):
    """The Dataset4D of the viewer (the navigator layer's metadata), or None."""
    layer = _layer(viewer, "navigator")
    return None if layer is None else layer.metadata[META].get("dataset")


class MotifsWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.result = None
        self.worker = None
        self.order = QSpinBox()
        self.order.setRange(1, 30)
        self.order.setValue(6)
        self.radius = QDoubleSpinBox()
        self.radius.setRange(0.0, 4096.0)
        self.radius.setSpecialValueText("auto")
        self.radius.setSuffix(" px")
        self.classes = QSpinBox()
        self.classes.setRange(0, 32)
        self.classes.setSpecialValueText("auto")
        self.pick = QSpinBox()
        self.pick.setRange(0, 0)
        self.pick.valueChanged.connect(self.show_class)
        self.run_btn = QPushButton("Find motifs")
        self.run_btn.clicked.connect(self.toggle)
        self.atoms_btn = QPushButton("Atoms")
        self.atoms_btn.setToolTip("patch mode: classify atom-centred patches of the navigator")
        self.atoms_btn.clicked.connect(self.atoms)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("order", self.order)
        form.addRow("radius", self.radius)
        form.addRow("classes", self.classes)
        form.addRow("show class", self.pick)
        row = QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.atoms_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addStretch(1)

    # -- running -------------------------------------------------------------------------------
    def params(self) -> dict:
        return {"order": int(self.order.value()), "radius": float(self.radius.value()) or None,
                "n_classes": int(self.classes.value()) or "auto"}

    def toggle(self):
        if self.worker is not None:
            self.worker.quit()
            return
        self.run()

    def run(self):
        from napari.qt.threading import thread_worker

        from napari_4dstem.motifs import iter_motifs

        ds = find_dataset(self.viewer)
        if ds is None:
            self.status.setText("open a 4D-STEM file first (File > Open, or File > Open Sample)")
            return
        params = self.params()

        @thread_worker
        def job():
            return (yield from iter_motifs(ds, **params))

        w = job()
        w.yielded.connect(lambda p: self.status.setText(f"{p.message} {p.done}/{p.total}"))
        w.returned.connect(self.show)
        w.errored.connect(lambda e: self.status.setText(f"failed: {e}"))
        w.finished.connect(self._done)
        self.worker = w
        self.run_btn.setText("Stop")
        w.start()
        return w

    def _done(self):
        self.worker = None
        self.run_btn.setText("Find motifs")

    # -- showing -------------------------------------------------------------------------------
    def _scan_placement(self) -> dict:
        nav = _layer(self.viewer, "navigator")
        if nav is None:
            return {}
        return {"scale": tuple(nav.scale), "translate": tuple(nav.translate)}

    def _put(self, name, data, kind, **kw):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            return layer
        add = getattr(self.viewer, f"add_{kind}")
        return add(data, name=name, metadata={META: {"role": name}}, **kw)

    def show(self, result):
        self.result = result
        place = self._scan_placement()
        self._put(OUTLIER, result.outlier, "image", colormap="inferno", **place)
        labels = self._put(LABELS, result.labels.astype(np.int32) + 1, "labels", opacity=0.5, **place)
        labels.events.selected_label.connect(lambda e=None: self.pick.setValue(max(0, labels.selected_label - 1)))
        self.pick.setRange(0, max(0, result.n_classes - 1))
        p = result.parameters
        self.status.setText(f"{result.n_classes} classes ({p['method']}), order {p['order']}, radius "
                            f"{p['radius']:.1f} px; outlier map: larger = more atypical")
        self.show_class(self.pick.value())

    def show_class(self, c: int):
        r = self.result
        if r is None or r.class_means is None or not 0 <= c < r.n_classes:
            return
        pat = _layer(self.viewer, "pattern")
        place = {"scale": tuple(pat.scale), "translate": tuple(pat.translate)} if pat is not None else {}
        layer = self._put(MEAN, r.class_means[c].astype(np.float32), "image", colormap="magma", gamma=0.5, **place)
        layer.metadata["class"] = int(c)
        self.status.setText(f"class {c}: {int(r.counts[c])} patterns")

    def atoms(self):
        """Patch mode on the navigator image: atom columns, classes, a Points layer coloured by class."""
        from napari_4dstem.errors import DataError
        from napari_4dstem.motifs import patch_motifs

        nav = _layer(self.viewer, "navigator")
        if nav is None:
            self.status.setText("open a 4D-STEM file first")
            return None
        try:
            res = patch_motifs(np.asarray(nav.data, np.float64))
        except DataError as e:
            self.status.setText(str(e))
            return None
        colours = np.array([[0.9, 0.3, 0.2, 1], [0.2, 0.6, 0.9, 1], [0.3, 0.8, 0.3, 1], [0.9, 0.8, 0.2, 1],
                            [0.7, 0.3, 0.9, 1], [1.0, 0.5, 0.0, 1], [0.5, 0.5, 0.5, 1], [0.0, 0.8, 0.8, 1]])
        face = colours[res.labels % len(colours)]
        scale = np.asarray(nav.scale)
        pts = res.positions * scale + np.asarray(nav.translate)
        if ATOMS in self.viewer.layers:
            self.viewer.layers.remove(ATOMS)
        layer = self.viewer.add_points(pts, name=ATOMS, face_color=face, size=float(2 * scale.mean()),
                                       properties={"motif_class": res.labels}, metadata={META: {"role": ATOMS}})
        self.status.setText(f"{len(res.labels)} atom columns in {len(res.class_means)} classes")
        return layer
