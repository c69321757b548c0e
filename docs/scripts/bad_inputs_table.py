"""Run every bad input we know of through the readers, the steps and the CLI; write docs/bad_inputs.md.

    .venv/bin/python docs/scripts/bad_inputs_table.py            # rewrite docs/bad_inputs.md
    .venv/bin/python docs/scripts/bad_inputs_table.py --check    # only run; exit 1 if a case misbehaves

A case "misbehaves" if it is accepted silently or raises something other than the project's errors
(FourDSTEMError subclasses; for the CLI: a non-zero exit with one line and no traceback).
tests/test_reliability.py runs the same cases.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class Case:
    area: str
    what: str
    run: Callable[[Path], object]
    cli: bool = False
    expect: str = ""  # the message must contain this (case-insensitive)


@dataclass
class Outcome:
    case: Case
    kind: str  # exception class name, "exit N", "accepted" or "CRASH ..."
    message: str
    ok: bool


def _rnd(n: int) -> bytes:
    return np.random.default_rng(n).bytes(n)  # fixed bytes: the table is the same on every run


def _npy(d: Path, name: str, a) -> Path:
    p = d / name
    np.save(p, a)
    return p


def _bytes(d: Path, name: str, b: bytes) -> Path:
    p = d / name
    p.write_bytes(b)
    return p


def _h5(d: Path, name: str, **arrays) -> Path:
    import h5py

    p = d / name
    with h5py.File(p, "w") as f:
        for k, v in arrays.items():
            f[k] = v
    return p


def _cut(p: Path, frac: float = 0.5) -> Path:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * frac)])
    return p


def _ds(shape=(4, 4, 16, 16), value=1.0, dtype=np.float32, **cal):
    from napari_4dstem import Calibration, Dataset4D

    return Dataset4D(np.full(shape, value, dtype), Calibration(**cal))


def _shared_mib(d: Path, cut: float | None = None) -> Path:
    src = SHARED / "real" / "merlin-4x2-real" / "001_4x2_6bit.mib"
    if not src.exists():
        raise FileNotFoundError(f"shared data {src} not found")
    dst = d / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".hdr"), d / src.with_suffix(".hdr").name)
    return _cut(dst, cut) if cut else dst


def _damage(p: Path) -> Path:
    b = bytearray(p.read_bytes())
    b[0:3] = b"XQ9"
    p.write_bytes(bytes(b))
    return p


def _cli(*args):
    def run(d: Path):
        from napari_4dstem.cli import main

        return main([a.replace("{d}", str(d)) for a in args])

    return run


def _fitted_model():
    from napari_4dstem.rrvae import RRVAE

    return RRVAE(mode="fast", epochs=1)


def cases() -> list[Case]:
    from napari_4dstem.com import center_of_mass
    from napari_4dstem.export import export_map
    from napari_4dstem.io import load
    from napari_4dstem.preprocess import Preprocessing
    from napari_4dstem.results import Results, load_results, save_results
    from napari_4dstem.rrvae import RRVAE, RRVAEConfig
    from napari_4dstem.virtual import virtual_image

    z4 = np.zeros((3, 3, 8, 8), np.float32)
    c: list[Case] = _hardening_cases(z4) + [
        # -- readers ------------------------------------------------------------------------------
        Case("load", "file does not exist", lambda d: load(d / "nothere.npy")),
        Case("load", "unknown extension `.xyz`", lambda d: load(_bytes(d, "scan.xyz", b"1234"))),
        Case("load", "empty `.npy` (0 bytes)", lambda d: load(_bytes(d, "empty.npy", b""))),
        Case("load", "random bytes named `.npy`", lambda d: load(_bytes(d, "rnd.npy", _rnd(500)))),
        Case("load", "`.npy` truncated to half", lambda d: load(_cut(_npy(d, "cut.npy", z4)))),
        Case("load", "2-D `.npy` (one image)", lambda d: load(_npy(d, "img.npy", np.zeros((8, 8))))),
        Case("load", "3-D stack without `nav_shape`", lambda d: load(_npy(d, "stack.npy", np.zeros((10, 8, 8))))),
        Case("load", "`nav_shape` that does not match the frame count",
             lambda d: load(_npy(d, "s.npy", np.zeros((10, 8, 8))), nav_shape=(3, 3))),
        Case("load", "`nav_shape=(0, 5)`", lambda d: load(_npy(d, "z.npy", z4), nav_shape=(0, 5))),
        Case("load", "unknown option `bin=2`", lambda d: load(_npy(d, "o.npy", z4), bin=2)),
        Case("load", "object-dtype `.npy` (pickled)",
             lambda d: load(_npy(d, "obj.npy", np.array([{"a": 1}] * 4, dtype=object).reshape(1, 1, 2, 2)))),
        Case("load", "float `.npy` containing NaN",
             lambda d: load(_npy(d, "nan.npy", np.full((2, 2, 4, 4), np.nan, np.float32)))),
        Case("load", "`.npz` with two arrays and no `key`",
             lambda d: (np.savez(d / "two.npz", a=z4, b=z4), load(d / "two.npz"))),
        Case("load", "`.npz` with a `key` that is not there",
             lambda d: (np.savez(d / "k.npz", a=z4), load(d / "k.npz", key="data"))),
        Case("load", "`.npz` truncated", lambda d: (np.savez(d / "t.npz", a=z4), load(_cut(d / "t.npz")))),
        Case("load", "random bytes named `.h5`", lambda d: load(_bytes(d, "rnd.h5", _rnd(800)))),
        Case("load", "text file named `.h5`", lambda d: load(_bytes(d, "text.h5", b"hello, I am not HDF5\n"))),
        Case("load", "HDF5 without any 4-D dataset", lambda d: load(_h5(d, "no4d.h5", a=np.zeros((4, 4))))),
        Case("load", "HDF5 `key` that is not there", lambda d: load(_h5(d, "k.h5", a=z4), key="b")),
        Case("load", "HDF5 truncated to half", lambda d: load(_cut(_h5(d, "cut.h5", a=np.ones((6, 6, 16, 16)))))),
        Case("load", "5-D HDF5 without `cube`", lambda d: load(_h5(d, "five.h5", a=np.zeros((2, 3, 3, 4, 4))))),
        Case("load", "5-D HDF5 with `cube` out of range",
             lambda d: load(_h5(d, "five2.h5", a=np.zeros((2, 3, 3, 4, 4))), cube=7)),
        Case("load", "folder that is not a zarr store",
             lambda d: ((d / "folder").mkdir(), (d / "folder" / "a.txt").write_text("x"), load(d / "folder"))),
        Case("load", "random bytes named `.mib`", lambda d: load(_bytes(d, "rnd.mib", _rnd(700)))),
        Case("load", "Merlin `.mib` truncated mid-frame", lambda d: load(_shared_mib(d, cut=0.6))),
        Case("load", "Merlin `.mib` whose first frame header is damaged", lambda d: load(_damage(_shared_mib(d)))),
        Case("load", "random bytes named `.dm4`", lambda d: load(_bytes(d, "rnd.dm4", _rnd(600)))),
        Case("load", "random bytes named `.emd`", lambda d: load(_bytes(d, "rnd.emd", _rnd(600)))),
        Case("load", "random bytes named `.blo`", lambda d: load(_bytes(d, "rnd.blo", _rnd(600)))),
        # -- steps --------------------------------------------------------------------------------
        Case("preprocess", "`normalize=\"bogus\"`", lambda d: Preprocessing(normalize="bogus").fit_transform(_ds())),
        Case("preprocess", "`crop_scan` outside the scan",
             lambda d: Preprocessing(crop_scan=(0, 10, 0, 2)).fit_transform(_ds())),
        Case("preprocess", "mask of the wrong shape",
             lambda d: Preprocessing(target_size=None, mask=np.ones((3, 3), bool)).fit_transform(_ds())),
        Case("preprocess", "`bin_factor` larger than the detector",
             lambda d: Preprocessing(bin_factor=64).fit_transform(_ds())),
        Case("com", "negative intensities (mean-subtracted data)",
             lambda d: center_of_mass(_ds(value=-1.0))),
        Case("com", "`rotation=\"left\"`", lambda d: center_of_mass(_ds(), rotation="left")),
        Case("com", "`units=\"mrad\"` on an uncalibrated detector", lambda d: center_of_mass(_ds(), units="mrad")),
        Case("virtual", "unknown detector kind", lambda d: virtual_image(_ds(), kind="haadf")),
        Case("virtual", "`units=\"mrad\"` on an uncalibrated detector",
             lambda d: virtual_image(_ds(), kind="bf", outer=10, units="mrad")),
        Case("virtual", "`kind=\"mask\"` without a mask", lambda d: virtual_image(_ds(), kind="mask")),
        Case("rrvae", "`latent_dim=0`", lambda d: RRVAEConfig(latent_dim=0)),
        Case("rrvae", "`mode=\"turbo\"`", lambda d: RRVAEConfig(mode="turbo")),
        Case("rrvae", "encode before training", lambda d: RRVAE().encode(np.zeros((2, 2, 8, 8), np.float32))),
        Case("rrvae", "patterns with NaN",
             lambda d: RRVAE(mode="fast", epochs=1).fit(np.full((2, 2, 8, 8), np.nan, np.float32))),
        Case("rrvae", "model file of random bytes", lambda d: RRVAE.load(_bytes(d, "m.pt", _rnd(300)))),
        # -- results and exports -------------------------------------------------------------------
        Case("results", "`load_results` on a data file", lambda d: load_results(_h5(d, "data.h5", a=z4))),
        Case("results", "`load_results` on a newer schema (2.0)", lambda d: load_results(_newer_schema(d))),
        Case("results", "`load_results` on a truncated results file", lambda d: load_results(_cut(_results(d)))),
        Case("results", "`save_results` over an existing file",
             lambda d: save_results(_bytes(d, "exists.h5", b"x"), Results())),
        Case("results", "`save_results` into a missing folder", lambda d: save_results(d / "no" / "r.h5", Results())),
        Case("export", "unknown export format `.jpg`", lambda d: export_map(d / "m.jpg", np.zeros((3, 3)))),
        # -- CLI ------------------------------------------------------------------------------------
        Case("cli", "`analyze` on a missing file", _cli("analyze", "{d}/nope.npy", "--out", "{d}/r.h5"), cli=True),
        Case("cli", "`analyze` on a corrupt file",
             lambda d: (_bytes(d, "bad.h5", b"\x89HDF\r\n\x1a\n" + bytes(300)),
                        _cli("analyze", "{d}/bad.h5", "--out", "{d}/r.h5")(d))[-1], cli=True),
        Case("cli", "`analyze --config` with a misspelt key",
             lambda d: ((d / "p.toml").write_text("[rrvae]\nlatnet_dim = 3\n"),
                        _npy(d, "s.npy", z4), _cli("analyze", "{d}/s.npy", "--out", "{d}/r.h5",
                                                   "--config", "{d}/p.toml")(d))[-1], cli=True),
        Case("cli", "`analyze --out` equal to the input",
             lambda d: (_npy(d, "s.npy", z4), _cli("analyze", "{d}/s.npy", "--out", "{d}/s.npy", "--overwrite")(d))[-1],
             cli=True),
        Case("cli", "`analyze --out` in a folder that is a file",
             lambda d: (_npy(d, "s.npy", z4), _bytes(d, "f", b""),
                        _cli("analyze", "{d}/s.npy", "--out", "{d}/f/r.h5")(d))[-1], cli=True),
        Case("cli", "`info` with a wrong `--nav-shape`",
             lambda d: (_npy(d, "s.npy", z4), _cli("info", "{d}/s.npy", "--nav-shape", "2,2")(d))[-1], cli=True),
    ]
    return c


class _NoRead:
    """A 4-D array-like whose every read fails (not a project error, so a read makes the row misbehave)."""

    shape, dtype, ndim = (4, 4, 16, 16), np.dtype(np.float32), 4

    def __getitem__(self, key):
        raise RuntimeError("the data were read before the arguments were checked")

    def __array__(self, *args, **kwargs):
        raise RuntimeError("the data were read before the arguments were checked")


def _no_read_ds():
    from napari_4dstem import Dataset4D

    return Dataset4D(_NoRead())


def _n4():
    import napari_4dstem

    return napari_4dstem


def _fifo(d: Path, name: str) -> Path:
    import os

    p = d / name
    os.mkfifo(p)
    return p


def _loop(d: Path) -> Path:
    import os

    os.symlink(d / "b.npy", d / "a.npy")
    os.symlink(d / "a.npy", d / "b.npy")
    return d / "a.npy"


def _toml(d: Path, text: str) -> Path:
    p = d / "p.toml"
    p.write_text(text)
    return p


def _h5_external(d: Path, target: str) -> Path:
    import h5py

    p = d / "ext.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", shape=(2, 2, 4, 4), dtype="u1", external=[(target, 0, 64)])
    return p


def _h5_link(d: Path) -> Path:
    import h5py

    (d / "elsewhere").mkdir()
    with h5py.File(d / "elsewhere" / "t.h5", "w") as f:
        f["data"] = np.ones((2, 2, 4, 4), np.float32)
    (d / "here").mkdir()
    with h5py.File(d / "here" / "link.h5", "w") as f:
        f["x"] = h5py.ExternalLink(str(d / "elsewhere" / "t.h5"), "data")
    return d / "here" / "link.h5"


def _h5_vds(d: Path, source: Path, make_source: bool = True) -> Path:
    import h5py

    if make_source:
        with h5py.File(source, "w") as f:
            f["x"] = np.ones((2, 2, 4, 4), np.float32)
    lay = h5py.VirtualLayout(shape=(2, 2, 4, 4), dtype="f4")
    lay[:] = h5py.VirtualSource(str(source), "x", shape=(2, 2, 4, 4))
    p = d / "vds.h5"
    with h5py.File(p, "w") as f:
        f.create_virtual_dataset("data", lay, fillvalue=0)
    return p


def _h5_unwritten(d: Path, shape=(4, 4, 8, 8), chunks=(1, 4, 8, 8), rows=1) -> Path:
    import h5py

    p = d / "partial.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("data", shape=shape, dtype="u2", chunks=chunks)
        ds[:rows] = 1
    return p


def _h5_damaged_chunk(d: Path) -> Path:
    import h5py

    p = d / "damaged.h5"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("data", data=rng.integers(0, 1000, (6, 6, 16, 16), dtype=np.uint16),
                              chunks=(1, 6, 16, 16), compression="gzip")
        off = ds.id.get_chunk_info(1).byte_offset  # scan row 1: not one of the rows load() samples
        size = ds.id.get_chunk_info(1).size
    b = bytearray(p.read_bytes())
    b[off:off + size] = bytes(size)
    p.write_bytes(bytes(b))
    return p


def _zarr_missing_chunk(d: Path) -> Path:
    import os

    import zarr

    p = d / "scan.zarr"
    a = zarr.create_array(str(p), shape=(4, 4, 8, 8), chunks=(1, 4, 8, 8), dtype="f4")
    a[:] = 1
    chunks = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name != "zarr.json")
    os.remove(chunks[1])
    return p


def _zarr_damaged_chunk(d: Path) -> Path:
    import zarr

    p = d / "scan.zarr"
    a = zarr.create_array(str(p), shape=(6, 4, 8, 8), chunks=(1, 4, 8, 8), dtype="f4")
    a[:] = np.random.default_rng(1).random((6, 4, 8, 8))
    (p / "c" / "1" / "0" / "0" / "0").write_bytes(b"garbage, not a compressed chunk")
    return p


def _results_attr(d: Path, **attrs) -> Path:
    import h5py

    p = _results(d)
    with h5py.File(p, "a") as f:
        for k, v in attrs.items():
            if v is None:
                del f.attrs[k]
            else:
                f.attrs[k] = v
    return p


def _results_string_map(d: Path) -> Path:
    import h5py

    p = _results(d)
    with h5py.File(p, "a") as f:
        f["com/x"] = "not a map"
    return p


def _npy_dtype(d: Path, name: str, a) -> Path:
    return _npy(d, name, a)


def _analyze(d: Path, *extra, src="s.npy") -> int:
    from napari_4dstem.cli import main

    return main(["analyze", str(d / src), "--out", str(d / "r.h5"), "--fast", "--epochs", "1", "-q", *extra])


def _hardening_cases(z4) -> list[Case]:
    import os

    from napari_4dstem.export import export_results
    from napari_4dstem.io import load
    from napari_4dstem.results import Results, load_results
    from napari_4dstem.virtual import virtual_image

    struct = np.zeros((2, 2, 4, 4), dtype=[("a", "u2"), ("b", "f4")])
    rnd = np.random.default_rng(2).random((6, 6, 8, 8)).astype(np.float32)
    return [
        Case("load", "a named pipe (FIFO) named `.npy` (would block forever)",
             lambda d: load(_fifo(d, "x.npy")), expect="named pipe"),
        Case("cli", "`info` on a FIFO named `.h5`", lambda d: (_fifo(d, "x.h5"), _cli("info", "{d}/x.h5")(d))[-1],
             cli=True, expect="named pipe"),
        Case("load", "a symbolic-link loop", lambda d: load(_loop(d)), expect="loop of symbolic links"),
        Case("load", "a dangling symbolic link",
             lambda d: (os.symlink(d / "gone.npy", d / "l.npy"), load(d / "l.npy"))[-1], expect="does not exist"),
        Case("load", "structured (record) array", lambda d: load(_npy(d, "st.npy", struct)),
             expect="structured records"),
        Case("load", "string array", lambda d: load(_npy(d, "str.npy", np.full((2, 2, 2, 2), "ab"))),
             expect="text strings"),
        Case("load", "datetime array",
             lambda d: load(_npy(d, "dt.npy", np.zeros((2, 2, 2, 2), "datetime64[s]"))), expect="dates/times"),
        Case("load", "complex array", lambda d: load(_npy(d, "c.npy", np.zeros((2, 2, 2, 2), complex))),
             expect="complex"),
        Case("load", "boolean array", lambda d: load(_npy(d, "b.npy", np.zeros((2, 2, 2, 2), bool))),
             expect="booleans"),
        Case("load", "complex HDF5 dataset", lambda d: load(_h5(d, "c.h5", a=np.zeros((2, 2, 2, 2), complex))),
             expect="complex"),
        Case("load", "float64 data with two pixels of 1e300 (float32 overflow)",
             lambda d: load(_npy(d, "big.npy", np.where(np.arange(256).reshape(2, 2, 8, 8) % 97 == 5, 1e300, 1.0))),
             expect="float32"),
        Case("load", "zarr array with a chunk file deleted", lambda d: load(_zarr_missing_chunk(d)),
             expect="chunks of the zarr array are missing"),
        Case("load", "HDF5 dataset whose chunks were never written (aborted acquisition)",
             lambda d: load(_h5_unwritten(d)), expect="never written"),
        Case("load", "HDF5 claiming 1.2 PB of data (never written)",
             lambda d: load(_h5_unwritten(d, shape=(4096, 4096, 8192, 8192), chunks=(1, 1, 1024, 1024), rows=0)),
             expect="never written"),
        Case("load", "HDF5 virtual dataset whose source file is gone",
             lambda d: load(_h5_vds(d, d / "src.h5", make_source=False)), expect="missing"),
        Case("load", "HDF5 virtual dataset with an absolute source outside its folder",
             lambda d: ((d / "o").mkdir(), load(_h5_vds(d / "o", d / "src.h5")))[-1],
             expect="outside the file's folder"),
        Case("load", "HDF5 external storage pointing at /etc/passwd",
             lambda d: load(_h5_external(d, "/etc/passwd")), expect="outside the file's folder"),
        Case("load", "HDF5 external link into a file outside its folder",
             lambda d: load(_h5_link(d), key="x"), expect="outside the file's folder"),
        Case("load", "compressed `.npz` with a wrong `nav_shape` (refused before decompressing)",
             lambda d: (np.savez_compressed(d / "c.npz", a=z4), load(d / "c.npz", nav_shape=(2, 2)))[-1],
             expect="holds 4 probe positions"),
        Case("output", "`--out` inside the input zarr folder",
             lambda d: (_zarr_damaged_chunk(d), _cli("analyze", "{d}/scan.zarr", "--out", "{d}/scan.zarr/r.h5")(d))[-1],
             cli=True, expect="inside the input data folder"),
        Case("load", "HDF5 external storage file missing",
             lambda d: load(_h5_external(d, "raw.bin")), expect="missing"),
        Case("virtual", "damaged HDF5 chunk met during a pass (scan row 1)",
             lambda d: virtual_image(load(_h5_damaged_chunk(d)), kind="bf", outer=3), expect="scan row"),
        Case("virtual", "damaged zarr chunk met during a pass (scan row 1)",
             lambda d: virtual_image(load(_zarr_damaged_chunk(d)), kind="bf", outer=3), expect="scan row"),
        Case("load", "`key=''` (empty)", lambda d: load(_npy(d, "s.npy", z4), key=""), expect="key"),
        Case("load", "`key=` on a `.npy` (one array)", lambda d: load(_npy(d, "s.npy", z4), key="x"),
             expect="does not apply"),
        Case("analyze", "`[preprocess] center` outside the detector",
             lambda d: (_npy(d, "s.npy", rnd),
                        _analyze(d, "--config", str(_toml(d, "[preprocess]\ncenter = [1e9, 1e9]\n"))))[-1],
             cli=True, expect="outside the 8 x 8 detector"),
        Case("load", "`fill_missing='yes'`", lambda d: load(_npy(d, "s.npy", z4), fill_missing="yes"),
             expect="fill_missing"),
        # -- parameters: checked before the input is even opened (the input here does not exist) ---------------
        *[Case("params", f"`{text.strip()}` in params.toml",
               lambda d, text=text: _analyze(d, "--config", str(_toml(d, text)), src="missing.npy"), cli=True,
               expect=exp)
          for text, exp in [
              ('[rrvae]\nepochs = "ten"\n', "epochs = 'ten': must be a whole number"),
              ('[rrvae]\nlr = "fast"\n', "lr = 'fast'"),
              ("[rrvae]\nepochs = 2.5\n", "epochs = 2.5"),
              ("[rrvae]\nseed = 100000000000000000000\n", "seed"),
              ('[rrvae]\ndevice = "cuda"\n', "cuda"),
              ("[rrvae]\ntime_limit = -5\n", "time_limit = -5"),
              ('[virtual.ring]\nkind = "annulus"\ninnner = 3\n', "unknown [virtual.ring] parameter(s) ['innner']"),
              ('[virtual.ring]\nkind = "annulus"\ninner = 5\nouter = 2\n', "smaller than outer"),
              ("[preprocess]\ntarget_size = 0\n", "target_size = 0"),
              ("[preprocess]\ncrop_scan = [4, 2, 0, 3]\n", "crop_scan"),
              ('[com]\nrotation = "left"\n', "rotation"),
              ('navigator = "max"\n', "navigator"),
              ("defect_models = 0\n", "defect_models"),
              ("[load]\nnav_shape = [0, 3]\n", "nav_shape"),
          ]],
        # -- Python arguments: checked before any read (the dataset here fails if it is read at all) ----------
        *[Case("python", f"`{text}`", lambda d, fn=fn: fn(_no_read_ds(), d), expect=exp) for text, fn, exp in [
            ('center_of_mass(ds, rotation="x")', lambda ds, d: _n4().center_of_mass(ds, rotation="x"),
             "center_of_mass() argument rotation = 'x'"),
            ('virtual_image(ds, kind="annulus", inner=20, outer=8)',
             lambda ds, d: _n4().virtual_image(ds, kind="annulus", inner=20, outer=8), "smaller than outer = 8"),
            ('virtual_images(ds, {"a": {"kind": "bf", "oter": 3}})',
             lambda ds, d: _n4().virtual_images(ds, {"a": {"kind": "bf", "oter": 3}}), "unknown parameter(s)"),
            ('Preprocessing(bin_factor="two")', lambda ds, d: _n4().Preprocessing(bin_factor="two"),
             "Preprocessing() argument bin_factor = 'two'"),
            ("load(path, nav_shape=(0, 3))", lambda ds, d: _n4().load(d / "nothere.npy", nav_shape=(0, 3)),
             "load() argument nav_shape = (0, 3)"),
            ("RRVAEConfig(lr=\"fast\")", lambda ds, d: _n4().RRVAEConfig(lr="fast"), "lr = 'fast'"),
            ('analyze(ds, overwrite="yes")', lambda ds, d: _n4().analyze(ds, overwrite="yes"),
             "analyze() argument overwrite = 'yes'"),
            ("analyze(numpy_array)", lambda ds, d: _n4().analyze(np.zeros((2, 2, 4, 4))), "as_dataset"),
        ]],
        Case("params", "`--epochs 0`", lambda d: _analyze(d, "--epochs", "0", src="missing.npy"), cli=True,
             expect="epochs = 0"),
        Case("params", "`--seed` beyond 64 bits", lambda d: _analyze(d, "--seed", str(2**70), src="missing.npy"),
             cli=True, expect="must be a whole number 0 ... 4294967295"),
        # -- output: checked before any work, exactly as at the final write --------------------------------------
        Case("output", "`--out` is a dangling symbolic link",
             lambda d: (_npy(d, "s.npy", rnd), os.symlink(d / "nowhere.h5", d / "r.h5"), _analyze(d))[-1], cli=True,
             expect="dangling symbolic link"),
        Case("output", "`--out` hard-linked to the input, with `--overwrite`",
             lambda d: (_npy(d, "s.npy", rnd), os.link(d / "s.npy", d / "r.h5"), _analyze(d, "--overwrite"))[-1],
             cli=True, expect="input"),
        Case("output", "`--out newname/` (a folder name)",
             lambda d: (_npy(d, "s.npy", rnd), _cli("analyze", "{d}/s.npy", "--out", "{d}/new/")(d))[-1], cli=True,
             expect="is a folder"),
        Case("output", "`--out` in a missing folder",
             lambda d: (_npy(d, "s.npy", rnd), _cli("analyze", "{d}/s.npy", "--out", "{d}/no/r.h5")(d))[-1],
             cli=True, expect="does not exist"),
        Case("output", "`--out` name longer than the file system allows (300 bytes)",
             lambda d: (_npy(d, "s.npy", rnd),
                        _cli("analyze", "{d}/s.npy", "--out", "{d}/" + "r" * 297 + ".h5")(d))[-1],
             cli=True, expect="longer than the file system allows"),
        Case("output", "another live process is writing the same `--out`",
             lambda d: (_npy(d, "s.npy", rnd), _fake_writer(d / "r.h5"), _analyze(d))[-1], cli=True,
             expect="another napari-4dstem process"),
        # -- before the first pass ---------------------------------------------------------------------------
        Case("analyze", "scan of 1 x 2 positions (the rrVAE cannot train)",
             lambda d: (_npy(d, "s.npy", rnd[:1, :2]), _analyze(d))[-1], cli=True, expect="at least 4"),
        Case("analyze", "constant data (the rrVAE cannot train)",
             lambda d: (_npy(d, "s.npy", np.ones((6, 6, 8, 8), np.float32)), _analyze(d))[-1], cli=True,
             expect="constant"),
        Case("analyze", "1 x 16 detector", lambda d: (_npy(d, "s.npy", rnd.reshape(6, 6, 4, 16)[:, :, :1]),
                                                       _analyze(d))[-1], cli=True, expect="1 x 16"),
        Case("analyze", "preprocessed stack larger than memory (HDF5 of 2^40 positions, `fill_missing`)",
             lambda d: (_h5_unwritten(d, shape=(2**20, 2**20, 64, 64), chunks=(1, 64, 64, 64), rows=0),
                        _analyze(d, "--fill-missing", src="partial.h5"))[-1], cli=True, expect="does not fit"),
        # -- results and exports ------------------------------------------------------------------------------
        Case("results", "a string where a map should be", lambda d: load_results(_results_string_map(d)),
             expect="not a 2-D or 3-D array of numbers"),
        Case("results", "JSON nested 100000 deep",
             lambda d: load_results(_results_attr(d, info="[" * 100000 + "]" * 100000)), expect="damaged"),
        Case("results", "no `format` attribute",
             lambda d: load_results(_results_attr(d, format=None)), expect="not a napari-4dstem results file"),
        Case("cli", "`info` on a results file without its `format` attribute",
             lambda d: (_results_attr(d, format=None), _cli("info", "{d}/results.h5")(d))[-1], cli=True,
             expect="not a napari-4dstem results file"),
        Case("results", "scan step [0, -1]",
             lambda d: load_results(_results_attr(d, calibration='{"scan_step": [0, -1]}')), expect="scan step"),
        Case("export", "`--to` an existing file",
             lambda d: (_results(d), _bytes(d, "f.txt", b"x"),
                        _cli("export", "{d}/results.h5", "--to", "{d}/f.txt")(d))[-1], cli=True, expect="not a folder"),
        Case("export", "`--to /proc/x`",
             lambda d: (_results(d), _cli("export", "{d}/results.h5", "--to", "/proc/x/maps")(d))[-1], cli=True,
             expect="/proc/x"),
        Case("export", "a map name that is not there (nothing written, no folder made)",
             lambda d: export_results(Results(maps={"a": np.zeros((2, 2))}), d / "maps", keys=["b"]),
             expect="no map"),
        Case("cli", "`info --key 0` on an npz without member '0'",
             lambda d: (np.savez(d / "k.npz", a=z4, b=z4), _cli("info", "{d}/k.npz", "--key", "0")(d))[-1],
             cli=True, expect="no array '0'"),
    ]


def _fake_writer(target: Path) -> None:
    """A temporary file as a live writer of ``target`` leaves it (pid 1 is always alive)."""
    from napari_4dstem import results

    (target.parent / f"{results.TMP_PREFIX}{results._HOST}-1-{results._tag(target)}-abcdef.tmp").write_bytes(b"")


def _results(d: Path) -> Path:
    from napari_4dstem.results import Results, save_results

    r = Results(shape=(8, 8, 4, 4), dtype="float32")
    r.maps["navigator"] = np.random.default_rng(0).random((8, 8))
    return save_results(d / "results.h5", r)


def _newer_schema(d: Path) -> Path:
    import h5py

    p = _results(d)
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = "2.0"
    return p


def run_case(case: Case) -> Outcome:
    out = _run_case(case)
    if out.ok and out.kind != "skipped":
        low = out.message.lower()
        if "unexpected" in low or (case.expect and case.expect.lower() not in low):
            return Outcome(case, out.kind, out.message + f" [expected: {case.expect!r}]", False)
    return out


def _run_case(case: Case) -> Outcome:
    from napari_4dstem.errors import FourDSTEMError

    d = Path(tempfile.mkdtemp(prefix="bad-"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            value = case.run(d)
        if case.cli:
            errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("napari-4dstem: error: ")]
            msg = errors[-1].replace("napari-4dstem: error: ", "") if errors else err.getvalue()[-300:]
            ok = value not in (0, None) and len(errors) == 1 and "Traceback" not in err.getvalue()
            return Outcome(case, f"exit {value}", _clean(msg, d), ok)
        return Outcome(case, "accepted", "no error: this input was accepted", False)
    except FileNotFoundError as e:
        if "shared data" in str(e):
            return Outcome(case, "skipped", str(e), True)
        return Outcome(case, f"CRASH {type(e).__name__}", _clean(str(e), d), False)
    except SystemExit as e:
        return Outcome(case, f"exit {e.code}", _clean(err.getvalue().strip().splitlines()[-1], d), e.code != 0)
    except FourDSTEMError as e:
        return Outcome(case, type(e).__name__, _clean(str(e), d), True)
    except Exception as e:  # noqa: BLE001 - this is what the table is for
        return Outcome(case, f"CRASH {type(e).__name__}", _clean(str(e), d), False)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _clean(msg: str, d: Path) -> str:
    msg = msg.replace(str(d) + "/", "").replace(str(d), ".").replace("|", "\\|").replace("\n", " ")
    return msg if len(msg) < 400 else msg[:397] + "..."


def table(outcomes: list[Outcome]) -> str:
    n_ok = sum(o.ok for o in outcomes)
    lines = [
        "# Bad inputs and the messages they give",
        "",
        "Generated by `docs/scripts/bad_inputs_table.py` (do not edit by hand; rerun it after changing a message).",
        "Every row must be a project error (`ReaderError`, `DataError`, `ModelError`, `WriteError`, all",
        "`FourDSTEMError`) or, for the command line, a non-zero exit with one line and no traceback, and its",
        "message must say what the row is about (each case names a phrase it expects) and never \"unexpected\".",
        "`params` rows give a path that does not exist: the parameter is refused before the input is opened.",
        "`tests/test_reliability.py` runs every row; `tests/test_hardening.py` adds what a row cannot show (no",
        "hang on a FIFO, a closed stdout, stale temporary files removed, what is filled, listed and hashed).",
        "File names are relative to a scratch folder. The fuzzing test (`tests/test_fuzz.py`) adds random,",
        "truncated and corrupted `.npy`, `.npz`, `.h5`, `.mib` and other files on top of these.",
        "",
        f"{len(outcomes)} cases, {n_ok} behave as required.",
        "",
        "| # | step | bad input | result | message |",
        "|---|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes, 1):
        flag = "" if o.ok else " **(bug)**"
        lines.append(f"| {i} | {o.case.area} | {o.case.what} | {o.kind}{flag} | {o.message} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    outcomes = [run_case(c) for c in cases()]
    bad = [o for o in outcomes if not o.ok]
    for o in bad:
        print(f"misbehaves: [{o.case.area}] {o.case.what}: {o.kind}: {o.message}", file=sys.stderr)
    if "--check" not in argv:
        out = ROOT / "docs" / "bad_inputs.md"
        out.write_text(table(outcomes), encoding="utf-8")
        print(f"wrote {out} ({len(outcomes)} cases, {len(bad)} misbehaving)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
