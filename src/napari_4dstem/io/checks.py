"""Checks shared by all readers: options, error translation, shape to 4-D, a cheap NaN/Inf sample."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import Calibration
from ..errors import DataError, FourDSTEMError, ReaderError

OPTIONS = ("key", "nav_shape", "cube", "nan_policy", "lazy", "fill_missing", "allow_outside", "force_axes")


@dataclass
class Raw:
    """What a format reader hands back before the common checks."""

    data: Any
    reader: str
    calibration: Calibration = field(default_factory=Calibration)
    keepalive: Any = None
    nav_shape: tuple[int, int] | None = None  # the file's own scan shape for a flat stack of frames
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    files: list = field(default_factory=list)  # every file read (default: the path opened)
    data_file: Any = None  # the file that holds the frames (default: the first of ``files``)


def check_options(path, options: dict) -> dict:
    """Validate option names and values; returns a normalised copy."""
    bad = sorted(set(options) - set(OPTIONS))
    if bad:
        raise ReaderError(f"unknown option(s) {', '.join(bad)}", path=path,
                          hint=f"load() accepts {', '.join(OPTIONS)}")
    opts = dict(options)
    nav = opts.get("nav_shape")
    if nav is not None:
        try:
            nav = tuple(int(n) for n in nav)
        except (TypeError, ValueError):
            nav = ()
        if len(nav) != 2 or min(nav) < 1:
            raise ReaderError(f"nav_shape={options['nav_shape']!r} is not two positive integers", path=path,
                              hint="pass nav_shape=(scan_y, scan_x), e.g. nav_shape=(256, 256)")
        opts["nav_shape"] = nav
    cube = opts.get("cube")
    if cube is not None and (isinstance(cube, bool) or not isinstance(cube, (int, np.integer))):
        raise ReaderError(f"cube={cube!r} is not an integer", path=path, hint="pass cube=0 for the first 4-D cube")
    policy = opts.setdefault("nan_policy", "raise")
    if policy not in ("raise", "ignore"):
        raise ReaderError(f"nan_policy={policy!r} is not 'raise' or 'ignore'", path=path)
    key = opts.get("key")
    if key is not None and not ((isinstance(key, str) and key) or
                                (isinstance(key, (int, np.integer)) and not isinstance(key, bool))):
        raise ReaderError(f"key={key!r} is not a name or a signal index", path=path,
                          hint="pass the array's name or path as a string")
    if key is not None:
        opts["key"] = str(key)  # member names are strings; rosettasciio readers take digits as an index
    for flag in ("lazy", "fill_missing", "allow_outside", "force_axes"):
        if flag in opts and not isinstance(opts[flag], (bool, np.bool_)):
            raise ReaderError(f"{flag}={opts[flag]!r} is not True or False", path=path)
    return opts


@contextlib.contextmanager
def library_errors(path, what: str = "read"):
    """Turn exceptions from numpy/h5py/zarr/rosettasciio into a ReaderError naming the file."""
    try:
        yield
    except FourDSTEMError:
        raise
    except PermissionError as e:
        raise ReaderError(f"permission denied ({e.strerror or e})", path=getattr(e, "filename", None) or path,
                          hint="ask for read access to the file (and its folder), or copy it somewhere readable") \
            from e
    except ModuleNotFoundError as e:
        raise ReaderError(f"reading this file needs the optional package {e.name!r}, which is not installed",
                          path=path, hint=f"install it: pip install {e.name}") from e
    except MemoryError as e:
        raise ReaderError(f"not enough memory to {what} the file ({e})", path=path,
                          hint="convert it to an uncompressed .npy, HDF5 or zarr file, which load lazily") from e
    except Exception as e:  # noqa: BLE001 - any library failure becomes an error the user can act on
        if "truncated" in str(e).lower():
            raise ReaderError(f"the file is truncated ({type(e).__name__}: {e})", path=path,
                              hint="the copy or the acquisition did not finish: copy the file again") from e
        msg = _first_line(e)
        if isinstance(e, OSError) and e.errno == errno.EIO:
            hint = "the disk or network share reported an I/O error: copy the file to a local disk"
        elif "unsupported" in msg.lower() or "not supported" in msg.lower() or isinstance(e, NotImplementedError):
            hint = ("the reading library does not support this file (or it is damaged): convert it, e.g. to HDF5 "
                    "or zarr, with the software that wrote it")
        else:
            hint = ("the reading library failed on it: the file may be damaged or of another format than its "
                    "extension says")
        raise ReaderError(f"could not {what} the file: {type(e).__name__}: {msg}", path=path, hint=hint) from e


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    s = s.splitlines()[0] if s else type(e).__name__
    return s if len(s) <= 300 else s[:297] + "..."


def check_path(path: Path, what: str = "file", folder_ok: bool = True) -> None:
    """The path exists and is a regular file (or a folder, for zarr stores): FIFOs, sockets and devices are
    refused at once (opening a FIFO would block forever), before any library sees them."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ReaderError("the path is a loop of symbolic links", path=path,
                              hint="fix the link so that it points to the file") from None
        if e.errno == errno.ENOENT:
            if os.path.lexists(path):
                target = os.readlink(path) if os.path.islink(path) else "?"
                raise ReaderError(f"the symbolic link points to {target!r}, which does not exist", path=path,
                                  hint="fix the link or open the file itself") from None
            raise ReaderError(f"{what} not found", path=path,
                              hint="check the path and the spelling of the file name") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ReaderError("permission denied (a folder on the path cannot be entered)", path=path,
                              hint="ask for access to the folder, or copy the file somewhere readable") from None
        if e.errno == errno.ENAMETOOLONG:
            raise ReaderError("the path is too long for the file system", path=path) from None
        if e.errno == errno.ENOTDIR:
            raise ReaderError("a part of the path is a file, not a folder", path=path,
                              hint="check the path") from None
        raise ReaderError(f"cannot access the path ({e.strerror or e})", path=path) from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        if not folder_ok:
            raise ReaderError(f"is a folder, not a {what}", path=path, hint="give a file")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ReaderError("permission denied: the folder cannot be read", path=path,
                              hint="ask for read access, or copy it somewhere readable")
        return
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "not a regular file")
        raise ReaderError(f"is {kind}, not a regular file; only files (and zarr folders) are opened", path=path,
                          hint="save the data to a file first")
    if not os.access(path, os.R_OK):
        raise ReaderError("permission denied: the file cannot be read", path=path,
                          hint="ask for read access (chmod / the file's owner), or copy it somewhere readable")


