"""numpy (.npy, .npz) and zarr readers. Uncompressed arrays are memory-mapped, never read whole."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from .checks import Raw


# -- .npy ---------------------------------------------------------------------------------------
def _read_npy_header(fh):
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, fortran, dtype


def read_npy(path: Path, opts: dict) -> Raw:
    if opts.get("key") is not None:
        raise ReaderError(f"key={opts['key']!r} does not apply: a .npy file holds one array", path=path,
                          hint="leave out the key option (it picks an array of an .npz, HDF5 or zarr file)")
    with open(path, "rb") as fh:
        shape, fortran, dtype = _read_npy_header(fh)
        offset = fh.tell()
    _check_object(dtype, path)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise ReaderError(f"the file is truncated: its header says {shape} {dtype} ({need} bytes) but it has "
                          f"{size} bytes", path=path, hint="copy the file again; the copy did not finish")
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    return Raw(data, "npy")


def _check_object(dtype, path):
    if dtype.hasobject:
        raise ReaderError(f"the array holds Python objects (dtype {dtype}), not numbers", path=path,
                          hint="save a numeric array with np.save")


# -- .npz ---------------------------------------------------------------------------------------
def _npz_members(zf: zipfile.ZipFile) -> dict[str, tuple]:
    """key -> (member name, shape, fortran, dtype, offset of the array inside the member)."""
    out = {}
    for name in zf.namelist():
        if not name.endswith(".npy"):
            continue
        with zf.open(name) as fh:
            shape, fortran, dtype = _read_npy_header(fh)
            out[name[:-4]] = (name, shape, fortran, dtype, fh.tell())
    return out


def _describe(members: dict) -> str:
    return ", ".join(f"{k!r} {m[1]} {m[3]}" for k, m in members.items())


def read_npz(path: Path, opts: dict) -> Raw:
    key = opts.get("key")
    with zipfile.ZipFile(path) as zf:
        members = _npz_members(zf)
        if not members:
            raise ReaderError("the .npz archive holds no arrays", path=path)
        if key is not None:
            if key not in members:
                raise ReaderError(f"no array {key!r} in the archive; it holds {_describe(members)}", path=path,
                                  hint="pass one of these names as key=")
        else:
            four = [k for k, m in members.items() if len(m[1]) == 4]
            if len(four) == 1:
                key = four[0]
            elif len(members) == 1:
                key = next(iter(members))
            else:
                raise ReaderError(f"the archive holds several arrays: {_describe(members)}", path=path,
                                  hint="choose one, e.g. key=" + repr(four[0] if four else
                                                                               next(iter(members))))
        name, shape, fortran, dtype, inner = members[key]
        _check_object(dtype, path)
        info = zf.getinfo(name)
        notes = [f"array {key!r} of the archive"]
        if info.compress_type == zipfile.ZIP_STORED:
            offset = _member_data_offset(path, info) + inner
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > path.stat().st_size:
                raise ReaderError(f"member {key!r} is truncated", path=path, hint="copy the file again")
            data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                             order="F" if fortran else "C")
            return Raw(data, "npz", notes=notes)
    # compressed (np.savez_compressed): a zip member cannot be memory-mapped. Check dtype and shape options on a
    # stand-in of the right shape first: a wrong option must not cost reading gigabytes.
    from ..dataset import available_memory
    from .checks import check_dtype, to_4d

    check_dtype(dtype, path)
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=tuple(shape),
                                               strides=(0,) * len(shape))
    to_4d(Raw(stand_in, "npz"), path, opts.get("nav_shape"), opts.get("cube"))

    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > 0.5 * available_memory():
        raise ReaderError(f"array {key!r} is compressed and larger ({nbytes / 2**30:.1f} GiB) than half the free "
                          "memory", path=path, hint="save it uncompressed (np.save / np.savez) or as zarr")
    with np.load(path, allow_pickle=False) as z:
        data = z[key]
    notes.append("compressed member: read into memory")
    return Raw(data, "npz", notes=notes)


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    # the local header's name/extra lengths can differ from the central directory's
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        raise ReaderError(f"damaged zip entry for {info.filename!r}", path=path, hint="copy the file again")
    n_name, n_extra = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + n_name + n_extra


# -- zarr ---------------------------------------------------------------------------------------
def is_zarr_dir(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def _zarr_arrays(group) -> dict:
    """Every array in the group and its sub-groups, by path."""
    return {name: m for name, m in group.members(max_depth=None) if hasattr(m, "shape") and hasattr(m, "dtype")}


def read_zarr(path: Path, opts: dict) -> Raw:
    import zarr

    if path.is_dir():
        store = zarr.storage.LocalStore(str(path), read_only=True)
    else:
        store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        node = zarr.open(store=store, mode="r")
    except (FileNotFoundError, KeyError) as e:
        raise ReaderError(f"no zarr array or group metadata in the store ({type(e).__name__}: {e})", path=path,
                          hint="check that this is a zarr store written completely") from None
    key = opts.get("key")
    if hasattr(node, "members"):  # a group
        arrays = _zarr_arrays(node)
        desc = ", ".join(f"{k!r} {tuple(a.shape)} {a.dtype}" for k, a in arrays.items()) or "none"
        if key is not None:
            if key.strip("/") not in arrays:
                raise ReaderError(f"no array {key!r} in the zarr store; arrays: {desc}", path=path,
                                  hint="pass one of these paths as key=")
            key = key.strip("/")
        else:
            four = [k for k, a in arrays.items() if a.ndim == 4]
            if len(four) == 1:
                key = four[0]
            elif len(arrays) == 1:
                key = next(iter(arrays))
            else:
                raise ReaderError(f"the zarr store holds {len(four)} 4-D arrays; arrays: {desc}", path=path,
                                  hint="choose one with key='array/path'")
        arr = arrays[key]
        notes = [f"zarr array {key!r}"]
    else:
        arr, notes = node, []
    _check_chunks(arr, path, opts, notes)
    return Raw(arr, "zarr", keepalive=store, notes=notes)


def _check_chunks(arr, path: Path, opts: dict, notes: list) -> None:
    """A chunk missing from the store reads as the fill value: refuse unless ``fill_missing=True``."""
    try:
        expected, stored = int(arr.nchunks), int(arr.nchunks_initialized)
    except Exception:  # noqa: BLE001 - a store that cannot list its keys: the pass reads what is there
        return
    if stored >= expected:
        return
    fill = arr.fill_value.item() if hasattr(arr.fill_value, "item") else arr.fill_value
    what = (f"{expected - stored} of the {expected} chunks of the zarr array are missing (they would read as the "
            f"fill value {fill!r})")
    if not opts.get("fill_missing", False):
        raise ReaderError(what, path=path,
                          hint="copy the store again; if its writer skipped chunks equal to the fill value "
                               "(zarr's write_empty_chunks=False), pass fill_missing=True")
    import warnings

    warnings.warn(what, stacklevel=3)
    notes.append(what + "; read as the fill value (fill_missing=True)")
