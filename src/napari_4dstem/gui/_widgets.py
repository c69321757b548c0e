"""Data, Preprocess and COM/DPC docks: thin forms that call the core and show its results as linked layers."""
from __future__ import annotations

import os

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from napari_4dstem.errors import FourDSTEMError

from ._common import (
    AsyncPlot, OptionalFloat, error_message, guarded, legend, progress_bar, run_steps_in_worker,
)
from ._session import get_session

PLUGIN = "napari-4dstem"


class DockBase(QWidget):
    """A dock bound to the viewer's session; running workers stop when the dock goes away."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self._workers: list = []
        workers = self._workers
        self.destroyed.connect(lambda *_: [w.quit() for w in workers])
        # the dock sits in napari's main window once the event loop has run: watch that window's Close
        QTimer.singleShot(0, self._watch_window)

    def _watch_window(self):
        try:
            win = self.window()
        except RuntimeError:  # deleted already
            return
        if win is not self:
            CloseWatcher.on(win, self.on_window_close)

    def on_window_close(self):
        """The viewer's window has closed: stop every running step of this viewer."""
        for w in list(self._workers):
            w.quit()
        self.session.stop_workers()

    def stop_workers(self):
        for w in list(self._workers):
            w.quit()

    def event(self, ev):
        # removed from its dock (napari's dock close button): stop what this dock started
        if ev.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop_workers()
        return super().event(ev)

    def start(self, steps_factory, **kw):
        w = run_steps_in_worker(self.session, steps_factory, owner=self, **kw)
        self._workers.append(w)
        w.finished.connect(lambda: self._workers.remove(w) if w in self._workers else None)
        return w

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.stop_workers()
        super().closeEvent(event)


class CloseWatcher(QObject):
    """Calls the registered callbacks once the watched window has accepted a Close event.

    napari may ask the user to confirm a close: this filter lets the window handle the event first and
    calls back only when the event was accepted (a cancelled close leaves training and the Inspector
    alone). One watcher per window, shared by its docks.
    """

    def __init__(self, parent):
        super().__init__(parent)
        self.callbacks: list = []

    @classmethod
    def on(cls, window, callback) -> CloseWatcher:
        watcher = getattr(window, "_napari_4dstem_close_watcher", None)
        if watcher is None:
            watcher = cls(window)
            window.installEventFilter(watcher)
            window._napari_4dstem_close_watcher = watcher
        watcher.callbacks.append(callback)
        return watcher

    def eventFilter(self, obj, event):  # noqa: N802 - Qt name
        if event.type() != QEvent.Type.Close:
            return False
        obj.event(event)  # the window's own handling (napari's confirm dialog), then we know the answer
        if event.isAccepted():
            for cb in list(self.callbacks):
                cb()
        return True  # handled: the window must not see this event twice


def _spin(lo, hi, value, step=1, special=None):
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setSingleStep(step)
    if special:
        s.setSpecialValueText(special)
    return s


def _pair():
    a, b = OptionalFloat(), OptionalFloat()
    row = QHBoxLayout()
    row.addWidget(a)
    row.addWidget(b)
    return a, b, row


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _disk_size(path) -> int | None:
    if not path or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


