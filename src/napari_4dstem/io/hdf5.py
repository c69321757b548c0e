"""HDF5 readers: py4DSTEM EMD 1.0, DECTRIS Arina master files, and any HDF5 with a 4-D dataset.

Datasets stay lazy: the h5py.File stays open (read-only) in the Dataset4D's ``_keepalive``.
Velox and Prismatic EMD files go through rosettasciio (see :mod:`.via_rsciio`).
"""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from ..dataset import Calibration
from ..errors import ReaderError
from . import units
from .checks import Raw


def _text(v) -> str:
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def sniff(f: h5py.File, path: Path) -> str:
    """Which flavour of HDF5: 'arina', 'py4dstem', 'hspy', 'prismatic', 'velox' or 'generic'."""
    data = f.get("entry/data")
    if isinstance(data, h5py.Group) and any(k.startswith("data_") for k in data.keys()):
        return "arina"
    if _text(f.attrs.get("emd_group_type", "")) == "file" and int(f.attrs.get("version_major", 0)) >= 1:
        return "py4dstem"
    if _text(f.attrs.get("file_format", "")).lower() == "hyperspy":
        return "hspy"
    if "4DSTEM_simulation" in f:
        return "prismatic"
    if "Data" in f and ("Version" in f or "Operations" in f):
        return "velox"
    return "generic"


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 and obj.dtype.kind in "biufc":
            out[name] = obj

    f.visititems(visit)
    return out


def _describe(ds: dict) -> str:
    return ", ".join(f"{k!r} {d.shape} {d.dtype}" for k, d in ds.items()) or "none"


def read_generic(f: h5py.File, path: Path, opts: dict, reader: str = "hdf5") -> Raw:
    key = opts.get("key")
    if key is not None:
        obj = f.get(key)
        if isinstance(obj, h5py.Group) and isinstance(obj.get("data"), h5py.Dataset):
            obj = obj["data"]
        if not isinstance(obj, h5py.Dataset):
            raise ReaderError(f"no dataset {key!r} in the file; datasets: {_describe(_datasets(f))}", path=path,
                              hint="pass one of these paths as key=")
        return Raw(obj, reader, keepalive=f, notes=[f"dataset {obj.name!r}"])
    ds = _datasets(f)
    four = {k: d for k, d in ds.items() if d.ndim == 4}
    if len(four) == 1:
        name, d = next(iter(four.items()))
    elif len(four) > 1:
        raise ReaderError(f"the file holds {len(four)} 4-D datasets: {_describe(four)}", path=path,
                          hint="choose one with key='path/in/file'")
    elif len(ds) == 1:
        name, d = next(iter(ds.items()))  # a 3-D stack (needs nav_shape) or a 5-D array (needs cube)
    else:
        raise ReaderError(f"no 4-D dataset in the file; datasets: {_describe(ds)}", path=path,
                          hint="pass key='path/in/file' (with nav_shape= for a 3-D frame stack)")
    return Raw(d, reader, keepalive=f, notes=[f"dataset {d.name!r}"])


# -- py4DSTEM / emdfile (EMD 1.0) --------------------------------------------------------------
def read_py4dstem(f: h5py.File, path: Path, opts: dict) -> Raw:
    cubes = {}

    def visit(name, obj):
        if (isinstance(obj, h5py.Group) and _text(obj.attrs.get("emd_group_type", "")) == "array"
                and isinstance(obj.get("data"), h5py.Dataset)):
            cubes[name] = obj

    f.visititems(visit)
    key = opts.get("key")
    if key is not None:
        k = key.strip("/")
        k = k[:-5] if k.endswith("/data") else k
        if k not in cubes:
            raw = read_generic(f, path, opts, reader="py4dstem")  # any dataset path
            return raw
        group = cubes[k]
    else:
        four = {k: g for k, g in cubes.items() if g["data"].ndim == 4}
        if len(four) == 1:
            group = next(iter(four.values()))
        else:
            desc = ", ".join(f"{k!r} {g['data'].shape}" for k, g in cubes.items()) or "none"
            raise ReaderError(f"the EMD file holds {len(four)} 4-D arrays; arrays: {desc}", path=path,
                              hint="choose one with key='group/path'")
    cal, notes = _py4dstem_calibration(f, group)
    notes.insert(0, f"EMD array {group.name!r} (python_class {_text(group.attrs.get('python_class', '?'))})")
    return Raw(group["data"], "py4dstem", calibration=cal, keepalive=f, notes=notes)


