"""Bad input: every case raises ReaderError or DataError naming the file; nothing is written beside it."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from napari_4dstem import DataError, ReaderError
from napari_4dstem.io import load


def _raises(path, cls=ReaderError, match=None, **options):
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(cls, match=match) as e:
        load(path, **options)
    assert path.name in str(e.value), str(e.value)
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written beside the source
    return str(e.value)


def test_unknown_extension_lists_supported(tmp_path):
    p = tmp_path / "scan.xyz"
    p.write_bytes(b"1234")
    msg = _raises(p, match="unknown file type '.xyz'")
    assert ".npy" in msg and ".mib" in msg and ".h5" in msg


def test_missing_file(tmp_path):
    _raises(tmp_path / "nothere.npy", match="not found")


def test_directory_that_is_not_zarr(tmp_path):
    d = tmp_path / "folder"
    d.mkdir()
    (d / "a.txt").write_text("x")
    _raises(d, match="not a zarr store")


@pytest.mark.parametrize("ext", [".npy", ".npz", ".h5", ".mib", ".emd", ".dm4"])
def test_empty_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.touch()
    _raises(p, match=r"empty \(0 bytes\)")


def test_truncated_npy(tmp_path):
    p = tmp_path / "cut.npy"
    np.save(p, np.zeros((4, 4, 8, 8), np.float32))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _raises(p, match="truncated")


def test_truncated_npz_member(tmp_path):
    p = tmp_path / "cut.npz"
    np.savez(p, a=np.zeros((4, 4, 8, 8), np.float32))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _raises(p)  # the zip directory at the end is gone


def test_truncated_hdf5(tmp_path):
    p = tmp_path / "cut.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.ones((8, 8, 16, 16), np.float32)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _raises(p, match="truncated")


def test_corrupt_hdf5(tmp_path):
    p = tmp_path / "junk.h5"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    _raises(p, match="not an HDF5 file")


def test_truncated_mib(shared_data, tmp_path):
    src = shared_data / "real" / "merlin-4x2-real" / "001_4x2_6bit.mib"
    if not src.exists():
        pytest.skip(f"{src} not found")
    p = tmp_path / src.name
    p.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    shutil.copy(src.with_suffix(".hdr"), p.with_suffix(".hdr"))
    _raises(p, match="truncated: it holds 4 complete frames and the header says 8")
    ds = load(p, nav_shape=(1, 4))  # the complete frames can still be read on purpose
    assert ds.shape == (1, 4, 256, 256)
    assert "truncated" in " ".join(ds.provenance.notes)


def test_mib_cut_mid_frame_without_header(shared_data, tmp_path):
    src = shared_data / "real" / "merlin-4x2-real" / "001_4x2_6bit.mib"
    if not src.exists():
        pytest.skip(f"{src} not found")
    p = tmp_path / "cut.mib"
    p.write_bytes(src.read_bytes()[:-1000])
    _raises(p, match="truncated.*bytes of a frame are left over")


def test_not_a_mib(tmp_path):
    p = tmp_path / "fake.mib"
    p.write_bytes(b"hello world" * 100)
    _raises(p, match="MQ1")


@pytest.mark.parametrize("shape,options,match", [
    ((8, 8), {}, "2-D"),
    ((6, 8, 8), {}, "3-D stack of 6 frames"),
    ((6, 8, 8), {"nav_shape": (4, 2)}, r"8 probe positions but the file has 6 frames"),
    ((2, 2, 3, 4, 4), {}, "5-D"),
    ((2, 3, 4, 4), {"cube": 0}, "not 5-D"),
    ((2, 3, 4, 4), {"nav_shape": (5, 1)}, "5 probe positions but the file has 6 frames"),
])
def test_shapes_that_need_an_option(tmp_path, shape, options, match):
    p = tmp_path / "arr.npy"
    np.save(p, np.zeros(shape, np.uint8))
    _raises(p, match=match, **options)


def test_4d_nav_shape_reshapes_the_scan(tmp_path):
    p = tmp_path / "arr.npy"
    a = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    np.save(p, a)
    np.testing.assert_array_equal(load(p, nav_shape=(3, 2)).rows(0, 3), a.reshape(3, 2, 2, 2))


def test_bad_options(tmp_path):
    p = tmp_path / "arr.npy"
    np.save(p, np.zeros((2, 2, 2, 2)))
    _raises(p, match="unknown option", navshape=(2, 2))
    _raises(p, match="two positive integers", nav_shape=(2, 0))
    _raises(p, match="nan_policy", nan_policy="warn")


def test_nan_is_a_data_error(tmp_path):
    p = tmp_path / "nan.npy"
    a = np.zeros((5, 2, 3, 3), np.float64)
    a[0, 0, 1, 1] = np.nan
    np.save(p, a)
    _raises(p, DataError, match="1 NaN or Inf")


def test_nan_outside_the_sample_is_left_to_the_analyses(tmp_path):
    # documented: only the first/middle/last scan rows are checked at load
    p = tmp_path / "nan.npy"
    a = np.zeros((5, 2, 3, 3), np.float32)
    a[1, 0, 0, 0] = np.nan
    np.save(p, a)
    assert load(p).shape == (5, 2, 3, 3)


def test_object_npy(tmp_path):
    p = tmp_path / "obj.npy"
    np.save(p, np.array([None, 1], dtype=object), allow_pickle=True)
    _raises(p, match="Python objects")


def test_hdf5_without_4d_dataset(tmp_path):
    p = tmp_path / "img.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.zeros((4, 4))
        f["b"] = np.zeros((4, 4, 4))
    _raises(p, match="no 4-D dataset.*'a'.*'b'")
    _raises(p, match="no dataset 'c'", key="c")


def test_npz_bad_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"PK not really a zip" * 10)
    _raises(p, match="could not read")


@pytest.mark.parametrize("name,match", [
    ("junk.dm4", "could not read"),
    ("junk.dm3", "could not read"),
    ("junk.blo", "not a NanoMegas blockfile"),
    ("junk.hspy", "could not read"),
    ("junk.xml", "could not read"),
])
def test_junk_in_rosettasciio_formats(tmp_path, name, match):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    _raises(p, match=match)


def test_fake_velox_emd_is_sent_to_rosettasciio(tmp_path):
    p = tmp_path / "velox.emd"
    with h5py.File(p, "w") as f:  # Velox layout without content
        f.create_group("Data")
        f["Version"] = np.bytes_('{"format": "Velox"}')
    _raises(p, match="could not read")


def test_arina_scan_metadata_that_does_not_match(shared_data, tmp_path):
    src = shared_data / "real" / "arina-empty"
    if not src.exists():
        pytest.skip(f"{src} not found")
    for f in src.glob("*.h5"):
        shutil.copy(f, tmp_path / f.name)
    with h5py.File(tmp_path / "test_00.h5", "a") as f:
        f["STEM Metadata"].attrs["NumPixelsX"] = np.array([5])
    p = tmp_path / "test_00_master.h5"
    _raises(p, match=r"the file's scan shape \(4, 5\) holds 20 probe positions but the file has 16 frames")
    assert load(p, nav_shape=(4, 4)).shape == (4, 4, 192, 192)
    (tmp_path / "test_00_data_000001.h5").unlink()
    _raises(p, match="is missing")
