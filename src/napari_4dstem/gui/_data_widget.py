"""Data dock: open a file (with reader options when it needs them) or the sample; shape, sizes, calibration
(editable), scan and detector crop; save, reopen and export results."""
from __future__ import annotations

import os

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QSpinBox, QVBoxLayout,
)

from napari_4dstem.errors import FourDSTEMError, ReaderError

from ._common import OptionalFloat, error_message, guarded, notify_error, progress_bar
from ._dock import PLUGIN, DockBase, _pair, _spin


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

        # reader options: shown when a file needs them (several arrays, a frame stack, a 5-D file)
        self.options_box = QGroupBox("Reader options (this file needs them)")
        oform = QFormLayout(self.options_box)
        self.opt_key = QComboBox()
        self.opt_key.setEditable(False)
        oform.addRow("array (key)", self.opt_key)
        self.opt_nav = QLineEdit()
        self.opt_nav.setPlaceholderText("scan_y, scan_x (frame stacks)")
        oform.addRow("nav shape", self.opt_nav)
        self.opt_cube = QSpinBox()
        self.opt_cube.setRange(-1, 100_000)
        self.opt_cube.setValue(-1)
        self.opt_cube.setSpecialValueText("not needed")
        oform.addRow("cube (5-D files)", self.opt_cube)
        self.reopen_btn = QPushButton("Open with these options")
        oform.addRow(self.reopen_btn)
        self.options_box.setVisible(False)
        self._pending_path = None
        lay.addWidget(self.options_box)

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

        self.reopen_btn.clicked.connect(self._open_with_options)
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

    def _open_with_options(self):
        try:
            opts = self.reader_options()
        except FourDSTEMError as e:
            notify_error(e)
            return None
        return self.open_path(self._pending_path, **opts)

    def reader_options(self) -> dict:
        """The options chosen in "Reader options" (only those the file needs)."""
        opts = {}
        if self.opt_key.count() and self.opt_key.currentData():
            opts["key"] = self.opt_key.currentData()
        nav = self.opt_nav.text().replace(",", " ").split()
        if nav:
            try:
                opts["nav_shape"] = tuple(int(v) for v in nav)
            except ValueError:
                raise FourDSTEMError(f"nav shape {self.opt_nav.text()!r} is not two whole numbers",
                                     hint="type e.g. 64, 32") from None
        if self.opt_cube.value() >= 0:
            opts["cube"] = int(self.opt_cube.value())
        return opts

    def offer_options(self, path: str, error: ReaderError) -> bool:
        """Fill "Reader options" with the choices ``path`` needs (the arrays of an archive, the frame count of
        a stack, the cubes of a 5-D file); True when something was offered."""
        from napari_4dstem.reader_options import needed_options

        need = needed_options(path)
        if not need:
            return False
        self._pending_path = path
        self.opt_key.clear()
        for name, desc in need.get("key", []):
            self.opt_key.addItem(f"{name}  {desc}", name)
        self.opt_key.setEnabled("key" in need)
        self.opt_nav.setEnabled("nav_shape" in need)
        if "nav_shape" in need:
            n = need["nav_shape"]
            self.opt_nav.setPlaceholderText(f"scan_y, scan_x with product {n}, e.g. {_factor_pair(n)}")
        self.opt_cube.setEnabled("cube" in need)
        if "cube" in need:
            self.opt_cube.setRange(0, max(0, need["cube"] - 1))
            self.opt_cube.setValue(0)
        self.options_box.setVisible(True)
        return True

    def open_path(self, path: str, **options):
        """Open ``path`` (``options``: reader options such as ``key``, ``nav_shape``, ``cube``): data files are
        read and their navigator computed in a worker (the GUI stays live on big files); results files go
        through the plugin's reader. Errors become notifications; a file that needs reader options fills the
        "Reader options" box with its choices."""
        from ._layers import iter_cached_navigator
        from ._reader import is_results_file

        if is_results_file(path):
            try:
                self.viewer.open(path, plugin=PLUGIN)
            except Exception as e:  # noqa: BLE001 - napari wraps reader failures; show them, never crash
                show_error(error_message(e))
            return None

        def steps():
            from napari_4dstem.io import load

            ds = load(path, **options)
            yield from iter_cached_navigator(ds)  # cached: set_dataset reuses it
            return ds

        def failed(e):
            if isinstance(e, ReaderError):
                self.offer_options(path, e)

        def opened(ds):
            self.options_box.setVisible(False)
            self.session.set_dataset(ds)

        self.open_btn.setEnabled(False)
        return self.start(steps, on_return=opened, progress_bar=self.bar, on_error=failed,
                          on_finish=lambda: self.open_btn.setEnabled(True))

    def load_sample(self):
        """Generate the sample in a worker and make it the dataset."""
        from napari_4dstem.sample import make_sample

        self.sample_btn.setEnabled(False)
        return self.session.workers.start(make_sample, owner=self, connect={
            "returned": guarded(self, lambda ds: self.session.set_dataset(ds)),
            "finished": guarded(self, lambda: self.sample_btn.setEnabled(True))})

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
            notify_error(e)
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
            notify_error(e)

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
            notify_error(e)
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
            notify_error(e)
        return None




def _factor_pair(n: int) -> str:
    """The most square ``a, b`` with ``a * b == n`` (a suggestion for a frame stack's scan shape)."""
    a = int(n ** 0.5)
    while a > 1 and n % a:
        a -= 1
    return f"{n // a}, {a}"