def _calibration_group(f: h5py.File, group: h5py.Group) -> h5py.Group | None:
    # the calibration lives in the array's own metadatabundle or in its root's
    candidates = [group.name.rstrip("/")]
    parts = group.name.strip("/").split("/")
    candidates += ["/" + "/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    for c in candidates:
        g = f.get(f"{c}/metadatabundle/calibration")
        if isinstance(g, h5py.Group):
            return g
    return None


def _scalar(g: h5py.Group, name: str):
    obj = g.get(name)
    if not isinstance(obj, h5py.Dataset):
        return None
    v = obj[()]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf" or v.size == 0:
            return None
        return float(np.nanmean(v))  # per-position maps (qx0, qy0): their mean
    return v.item() if hasattr(v, "item") else v


def _py4dstem_calibration(f: h5py.File, group: h5py.Group) -> tuple[Calibration, list[str]]:
    g = _calibration_group(f, group)
    notes: list[str] = []
    cal = Calibration()
    if g is None:
        notes.append("no py4DSTEM calibration found")
        return cal, notes
    r, ru = units.length(_scalar(g, "R_pixel_size"), _scalar(g, "R_pixel_units"))
    q, qu = units.reciprocal(_scalar(g, "Q_pixel_size"), _scalar(g, "Q_pixel_units"))
    cal.scan_step, cal.scan_unit = (r, r), ru
    cal.detector_pixel, cal.detector_unit = (q, q), qu
    if r is None:
        cal.scan_step = (None, None)
    if q is None:
        cal.detector_pixel = (None, None)
    # py4DSTEM's qx is the first detector axis (our det_y)
    qx0 = _scalar(g, "qx0_mean")
    qy0 = _scalar(g, "qy0_mean")
    if qx0 is None or qy0 is None:
        qx0, qy0 = _scalar(g, "qx0"), _scalar(g, "qy0")
    if qx0 is not None and qy0 is not None:
        cal.detector_center = (float(qx0), float(qy0))
    rot = _scalar(g, "QR_rotation_degrees")
    if rot is not None:
        cal.scan_rotation_deg = float(rot)
    elif _scalar(g, "QR_rotation") is not None:
        cal.scan_rotation_deg = float(np.degrees(_scalar(g, "QR_rotation")))  # py4DSTEM >= 0.14: radians
    flip = _scalar(g, "QR_flip")
    if flip is not None:
        cal.flip = bool(flip)
    for k in ("beam_energy", "accelerating_voltage"):  # eV in py4DSTEM
        v = _scalar(g, k)
        if isinstance(v, (int, float)) and v > 0:
            cal.beam_energy_ev = float(v)
    v = _scalar(g, "convergence_semiangle_mrad")
    if isinstance(v, (int, float)) and v > 0:
        cal.convergence_semiangle_mrad = float(v)
    return cal, notes


# -- DECTRIS Arina ------------------------------------------------------------------------------
def read_arina(f: h5py.File, path: Path, opts: dict) -> Raw:
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filter the detector writes)

    group = f["entry/data"]
    names = sorted(k for k in group.keys() if k.startswith("data_"))
    parts = []
    for n in names:
        link = group.get(n, getlink=True)
        try:
            parts.append(group[n])
        except KeyError as e:
            target = getattr(link, "filename", "?")
            raise ReaderError(f"the data file {target!r} linked as {n!r} is missing", path=path,
                              hint="keep the *_data_*.h5 files in the same folder as the master file") from e
    for part in parts:
        holder = Path(part.file.filename)
        if not _inside(holder, path.parent) and not opts.get("allow_outside", False):
            raise ReaderError(f"the data file {str(holder)!r} linked by the master file is outside its folder",
                              path=path, hint="keep the *_data_*.h5 files beside the master file, or pass "
                                              "allow_outside=True if you trust this file")
    if len(parts) == 1:
        data = parts[0]
    else:
        import dask.array as da

        data = da.concatenate([da.from_array(p, chunks=(min(64, p.shape[0]), -1, -1), lock=True) for p in parts])
    cal = Calibration()
    notes = [f"{len(parts)} Arina data file(s)"]
    nav = None
    meta_path = path.with_name(re.sub(r"_master\.h5$", ".h5", path.name))
    if meta_path != path and meta_path.is_file():
        with h5py.File(meta_path, "r") as mf:
            stem = mf.get("STEM Metadata")
            if stem is not None:
                a = stem.attrs
                ny, nx = _attr(a, "NumPixelsY"), _attr(a, "NumPixelsX")
                if ny and nx:
                    nav = (int(ny), int(nx))
                step, unit = units.length(_attr(a, "Pixel Size"), "nm")  # the scan software writes nm
                if step is not None:
                    cal.scan_step, cal.scan_unit = (step, step), unit
                kv = _attr(a, "High Tension")
                if kv and kv > 0:
                    cal.beam_energy_ev = float(kv)
                notes.append(f"scan metadata from {meta_path.name}")
    if cal.beam_energy_ev is None:
        pe = f.get("entry/instrument/detector/detectorSpecific/photon_energy")
        if isinstance(pe, h5py.Dataset) and float(pe[()]) > 0:
            cal.beam_energy_ev = float(pe[()])
    n = int(data.shape[0])
    if nav is None and opts.get("nav_shape") is None:
        side = int(round(np.sqrt(n)))
        if side * side == n:
            nav = (side, side)
            notes.append(f"no scan metadata file: assumed a square scan {nav}")
    files = [path] + [Path(p.file.filename) for p in parts] + ([meta_path] if nav and meta_path.is_file() else [])
    raw = Raw(data, "arina", calibration=cal, keepalive=f, nav_shape=nav, notes=notes, files=files,
              data_file=Path(parts[0].file.filename) if parts else path)
    return raw


