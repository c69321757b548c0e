"""COM / DPC dock: mask, descan, automatic rotation (curl-versus-angle plot) or a manual angle, in mrad when the
detector is calibrated; a warning when the data cannot determine the rotation."""
from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
)

from napari_4dstem.errors import FourDSTEMError

from ._common import AsyncPlot, legend, notify_error, progress_bar
from ._dock import DockBase, run_button


# -- COM / DPC ----------------------------------------------------------------------------------
COM_MAPS = ("magnitude", "angle", "x", "y", "divergence", "curl", "icom")


class COMWidget(DockBase):
    """Centre of mass / DPC: mask, descan, automatic rotation (curl-versus-angle plot) or a manual angle."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.source = QComboBox()
        # COM needs non-negative intensities: raw, or binned by summation (never mean-subtracted/PCA output)
        self.source.addItems(["raw", "binned to ~64 x 64"])
        form.addRow("patterns", self.source)
        self.mask_radius = QDoubleSpinBox()
        self.mask_radius.setRange(0, 10_000)
        self.mask_radius.setSpecialValueText("none")
        form.addRow("mask outer radius (px)", self.mask_radius)
        self.descan = QComboBox()
        self.descan.addItems(["none", "mean", "plane"])
        form.addRow("descan correction", self.descan)
        self.auto_rot = QCheckBox("automatic (minimum curl)")
        self.auto_rot.setChecked(True)
        self.rotation = QDoubleSpinBox()
        self.rotation.setRange(-360, 360)
        self.rotation.setSuffix(" °")
        self.rotation.setEnabled(False)
        r = QHBoxLayout()
        r.addWidget(self.auto_rot)
        r.addWidget(self.rotation)
        form.addRow("rotation", r)
        self.flip = QComboBox()
        self.flip.addItems(["auto", "no", "yes"])
        form.addRow("flip", self.flip)
        lay.addLayout(form)
        box = QGroupBox("maps to show")
        blay = QHBoxLayout(box)
        self.show = {}
        for name in COM_MAPS:
            cb = QCheckBox(name)
            cb.setChecked(name in ("magnitude", "angle", "icom"))
            blay.addWidget(cb)
            self.show[name] = cb
        lay.addWidget(box)
        self.run_btn = run_button(QPushButton("Compute COM"), self.run)
        lay.addWidget(self.run_btn)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.status = QLabel("")
        lay.addWidget(self.status)
        self.plot = AsyncPlot()
        lay.addWidget(self.plot)
        lay.addStretch(1)
        self.auto_rot.toggled.connect(lambda on: self.rotation.setEnabled(not on))

    def kwargs(self, ds) -> dict:
        flip = {"auto": "auto", "no": False, "yes": True}[self.flip.currentText()]
        mask = ("disc", float(self.mask_radius.value())) if self.mask_radius.value() > 0 else None
        from napari_4dstem.virtual import detector_pixel_mrad

        # mrad whenever the detector calibration gives it: the maps then carry the physical deflection
        units = "mrad" if detector_pixel_mrad(ds) is not None else "px"
        return {"rotation": "auto" if self.auto_rot.isChecked() else float(self.rotation.value()), "flip": flip,
                "mask": mask, "descan": None if self.descan.currentText() == "none" else self.descan.currentText(),
                "units": units}

    def run(self):
        from napari_4dstem.com import iter_center_of_mass
        from napari_4dstem.preprocess import reduce_detector

        s = self.session
        ds = s.dataset
        if ds is None:
            show_error("COM: no dataset; open a file or load the sample first")
            return None
        try:
            if self.source.currentIndex() == 1:
                ds = reduce_detector(ds, target_size=64)  # lazy
            kw = self.kwargs(ds)
        except FourDSTEMError as e:
            notify_error(e)
            return None
        target = s.dataset

        def shown(res):
            if s.dataset is target:
                self.show_result(res)

        return self.start_cancellable(self.run_btn, lambda: iter_center_of_mass(ds, **kw), on_return=shown,
                                      progress_bar=self.bar)

    def show_result(self, res):
        s = self.session
        s.com = res
        for name in COM_MAPS:
            if self.show[name].isChecked():
                cmap = "twilight" if name == "angle" else ("PiYG" if name in ("x", "y", "divergence", "curl")
                                                             else "inferno")
                s.show_map(f"COM {name}", np.asarray(getattr(res, name)), colormap=cmap)
        self.rotation.setValue(float(res.rotation_deg))
        warning = rotation_warning(res, s.maps.get("navigator"))
        self.status.setText(f"rotation {res.rotation_deg:.1f}°, flip {res.flip}; COM in {res.units}"
                            + (f"<br><b>warning:</b> {warning}" if warning else ""))
        if warning:
            show_warning(warning)
        self.plot_curl(res)
        s.com_changed.emit(res)

    def plot_curl(self, res):
        curves = {k: np.asarray(v) for k, v in (getattr(res, "curl_curves", None) or {}).items()}
        return self.plot.plot(draw_curl, curves, float(res.rotation_deg))


#: Curl contrast below which the automatic rotation is a guess: (max - min) / max of the rms-curl curve.
MIN_CURL_CONTRAST = 0.05
#: Fraction of (near-)empty frames above which the COM field is mostly noise.
MAX_EMPTY_FRACTION = 0.5


def rotation_warning(res, navigator=None) -> str:
    """Why the rotation found may mean nothing (empty or dark frames, a flat curl curve), or ""."""
    reasons = []
    if navigator is not None:
        nav = np.asarray(navigator, dtype=np.float64)
        top = float(np.nanmax(nav)) if nav.size else 0.0
        empty = float(np.mean(nav <= 0.01 * top)) if top > 0 else 1.0
        if empty > MAX_EMPTY_FRACTION:
            reasons.append(f"{empty:.0%} of the frames are empty or dark")
    if str(getattr(res, "parameters", {}).get("rotation", "auto")) == "auto":
        curves = getattr(res, "curl_curves", None) or {}
        vals = [np.asarray(v, dtype=np.float64) for k, v in curves.items() if k not in ("angles", "angles_deg")]
        if vals:
            c = np.concatenate([v.ravel() for v in vals])
            c = c[np.isfinite(c)]
            hi = float(c.max()) if c.size else 0.0
            contrast = (hi - float(c.min())) / hi if hi > 0 else 0.0
            if contrast < MIN_CURL_CONTRAST:
                reasons.append(f"the curl hardly changes with the rotation ({contrast:.1%})")
    if not reasons:
        return ""
    return ("the rotation and flip found are not determined by these data: " + "; ".join(reasons)
            + " -> set the rotation by hand, or use frames with a beam")


def draw_curl(fig, curves: dict, rotation_deg: float):
    ax = fig.add_subplot(1, 1, 1)
    ang = curves.get("angles_deg", curves.get("angles"))
    for label, curve in curves.items():
        if label in ("angles", "angles_deg"):
            continue
        x = ang if ang is not None else np.arange(len(curve))
        ax.plot(x, curve, lw=1, label=str(label).replace("rms_curl_", "").replace("_", " "))
    ax.axvline(rotation_deg, color="#e05050", lw=1, ls="--")
    ax.set_xlabel("rotation (°)")
    ax.set_ylabel("rms curl")
    ax.set_title("curl of the COM field vs rotation")
    if ax.lines:
        legend(ax)