# -- Data ---------------------------------------------------------------------------------------
class DataWidget(DockBase):
    """Open a file or the sample; shape, sizes, calibration (editable), scan and detector crop; results I/O."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open file…")
        self.sample_btn = QPushButton("Load sample")
        row.addWidget(self.open_btn)
        row.addWidget(self.sample_btn)
        lay.addLayout(row)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.info = QLabel("no dataset: open a file or load the sample")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)

        cal = QGroupBox("Calibration (blank = unknown)")
        form = QFormLayout(cal)
        self.step_y, self.step_x, r = _pair()
        form.addRow("scan step y, x", r)
        self.scan_unit = QLineEdit()
        self.scan_unit.setPlaceholderText("Å or nm")
        form.addRow("scan unit", self.scan_unit)
        self.pix_y, self.pix_x, r = _pair()
        form.addRow("detector pixel y, x", r)
        self.det_unit = QComboBox()
        self.det_unit.addItems(["", "mrad", "1/Å"])
        form.addRow("detector unit", self.det_unit)
        self.energy = OptionalFloat()
        form.addRow("beam energy (eV)", self.energy)
        self.alpha = OptionalFloat()
        form.addRow("convergence (mrad)", self.alpha)
        self.cen_y, self.cen_x, r = _pair()
        form.addRow("detector centre y, x (px)", r)
        self.apply_cal_btn = QPushButton("Apply calibration")
        form.addRow(self.apply_cal_btn)
        lay.addWidget(cal)

        crop = QGroupBox("Crop")
        cform = QFormLayout(crop)
        self.crop = {k: _spin(0, 1_000_000, 0) for k in ("sy0", "sy1", "sx0", "sx1", "dy0", "dy1", "dx0", "dx1")}
        for label, keys in (("scan rows", ("sy0", "sy1")), ("scan cols", ("sx0", "sx1")),
                            ("detector rows", ("dy0", "dy1")), ("detector cols", ("dx0", "dx1"))):
            r = QHBoxLayout()
            for k in keys:
                r.addWidget(self.crop[k])
            cform.addRow(label, r)
        self.crop_btn = QPushButton("Apply crop")
        cform.addRow(self.crop_btn)
        lay.addWidget(crop)

        res = QHBoxLayout()
        self.save_btn = QPushButton("Save results…")
        self.load_res_btn = QPushButton("Open results…")
        self.export_btn = QPushButton("Export maps…")
        self.export_btn.setToolTip("every scan map, in the formats ticked below: TIFF (ImageJ scale), PNG (figure "
                                   "with colorbar), HyperSpy .hspy (axes scale and units)")
        res.addWidget(self.save_btn)
        res.addWidget(self.load_res_btn)
        res.addWidget(self.export_btn)
        lay.addLayout(res)
        fmts = QHBoxLayout()
        fmts.addWidget(QLabel("export as"))
        self.export_formats = {}
        for fmt, label in (("tif", "TIFF"), ("png", "PNG"), ("hspy", "HyperSpy .hspy")):
            cb = QCheckBox(label)
            cb.setChecked(fmt in ("tif", "png"))
            fmts.addWidget(cb)
            self.export_formats[fmt] = cb
        fmts.addStretch(1)
        lay.addLayout(fmts)
        lay.addStretch(1)

        self.open_btn.clicked.connect(self._open)
        self.sample_btn.clicked.connect(self.load_sample)
        self.apply_cal_btn.clicked.connect(self.apply_calibration)
        self.crop_btn.clicked.connect(self.apply_crop)
        self.save_btn.clicked.connect(self._save)
        self.load_res_btn.clicked.connect(self._open)
        self.export_btn.clicked.connect(self._export)
        self.session.dataset_changed.connect(self.refresh)
        if self.session.dataset is not None:
            self.refresh(self.session.dataset)

    def _open(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open 4D-STEM data or results")
        if path:
            self.open_path(path)

    def open_path(self, path: str):
        """Open ``path``: data files are read and their navigator computed in a worker (the GUI stays
        live on big files); results files go through the plugin's reader. Errors become notifications."""
        from ._reader import is_results_file, iter_cached_navigator

        if is_results_file(path):
            try:
                self.viewer.open(path, plugin=PLUGIN)
            except Exception as e:  # noqa: BLE001 - napari wraps reader failures; show them, never crash
                show_error(error_message(e))
            return None

        def steps():
            from napari_4dstem.io import load

            ds = load(path)
            yield from iter_cached_navigator(ds)  # cached: set_dataset reuses it
            return ds

        self.open_btn.setEnabled(False)
        return self.start(steps, on_return=lambda ds: self.session.set_dataset(ds), progress_bar=self.bar,
                          on_finish=lambda: self.open_btn.setEnabled(True))

    def load_sample(self):
        """Generate the sample in a worker and make it the dataset."""
        from napari_4dstem.sample import make_sample

        self.sample_btn.setEnabled(False)
        w = create_worker(make_sample, _ignore_errors=True)
        w.returned.connect(guarded(self, lambda ds: self.session.set_dataset(ds)))
        w.errored.connect(lambda e: show_error(error_message(e)))
        w.finished.connect(guarded(self, lambda: self.sample_btn.setEnabled(True)))
        self.session.track(w)
        self._workers.append(w)
        w.start()
        return w

    def refresh(self, ds=None):
        ds = self.session.dataset
        if ds is None:
            return
        disk = _disk_size(ds.provenance.source_path)
        lazy = type(ds.data).__name__
        self.info.setText(
            f"<b>{ds.name}</b><br>shape {ds.shape} (scan_y, scan_x, det_y, det_x), {ds.dtype}<br>"
            f"in memory if loaded: {_human(ds.nbytes)}; on disk: {_human(disk) if disk else 'n/a'}<br>"
            f"reader: {ds.provenance.reader} ({lazy})")
        c = ds.calibration
        self.step_y.set(c.scan_step[0])
        self.step_x.set(c.scan_step[1])
        self.scan_unit.setText(c.scan_unit or "")
        self.pix_y.set(c.detector_pixel[0])
        self.pix_x.set(c.detector_pixel[1])
        self.det_unit.setCurrentText(c.detector_unit or "")
        self.energy.set(c.beam_energy_ev)
        self.alpha.set(c.convergence_semiangle_mrad)
        cen = c.detector_center
        self.cen_y.set(None if cen is None else cen[0])
        self.cen_x.set(None if cen is None else cen[1])
        sy, sx, dy, dx = ds.shape
        for k, v in (("sy0", 0), ("sy1", sy), ("sx0", 0), ("sx1", sx), ("dy0", 0), ("dy1", dy), ("dx0", 0),
                     ("dx1", dx)):
            self.crop[k].setValue(v)

    def apply_calibration(self):
        ds = self.session.dataset
        if ds is None:
            return
        try:
            cy, cx = self.cen_y.get(), self.cen_x.get()
            cal = ds.calibration.replace(
                scan_step=(self.step_y.get(), self.step_x.get()), scan_unit=self.scan_unit.text().strip() or None,
                detector_pixel=(self.pix_y.get(), self.pix_x.get()), detector_unit=self.det_unit.currentText() or None,
                beam_energy_ev=self.energy.get(), convergence_semiangle_mrad=self.alpha.get(),
                detector_center=None if cy is None or cx is None else (cy, cx))
        except FourDSTEMError as e:
            show_error(str(e))
            return
        self.session.update_calibration(cal)

    def apply_crop(self):
        ds = self.session.dataset
        if ds is None:
            return
        v = {k: s.value() for k, s in self.crop.items()}
        if v["sy1"] <= v["sy0"] or v["sx1"] <= v["sx0"] or v["dy1"] <= v["dy0"] or v["dx1"] <= v["dx0"]:
            show_error("crop: each range must have end > start")
            return
        data = ds.to_dask()[v["sy0"]:v["sy1"], v["sx0"]:v["sx1"], v["dy0"]:v["dy1"], v["dx0"]:v["dx1"]]
        changes = {}
        if ds.calibration.detector_center is not None:
            cy, cx = ds.calibration.detector_center
            changes["detector_center"] = (cy - v["dy0"], cx - v["dx0"])
        note = f"crop scan [{v['sy0']}:{v['sy1']}, {v['sx0']}:{v['sx1']}] det [{v['dy0']}:{v['dy1']}, " \
               f"{v['dx0']}:{v['dx1']}]"
        s = self.session
        sy, sx, dy, dx = ds.shape
        scan_only = (v["dy0"], v["dy1"], v["dx0"], v["dx1"]) == (0, dy, 0, dx)
        # a scan-only crop stays a window of the file: saved results record it and reopen onto the file
        source = (s.source or ds) if scan_only else None
        offset = (s.scan_offset[0] + v["sy0"], s.scan_offset[1] + v["sx0"]) if scan_only else (0, 0)
        try:
            s.set_dataset(ds.with_data(data, note=note, **changes), scan_offset=offset, source=source)
        except FourDSTEMError as e:
            show_error(str(e))

    def _save(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save results", "", "results (*.h5)")
        if path:
            self.save(path)

    def _export(self):
        folder = QFileDialog.getExistingDirectory(self, "Export maps to folder")
        if folder:
            self.export(folder)

    def export(self, folder: str, formats=None):
        """Write every map of the session to ``folder``: one file per map and format (``"tif"``, ``"png"``,
        ``"hspy"``; None = the formats ticked in the dock)."""
        from napari_4dstem.export import export_results

        from ._results import session_results

        if formats is None:
            formats = tuple(f for f, cb in self.export_formats.items() if cb.isChecked())
        if not formats:
            show_error("export: tick at least one format (TIFF, PNG or .hspy)")
            return []
        try:
            paths = export_results(session_results(self.session), folder, formats=formats, overwrite=True)
        except FourDSTEMError as e:
            show_error(str(e))
            return []
        show_info(f"{len(paths)} files written to {folder}")
        return paths

    def save(self, path: str, overwrite: bool = True):
        from ._results import save_session

        try:
            p = save_session(self.session, path, overwrite=overwrite)
            show_info(f"results saved to {p}")
            return p
        except FourDSTEMError as e:
            show_error(str(e))
        return None


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
        self.run_btn = QPushButton("Preprocess")
        lay.addWidget(self.run_btn)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.scree = AsyncPlot()
        lay.addWidget(self.scree)
        lay.addStretch(1)
        self.run_btn.clicked.connect(self.run)

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
            show_error(error_message(e))
            return None
        self.run_btn.setEnabled(False)

        def done(out):
            self.session.set_preprocessed(pp, out)
            sig = getattr(pp, "scan_sigma_", 0.0)
            self.status.setText(f"preprocessed: {out.shape}, {out.dtype}"
                                + (f"; scan smoothing sigma {sig:.2f} px" if sig else ""))
            self.plot_scree(pp)

        return self.start(lambda: pp.iter_fit_transform(ds), on_return=done, progress_bar=self.bar,
                          on_finish=lambda: self.run_btn.setEnabled(True))

    def plot_scree(self, pp):
        ev = getattr(pp, "explained_variance_ratio_", None)
        return self.scree.plot(draw_scree, None if ev is None else np.asarray(ev))


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
        self.run_btn = QPushButton("Compute COM")
        lay.addWidget(self.run_btn)
        vbox = QGroupBox("virtual detectors (bright-field disc found automatically)")
        vlay = QHBoxLayout(vbox)
        self.virtual = {}
        for name in ("bf", "abf", "adf"):
            cb = QCheckBox(name.upper())
            cb.setChecked(name in ("bf", "adf"))
            vlay.addWidget(cb)
            self.virtual[name] = cb
        self.virtual_btn = QPushButton("Virtual images")
        vlay.addWidget(self.virtual_btn)
        lay.addWidget(vbox)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.status = QLabel("")
        lay.addWidget(self.status)
        self.plot = AsyncPlot()
        lay.addWidget(self.plot)
        lay.addStretch(1)
        self.auto_rot.toggled.connect(lambda on: self.rotation.setEnabled(not on))
        self.run_btn.clicked.connect(self.run)
        self.virtual_btn.clicked.connect(self.run_virtual)

    def run_virtual(self):
        """Virtual BF/ABF/ADF images of the raw data, in one pass, as linked maps."""
        from napari_4dstem.virtual import iter_virtual_images

        ds = self.session.dataset
        kinds = {k: {"kind": k} for k, cb in self.virtual.items() if cb.isChecked()}
        if ds is None or not kinds:
            show_error("virtual images: open a dataset and tick at least one detector")
            return None

        def show(res):
            for name, img in res.items():
                self.session.show_map(f"virtual {name}", np.asarray(img.image), colormap="gray")

        self.virtual_btn.setEnabled(False)
        return self.start(lambda: iter_virtual_images(ds, kinds), on_return=show, progress_bar=self.bar,
                          on_finish=lambda: self.virtual_btn.setEnabled(True))

    def kwargs(self, ds) -> dict:
        flip = {"auto": "auto", "no": False, "yes": True}[self.flip.currentText()]
        mask = ("disc", float(self.mask_radius.value())) if self.mask_radius.value() > 0 else None
        return {"rotation": "auto" if self.auto_rot.isChecked() else float(self.rotation.value()), "flip": flip,
                "mask": mask, "descan": None if self.descan.currentText() == "none" else self.descan.currentText()}

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
            show_error(str(e))
            return None
        self.run_btn.setEnabled(False)
        return self.start(lambda: iter_center_of_mass(ds, **kw), on_return=self.show_result, progress_bar=self.bar,
                          on_finish=lambda: self.run_btn.setEnabled(True))

    def show_result(self, res):
        s = self.session
        s.com = res
        for name in COM_MAPS:
            if self.show[name].isChecked():
                cmap = "twilight" if name == "angle" else ("PiYG" if name in ("x", "y", "divergence", "curl")
                                                             else "inferno")
                s.show_map(f"COM {name}", np.asarray(getattr(res, name)), colormap=cmap)
        self.rotation.setValue(float(res.rotation_deg))
        self.status.setText(f"rotation {res.rotation_deg:.1f}°, flip {res.flip}")
        self.plot_curl(res)
        s.com_changed.emit(res)

    def plot_curl(self, res):
        curves = {k: np.asarray(v) for k, v in (getattr(res, "curl_curves", None) or {}).items()}
        return self.plot.plot(draw_curl, curves, float(res.rotation_deg))


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
