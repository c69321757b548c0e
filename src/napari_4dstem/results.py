"""One versioned HDF5 file per analysis: every map, the rrVAE history and checkpoints, all parameters.

The layout is documented in docs/results.md. Files are written atomically (a temporary file in the
same folder, fsync, then rename), so a crash, Ctrl-C or a full disk never leaves a half-written file
under the requested name, and an existing file is only replaced when ``overwrite=True``.
This module imports no napari, Qt or torch.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FourDSTEMError, ModelError, ReaderError, WriteError  # noqa: F401 (WriteError re-exported)

#: ``major.minor``. A reader accepts any minor of its own major; a newer major is refused.
SCHEMA_VERSION = "1.0"
FORMAT_NAME = "napari-4dstem results"
HEADER_BYTES = 2**20  # checksum of the first MiB identifies the source cheaply, even for 100 GB files

#: Map groups written to the file, and the value units used when a producer gives none.
GROUPS = ("navigator", "virtual", "com", "rrvae")
_DEFAULT_UNITS = {"com/angle": "rad", "rrvae/angle": "rad", "com/magnitude": "px", "com/x": "px", "com/y": "px"}


@dataclass
class Results:
    """Everything one analysis produced, as plain numpy arrays and JSON-able dicts.

    Attributes
    ----------
    shape, dtype
        Shape and dtype of the analysed 4-D dataset (as read).
    calibration
        ``Calibration.to_dict()`` of the dataset.
    provenance
        ``Provenance.to_dict()`` plus ``path``, ``size`` (bytes) and ``header_sha256`` (of the
        first MiB) of the source file when there is one.
    maps
        Scan-space maps keyed by their path in the file: ``"navigator"``, ``"virtual/bf"``,
        ``"com/x"``, ``"rrvae/angle"``, ``"rrvae/latents"`` (K, scan_y, scan_x), ... 2-D maps are
        ``(scan_y, scan_x)``; stacks put the channel first.
    units
        Value units per map key (``"mrad"``, ``"rad"``, ``"counts"``, ...); missing means unknown.
    history
        rrVAE training history, one dict of scalars (or lists of scalars) per epoch.
    checkpoints
        Model files as bytes (``RRVAE.save`` output) keyed by name, e.g. ``"best"``, ``"last"``.
    parameters
        Parameters per step (``"load"``, ``"preprocess"``, ``"com"``, ``"virtual"``, ``"rrvae"``).
    versions
        Software versions that produced the results.
    info
        Other scalars worth keeping (COM rotation found, best epoch, timings).
    """

    shape: tuple[int, ...] = ()
    dtype: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    # -- convenience ---------------------------------------------------------------------------
    def group(self, name: str) -> dict[str, np.ndarray]:
        """Maps of one group, e.g. ``group("com") -> {"x": ..., "y": ...}``."""
        prefix = name.rstrip("/") + "/"
        return {k[len(prefix):]: v for k, v in self.maps.items() if k.startswith(prefix)}

    @property
    def scan_scale(self) -> tuple[float, float]:
        """Scan step ``(y, x)`` for display (1 where unknown)."""
        step = self.calibration.get("scan_step") or (None, None)
        return tuple(float(s) if s else 1.0 for s in step)  # type: ignore[return-value]

    @property
    def scan_unit(self) -> str:
        step = self.calibration.get("scan_step") or (None, None)
        return (self.calibration.get("scan_unit") or "px") if all(step) else "px"

    def checkpoint_path(self, name: str = "best", folder=None) -> Path:
        """Write checkpoint ``name`` to a file (for ``RRVAE.load``) and return its path."""
        if name not in self.checkpoints:
            raise ModelError(f"no checkpoint {name!r} in these results (have {sorted(self.checkpoints)})",
                             hint="train the rrVAE and save the results again")
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="napari4dstem-ckpt-"))
        p = folder / f"rrvae_{name}.pt"
        p.write_bytes(self.checkpoints[name])
        return p

    @classmethod
    def from_analysis(cls, dataset, *, com=None, virtual=None, navigator=None, rrvae_model=None, maps=None,
                      preprocessing=None, parameters=None, info=None) -> Results:
        """Collect the outputs of an analysis into a :class:`Results`.

        Parameters
        ----------
        dataset
            The analysed :class:`~napari_4dstem.Dataset4D` (as read, before preprocessing).
        com
            A ``COMResult``; its maps go to ``/com``.
        virtual
            ``{name: 2-D array}`` of virtual images (``/virtual``).
        navigator
            The navigator image (``/navigator``).
        rrvae_model
            A trained ``RRVAE``: its history, config and checkpoints (``best`` and ``last``).
        maps
            The rrVAE's ``LatentMaps`` (from ``model.encode``), or a dict ``{key: array}`` of extra maps.
        preprocessing
            The ``Preprocessing`` used (its ``get_params()`` are stored).
        parameters
            Further parameters per step, merged over the ones collected here.
        """
        cal = dataset.calibration.to_dict()
        prov = dataset.provenance.to_dict()
        prov.update(source_provenance(prov.get("source_path"), data_file=prov.get("data_file"),
                                      files=prov.get("files")))
        r = cls(shape=tuple(int(s) for s in dataset.shape), dtype=str(dataset.dtype), calibration=cal,
                provenance=prov, versions=software_versions(), info=dict(info or {}))
        r.parameters["load"] = {"options": prov.get("options", {}), "reader": prov.get("reader")}
        if navigator is not None:
            r.maps["navigator"] = np.asarray(navigator)
        for name, img in (virtual or {}).items():
            r.maps[f"virtual/{name}"] = np.asarray(img)
        if com is not None:
            _add_com(r, com)
        if preprocessing is not None:
            r.parameters["preprocess"] = _jsonable(preprocessing.get_params())
            if hasattr(preprocessing, "fitted_values") and hasattr(preprocessing, "center_"):
                r.info["preprocess_fitted"] = _jsonable(preprocessing.fitted_values())
        if rrvae_model is not None:
            _add_model(r, rrvae_model)
        if maps is not None:
            _add_latent_maps(r, maps)
        for step, p in (parameters or {}).items():
            r.parameters[step] = {**r.parameters.get(step, {}), **_jsonable(p)}
        return r


# -- collecting ---------------------------------------------------------------------------------
def _add_com(r: Results, com) -> None:
    u = getattr(com, "units", None) or "px"  # COMResult.units: unit of x, y, magnitude
    su = r.scan_unit
    units = {"x": u, "y": u, "magnitude": u, "angle": "rad", "divergence": f"{u}/{su}", "curl": f"{u}/{su}",
             "icom": f"{u}*{su}"}
    if isinstance(getattr(com, "units", None), dict):
        units.update(com.units)
    for name in ("x", "y", "magnitude", "angle", "divergence", "curl", "icom"):
        a = getattr(com, name, None)
        if a is None:
            continue
        r.maps[f"com/{name}"] = np.asarray(a)
        r.units[f"com/{name}"] = str(units[name])
    params = getattr(com, "parameters", None)
    if params:
        r.parameters["com"] = _jsonable(params)
    for k in ("rotation_deg", "flip"):
        if getattr(com, k, None) is not None:
            r.info[f"com_{k}"] = _jsonable(getattr(com, k))


def _add_latent_maps(r: Results, maps) -> None:
    if isinstance(maps, dict):
        items = maps.items()
    else:
        items = [(k, getattr(maps, k, None)) for k in ("angle", "angle_sd", "latents", "latent_sd", "translations",
                                                       "translation_sd")]
    for k, a in items:
        if a is None:
            continue
        key = k if "/" in k else f"rrvae/{k}"
        r.maps[key] = np.asarray(a)
    for k in ("rrvae/angle", "rrvae/angle_sd"):
        if k in r.maps:
            r.units.setdefault(k, "rad")


def _add_model(r: Results, model) -> None:
    hist = getattr(model, "history", None) or []
    r.history = [_jsonable(dict(h)) for h in hist]
    cfg = getattr(model, "config", None)
    if cfg is not None:
        import dataclasses

        params = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
        r.parameters["rrvae"] = _jsonable(params)
    be = getattr(model, "best_epoch", None)
    if be is not None:
        r.info["rrvae_best_epoch"] = _jsonable(be)
    r.checkpoints.update(model_checkpoints(model))


def model_checkpoints(model) -> dict[str, bytes]:
    """``{"last": bytes, "best": bytes}`` from a trained model, via ``model.save`` to a temporary file.

    ``best`` is the state at ``model.best_epoch`` when the model can restore it; the model is put
    back to its last state afterwards.
    """
    out: dict[str, bytes] = {}
    if not getattr(model, "history", None):
        return out  # untrained: nothing worth keeping
    with tempfile.TemporaryDirectory(prefix="napari4dstem-") as d:
        p = Path(d) / "m.pt"
        model.save(p)
        out["last"] = p.read_bytes()
        best = getattr(model, "best_epoch", None)
        restore = getattr(model, "restore", None)
        if best is not None and restore is not None:
            current = getattr(model, "epoch", None)
            if best != current:
                try:
                    restore(best)
                    model.save(p)
                    out["best"] = p.read_bytes()
                except FourDSTEMError:  # best epoch's weights not kept: "last" only
                    pass
                finally:
                    if current is not None:
                        restore(current)
            else:
                out["best"] = out["last"]
    return out


def source_provenance(path, data_file=None, files=None) -> dict[str, Any]:
    """``path``, ``size`` and ``header_sha256`` (SHA-256 of the first MiB) of a source file or folder.

    ``data_file``: the file that holds the frames when it is not ``path`` (EMPAD .raw opened by its .xml, Merlin
    .mib by its .hdr, HDF5 external or virtual sources): size and checksum are of it. ``files``: every file read,
    listed with their sizes under ``files``.
    """
    if not path:
        return {}
    p = Path(path)
    out: dict[str, Any] = {"path": str(p.resolve()) if p.exists() else str(p)}
    if files:
        out["files"] = [{"path": str(f), "size": _size(f)} for f in files]
    if data_file and Path(data_file).resolve() != p.resolve():
        out["data_file"] = str(data_file)
        p = Path(data_file)
    try:
        if p.is_file():
            out["size"] = p.stat().st_size
            h = hashlib.sha256()
            with open(p, "rb") as f:
                h.update(f.read(HEADER_BYTES))
            out["header_sha256"] = h.hexdigest()
            out["header_bytes"] = min(HEADER_BYTES, out["size"])
        elif p.is_dir():  # zarr store: size of its files, checksum of its top-level metadata files
            size, n = 0, 0
            for f in p.rglob("*"):
                n += 1
                if n > 100_000:  # do not walk millions of chunks just for a number
                    size = None
                    break
                if f.is_file():
                    size += f.stat().st_size
            out["size"] = size
            h = hashlib.sha256()
            meta = sorted(f for f in p.iterdir() if f.is_file() and f.stat().st_size <= HEADER_BYTES)
            for f in meta:
                h.update(f.name.encode() + b"\0" + f.read_bytes())
            out["header_sha256"] = h.hexdigest()
            out["header_files"] = [f.name for f in meta]
    except OSError:
        pass
    return out


def _size(f) -> int | None:
    try:
        return os.stat(f).st_size
    except OSError:
        return None


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the results (no heavy imports)."""
    from importlib import metadata

    from . import __version__

    v = {"napari-4dstem": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "h5py", "torch", "scikit-learn", "rosettasciio", "dask"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return v


def _jsonable(x):
    """Convert numpy scalars/arrays, tuples, paths to JSON types (recursively)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 4096 else f"<array {x.shape} {x.dtype}>"
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        if isinstance(x, float) and not np.isfinite(x):
            return None if np.isnan(x) else (1e308 if x > 0 else -1e308)
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return repr(x)


# -- atomic writing ------------------------------------------------------------------------------
# Temporary files are ".n4d-<host>-<pid>-<target tag>-<random>.tmp": a fixed, short name (a legal 255-byte target
# name still fits), the writer's host and pid (a killed writer's file is recognised and removed at the next write
# to the folder), and a tag of the target name (a second writer of the same target is refused at once).
TMP_PREFIX = ".n4d-"
_HOST = hashlib.sha1(platform.node().encode()).hexdigest()[:4]
_RESERVED: dict[str, Path] = {}  # resolved target -> this process's reserved temporary file


def _tag(path: Path) -> str:
    return hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _temp_files(folder: Path):
    """(path, host, pid, tag) of every napari-4dstem temporary file in ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for n in names:
        if not (n.startswith(TMP_PREFIX) and n.endswith(".tmp")):
            continue
        parts = n[len(TMP_PREFIX):-4].split("-")
        if len(parts) == 4 and parts[1].isdigit():
            yield folder / n, parts[0], int(parts[1]), parts[2]


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove temporary files left in ``folder`` by a killed napari-4dstem writer on this machine (its process
    is gone); called before every write. Returns what was removed."""
    removed = []
    for p, host, pid, _tag_ in _temp_files(Path(folder)):
        if host == _HOST and pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                if p.lstat().st_uid == os.getuid():
                    p.unlink()
                    removed.append(p)
    return removed


def check_output(path, overwrite: bool = False, what: str = "file", sources=(), nbytes: int = 0) -> Path:
    """Every check of the final write, without writing: returns the file to write.

    ``path`` ending in ``/`` (or naming an existing folder) is refused; the parent must be a writable folder;
    an existing entry (even a dangling link) needs ``overwrite``; the target must not be one of ``sources``
    (also through a hard or symbolic link); the name must fit the file system; ``nbytes`` must fit the free
    space; no other live process may be writing the same target.
    """
    raw = os.fspath(path)
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        name_max = os.pathconf(parent if parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise WriteError(f"the file name is {len(os.fsencode(path.name))} bytes, longer than the file system allows "
                         f"({name_max})", path=path, hint="choose a shorter name")
    if raw.endswith(os.sep) or (path.is_dir() and not path.is_symlink()):
        raise WriteError(f"is a folder, not a {what}", path=raw,
                         hint=f"give a file name, e.g. {os.path.join(raw, 'results.h5')}")
    if not parent.is_dir():
        problem = (f"{parent} is a file, not a folder" if parent.exists() else
                   f"the folder {parent} does not exist")
        raise WriteError(problem, path=path, hint="create the folder or choose another one")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"no permission to write in the folder {parent}", path=path,
                         hint="choose a folder you can write to")
    for src in sources or ():
        if src and os.path.exists(src) and os.path.exists(path) and os.path.samefile(src, path):
            raise WriteError(f"the {what} would replace the input (source) data {src}", path=path,
                             hint="choose another output name")
        if src and os.path.isdir(src):  # a zarr folder: nothing is written into the source data
            try:
                Path(os.path.realpath(parent)).relative_to(os.path.realpath(src))
            except ValueError:
                continue
            raise WriteError(f"the {what} would be written inside the input data folder {src}", path=path,
                             hint="write it beside the data, not into it")
    if os.path.lexists(path):
        if not overwrite:
            kind = "a dangling symbolic link" if (path.is_symlink() and not path.exists()) else "already exists"
            raise WriteError(f"{what} {kind}" if kind == "already exists" else f"is {kind}", path=path,
                             hint="choose another name, or pass overwrite=True (--overwrite) to replace it")
        if path.is_symlink():
            raise WriteError("is a symbolic link; replacing it would not write where it points", path=path,
                             hint="give the link's target, or remove the link")
        if not path.is_file():
            raise WriteError("is not a regular file (a device, pipe or socket); it is never replaced", path=path,
                             hint="give a file name")
    tag = _tag(path)
    for _p, host, pid, t in _temp_files(parent):
        if t == tag and host == _HOST and pid != os.getpid() and _alive(pid):
            raise WriteError(f"another napari-4dstem process (pid {pid}) is writing this {what}", path=path,
                             hint="wait for it to finish, or choose another name")
    if nbytes:
        _check_space(path, nbytes)
    return path


@contextlib.contextmanager
def atomic_write(path, overwrite: bool = False, what: str = "file", sources=()):
    """Yield a temporary path in ``path``'s folder; on success it becomes ``path`` atomically.

    On any error (including Ctrl-C) the temporary file is removed and nothing appears at ``path``.
    OS errors become :class:`WriteError` naming the file and what to do. Temporary files of killed writers in
    the same folder are removed first.
    """
    path = check_output(path, overwrite, what, sources)
    parent = path.parent if str(path.parent) else Path(".")
    remove_stale_temporaries(parent)
    key = os.path.abspath(path)
    tmp = _RESERVED.pop(key, None)
    if tmp is None or not tmp.exists():
        tmp = _new_temp(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_no_clobber(tmp, path, what)
        _fsync_dir(parent)
    except OSError as e:
        raise _write_error(e, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _new_temp(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{_HOST}-{os.getpid()}-{_tag(path)}-", suffix=".tmp",
                                   dir=parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    except OSError as e:
        raise _write_error(e, path) from None
    return Path(tmp)


def reserve_output(path, overwrite: bool = False, what: str = "results file", sources=(), nbytes: int = 0) -> Path:
    """:func:`check_output`, then create this process's (empty) temporary file for ``path``, so that a second
    writer of the same target is refused at its start. The final write uses it; :func:`release_outputs`
    (called at exit) removes one left unused."""
    path = check_output(path, overwrite, what, sources, nbytes)
    remove_stale_temporaries(path.parent if str(path.parent) else Path("."))
    key = os.path.abspath(path)
    if key not in _RESERVED or not _RESERVED[key].exists():
        _RESERVED[key] = _new_temp(path)
    return path


def release_outputs() -> None:
    """Remove the temporary files reserved by this process and not used (an analysis that failed)."""
    while _RESERVED:
        _, tmp = _RESERVED.popitem()
        with contextlib.suppress(OSError):
            tmp.unlink()


atexit.register(release_outputs)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def preflight_output(path, overwrite: bool = False, what: str = "results file", sources=(), nbytes: int = 0) -> None:
    """Check early that ``path`` can be written (before a long computation); raises :class:`WriteError`.

    The checks of the final write (:func:`check_output`), then a temporary file is reserved in the target folder
    (a concurrent writer of the same target is refused at once); it is used by the final write, or removed.
    """
    reserve_output(path, overwrite=overwrite, what=what, sources=sources, nbytes=nbytes)


def _rename_no_clobber(tmp: Path, path: Path, what: str) -> None:
    # os.link fails if the target exists: no window where another writer's file is replaced.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise WriteError(f"{what} already exists", path=path,
                         hint="choose another name, or pass overwrite=True (--overwrite) to replace it") from None
    except OSError:  # file system without hard links
        if path.exists():
            raise WriteError(f"{what} already exists", path=path,
                             hint="choose another name, or pass overwrite=True (--overwrite)") from None
        os.replace(tmp, path)


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(e: OSError, path: Path) -> WriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return WriteError(f"not enough space to write the file ({e.strerror}); nothing was written", path=path,
                          hint="free disk space or write to another disk")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"no permission to write here ({e.strerror})", path=path,
                          hint="choose a folder you can write to")
    return WriteError(f"could not write the file ({e.strerror or e}); nothing was written", path=path,
                      hint="check the path and free space")


# -- HDF5 -------------------------------------------------------------------------------------
def save_results(path, results: Results, overwrite: bool = False) -> Path:
    """Write ``results`` to one HDF5 file (layout in docs/results.md), atomically.

    Parameters
    ----------
    path
        Target file (``.h5`` suggested).
    results
        What to write.
    overwrite
        Replace an existing file. Without it an existing file raises :class:`WriteError`.

    Returns
    -------
    Path of the written file.
    """
    import h5py

    path = Path(path)
    prov = results.provenance
    sources = [prov.get("path"), prov.get("source_path"), prov.get("data_file"),
               *((f.get("path") if isinstance(f, dict) else f) for f in (prov.get("files") or []))]
    check_output(path, overwrite, "results file", [s for s in sources if s])
    # Build the file in memory, then write the bytes with plain file I/O: HDF5 handles a full disk
    # badly (errors at close, even a crash), Python's write raises a clean OSError. Results hold
    # scan-sized maps and small models, so the buffer is small next to the data.
    buf = io.BytesIO()
    try:
        with h5py.File(buf, "w") as f:
            _write(f, results)
    except (TypeError, ValueError, RuntimeError) as e:
        raise WriteError(f"results could not be written: {e}", path=path,
                         hint="report this as a bug with the parameters used") from None
    view = buf.getbuffer()
    _check_space(path, view.nbytes)
    with atomic_write(path, overwrite=overwrite, what="results file", sources=[s for s in sources if s]) as tmp:
        _write_bytes(tmp, view)
    view.release()
    return path


def _write_bytes(path: Path, data: memoryview) -> None:
    with open(path, "wb") as fh:
        for i in range(0, data.nbytes, 2**24):
            fh.write(data[i:i + 2**24])


def _check_space(path: Path, nbytes: int) -> None:
    import shutil

    try:
        free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    except OSError:
        return  # the folder check in atomic_write gives the message
    if nbytes > free:
        raise WriteError(f"not enough space to write the file ({nbytes / 2**20:.1f} MiB needed, "
                         f"{free / 2**20:.1f} MiB free); nothing was written", path=path,
                         hint="free disk space or write to another disk")


def _write(f, r: Results) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["shape"] = list(r.shape)
    f.attrs["dtype"] = r.dtype
    for k in ("parameters", "calibration", "provenance", "versions", "info"):
        f.attrs[k] = json.dumps(_jsonable(getattr(r, k)))
    scale = list(r.scan_scale)
    for key, arr in r.maps.items():
        arr = np.asarray(arr)
        d = f.create_dataset(key, data=arr, compression="gzip" if arr.size > 4096 else None)
        d.attrs["units"] = r.units.get(key, "")
        d.attrs["scale"] = scale
        d.attrs["scale_units"] = r.scan_unit
        d.attrs["axes"] = {2: ["scan_y", "scan_x"], 3: ["channel", "scan_y", "scan_x"]}.get(arr.ndim, [])
    from .zernike_io import write_zernike_group  # zernike branch: /zernike attributes (class_means axes, params)
    write_zernike_group(f, r)
    if r.history:
        g = f.require_group("rrvae/history")
        g.attrs["records"] = json.dumps(_jsonable(r.history))
        for key in sorted({k for h in r.history for k in h}):
            vals = [h.get(key) for h in r.history]
            try:
                arr = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
            except (TypeError, ValueError):
                continue  # non-numeric entries live in the JSON records only
            g.create_dataset(key, data=arr)
    if r.checkpoints:
        g = f.require_group("rrvae/checkpoints")
        written: dict[bytes, str] = {}
        for name, blob in r.checkpoints.items():
            blob = bytes(blob)
            digest = hashlib.sha256(blob).digest()
            if digest in written:  # best == last: one copy, two names (HDF5 hard link)
                g[name] = g[written[digest]]
            else:
                g.create_dataset(name, data=np.frombuffer(blob, dtype=np.uint8))
                written[digest] = name


def load_results(path) -> Results:
    """Read a results file written by :func:`save_results`.

    Raises
    ------
    ReaderError
        The file is missing, not HDF5, not a results file, or from a newer major schema version.
    """
    import h5py

    from .io.checks import check_path

    path = Path(path)
    check_path(path, "results file", folder_ok=False)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ReaderError(f"not a readable HDF5 file ({_short(e)})", path=path,
                          hint="the file may be truncated or not a napari-4dstem results file") from None
    try:
        with f:
            return _read(f, path)
    except FourDSTEMError:
        raise
    except RecursionError:
        raise ReaderError("the results file is damaged (its metadata are nested too deeply to read)", path=path,
                          hint="re-run the analysis to write it again") from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise ReaderError(f"the results file is damaged ({_short(e)})", path=path,
                          hint="re-run the analysis to write it again") from None


def _read(f, path: Path) -> Results:
    import h5py

    version = f.attrs.get("schema_version")
    if f.attrs.get("format") != FORMAT_NAME or version is None:
        raise ReaderError("not a napari-4dstem results file (no schema_version)", path=path,
                          hint="open 4D-STEM data with napari_4dstem.load() instead")
    version = str(version)
    major = _major(version, path)
    if major > _major(SCHEMA_VERSION, path):
        raise ReaderError(f"results file schema {version} is newer than this napari-4dstem reads "
                          f"({SCHEMA_VERSION})", path=path, hint="update napari-4dstem")

    def j(k, default):
        s = f.attrs.get(k)
        if s is None:
            return default
        if isinstance(s, bytes):
            s = s.decode("utf-8")
        if not isinstance(s, str) or len(s) > 64 * 2**20:
            raise ReaderError(f"the results file is damaged (attribute {k!r} is not JSON text)", path=path,
                              hint="re-run the analysis to write it again")
        v = json.loads(s)
        if type(v) is not type(default):
            raise ReaderError(f"the results file is damaged (attribute {k!r} is a {type(v).__name__}, not a "
                              f"{type(default).__name__})", path=path, hint="re-run the analysis to write it again")
        return v

    r = Results(shape=tuple(int(s) for s in f.attrs.get("shape", ())), dtype=str(f.attrs.get("dtype", "")),
                calibration=j("calibration", {}), provenance=j("provenance", {}), parameters=j("parameters", {}),
                versions=j("versions", {}), info=j("info", {}), schema_version=version)

    _check_calibration(r.calibration, path)

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith(("rrvae/history", "rrvae/checkpoints")):
            if obj.dtype.kind not in "biuf" or obj.ndim not in (2, 3) or obj.size == 0:
                raise ReaderError(f"the results file is damaged: map {name!r} is {obj.dtype} of shape {obj.shape}, "
                                  "not a 2-D or 3-D array of numbers", path=path,
                                  hint="re-run the analysis to write it again")
            r.maps[name] = obj[()]
            u = obj.attrs.get("units", "")
            if u:
                r.units[name] = str(u)

    f.visititems(visit)
    if "rrvae/history" in f:
        recs = f["rrvae/history"].attrs.get("records")
        r.history = json.loads(recs) if recs is not None else []
    if "rrvae/checkpoints" in f:
        r.checkpoints = {k: f["rrvae/checkpoints"][k][()].tobytes() for k in f["rrvae/checkpoints"]}
    if not isinstance(r.history, list):
        raise ReaderError("the results file is damaged (the rrVAE history is not a list)", path=path)
    return r


def _check_calibration(cal: dict, path) -> None:
    step = cal.get("scan_step") or (None, None)
    ok = isinstance(step, (list, tuple)) and len(step) == 2 and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0)
        for v in step)
    if not ok:
        raise ReaderError(f"the results file's scan step {step!r:.60} is not two positive numbers (or unknown)",
                          path=path, hint="re-run the analysis, or fix the calibration in the source file")


def _major(version: str, path) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ReaderError(f"unreadable schema_version {version!r}", path=path,
                          hint="the file is damaged or not a napari-4dstem results file") from None


def _short(e: Exception) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:200]


__all__ = ["Results", "save_results", "load_results", "WriteError", "SCHEMA_VERSION", "atomic_write",
           "source_provenance", "software_versions", "model_checkpoints", "preflight_output"]
