"""Readers on files written here (npy, npz, HDF5, zarr, hspy), compared value by value with what was written."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_4dstem import DataError, ReaderError
from napari_4dstem.io import load, units
from napari_4dstem.io.via_rsciio import nav_from_name


@pytest.fixture
def cube():
    rng = np.random.default_rng(0)
    return rng.integers(0, 1000, size=(3, 4, 5, 6)).astype(np.uint16)


def test_npy_is_memmap_not_in_ram(tmp_path, cube):
    p = tmp_path / "scan.npy"
    np.save(p, cube)
    ds = load(p)
    assert isinstance(ds.data, np.memmap) and ds.data.mode == "r"
    assert ds.name == "scan" and ds.provenance.reader == "npy"
    assert ds.provenance.original_shape == (3, 4, 5, 6) and ds.provenance.original_dtype == "uint16"
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    assert ds.calibration.scan_step == (None, None)  # nothing invented


def test_npy_3d_stack_with_nav_shape_stays_memmap(tmp_path, cube):
    p = tmp_path / "stack.npy"
    np.save(p, cube.reshape(12, 5, 6))
    ds = load(p, nav_shape=(3, 4))
    assert isinstance(ds.data, np.memmap)
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    assert ds.provenance.original_shape == (12, 5, 6)
    assert ds.provenance.options == {"nav_shape": [3, 4]}


def test_npy_5d_cube(tmp_path, cube):
    p = tmp_path / "five.npy"
    np.save(p, np.stack([cube, cube + 1]))
    np.testing.assert_array_equal(load(p, cube=1).rows(0, 3), cube + 1)


def test_lazy_false_reads_into_memory(tmp_path, cube):
    p = tmp_path / "scan.npy"
    np.save(p, cube)
    ds = load(p, lazy=False)
    assert type(ds.data) is np.ndarray
    np.testing.assert_array_equal(ds.data, cube)


def test_npz_uncompressed_is_memmapped_and_key_picks(tmp_path, cube):
    p = tmp_path / "two.npz"
    np.savez(p, a=cube, b=cube[::-1].copy(), note=np.arange(3))
    ds = load(p, key="b")
    assert isinstance(ds.data, np.memmap)
    np.testing.assert_array_equal(ds.rows(0, 3), cube[::-1])
    with pytest.raises(ReaderError, match=r"'a' \(3, 4, 5, 6\).*'b'.*'note'"):
        load(p)
    with pytest.raises(ReaderError, match="no array 'c'"):
        load(p, key="c")


def test_npz_single_4d_array_is_picked_and_compressed_loads(tmp_path, cube):
    p = tmp_path / "one.npz"
    np.savez_compressed(p, data=cube, mask=np.ones((5, 6), bool))
    ds = load(p)
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    assert "compressed" in " ".join(ds.provenance.notes)


def test_npz_fortran_order(tmp_path, cube):
    p = tmp_path / "f.npz"
    np.savez(p, x=np.asfortranarray(cube))
    np.testing.assert_array_equal(load(p).rows(0, 3), cube)


def test_hdf5_generic_key_and_autopick(tmp_path, cube):
    p = tmp_path / "g.h5"
    with h5py.File(p, "w") as f:
        f["raw/frames"] = cube
        f["aux/image"] = np.zeros((3, 4))
    ds = load(p)
    assert isinstance(ds.data, h5py.Dataset) and ds.data.file.mode == "r"
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    ds.close()
    with h5py.File(p, "a") as f:
        f["other"] = cube + 1
    with pytest.raises(ReaderError, match=r"2 4-D datasets.*'other'.*'raw/frames'"):
        load(p)
    ds = load(p, key="other")
    np.testing.assert_array_equal(ds.rows(0, 3), cube + 1)
    ds.close()


def test_hdf5_3d_stack_with_nav_shape(tmp_path, cube):
    p = tmp_path / "s.hdf5"
    with h5py.File(p, "w") as f:
        f.create_dataset("frames", data=cube.reshape(12, 5, 6), chunks=(1, 5, 6))
    ds = load(p, nav_shape=(3, 4))
    assert hasattr(ds.data, "dask")
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    np.testing.assert_array_equal(ds.frame(2, 1), cube[2, 1])


def test_hdf5_5d_cube_is_lazy(tmp_path, cube):
    p = tmp_path / "five.h5"
    with h5py.File(p, "w") as f:
        f["series"] = np.stack([cube, cube * 2])
    ds = load(p, cube=1)
    assert hasattr(ds.data, "dask")
    np.testing.assert_array_equal(ds.rows(1, 3), cube[1:3] * 2)
    assert ds.provenance.original_shape == (2, 3, 4, 5, 6)


def test_zarr_directory_and_zip(tmp_path, cube):
    import zarr

    d = tmp_path / "scan.zarr"
    g = zarr.open_group(str(d), mode="w")
    g.create_array("inner/data", shape=cube.shape, dtype=cube.dtype, chunks=(1, 4, 5, 6))[...] = cube
    ds = load(d)
    assert ds.name == "scan" and ds.provenance.reader == "zarr"
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    np.testing.assert_array_equal(load(d, key="inner/data").frame(1, 2), cube[1, 2])

    z = tmp_path / "scan.zarr.zip"
    store = zarr.storage.ZipStore(str(z), mode="w")
    zarr.create_array(store=store, shape=cube.shape, dtype=cube.dtype, chunks=(1, 4, 5, 6))[...] = cube
    store.close()
    ds = load(z)
    assert ds.name == "scan"
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    ds.close()


def test_hspy_via_rosettasciio(tmp_path, cube):
    hspy = pytest.importorskip("rsciio.hspy")
    axes = [dict(name="y", size=3, scale=0.5, offset=0.0, units="nm", navigate=True),
            dict(name="x", size=4, scale=0.25, offset=0.0, units="nm", navigate=True),
            dict(name="ky", size=5, scale=0.2, offset=-0.4, units="1/nm", navigate=False),
            dict(name="kx", size=6, scale=1.5, offset=0.0, units="mrad", navigate=False)]
    sig = dict(data=cube, axes=axes, original_metadata={}, attributes={"_lazy": False}, tmp_parameters={},
               learning_results={}, models={}, package_info={"name": "test", "version": "0"},
               metadata={"General": {"title": "t"}, "Signal": {"signal_type": ""},
                         "Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "convergence_angle": 21.0}}})
    p = tmp_path / "s.hspy"
    hspy.file_writer(str(p), sig)
    ds = load(p)
    assert ds.provenance.reader == "hspy"
    old = tmp_path / "old.hdf5"  # HyperSpy's former extension: recognised by content
    old.write_bytes(p.read_bytes())
    assert load(old).provenance.reader == "hspy"
    np.testing.assert_array_equal(ds.rows(0, 3), cube)
    c = ds.calibration
    assert c.scan_step == (0.5, 0.25) and c.scan_unit == "nm"
    # 1/nm and mrad on the two detector axes disagree: unknown rather than half right
    assert c.detector_pixel == (None, None) and c.detector_unit is None
    assert c.beam_energy_ev == 200000.0 and c.convergence_semiangle_mrad == 21.0


def test_nan_policy(tmp_path):
    a = np.ones((3, 2, 4, 4), np.float32)
    a[2, 1, 0, 0] = np.nan
    p = tmp_path / "nan.npy"
    np.save(p, a)
    with pytest.raises(DataError, match="NaN") as e:
        load(p)
    assert "nan.npy" in str(e.value)
    ds = load(p, nan_policy="ignore")
    assert "NaN" in " ".join(ds.provenance.notes)
    a[2, 1, 0, 0] = np.inf
    np.save(p, a)
    with pytest.raises(DataError):
        load(p)


@pytest.mark.parametrize("name,n,expected", [
    ("001_4x2_6bit", 8, (2, 4)),
    ("002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y", 8, (2, 4)),
    ("scan_256x128_roi", 256 * 128, (128, 256)),
    ("scan_256x128_roi", 100, None),
])
def test_nav_from_name(name, n, expected):
    assert nav_from_name(name, n) == expected


def test_units():
    assert units.reciprocal(0.5, "1 / nm") == pytest.approx((0.05, "1/Å"))
    assert units.reciprocal(0.002, "rad") == pytest.approx((2.0, "mrad"))
    assert units.reciprocal(0.1, "A^-1") == (0.1, "1/Å")
    assert units.reciprocal(1.0, "") == (None, None)
    assert units.reciprocal(1.0, "<undefined>") == (None, None)
    assert units.length(0.139, "nm") == (0.139, "nm")
    assert units.length(25.0, "pm") == pytest.approx((0.25, "Å"))
    assert units.length(1.0, "px") == (None, None)


def test_empad_xml_and_raw(tmp_path):
    pytest.importorskip("rsciio.empad")
    rng = np.random.default_rng(1)
    frames = rng.random((2, 4, 130, 128), dtype=np.float32)  # 128 x 128 pixels + 2 footer rows
    frames.tofile(tmp_path / "scan_x4_y2.raw")
    (tmp_path / "scan.xml").write_text(
        '<root><raw_file filename="scan_x4_y2.raw"/><pix_x>4</pix_x><pix_y>2</pix_y>'
        "<iom_measurements><calibrated_pixelsize>1e-10</calibrated_pixelsize></iom_measurements></root>")
    for name in ("scan.xml", "scan_x4_y2.raw"):
        ds = load(tmp_path / name)
        assert ds.shape == (2, 4, 128, 128) and ds.provenance.reader == "empad"
        np.testing.assert_array_equal(ds.rows(0, 2), frames[:, :, :128, :])
        assert ds.calibration.detector_pixel == pytest.approx((0.01, 0.01)) and ds.calibration.detector_unit == "1/Å"
        assert ds.calibration.detector_center is None


def test_blockfile_via_rosettasciio(tmp_path):
    blo = pytest.importorskip("rsciio.blockfile")
    d = (np.random.default_rng(2).random((2, 3, 8, 8)) * 200).astype(np.uint8)
    axes = [dict(name="y", size=2, scale=1.5, offset=0, units="nm", navigate=True),
            dict(name="x", size=3, scale=1.5, offset=0, units="nm", navigate=True),
            dict(name="ky", size=8, scale=0.1, offset=0, units="cm", navigate=False),
            dict(name="kx", size=8, scale=0.1, offset=0, units="cm", navigate=False)]
    sig = dict(data=d, axes=axes, metadata={"General": {"title": "t"}, "Signal": {"signal_type": ""}},
               original_metadata={}, attributes={"_lazy": False})
    p = tmp_path / "b.blo"
    blo.file_writer(str(p), sig, show_progressbar=False)
    ds = load(p)
    np.testing.assert_array_equal(ds.rows(0, 2), d)
    assert ds.calibration.scan_step == (1.5, 1.5) and ds.calibration.scan_unit == "nm"
    assert ds.calibration.detector_pixel == (None, None)  # 'cm' on the screen is not an angle
    assert ds.calibration.beam_energy_ev is None  # the header's 0 means unknown
    cut = tmp_path / "cut.blo"
    cut.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ReaderError, match="truncated") as e:
        load(cut)
    assert "cut.blo" in str(e.value)