def check_dtype(dtype, path) -> None:
    """Only real numbers: bool, complex, structured, string, datetime and object arrays are refused."""
    dt = np.dtype(dtype)
    if dt.kind in "iuf" and dt.fields is None and dt.subdtype is None:
        return
    what = {"b": "booleans", "c": "complex numbers", "V": "structured records" if dt.fields else "raw bytes",
            "S": "byte strings", "U": "text strings", "M": "dates/times", "m": "time differences",
            "O": "Python objects"}.get(dt.kind, f"values of type {dt}")
    raise ReaderError(f"the array holds {what} (dtype {dt}), not real numbers", path=path,
                      hint="4D-STEM data must be integer or floating-point intensities; convert the array "
                           "(e.g. np.abs for complex waves) and save it again")


# -- shapes -------------------------------------------------------------------------------------
def _is_lazy_native(a) -> bool:
    return isinstance(a, np.ndarray)  # numpy arrays and memmaps slice and reshape as views


def _as_dask(a, chunks):
    import dask.array as da

    if isinstance(a, da.Array):
        return a
    lock = type(a).__module__.startswith("h5py")  # h5py is not thread safe
    return da.from_array(a, chunks=chunks, lock=lock, asarray=True)


def _n_per_chunk(item_bytes: int, multiple: int = 1) -> int:
    """How many items (frames, rows) of ``item_bytes`` fit ~DEFAULT_BLOCK_BYTES, a multiple of ``multiple``."""
    from ..dataset import DEFAULT_BLOCK_BYTES

    n = max(1, DEFAULT_BLOCK_BYTES // max(1, item_bytes * multiple))
    return n * multiple


def reshape_frames(a, nav: tuple[int, int]):
    """A stack ``(n, det_y, det_x)`` -> ``(scan_y, scan_x, det_y, det_x)`` without reading it."""
    shape = (nav[0], nav[1]) + tuple(a.shape[1:])
    if _is_lazy_native(a):
        return a.reshape(shape)
    # chunks of whole scan rows so the reshape needs no rechunking
    frame_bytes = int(np.prod(a.shape[1:])) * np.dtype(a.dtype).itemsize
    lead = _n_per_chunk(frame_bytes, nav[1])
    d = _as_dask(a, (lead, -1, -1))
    if any(c % nav[1] for c in d.chunks[0][:-1]):
        d = d.rechunk({0: lead})
    return d.reshape(shape)


def take_cube(a, i: int):
    """``a[i]`` along the first axis, lazily."""
    if _is_lazy_native(a) or hasattr(a, "compute"):
        return a[i]
    row_bytes = int(np.prod(a.shape[2:])) * np.dtype(a.dtype).itemsize
    return _as_dask(a, (1, _n_per_chunk(row_bytes), -1, -1, -1))[i]


def to_4d(raw: Raw, path, nav_shape=None, cube=None):
    """Bring ``raw.data`` to 4 axes following the options; returns ``(data, notes)``."""
    a = raw.data
    shape = tuple(int(s) for s in a.shape)
    notes: list[str] = []
    if cube is not None and len(shape) != 5:
        raise ReaderError(f"cube={cube} was given but the data is {len(shape)}-D {shape}, not 5-D", path=path,
                          hint="leave out the cube option (it picks one 4-D cube of a 5-D file)")
    if len(shape) == 5:
        if cube is None:
            raise ReaderError(
                f"the data is 5-D {shape}: {shape[0]} 4-D cubes of shape {shape[1:]} along the first axis",
                path=path, hint=f"choose one with cube=0 ... cube={shape[0] - 1}")
        if not -shape[0] <= int(cube) < shape[0]:
            raise ReaderError(f"cube={cube} is out of range: the file has {shape[0]} cubes", path=path,
                              hint=f"choose cube=0 ... cube={shape[0] - 1}")
        a = take_cube(a, int(cube))
        notes.append(f"cube {int(cube)} of {shape[0]} taken from the 5-D array {shape}")
        shape = shape[1:]
    if len(shape) == 4:
        if nav_shape is not None and tuple(nav_shape) != shape[:2]:
            n = shape[0] * shape[1]
            _check_count(nav_shape, n, path)
            flat = a.reshape((n,) + shape[2:]) if _is_lazy_native(a) else _as_dask(a, (1, -1, -1, -1)).reshape(
                (n,) + shape[2:])
            a = reshape_frames(flat, nav_shape)
            notes.append(f"scan shape {shape[:2]} re-shaped to nav_shape {tuple(nav_shape)}")
        return a, notes
    if len(shape) == 3:
        nav = nav_shape or raw.nav_shape
        if nav is None:
            raise ReaderError(
                f"the data is a 3-D stack of {shape[0]} frames of {shape[1]} x {shape[2]} pixels and the file "
                "does not say the scan shape", path=path,
                hint="pass nav_shape=(scan_y, scan_x) whose product is the number of frames")
        _check_count(nav, shape[0], path, "nav_shape" if nav_shape is not None else "the file's scan shape")
        if nav_shape is None:
            notes.append(f"scan shape {tuple(nav)} from the file's metadata")
        return reshape_frames(a, tuple(nav)), notes
    raise ReaderError(
        f"the data is {len(shape)}-D {shape}; 4D-STEM data needs 4 axes (scan_y, scan_x, det_y, det_x)",
        path=path, hint="a 3-D frame stack loads with nav_shape=(scan_y, scan_x); a 5-D file with cube=")


def _check_count(nav, n_frames: int, path, what: str = "nav_shape") -> None:
    prod = int(nav[0]) * int(nav[1])
    if prod != n_frames:
        raise ReaderError(
            f"{what} {tuple(nav)} holds {prod} probe positions but the file has {n_frames} frames",
            path=path, hint=f"pass a nav_shape whose product is {n_frames}")


# -- NaN / Inf ----------------------------------------------------------------------------------
SAMPLE_ROW_BYTES = 16 * 2**20
FLOAT32_LIMIT = 1e30  # larger magnitudes overflow float32 sums of a frame
SAMPLE_FRAMES_PER_ROW = 8


def sample_rows(data) -> list[np.ndarray]:
    """The first, middle and last scan rows (or evenly spaced frames of them when rows are large)."""
    sy, sx = int(data.shape[0]), int(data.shape[1])
    itemsize = np.dtype(data.dtype).itemsize
    row_bytes = sx * int(data.shape[2]) * int(data.shape[3]) * itemsize
    out = []
    for y in sorted({0, sy // 2, sy - 1}):
        if row_bytes <= SAMPLE_ROW_BYTES:
            out.append(_np(data[y]))
        else:
            for x in sorted({int(round(v)) for v in np.linspace(0, sx - 1, SAMPLE_FRAMES_PER_ROW)}):
                out.append(_np(data[y, x]))
    return out


def check_finite(data, path, policy: str) -> str | None:
    """Raise DataError on NaN/Inf in a sample of frames (policy "raise"); returns a note or None."""
    dt = np.dtype(data.dtype)
    if dt.kind not in "fc":
        return None
    rows = sample_rows(data)
    bad = sum(int(np.size(s) - np.count_nonzero(np.isfinite(s))) for s in rows)  # no cast: 1e300 stays finite
    if not bad:
        big = max((float(np.abs(s).max()) for s in rows if s.size), default=0.0)
        if big > FLOAT32_LIMIT:
            raise DataError(f"values up to {big:.3g} in the sampled scan rows: the analysis computes in float32, "
                            f"whose range ends at {np.finfo(np.float32).max:.3g}", path=path,
                            hint="rescale the data (e.g. divide by its maximum) or clip the outliers, then save again")
        return None
    if policy == "raise":
        raise DataError(
            f"{bad} NaN or Inf values in the first/middle/last scan rows", path=path,
            hint="repair the file, or load with nan_policy='ignore' and mask or replace them before analysis")
    return f"{bad} NaN/Inf values found in the sampled scan rows (nan_policy='ignore')"


def _np(a) -> np.ndarray:
    if hasattr(a, "compute"):
        a = a.compute()
    return np.asarray(a)


def file_size_check(path: Path) -> None:
    """Missing path, not a regular file, or empty file -> ReaderError before any library sees it."""
    check_path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ReaderError("the file is empty (0 bytes)", path=path,
                          hint="the copy or the acquisition did not finish: copy the file again")
