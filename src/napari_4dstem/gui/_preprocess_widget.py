"""Preprocess dock: binning or target size, centring, mask, mean subtraction, normalisation, PCA (scree plot)."""
from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
)

from napari_4dstem.errors import FourDSTEMError

from ._common import AsyncPlot, notify_error, progress_bar
from ._dock import DockBase, _spin, run_button


# -- Preprocess ---------------------------------------------------------------------------------
class PreprocessWidget(DockBase):
    """Binning or target size, centring, mask, mean subtraction, normalisation, PCA with a scree plot."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.bin_factor = _spin(0, 64, 0, special="auto (from target size)")
        form.addRow("bin factor", self.bin_factor)
        self.target_size = _spin(0, 1024, 64, step=8, special="none")
        form.addRow("target size (px)", self.target_size)
        self.center = QComboBox()
        self.center.addItems(["none", "auto"])
        self.center.setToolTip("auto: move the bright-field disc of the mean pattern to the detector centre")
        form.addRow("centring", self.center)
        self.mask_radius = QDoubleSpinBox()
        self.mask_radius.setRange(0, 10_000)
        self.mask_radius.setSpecialValueText("none")
        form.addRow("mask radius (output px)", self.mask_radius)
        self.hot = QCheckBox("remove hot pixels")
        form.addRow(self.hot)
        self.subtract_mean = QCheckBox("subtract mean pattern")
        self.subtract_mean.setChecked(True)
        form.addRow(self.subtract_mean)
        self.normalize = QComboBox()
        self.normalize.addItems(["minmax", "std", "zscore", "total", "none"])
        form.addRow("normalisation", self.normalize)
        self.pca = _spin(0, 4096, 0, special="off")
        form.addRow("PCA components kept", self.pca)
        self.pca_drop = QLineEdit()
        self.pca_drop.setPlaceholderText("e.g. 0, 1")
        form.addRow("PCA components dropped", self.pca_drop)
        self.scan_sigma = QDoubleSpinBox()
        self.scan_sigma.setRange(-0.5, 20.0)
        self.scan_sigma.setSingleStep(0.5)
        self.scan_sigma.setValue(-0.5)
        self.scan_sigma.setSpecialValueText("auto")
        self.scan_sigma.setToolTip("Gaussian smoothing over the scan (sigma, scan pixels) against Poisson noise. "
                                   "auto: only for noisy counted data; 0: off")
        form.addRow("scan smoothing (px)", self.scan_sigma)
        lay.addLayout(form)
        self.run_btn = run_button(QPushButton("Preprocess"), self.run)
        lay.addWidget(self.run_btn)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.scree = AsyncPlot()
        lay.addWidget(self.scree)
        lay.addStretch(1)

    def params(self) -> dict:
        drop = tuple(int(t) for t in self.pca_drop.text().replace(",", " ").split() if t.strip())
        center = self.center.currentText()
        return {
            "bin_factor": self.bin_factor.value() or None,
            "target_size": self.target_size.value() or None,
            "center": None if center == "none" else center,
            "mask": ("disc", float(self.mask_radius.value())) if self.mask_radius.value() > 0 else None,
            "remove_hot_pixels": self.hot.isChecked(),
            "subtract_mean": self.subtract_mean.isChecked(),
            "normalize": None if self.normalize.currentText() == "none" else self.normalize.currentText(),
            "pca_components": self.pca.value() or None,
            "pca_drop": drop,
            "scan_sigma": "auto" if self.scan_sigma.value() < 0 else float(self.scan_sigma.value()),
        }

    def run(self):
        from napari_4dstem.preprocess import Preprocessing

        ds = self.session.dataset
        if ds is None:
            show_error("preprocess: no dataset; open a file or load the sample first")
            return None
        try:
            pp = Preprocessing(**self.params())
        except (FourDSTEMError, TypeError, ValueError) as e:
            notify_error(e)
            return None

        def done(out):
            if self.session.dataset is not ds:
                return  # another dataset was opened meanwhile
            self.session.set_preprocessed(pp, out)
            sig = getattr(pp, "scan_sigma_", 0.0)
            lines = [f"preprocessed: {out.shape}, {out.dtype}"
                     + (f"; scan smoothing sigma {sig:.2f} px" if sig else "")]
            crop = square_crop_note(pp, ds)
            if crop:
                lines.append(crop)
                show_info(crop)
            self.status.setText("<br>".join(lines))
            self.plot_scree(pp)

        return self.start_cancellable(self.run_btn, lambda: pp.iter_fit_transform(ds), on_return=done,
                                      progress_bar=self.bar)

    def plot_scree(self, pp):
        ev = getattr(pp, "explained_variance_ratio_", None)
        return self.scree.plot(draw_scree, None if ev is None else np.asarray(ev))


def square_crop_note(pp, ds) -> str:
    """What preprocessing cut from a non-square detector (the rrVAE needs square patterns), or ""."""
    f = int(getattr(pp, "bin_factor_", 1) or 1)
    out = tuple(getattr(pp, "detector_shape_", ()) or ())
    dy, dx = ds.detector_shape
    if len(out) != 2 or (dy // f, dx // f) == out or dy == dx:
        return ""
    used = (out[0] * f, out[1] * f)
    return (f"detector cropped from {dy} x {dx} to {used[0]} x {used[1]} px around the beam (the rrVAE needs square "
            f"patterns), then binned by {f} to {out[0]} x {out[1]}" if f > 1 else
            f"detector cropped from {dy} x {dx} to {used[0]} x {used[1]} px around the beam (the rrVAE needs square "
            "patterns)")


def draw_scree(fig, ev):
    ax = fig.add_subplot(1, 1, 1)
    if ev is None:
        ax.set_title("scree plot: set PCA components kept to see it")
        return
    k = np.arange(1, len(ev) + 1)
    ax.bar(k, ev, color="#5a8dd6")
    ax.plot(k, np.cumsum(ev), color="#e0a040", marker=".", lw=1)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance")
    ax.set_title("scree (bars) and cumulative (line)")


