"""Readers on the real detector files and simulations in ../shared/data (skipped when absent).

References are independent of our readers: h5py on the file itself, the raw .mib bytes, the folder READMEs.
"""
from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from napari_4dstem import ReaderError
from napari_4dstem.io import load

REAL = "real"


def _real(shared_data, rel):
    p = shared_data / REAL / rel
    if not p.exists():
        pytest.skip(f"{p} not found")
    return p


def _mib_frames(path, dtype, shape):
    """Frames straight from the bytes: 384-byte header + big-endian pixels, file order."""
    frame = np.dtype([("h", "S384"), ("d", dtype, shape)])
    return np.fromfile(path, dtype=frame)["d"]


MERLIN = [
    ("merlin-4x2-real/001_4x2_6bit.mib", (2, 4, 256, 256), "uint8"),
    ("merlin-4x2-real/002_4x2_6bit_roi128.mib", (2, 4, 128, 256), "uint8"),
    ("merlin-sigroi-hotpixel/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib", (2, 4, 128, 256), ">u2"),
    ("merlin-sigroi-hotpixel/003_merlin_test_roi_sig256x64_nav4x2_hot_pixel_52x_39y.mib", (2, 4, 64, 256), ">u2"),
]


@pytest.mark.parametrize("rel,shape,dtype", MERLIN)
def test_merlin_shape_dtype_and_values(shared_data, rel, shape, dtype):
    p = _real(shared_data, rel)
    ds = load(p)
    assert ds.shape == shape
    assert ds.dtype == np.dtype(dtype)
    assert ds.provenance.reader == "merlin" and ds.name == p.stem
    assert hasattr(ds.data, "dask")  # stays lazy
    ref = _mib_frames(p, dtype if dtype != "uint8" else "u1", shape[2:]).reshape(shape)
    np.testing.assert_array_equal(ds.rows(0, shape[0]), ref)
    assert ds.calibration.scan_step == (None, None) and ds.calibration.detector_pixel == (None, None)


@pytest.mark.parametrize("rel", [m[0] for m in MERLIN[2:]])
def test_merlin_hot_pixel_at_x52_y39(shared_data, rel):
    ds = load(_real(shared_data, rel))
    total = ds.rows(0, 2).astype(np.int64).sum(axis=(0, 1))
    assert np.unravel_index(np.argmax(total), total.shape) == (39, 52)
    assert ds.rows(0, 2).max() == ds.rows(0, 2)[..., 39, 52].max()


def test_merlin_scan_shape_from_file_name_and_option(shared_data):
    p = _real(shared_data, "merlin-4x2-real/001_4x2_6bit.mib")
    ds = load(p)
    assert "file name" in " ".join(ds.provenance.notes)
    alt = load(p, nav_shape=(4, 2))
    assert alt.shape == (4, 2, 256, 256)
    assert alt.provenance.options == {"nav_shape": [4, 2]}
    np.testing.assert_array_equal(alt.rows(0, 4).reshape(8, 256, 256), ds.rows(0, 2).reshape(8, 256, 256))
    with pytest.raises(ReaderError, match=r"9 probe positions.*8 frames") as e:
        load(p, nav_shape=(3, 3))
    assert p.name in str(e.value)


def test_merlin_hdr_opens_mib(shared_data):
    p = _real(shared_data, "merlin-4x2-real/002_4x2_6bit_roi128.hdr")
    assert load(p).shape == (2, 4, 128, 256)


def test_arina(shared_data):
    p = _real(shared_data, "arina-empty/test_00_master.h5")
    ds = load(p)
    assert ds.shape == (4, 4, 192, 192)
    assert ds.provenance.reader == "arina"
    assert ds.calibration.scan_step == pytest.approx((0.13915206, 0.13915206))  # nm, from test_00.h5
    assert ds.calibration.scan_unit == "nm"
    assert ds.calibration.beam_energy_ev == 300000.0
    with h5py.File(p.parent / "test_00_data_000001.h5", "r") as f:
        import hdf5plugin  # noqa: F401

        ref = f["entry/data/data"][()].reshape(4, 4, 192, 192)
    np.testing.assert_array_equal(ds.rows(0, 4), ref)
    assert load(p, nav_shape=(2, 8)).shape == (2, 8, 192, 192)


