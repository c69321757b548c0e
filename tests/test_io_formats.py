"""Formats read through rosettasciio that issue 13 added (DE .mrc, TopSpin .app5, TVIPS), and the reader fixes:
axis order, both-or-neither calibration, beam energy of stacks, provenance of the file holding the frames."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _formats import write_de_mrc, write_topspin, write_tvips  # noqa: E402

from napari_4dstem import load  # noqa: E402
from napari_4dstem.errors import ReaderError  # noqa: E402
from napari_4dstem.io import units  # noqa: E402


def _rsciio_calibration(axes):
    """What rosettasciio reports, in the project's units (independent of the reader's code path)."""
    ay, ax, qy, qx = sorted(axes, key=lambda a: a["index_in_array"])[-4:]
    step = tuple(units.length(a["scale"], a["units"])[0] for a in (ay, ax))
    pixel = tuple(units.reciprocal(a["scale"], a["units"])[0] for a in (qy, qx))
    return step, pixel, tuple(int(a["size"]) for a in (ay, ax, qy, qx))


def test_de_mrc_4d_scan_with_info_file(tmp_path):
    import rsciio.mrc

    d = (np.random.default_rng(0).random((3, 4, 8, 10)) * 1000).astype(np.uint16)
    p = write_de_mrc(tmp_path, d)
    ds = load(p)
    assert ds.shape == (3, 4, 8, 10) and ds.provenance.reader == "de-mrc"
    assert hasattr(ds.data, "compute")  # lazy
    np.testing.assert_array_equal(ds.rows(0, 3), d)
    ref = rsciio.mrc.file_reader(str(p), lazy=True)[0]
    step, pixel, shape = _rsciio_calibration(ref["axes"])
    assert shape == ds.shape
    assert ds.calibration.scan_step == pytest.approx(step) and ds.calibration.scan_unit == "nm"
    assert ds.calibration.detector_pixel == pytest.approx(pixel) and ds.calibration.detector_unit == "1/Å"
    assert str((tmp_path / "20240102_00042_info.txt").resolve()) in ds.provenance.files
    assert any("Specimen Pixel Size X (nanometers) = 0.25" in n for n in ds.provenance.notes)


def test_plain_mrc_is_a_stack_needing_nav_shape(tmp_path):
    d = np.ones((3, 4, 8, 10), np.uint16)
    p = write_de_mrc(tmp_path, d, name="20240102_00043")
    (tmp_path / "20240102_00043_info.txt").unlink()
    with pytest.raises(ReaderError, match="nav_shape"):
        load(p)
    assert load(p, nav_shape=(4, 3)).shape == (4, 3, 8, 10)


def test_topspin_app5(tmp_path):
    import rsciio.topspin

    d = np.random.default_rng(1).random((3, 4, 8, 10)).astype(np.float32)
    p = write_topspin(tmp_path / "scan.app5", d)
    ds = load(p)
    assert ds.shape == (3, 4, 8, 10) and ds.provenance.reader == "topspin"
    assert not isinstance(ds.data, np.ndarray) and any("memory-mapped" in n for n in ds.provenance.notes)  # lazy
    np.testing.assert_array_equal(ds.rows(0, 3), d)
    step, pixel, shape = _rsciio_calibration(rsciio.topspin.file_reader(str(p), show_progressbar=False)[0]["axes"])
    assert shape == ds.shape
    assert ds.calibration.scan_step == pytest.approx(step) and step == pytest.approx((2.0, 3.0))
    assert ds.calibration.detector_pixel == pytest.approx(pixel) and pixel == pytest.approx((0.5, 0.25))
    assert ds.calibration.detector_unit == "mrad"


def test_topspin_lazy_reads_only_the_rows_asked_for(tmp_path):
    import dask.array as da

    d = np.random.default_rng(3).random((4, 3, 6, 5)).astype(np.float32)
    ds = load(write_topspin(tmp_path / "scan.app5", d, step_m=(1e-9, 1e-9)))
    np.testing.assert_array_equal(ds.rows(1, 3), d[1:3])
    np.testing.assert_array_equal(ds.frame(2, 1), d[2, 1])
    np.testing.assert_array_equal(ds.data[1:3, 0, 2:4, ::2], d[1:3, 0, 2:4, ::2])
    np.testing.assert_array_equal(da.from_array(ds.data, chunks=(2, -1, -1, -1)).compute(), d)
    assert load(tmp_path / "scan.app5", nav_shape=(2, 6)).rows(0, 2).reshape(12, 6, 5).tolist() == \
        d.reshape(12, 6, 5).tolist()


def test_tvips_with_nav_shape(tmp_path):
    import rsciio.tvips

    frames = (np.random.default_rng(2).random((12, 8, 8)) * 100).astype(np.uint16)
    p = write_tvips(tmp_path, frames)
    with pytest.raises(ReaderError, match="nav_shape"):
        load(p)
    ds = load(p, nav_shape=(3, 4))
    assert ds.shape == (3, 4, 8, 8) and hasattr(ds.data, "compute")
    np.testing.assert_array_equal(ds.rows(0, 3).reshape(12, 8, 8), frames)
    ref = rsciio.tvips.file_reader(str(p), lazy=True, scan_shape=(3, 4))[0]
    step, pixel, shape = _rsciio_calibration(ref["axes"])
    assert shape == ds.shape and ds.calibration.detector_pixel == pytest.approx(pixel)
    with pytest.raises(ReaderError, match="_000.tvips"):
        load(_copy(p, tmp_path / "other.tvips"))


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _hspy(path: Path, data, axes, metadata=None) -> Path:
    from rsciio.hspy import file_writer

    md = {"General": {"title": "t", "original_filename": ""}, "Signal": {"signal_type": ""}}
    md.update(metadata or {})
    sig = {"data": data, "axes": axes, "metadata": md, "original_metadata": {}, "attributes": {"_lazy": False},
           "tmp_parameters": {}, "package_info": {"package": "", "package_version": ""}, "learning_results": {},
           "models": {}}
    file_writer(str(path), sig, show_progressbar=False)
    return path


def _ax(name, size, scale, unit, nav, i):
    return {"name": name, "size": size, "scale": scale, "offset": 0.0, "units": unit, "navigate": nav,
            "index_in_array": i}


def test_cube_with_depth_and_probe_angle_axes_is_refused(tmp_path):
    d = np.ones((2, 3, 5, 5), np.float32)
    axes = [_ax("depth", 2, 2.715, "Å", True, 0), _ax("probe angle", 3, 1.0, "mrad", True, 1),
            _ax("R_y", 5, 0.5, "nm", False, 2), _ax("R_x", 5, 0.5, "nm", False, 3)]
    with pytest.raises(ReaderError, match=r"not \(scan, scan, detector, detector\)"):
        load(_hspy(tmp_path / "c.hspy", d, axes))
    assert load(tmp_path / "c.hspy", force_axes=True).shape == (2, 3, 5, 5)


def test_3d_array_of_scan_scan_bins_is_not_a_stack(tmp_path):
    d = np.ones((4, 3, 5), np.float32)  # Prismatic 3-D output: (R_x, R_y, angle bins)
    axes = [_ax("R_x", 4, 0.5, "nm", True, 0), _ax("R_y", 3, 0.5, "nm", True, 1), _ax("bins", 5, 1.0, "mrad", False, 2)]
    with pytest.raises(ReaderError, match="not \\(frames, detector, detector\\)"):
        load(_hspy(tmp_path / "b.hspy", d, axes), nav_shape=(2, 2))


def test_half_known_scan_step_is_unknown():
    assert units.pair((2.715, "Å"), (None, None)) == ((None, None), None)
    assert units.pair((2.0, "Å"), (3.0, "Å")) == ((2.0, 3.0), "Å")


def test_beam_energy_kept_for_a_stack_with_nav_shape(tmp_path):
    d = np.ones((6, 5, 5), np.float32)
    axes = [_ax("frames", 6, 1.0, "", True, 0), _ax("ky", 5, 0.1, "1/nm", False, 1),
            _ax("kx", 5, 0.1, "1/nm", False, 2)]
    p = _hspy(tmp_path / "s.hspy", d, axes, {"Acquisition_instrument": {"TEM": {"beam_energy": 300.0}}})
    ds = load(p, nav_shape=(2, 3))
    assert ds.calibration.beam_energy_ev == 300_000.0
    assert ds.calibration.detector_pixel == pytest.approx((0.01, 0.01)) and ds.calibration.scan_step == (None, None)


def test_empad_provenance_hashes_the_raw_file(tmp_path):
    from napari_4dstem.results import Results

    frames = np.random.default_rng(1).random((2, 4, 130, 128), dtype=np.float32)
    frames.tofile(tmp_path / "scan_x4_y2.raw")
    (tmp_path / "scan.xml").write_text('<root><raw_file filename="scan_x4_y2.raw"/><pix_x>4</pix_x><pix_y>2</pix_y>'
                                       "</root>")
    ds = load(tmp_path / "scan.xml")
    assert ds.provenance.data_file == str((tmp_path / "scan_x4_y2.raw").resolve())
    r = Results.from_analysis(ds)
    head = (tmp_path / "scan_x4_y2.raw").read_bytes()[: 2**20]
    assert r.provenance["header_sha256"] == hashlib.sha256(head).hexdigest()
    assert r.provenance["size"] == (tmp_path / "scan_x4_y2.raw").stat().st_size


def test_merlin_opened_by_its_header_hashes_the_mib(shared_data, tmp_path):
    import shutil

    from napari_4dstem.results import Results

    src = shared_data / "real" / "merlin-4x2-real" / "001_4x2_6bit.mib"
    shutil.copy(src, tmp_path)
    shutil.copy(src.with_suffix(".hdr"), tmp_path)
    ds = load(tmp_path / "001_4x2_6bit.hdr")
    r = Results.from_analysis(ds)
    assert r.provenance["header_sha256"] == hashlib.sha256(src.read_bytes()[: 2**20]).hexdigest()
    assert {Path(f["path"]).name for f in r.provenance["files"]} == {"001_4x2_6bit.mib", "001_4x2_6bit.hdr"}


def test_missing_optional_package_is_named(tmp_path, monkeypatch):
    import builtins

    d = np.ones((2, 2, 5, 5), np.float32)
    axes = [_ax("y", 2, 1.0, "nm", True, 0), _ax("x", 2, 1.0, "nm", True, 1),
            _ax("ky", 5, 0.1, "1/nm", False, 2), _ax("kx", 5, 0.1, "1/nm", False, 3)]
    p = _hspy(tmp_path / "a.hspy", d, axes)
    real = builtins.__import__

    def no_hspy(name, *a, **k):
        if name == "rsciio.hspy" or name.startswith("rsciio.hspy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_hspy)
    monkeypatch.delitem(sys.modules, "rsciio.hspy", raising=False)
    monkeypatch.setattr("importlib.import_module", lambda name, *a: no_hspy(name))
    with pytest.raises(ReaderError, match="optional package 'rsciio.hspy'"):
        load(p)
