"""Issue 13: fail fast and clearly, no hang, no silent zeros, nothing read from outside, provenance of every file.

The one-line refusals themselves are the cases of docs/bad_inputs.md (run by test_reliability.py); here are the
behaviours a table row cannot show: no hang, what is kept, what is listed, what is removed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_4dstem import load
from napari_4dstem.cli import main
from napari_4dstem.errors import DataError, ReaderError, WriteError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _cli(*args, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "napari_4dstem.cli", *map(str, args)], env=ENV, timeout=timeout,
                          capture_output=True, text=True, **kw)


def test_fifo_is_refused_at_once_without_blocking(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    r = _cli("info", fifo, timeout=30)  # a blocking open would hit the timeout
    assert r.returncode == 1
    assert "named pipe" in r.stderr and "no results file" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_closed_stdout_exits_quietly(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((2, 2, 4, 4), np.float32))
    p = subprocess.Popen(f"{sys.executable} -m napari_4dstem.cli info {tmp_path / 's.npy'} | head -1", shell=True,
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert out.strip() == str(tmp_path / "s.npy")
    assert "Error" not in err and "unexpected" not in err, err


def test_digit_keys_stay_strings(tmp_path):
    np.savez(tmp_path / "d.npz", **{"0": np.zeros((2, 2, 4, 4)), "1": np.ones((2, 2, 4, 4))})
    assert main(["info", str(tmp_path / "d.npz"), "--key", "1"]) == 0
    assert load(tmp_path / "d.npz", key="1").rows(0, 1).max() == 1
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["7"] = np.full((2, 2, 4, 4), 7.0)
        f["8"] = np.zeros((2, 2, 4, 4))
    assert load(tmp_path / "d.h5", key="7").frame(0, 0).max() == 7


def test_zarr_missing_chunk_can_be_filled_with_a_note(tmp_path):
    import zarr

    p = tmp_path / "s.zarr"
    a = zarr.create_array(str(p), shape=(4, 2, 4, 4), chunks=(1, 2, 4, 4), dtype="f4", fill_value=0)
    a[:] = 1
    os.remove(p / "c" / "2" / "0" / "0" / "0")
    with pytest.raises(ReaderError, match="1 of the 4 chunks"):
        load(p)
    with pytest.warns(UserWarning, match="missing"):
        ds = load(p, fill_missing=True)
    assert any("fill_missing" in n for n in ds.provenance.notes)
    assert ds.rows(2, 3).max() == 0 and ds.rows(1, 2).min() == 1


def test_vds_sources_are_listed_and_the_frames_file_hashed(tmp_path):
    from napari_4dstem.results import Results

    data = np.random.default_rng(0).random((2, 2, 4, 4)).astype(np.float32)
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["x"] = data
    lay = h5py.VirtualLayout(shape=data.shape, dtype="f4")
    lay[:] = h5py.VirtualSource("src.h5", "x", shape=data.shape)
    with h5py.File(tmp_path / "vds.h5", "w") as f:
        f.create_virtual_dataset("data", lay)
    ds = load(tmp_path / "vds.h5")
    np.testing.assert_array_equal(ds.rows(0, 2), data)
    files = ds.provenance.files
    assert str((tmp_path / "src.h5").resolve()) in files and str((tmp_path / "vds.h5").resolve()) in files
    r = Results.from_analysis(ds)
    import hashlib

    assert r.provenance["header_sha256"] == hashlib.sha256((tmp_path / "src.h5").read_bytes()).hexdigest()
    assert r.provenance["data_file"] == str((tmp_path / "src.h5").resolve())


def test_external_storage_inside_the_folder_reads_from_any_working_folder(tmp_path, monkeypatch):
    data = np.arange(64, dtype=np.uint8).reshape(2, 2, 4, 4)
    data.tofile(tmp_path / "raw.bin")
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f.create_dataset("data", shape=data.shape, dtype="u1", external=[("raw.bin", 0, 64)])
    monkeypatch.chdir("/")
    ds = load(tmp_path / "e.h5")
    np.testing.assert_array_equal(ds.rows(0, 2), data)
    assert ds.provenance.data_file == str((tmp_path / "raw.bin").resolve())


def test_external_outside_allowed_only_by_option(tmp_path):
    (tmp_path / "out").mkdir()
    np.arange(64, dtype=np.uint8).tofile(tmp_path / "raw.bin")
    with h5py.File(tmp_path / "out" / "e.h5", "w") as f:
        f.create_dataset("data", shape=(2, 2, 4, 4), dtype="u1", external=[(str(tmp_path / "raw.bin"), 0, 64)])
    with pytest.raises(ReaderError, match="outside"):
        load(tmp_path / "out" / "e.h5")
    ds = load(tmp_path / "out" / "e.h5", allow_outside=True)
    assert str((tmp_path / "raw.bin").resolve()) in ds.provenance.files


def test_stale_temporary_of_a_killed_writer_is_removed_at_the_next_write(tmp_path):
    from napari_4dstem import results as res

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{res.TMP_PREFIX}{res._HOST}-{dead.pid}-{res._tag(tmp_path / 'a.h5')}-xyz123.tmp"
    stale.write_bytes(b"\0" * 1000)
    live = tmp_path / f"{res.TMP_PREFIX}{res._HOST}-1-{res._tag(tmp_path / 'b.h5')}-xyz123.tmp"  # pid 1 lives
    live.write_bytes(b"")
    res.save_results(tmp_path / "c.h5", res.Results(shape=(2, 2, 4, 4), dtype="f4"))
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.h5", live.name])


def test_a_legal_253_byte_name_is_written(tmp_path):
    from napari_4dstem.results import Results, save_results

    p = tmp_path / ("r" * 250 + ".h5")
    save_results(p, Results(shape=(2, 2, 4, 4), dtype="f4"))
    assert p.exists() and [q.name for q in tmp_path.iterdir()] == [p.name]


def test_full_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((6, 6, 8, 8)).astype(np.float32))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 1000))
    from napari_4dstem.params import check_run

    with pytest.raises(WriteError, match="not enough space"):
        check_run({}, load(tmp_path / "s.npy"), tmp_path / "r.h5")
    assert main(["analyze", str(tmp_path / "s.npy"), "--out", str(tmp_path / "r.h5"), "-q"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


def test_params_are_checked_before_the_file_is_opened(tmp_path, monkeypatch):
    import napari_4dstem.io as nio
    from napari_4dstem.pipeline import analyze

    opened = []
    monkeypatch.setattr(nio, "load", lambda *a, **k: opened.append(a))
    for bad in ({"rrvae": {"epochs": "ten"}}, {"rrvae": {"seed": 2**70}}, {"virtual": {"x": {"kind": "bf", "oter": 2}}},
                {"rrvae": {"time_limit": -5}}, {"com": {"units": "nm"}}):
        with pytest.raises(DataError, match="must be|unknown"):
            analyze(tmp_path / "s.npy", bad)
    assert opened == []


def test_register_section_checks_a_new_table():
    from napari_4dstem import params

    params.register_section("zernike_test", {"order": params.integer(1, 20)})
    try:
        params.check_params({"zernike_test": {"order": 5}})
        with pytest.raises(DataError, match=r"\[zernike_test\] order = 50: must be a whole number 1 ... 20"):
            params.check_params({"zernike_test": {"order": 50}})
        with pytest.raises(DataError, match="unknown"):
            params.check_params({"zernike_test": {"ordr": 5}})
    finally:
        del params.TABLE["zernike_test"]


def test_estimate_counts_the_preprocessed_stack():
    from napari_4dstem import Dataset4D
    from napari_4dstem.params import estimate

    ds = Dataset4D(np.zeros((10, 20, 128, 128), np.uint16))
    e = estimate(ds, {})
    assert e["preprocessed_detector"] == (64, 64) and e["preprocessed_bytes"] == 200 * 64 * 64 * 4
    e = estimate(ds, {"preprocess": {"bin_factor": 4, "crop_scan": [0, 5, 0, 10]}})
    assert e["preprocessed_detector"] == (32, 32) and e["positions"] == 50


def test_rsciio_logging_never_reaches_stdout(tmp_path):
    (tmp_path / "junk.dm4").write_bytes(np.random.default_rng(0).bytes(600))
    r = _cli("info", "--json", tmp_path / "junk.dm4", timeout=120)
    assert r.stdout == "" and r.returncode == 1


def test_cli_hints_never_show_a_flag_without_a_value():
    from napari_4dstem.cli import _cli_words

    assert _cli_words("choose one with cube=0 ... cube=3") == "choose one with --cube 0 ... --cube 3"
    assert _cli_words("a 5-D file with cube=") == "a 5-D file with --cube I"
    assert _cli_words("choose one with key=, e.g. key='a'") == "choose one with --key NAME, e.g. --key 'a'"
    assert _cli_words("or pass fill_missing=True to read") == "or pass --fill-missing to read"
    assert _cli_words("nav_shape (3, 5) holds 15 probe positions") == "--nav-shape 3,5 holds 15 probe positions"


def test_damaged_block_names_file_and_rows(tmp_path):
    import zarr

    from napari_4dstem.virtual import virtual_image

    p = tmp_path / "s.zarr"
    a = zarr.create_array(str(p), shape=(6, 4, 8, 8), chunks=(1, 4, 8, 8), dtype="f4")
    a[:] = 1
    (p / "c" / "4" / "0" / "0" / "0").write_bytes(b"junk")
    ds = load(p)
    with pytest.raises(ReaderError, match=r"scan rows? 4") as e:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            virtual_image(ds, kind="bf", outer=2, block_bytes=8 * 8 * 4 * 4)
    assert str(p) in str(e.value)


def test_permission_denied_is_named_as_such(tmp_path, monkeypatch):
    p = tmp_path / "s.npy"
    np.save(p, np.ones((2, 2, 4, 4), np.float32))
    real = os.access
    monkeypatch.setattr(os, "access", lambda f, mode: False if str(f) == str(p) else real(f, mode))
    with pytest.raises(ReaderError, match="permission denied") as e:
        load(p)
    assert "copy the file again" not in str(e.value)


def test_analyze_prints_an_estimate_before_the_first_pass(tmp_path):
    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((6, 6, 16, 16)).astype(np.float32))
    r = _cli("analyze", tmp_path / "s.npy", "--out", tmp_path / "r.h5", "--no-rrvae", timeout=120)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert "GiB of data" in first and "preprocessed stack 36 x 16 x 16" in first
    import h5py as _h5

    with _h5.File(tmp_path / "r.h5") as f:
        assert "com" in f


def test_concurrent_writer_is_refused_at_its_start(tmp_path):
    from napari_4dstem import results as res

    target = tmp_path / "r.h5"
    res.reserve_output(target)
    try:
        (reserved,) = [p for p in tmp_path.iterdir() if p.name.startswith(res.TMP_PREFIX)]
        np.save(tmp_path / "s.npy", np.random.default_rng(0).random((6, 6, 8, 8)).astype(np.float32))
        r = _cli("analyze", tmp_path / "s.npy", "--out", target, "--no-rrvae", timeout=120)
        assert r.returncode == 1 and "another napari-4dstem process" in r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([reserved.name, "s.npy"])
    finally:
        res.release_outputs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


def test_kill_9_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    import signal
    import time

    from napari_4dstem.results import Results, save_results

    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((8, 8, 16, 16)).astype(np.float32))
    p = subprocess.Popen([sys.executable, "-m", "napari_4dstem.cli", "analyze", str(tmp_path / "s.npy"), "--out",
                          str(tmp_path / "r.h5"), "--fast", "--epochs", "500", "-q"], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the run reserves its temporary file before the first pass
            if any(q.name.startswith(".n4d-") for q in tmp_path.iterdir()) or p.poll() is not None:
                break
            time.sleep(0.1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        left = [q for q in tmp_path.iterdir() if q.name.startswith(".n4d-")]
        assert len(left) == 1  # what kill -9 leaves behind
        save_results(tmp_path / "other.h5", Results(shape=(8, 8, 16, 16), dtype="float32"))
        assert sorted(q.name for q in tmp_path.iterdir()) == ["other.h5", "s.npy"]
    finally:
        if p.poll() is None:
            p.kill()
