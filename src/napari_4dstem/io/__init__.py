"""Read 4D-STEM files into a lazy :class:`~napari_4dstem.Dataset4D`.

``load(path, **options)`` picks the reader from the extension (and, for HDF5, from the content),
brings the data to ``(scan_y, scan_x, det_y, det_x)`` without reading it, fills the calibration
the file records (nothing else), and checks a sample of frames for NaN/Inf. See docs/readers.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset import Dataset4D, Provenance
from ..errors import DataError, ReaderError
from ..params import check_arguments
from .checks import (OPTIONS, Raw, check_dtype, check_finite, check_options, file_size_check, library_errors,
                     to_4d)

__all__ = ["load", "SUPPORTED", "OPTIONS"]

#: extension -> format, for messages and the docs
SUPPORTED = {
    ".npy": "numpy array (memory-mapped)",
    ".npz": "numpy archive (key=)",
    ".h5": "HDF5: py4DSTEM EMD 1.0, DECTRIS Arina *_master.h5, or any 4-D dataset (key=)",
    ".hdf5": "HDF5 (as .h5)",
    ".nxs": "NeXus/HDF5 (as .h5)",
    ".emd": "EMD: py4DSTEM 1.0, Prismatic, Velox",
    ".zarr": "zarr directory or .zarr.zip (key=)",
    ".zip": "zipped zarr store",
    ".mib": "Quantum Detectors Merlin (+ .hdr)",
    ".hdr": "Merlin header (reads the .mib beside it)",
    ".dm3": "Gatan DigitalMicrograph",
    ".dm4": "Gatan DigitalMicrograph",
    ".blo": "NanoMegas blockfile",
    ".xml": "EMPAD (.xml + .raw)",
    ".raw": "EMPAD raw (with its .xml beside it)",
    ".hspy": "HyperSpy HDF5",
    ".zspy": "HyperSpy zarr",
    ".mrc": "Direct Electron MRC (4-D with its *_info.txt)",
    ".app5": "NanoMegas TopSpin",
    ".tvips": "TVIPS camera stream (*_000.tvips)",
}


def load(path, **options) -> Dataset4D:
    """Open a 4D-STEM file lazily.

    Parameters
    ----------
    path
        A file (or a zarr / zspy directory). Supported extensions: see ``SUPPORTED`` and docs/readers.md.
    key : str or int, optional
        Which array: the member name of an .npz, the dataset path in HDF5/zarr, the group path of a
        py4DSTEM array, the index or title of a signal in a rosettasciio file.
    nav_shape : (int, int), optional
        ``(scan_y, scan_x)`` for a flat stack of frames (3-D data, Merlin, Arina) or to re-shape the scan;
        the product must equal the number of frames.
    cube : int, optional
        Which 4-D cube of a 5-D file (for example a Prismatic depth series) to open.
    nan_policy : {"raise", "ignore"}
        What to do with NaN/Inf in the sampled frames (first, middle and last scan rows).
    lazy : bool
        ``True`` (default) keeps the data on disk; ``False`` reads it into memory (when it fits).
    fill_missing : bool
        ``False`` (default): chunks a zarr store or an HDF5 file never wrote, and missing sources of an HDF5
        virtual dataset, raise :class:`ReaderError`. ``True`` reads them as the fill value (with a warning and a
        provenance note).
    allow_outside : bool
        ``False`` (default): HDF5 external storage and virtual-dataset sources outside the file's folder are
        refused. ``True`` reads them (they are listed in ``provenance.files``).
    force_axes : bool
        ``False`` (default): a rosettasciio cube whose axes are not (scan, scan, detector, detector) by their
        units and navigate flags is refused. ``True`` reads the axes as if they were.

    Returns
    -------
    Dataset4D
        ``name`` is the file stem; ``provenance`` records the reader, options, original dtype and shape.

    Raises
    ------
    ReaderError
        The file is missing, empty, truncated, corrupt, of an unknown format, or its shape needs an option.
    DataError
        NaN/Inf in float data (with ``nan_policy="raise"``), or ``lazy=False`` on data larger than memory.
    """
    check_arguments("load", {"path": path, **options})  # types and ranges, before any read
    p = Path(path).expanduser()
    opts = check_options(p, options)
    file_size_check(p)
    with library_errors(p):
        raw = _dispatch(p, opts)
    try:
        check_dtype(raw.data.dtype, p)
    except Exception:
        _close(raw.keepalive)
        raise
    original_shape = tuple(int(s) for s in raw.data.shape)
    original_dtype = str(np.dtype(raw.data.dtype))
    try:
        with library_errors(p, "shape"):
            data, notes = to_4d(raw, p, opts.get("nav_shape"), opts.get("cube"))
        if opts.get("lazy", True) is False:
            data = _in_memory(data, p)
        with library_errors(p, "check"):
            note = check_finite(data, p, opts["nan_policy"])
    except Exception:
        _close(raw.keepalive)
        raise
    files = [str(Path(f).resolve()) for f in (raw.files or [p])]
    data_file = str(Path(raw.data_file).resolve()) if raw.data_file else files[0]
    prov = Provenance(source_path=str(p.resolve()), reader=raw.reader, original_dtype=original_dtype,
                      original_shape=original_shape, options=_jsonable(options),
                      notes=raw.notes + notes + ([note] if note else []),
                      files=list(dict.fromkeys([data_file] + files)), data_file=data_file)
    return Dataset4D(data, raw.calibration, prov, name=_stem(p), metadata=raw.metadata,
                     _keepalive=raw.keepalive)


def _dispatch(p: Path, opts: dict) -> Raw:
    from . import native

    name = p.name.lower()
    ext = p.suffix.lower()
    if p.is_dir():
        if ext == ".zspy":
            from .via_rsciio import read_plugin
            return read_plugin("zspy", p, opts, reader="zspy")
        if native.is_zarr_dir(p):
            return native.read_zarr(p, opts)
        raise ReaderError("this folder is not a zarr store (no zarr.json, .zarray or .zgroup)", path=p,
                          hint="open a file inside it, or a folder written by zarr")
    if ext == ".npy":
        return native.read_npy(p, opts)
    if ext == ".npz":
        return native.read_npz(p, opts)
    if ext == ".zip" or name.endswith(".zarr.zip"):
        if name.endswith(".zspy.zip"):
            from .via_rsciio import read_plugin
            return read_plugin("zspy", p, opts, reader="zspy")
        return native.read_zarr(p, opts)
    if ext in (".h5", ".hdf5", ".emd", ".nxs"):
        return _read_hdf5(p, opts)
    if ext in (".mib", ".hdr"):
        from .via_rsciio import read_merlin
        return read_merlin(p, opts)
    if ext in (".xml", ".raw"):
        from .via_rsciio import read_empad
        return read_empad(p, opts)
    if ext == ".blo":
        from .via_rsciio import read_blockfile
        return read_blockfile(p, opts)
    if ext in (".mrc", ".app5", ".tvips"):
        from . import via_rsciio
        return {".mrc": via_rsciio.read_de_mrc, ".app5": via_rsciio.read_topspin,
                ".tvips": via_rsciio.read_tvips}[ext](p, opts)
    plugins = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph",
               ".hspy": "hspy", ".zspy": "zspy"}
    if ext in plugins:
        from .via_rsciio import read_plugin
        return read_plugin(plugins[ext], p, opts, reader=ext[1:])
    raise ReaderError(f"unknown file type {ext or '(no extension)'!r}", path=p,
                      hint="supported: " + ", ".join(SUPPORTED))


def _read_hdf5(p: Path, opts: dict) -> Raw:
    import h5py

    from . import hdf5

    if not h5py.is_hdf5(p):
        raise ReaderError("not an HDF5 file (no HDF5 signature): corrupt, or another format with an HDF5 "
                          "extension", path=p, hint="copy the file again, or check its real format")
    f = h5py.File(p, "r")
    try:
        kind = hdf5.sniff(f, p)
        if kind in ("prismatic", "velox", "hspy"):
            f.close()
            from .via_rsciio import read_emd, read_plugin
            return read_plugin("hspy", p, opts, reader="hspy") if kind == "hspy" else read_emd(p, opts, kind)
        reader = {"arina": hdf5.read_arina, "py4dstem": hdf5.read_py4dstem}.get(kind, hdf5.read_generic)
        raw = reader(f, p, opts)
        hdf5.check_storage(raw, p, opts)  # external files, virtual sources, chunks never written
        return raw
    except BaseException:
        f.close()
        raise


def _in_memory(data, p: Path):
    from ..dataset import available_memory

    nbytes = int(np.prod(data.shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
    if nbytes > 0.5 * available_memory():
        raise DataError(f"lazy=False asks to read {nbytes / 2**30:.1f} GiB, more than half the free memory",
                        path=p, hint="keep lazy=True (the default): analyses read the data in blocks")
    a = data.compute() if hasattr(data, "compute") else data[...]
    return np.array(a, copy=True, order="C")  # a real in-memory copy, also of a memmap


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".zarr.zip", ".zspy.zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def _jsonable(options: dict) -> dict:
    out = {}
    for k, v in options.items():
        if isinstance(v, tuple):
            v = [int(x) if isinstance(x, (int, np.integer)) else x for x in v]
        elif isinstance(v, np.integer):
            v = int(v)
        out[k] = v
    return out


def _close(handle) -> None:
    for h in handle if isinstance(handle, (list, tuple)) else [handle]:
        close = getattr(h, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort
                pass
