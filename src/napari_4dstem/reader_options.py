"""Which reader options a file needs, and the choices for them (for a GUI chooser; no GUI here).

:func:`needed_options` looks at a file that :func:`napari_4dstem.io.load` cannot open without options and
lists what to choose: the arrays an archive holds (``key``), the frame count of a 3-D stack (``nav_shape``),
the number of 4-D cubes of a 5-D array (``cube``). Only headers are read.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def _npz_arrays(path: Path) -> dict[str, tuple]:
    from .io.native import _npz_members  # the reader's own header parsing

    with zipfile.ZipFile(path) as zf:
        return {k: (tuple(m[1]), np.dtype(m[3])) for k, m in _npz_members(zf).items()}


def _h5_arrays(path: Path) -> dict[str, tuple]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim >= 3:
                out[name] = (tuple(obj.shape), obj.dtype)
        f.visititems(visit)
    return out


def _zarr_arrays(path: Path) -> dict[str, tuple]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return {"": (tuple(node.shape), node.dtype)}
    out = {}

    def walk(group, prefix=""):
        for name, child in group.members():
            full = f"{prefix}{name}"
            if hasattr(child, "shape"):
                if len(child.shape) >= 3:
                    out[full] = (tuple(child.shape), child.dtype)
            else:
                walk(child, full + "/")

    walk(node)
    return out


def list_arrays(path) -> dict[str, tuple]:
    """``{name: (shape, dtype)}`` of the arrays (3-D or more) a .npz, HDF5 or zarr file holds; {} otherwise."""
    p = Path(path)
    suffix = p.name.lower()
    try:
        if suffix.endswith(".npz"):
            return _npz_arrays(p)
        if suffix.endswith((".h5", ".hdf5", ".nxs", ".emd")):
            return _h5_arrays(p)
        if suffix.endswith((".zarr", ".zarr.zip")) or (p.is_dir() and (p / ".zgroup").exists()):
            return _zarr_arrays(p)
        if suffix.endswith(".npy"):
            a = np.load(p, mmap_mode="r")
            return {"": (tuple(a.shape), a.dtype)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}
    return {}


def needed_options(path, **given) -> dict:
    """The options ``load(path, **given)`` still needs: ``{"key": [(name, "shape dtype"), ...]}`` when several
    arrays could be meant, ``{"nav_shape": n_frames}`` for a 3-D frame stack, ``{"cube": n_cubes}`` for a 5-D
    array. {} when the file opens as it is (or nothing can be offered)."""
    from .errors import FourDSTEMError
    from .io import load

    try:
        load(path, **given)
        return {}
    except FourDSTEMError:
        pass
    arrays = list_arrays(path)
    shapes = [s for s, _ in arrays.values()]
    five = [s for s in shapes if len(s) == 5]
    if "cube" not in given:
        try:  # a 5-D file whose reader finds the array itself: only the cube is missing
            load(path, **given, cube=0)
            # (a file may store the cubes as one 5-D array or, as Prismatic does, one array per cube)
            return {"cube": int(five[0][0]) if five else max(1, len(arrays))}
        except FourDSTEMError:
            pass
    need: dict = {}
    key = given.get("key")
    if key is None and len(arrays) > 1:
        need["key"] = [(k, f"{' x '.join(map(str, s))} {d}") for k, (s, d) in arrays.items()]
        return need
    shape = arrays.get(key, next(iter(arrays.values()), ((), None)))[0] if arrays else ()
    if len(shape) == 3 and "nav_shape" not in given:
        need["nav_shape"] = int(shape[0])
    if len(shape) == 5 and "cube" not in given:
        need["cube"] = int(shape[0])
    return need
