"""Fuzzing the readers: random, truncated and corrupted files only ever raise the project's errors.

Every example goes through ``load()`` and, when that succeeds, reads the first and last frames and all
rows, so damage that only shows when the data are read is caught too. Examples are bounded so the
module runs in a few seconds.
"""
from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_4dstem import FourDSTEMError
from napari_4dstem.io import load

SHARED_DATA = Path(__import__("os").environ.get("NAPARI_4DSTEM_SHARED_DATA",
                                                Path(__file__).resolve().parents[2] / "shared" / "data"))

EXTS = [".npy", ".npz", ".h5", ".hdf5", ".emd", ".mib", ".hdr", ".dm4", ".blo", ".hspy", ".zip", ".xml",
        ".raw", ".zspy", ".nxs"]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_DIR = Path(tempfile.mkdtemp(prefix="napari4dstem-fuzz-"))


def teardown_module(module):
    shutil.rmtree(_DIR, ignore_errors=True)


def exercise(path: Path, **options) -> None:
    """load + read everything; only FourDSTEMError may come out."""
    try:
        ds = load(path, **options)
    except FourDSTEMError as e:
        assert str(e)  # a message to show
        return
    try:
        sy, sx = ds.scan_shape
        ds.frame(0, 0)
        ds.frame(sy - 1, sx - 1)
        for _ in ds.iter_blocks(2**20):
            pass
    except FourDSTEMError:
        pass
    finally:
        ds.close()


def _write(name: str, data: bytes) -> Path:
    p = _DIR / name
    p.write_bytes(data)
    return p


def _valid_npy() -> bytes:
    b = io.BytesIO()
    np.save(b, np.arange(3 * 4 * 6 * 6, dtype=np.uint16).reshape(3, 4, 6, 6))
    return b.getvalue()


def _valid_npz() -> bytes:
    b = io.BytesIO()
    np.savez(b, data=np.ones((2, 3, 5, 5), np.float32))
    return b.getvalue()


def _valid_h5() -> bytes:
    p = _DIR / "valid_src.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("scan/data", data=np.ones((3, 3, 8, 8), np.uint8), chunks=(1, 3, 8, 8), compression="gzip")
    return p.read_bytes()


VALID = {".npy": _valid_npy, ".npz": _valid_npz, ".h5": _valid_h5}


def _shared(rel: str) -> bytes | None:
    p = SHARED_DATA / rel
    return p.read_bytes() if p.is_file() else None


@settings(FUZZ, max_examples=150)
@given(ext=st.sampled_from(EXTS), data=st.binary(max_size=1500))
def test_random_bytes_never_crash(ext, data):
    exercise(_write(f"random{ext}", data))


@FUZZ
@given(ext=st.sampled_from([".npy", ".h5"]), magic=st.sampled_from([b"\x93NUMPY\x01\x00", b"\x89HDF\r\n\x1a\n"]),
       data=st.binary(max_size=600))
def test_right_magic_wrong_body(ext, magic, data):
    exercise(_write(f"magic{ext}", magic + data))


@pytest.mark.parametrize("ext", sorted(VALID))
def test_truncated_valid_files(ext):
    valid = VALID[ext]()

    @FUZZ
    @given(cut=st.integers(0, len(valid) - 1))
    def run(cut):
        exercise(_write(f"cut{ext}", valid[:cut]))

    run()


@pytest.mark.parametrize("ext", sorted(VALID))
def test_corrupted_headers(ext):
    valid = VALID[ext]()

    @FUZZ
    @given(flips=st.lists(st.tuples(st.integers(0, min(len(valid), 512) - 1), st.integers(0, 255)), min_size=1,
                          max_size=6))
    def run(flips):
        b = bytearray(valid)
        for i, v in flips:
            b[i] = v
        exercise(_write(f"flip{ext}", bytes(b)))

    run()


MIB = "real/merlin-4x2-real/001_4x2_6bit.mib"


def test_truncated_and_corrupted_merlin():
    valid = _shared(MIB)
    if valid is None:
        pytest.skip(f"shared data {SHARED_DATA / MIB} not found")
    hdr = (SHARED_DATA / MIB).with_suffix(".hdr").read_bytes()

    @FUZZ
    @given(cut=st.integers(0, len(valid) - 1), flips=st.lists(st.tuples(st.integers(0, 383), st.integers(0, 255)),
                                                              max_size=4))
    def run(cut, flips):
        b = bytearray(valid[:cut])
        for i, v in flips:
            if i < len(b):
                b[i] = v
        _write("001_4x2_6bit.hdr", hdr)
        exercise(_write("001_4x2_6bit.mib", bytes(b)))

    run()


_TOKENS = ["analyze", "info", "export", "--out", "-o", "--config", "--epochs", "--latent-dim", "--fast",
           "--faithful", "--seed", "--key", "--nav-shape", "--cube", "--overwrite", "--no-rrvae", "--to",
           "--format", "--maps", "--json", "-q", "0", "-3", "2,2", "x", "", "ö/ä", "nothere.npy", "CORRUPT",
           "OUT", "tif,jpg"]


@settings(FUZZ, max_examples=60)
@given(argv=st.lists(st.sampled_from(_TOKENS), max_size=8))
def test_random_command_lines_never_give_a_traceback(argv):
    """Any command line: exit 0, 1 or 2 with a message, never a traceback (inputs are missing or corrupt)."""
    import contextlib

    from napari_4dstem.cli import main

    corrupt = _write("corrupt.npy", b"\x93NUMPY\x01\x00garbage")
    out = _DIR / "cli_out.h5"
    out.unlink(missing_ok=True)
    argv = [str(corrupt) if a == "CORRUPT" else str(out) if a == "OUT" else a for a in argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage errors (2) and --help (0)
            rc = e.code
    assert rc in (0, 1, 2), (argv, rc, err.getvalue())
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    if rc == 1:
        assert "napari-4dstem: error:" in err.getvalue()
        assert "unexpected" not in err.getvalue(), (argv, err.getvalue())  # a project error, not a stray one
    assert not out.exists() or rc == 0