def _attr(attrs, name):
    v = attrs.get(name)
    if v is None:
        return None
    v = np.asarray(v).ravel()
    return float(v[0]) if v.size and v.dtype.kind in "biuf" else None


# -- storage checks (harden): nothing read from outside, nothing silently filled --------------------
def _inside(target: Path, folder: Path) -> bool:
    try:
        target.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _name(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def check_storage(raw: Raw, path: Path, opts: dict) -> None:
    """External raw files and virtual-dataset sources: inside the file's folder and present (or allowed by
    ``allow_outside`` / ``fill_missing``); chunks never written: refused unless ``fill_missing``. Records
    every file read in ``raw.files`` and the one holding the frames in ``raw.data_file``."""
    d = raw.data
    if not isinstance(d, h5py.Dataset):
        return
    folder = path.parent
    allow_outside = bool(opts.get("allow_outside", False))
    fill = bool(opts.get("fill_missing", False))
    files = [path]
    holder = Path(d.file.filename)  # an external link leads to a dataset in another file
    if holder.resolve() != path.resolve():
        if not _inside(holder, folder) and not allow_outside:
            raise ReaderError(f"dataset {d.name!r} is an external link into {str(holder)!r}, outside the file's "
                              "folder", path=path, hint="move that file beside this one, or pass allow_outside=True "
                                                        "if you trust this file")
        files.append(holder)
        raw.data_file = raw.data_file or holder
    ext = d.external
    if ext:
        for name, _offset, _size in ext:
            target = Path(_name(name))
            target = target if target.is_absolute() else folder / target
            if not _inside(target, folder) and not allow_outside:
                raise ReaderError(f"dataset {d.name!r} stores its data in the external file {_name(name)!r}, "
                                  "outside the file's folder", path=path,
                                  hint="move that file beside the HDF5 file, or pass allow_outside=True if you "
                                       "trust this file")
            if not target.is_file():
                raise ReaderError(f"dataset {d.name!r} stores its data in the external file {str(target)!r}, which "
                                  "is missing", path=path, hint="copy that file beside the HDF5 file")
            files.append(target)
        mm = _external_memmap(d, [(folder / _name(n) if not Path(_name(n)).is_absolute() else Path(_name(n)), o, s)
                                  for n, o, s in ext])
        raw.data = d if mm is None else mm
        raw.data_file = files[1]
        raw.notes.append(f"data in external file(s) {', '.join(str(f) for f in files[1:])}")
    elif d.is_virtual:
        missing = []
        for src in d.virtual_sources():
            fname = _name(src.file_name)
            if fname == ".":
                continue
            target = Path(fname)
            target = target if target.is_absolute() else folder / target
            if not _inside(target, folder) and not allow_outside:
                raise ReaderError(f"virtual dataset {d.name!r} reads from {fname!r}, outside the file's folder",
                                  path=path, hint="move the source files beside it, or pass allow_outside=True if "
                                                  "you trust this file")
            if not target.is_file():
                missing.append(fname)
            elif target not in files:
                files.append(target)
        if missing:
            if not fill:
                raise ReaderError(f"virtual dataset {d.name!r}: source file(s) {', '.join(map(repr, missing[:3]))} "
                                  f"{'are' if len(missing) > 1 else 'is'} missing (their frames would read as "
                                  "the fill value)", path=path,
                                  hint="copy the source files beside it, or pass fill_missing=True to read them as "
                                       "the fill value")
            _filled(raw, f"virtual dataset sources missing, read as the fill value: {', '.join(missing)}")
        if len(files) > 1:
            raw.data_file = files[1]
            raw.notes.append(f"virtual dataset over {len(files) - 1} source file(s)")
    else:
        _check_allocated(d, raw, path, fill)
    raw.files = list(dict.fromkeys(files + list(raw.files)))


def _filled(raw: Raw, note: str) -> None:
    import warnings

    warnings.warn(note, stacklevel=3)
    raw.notes.append(note)


def _check_allocated(d: h5py.Dataset, raw: Raw, path: Path, fill: bool) -> None:
    """Chunks (or the contiguous block) HDF5 never wrote read as the fill value: refuse unless ``fill``."""
    if d.size == 0:
        return
    try:
        if d.chunks is None:
            unwritten = d.id.get_offset() is None and d.id.get_storage_size() == 0
            what = "the dataset was created but its data were never written"
        else:
            expected = int(np.prod([-(-s // c) for s, c in zip(d.shape, d.chunks, strict=True)], dtype=np.int64))
            stored = int(d.id.get_num_chunks())
            unwritten = stored < expected
            what = f"{expected - stored} of its {expected} chunks were never written"
    except (AttributeError, OSError, RuntimeError, ValueError):
        return  # an HDF5 build without these calls: the pass reads what is there
    if not unwritten:
        return
    if not fill:
        raise ReaderError(f"dataset {d.name!r}: {what} (they would read as the fill value)", path=path,
                          hint="the acquisition or copy did not finish: copy the file again, or pass "
                               "fill_missing=True to read them as the fill value")
    _filled(raw, f"dataset {d.name!r}: {what}; read as the fill value")


def _external_memmap(d: h5py.Dataset, segments):
    """A single external segment as a numpy memmap (independent of the working folder HDF5 resolves
    relative names against); None for several segments (read through h5py)."""
    if len(segments) != 1:
        return None
    target, offset, _size = segments[0]
    need = int(offset) + int(np.prod(d.shape, dtype=np.int64)) * d.dtype.itemsize
    if target.stat().st_size < need:
        raise ReaderError(f"the external file {str(target)!r} of dataset {d.name!r} is truncated", path=target,
                          hint="copy it again")
    return np.memmap(target, dtype=d.dtype, mode="r", offset=int(offset), shape=d.shape)