def test_py4dstem_tiny_no_transpose_and_calibration(shared_data):
    p = _real(shared_data, "py4dstem-emd-tiny/py4DSTEM_size2x3x4x5.h5")
    ds = load(p)
    assert ds.shape == (2, 3, 4, 5) and ds.dtype == np.float32
    assert isinstance(ds.data, h5py.Dataset) and ds.data.file.mode == "r"
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(ds.rows(0, 2), f["datacube_root/datacube/data"][()])
    assert ds.rows(0, 2).min() == pytest.approx(-13.1188, abs=1e-3)
    assert ds.rows(0, 2).max() == pytest.approx(2766.8955, abs=1e-3)
    c = ds.calibration
    assert c.scan_step == pytest.approx((0.126796875, 0.126796875)) and c.scan_unit == "nm"
    assert c.detector_pixel == pytest.approx((0.044251566616087125,) * 2) and c.detector_unit == "1/Å"
    assert c.flip is False and c.scan_rotation_deg is None and c.detector_center is None
    assert c.beam_energy_ev is None
    ds.close()


def test_mac4dstem_py4dstem_calibration(shared_data):
    p = _real(shared_data, "py4dstem-emd-tiny/mac4DSTEM_real_py4dstem.h5")
    ds = load(p)
    # the fixture was written by py4DSTEM from np.arange(64).reshape(2, 2, 4, 4)
    np.testing.assert_array_equal(ds.rows(0, 2), np.arange(64, dtype=np.float32).reshape(2, 2, 4, 4))
    c = ds.calibration
    assert c.scan_step == (2.5, 2.5) and c.scan_unit == "Å"
    assert c.detector_pixel == (0.0125, 0.0125) and c.detector_unit == "1/Å"
    assert c.detector_center == (31.5, 32.25)  # (qx0_mean, qy0_mean) = (det_y, det_x)
    assert c.flip is True
    assert c.scan_rotation_deg is None  # 'theta' there is the ellipse angle, not a rotation


def test_prismatic_cube(shared_data):
    p = _real(shared_data, "prismatic-si100-4d-sim/Si100_4D.emd")
    with pytest.raises(ReaderError, match=r"cube=0 \.\.\. cube=1") as e:
        load(p)
    assert p.name in str(e.value)
    ds = load(p, cube=1)
    assert ds.shape == (11, 11, 8, 8) and ds.dtype == np.float32
    assert ds.provenance.original_shape == (2, 11, 11, 8, 8)
    assert ds.provenance.options == {"cube": 1}
    with h5py.File(p, "r") as f:
        ref = f["4DSTEM_simulation/data/datacubes/CBED_array_depth0001/datacube"][()]
    np.testing.assert_array_equal(ds.rows(0, 11), ref)
    c = ds.calibration
    assert c.scan_step == pytest.approx((0.5, 0.5)) and c.scan_unit == "nm"  # as the file labels it
    assert c.detector_pixel == pytest.approx((0.018416205,) * 2) and c.detector_unit == "1/Å"  # 1/nm -> 1/Å
    assert c.beam_energy_ev == 100000.0 and c.convergence_semiangle_mrad == 30.0
    assert c.detector_center == pytest.approx((4.0, 4.0))  # q = 0 is pixel 4 of the 8
    with pytest.raises(ReaderError, match="out of range"):
        load(p, cube=2)


@pytest.mark.parametrize("key", ["clean", "noisy"])
def test_sim_npz_keys(graphene_npz, key):
    ds = load(graphene_npz, key=key)
    assert ds.shape == (64, 64, 64, 64) and ds.dtype == np.float32
    with np.load(graphene_npz) as z:
        np.testing.assert_array_equal(ds.rows(0, 64), z[key])
    assert ds.provenance.options == {"key": key} and ds.name == "graphene_pristine"


def test_sim_npz_without_key_lists_keys(graphene_npz):
    with pytest.raises(ReaderError, match="'clean'.*'noisy'") as e:
        load(graphene_npz)
    assert graphene_npz.name in str(e.value)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_loading_never_touches_the_sources(shared_data):
    real = _real(shared_data, "")
    before = _digest(real)
    opts = {"Si100_4D.emd": {"cube": 0}}
    for p in sorted(real.rglob("*")):
        if p.suffix in (".mib", ".emd") or p.name.endswith(("_master.h5", "py4dstem.h5", "x5.h5")):
            ds = load(p, **opts.get(p.name, {}))
            ds.frame(0, 0)
            ds.close()
    assert _digest(real) == before
