"""Export scan-space maps to TIFF (ImageJ/Fiji), PNG (figure with colorbar) and HyperSpy ``.hspy``.

Every export carries the scan step and units: TIFF as ImageJ resolution/unit plus a JSON ``Info``
entry, PNG in the axes, title and colorbar, ``.hspy`` as axes scale/units (readable by hyperspy,
pyxem and rosettasciio). Files are written atomically and never replace an existing file unless
``overwrite=True``. This module imports no napari or Qt.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from .errors import DataError
from .results import Results, _check_space, atomic_write

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".hspy": "hspy"}
CYCLIC_CMAP = "twilight"  # angles wrap at +-pi: a cyclic map shows no false edge there


def export_map(path, image, *, scale=(1.0, 1.0), scan_unit: str = "px", units: str = "", name: str = "",
               cyclic: bool | None = None, overwrite: bool = False) -> Path:
    """Write one map (2-D ``(scan_y, scan_x)`` or a stack ``(channel, scan_y, scan_x)``) to a file.

    The format follows the suffix: ``.tif``/``.tiff``, ``.png`` or ``.hspy``.

    Parameters
    ----------
    path
        Output file.
    image
        The map.
    scale, scan_unit
        Scan step ``(y, x)`` and its unit (e.g. ``"Å"``).
    units
        Unit of the values (``"mrad"``, ``"rad"``, ...).
    name
        Title (``"com/magnitude"``).
    cyclic
        Use a cyclic colormap (PNG); default: when ``units == "rad"`` or the name ends in ``angle``.
    overwrite
        Replace an existing file.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unknown export format {path.suffix!r}", path=path,
                        hint=f"use one of {', '.join(sorted(FORMATS))}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise DataError(f"a map must be 2-D (scan_y, scan_x) or 3-D (channel, scan_y, scan_x), got {image.shape}",
                        path=path)
    scale = tuple(float(s) for s in scale)
    if cyclic is None:
        cyclic = units == "rad" or name.endswith("angle")
    writer = {"tiff": _write_tiff, "png": _write_png, "hspy": _write_hspy}[fmt]
    if fmt == "hspy":  # HDF5 copes badly with a full disk: refuse early when it clearly will not fit
        _check_space(path, image.nbytes + 2**16)
    if image.dtype.kind not in "biuf":
        raise DataError(f"map {name!r} holds {image.dtype} values, not numbers", path=path)
    if not all(np.isfinite(v) and v > 0 for v in scale):
        raise DataError(f"the scan step {list(scale)} is not positive", path=path,
                        hint="fix the calibration (scan_step) and save again")
    from .errors import WriteError

    with atomic_write(path, overwrite=overwrite, what="export file") as tmp:
        try:
            writer(tmp, image, scale=scale, scan_unit=scan_unit, units=units, name=name, cyclic=cyclic)
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            raise WriteError(f"the {fmt} writer failed on map {name!r}: {type(e).__name__}: {str(e)[:200]}",
                             path=path, hint="export this map in another format") from None
    return path


def export_results(results: Results, folder, formats=("tif", "png"), keys=None, overwrite: bool = False,
                   prefix: str = "") -> list[Path]:
    """Export maps of a :class:`Results` to ``folder`` (one file per map and format).

    File names are the map keys with ``/`` replaced by ``_`` (``com_magnitude.tif``).
    """
    import os
    import shutil

    from .results import WriteError, _write_error, check_output

    folder = Path(folder)
    keys = list(keys or sorted(results.maps))
    for key in keys:  # everything that can be checked, before anything is written
        if key not in results.maps:
            raise DataError(f"no map {key!r} in the results", hint=f"choose from {sorted(results.maps)}")
    for fmt in formats:
        if f".{fmt.lstrip('.').lower()}" not in FORMATS:
            raise DataError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(sorted(FORMATS))}")
    step = results.scan_scale
    if not all(np.isfinite(v) and v > 0 for v in step):
        raise DataError(f"the scan step {list(step)} is not positive", hint="fix the calibration and save again")
    if folder.exists() and not folder.is_dir():
        raise WriteError("is a file, not a folder", path=folder, hint="give a folder for the exported maps")
    made = [f for f in [folder, *folder.parents] if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, folder) from None
    targets = [(key, folder / f"{prefix}{key.replace('/', '_')}.{fmt.lstrip('.')}") for key in keys for fmt in formats]
    out: list[Path] = []
    try:
        for _key, p in targets:
            check_output(p, overwrite, "export file")
        total = sum(np.asarray(results.maps[k]).nbytes * 2 + 2**16 for k, _ in targets)
        _check_space(folder / "x", total)
        for key, p in targets:
            out.append(export_map(p, results.maps[key], scale=step, scan_unit=results.scan_unit,
                                  units=results.units.get(key, ""), name=key, overwrite=overwrite))
    except BaseException:
        # a failed export leaves nothing: neither the files it wrote nor the folders it made
        for p in out:
            with contextlib.suppress(OSError):
                os.unlink(p)
        for f in made:
            with contextlib.suppress(OSError):
                if f.is_dir() and not any(f.iterdir()):
                    shutil.rmtree(f)
        raise
    return out


# -- writers -----------------------------------------------------------------------------------
def _write_tiff(path, image, *, scale, scan_unit, units, name, cyclic):
    import tifffile

    data = image
    axes = "CYX" if image.ndim == 3 else "YX"  # an ImageJ hyperstack for a stack
    if data.dtype not in (np.uint8, np.uint16, np.float32):
        data = data.astype(np.float32)  # the types ImageJ reads
    info = json.dumps({"name": name, "units": units, "scale": list(scale), "scale_units": scan_unit,
                       "axes": ["channel", "scan_y", "scan_x"][-image.ndim:]})
    tifffile.imwrite(path, np.ascontiguousarray(data), imagej=True, resolution=(1.0 / scale[1], 1.0 / scale[0]),
                     metadata={"axes": axes, "unit": _imagej_unit(scan_unit), "Info": info})


def _imagej_unit(unit: str) -> str:
    # ImageJ descriptions are ASCII; ImageJ itself turns "A" into Å and "um" into µm.
    u = {"Å": "A", "µm": "um", "μm": "um", "1/Å": "1/A"}.get(unit, unit)
    return u.encode("ascii", "backslashreplace").decode("ascii")


def _write_png(path, image, *, scale, scan_unit, units, name, cyclic):
    fig = map_figure(image, scale=scale, scan_unit=scan_unit, units=units, name=name, cyclic=cyclic)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")


def map_figure(image, *, scale=(1.0, 1.0), scan_unit="px", units="", name="", cyclic=False):
    """A matplotlib Figure of a map (panels for a 3-D map) with axes in scan units and a colorbar."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads

    image = np.asarray(image)
    chans = [image] if image.ndim == 2 else list(image)
    fig = Figure(figsize=(4.2 * len(chans), 3.8))
    sy, sx = scale
    ny, nx = image.shape[-2:]
    extent = (-0.5 * sx, (nx - 0.5) * sx, (ny - 0.5) * sy, -0.5 * sy)  # pixel centres at i * step
    for i, ch in enumerate(chans):
        ax = fig.add_subplot(1, len(chans), i + 1)
        kw = {"cmap": CYCLIC_CMAP, "vmin": -np.pi, "vmax": np.pi} if cyclic else {"cmap": "viridis"}
        im = ax.imshow(ch, extent=extent, interpolation="nearest", **kw)
        ax.set_xlabel(f"x ({scan_unit})")
        ax.set_ylabel(f"y ({scan_unit})")
        label = name if len(chans) == 1 else f"{name} [{i}]"
        ax.set_title(f"{label}\nstep {sy:.4g} x {sx:.4g} {scan_unit}", fontsize=9)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.set_label(units or "a.u.")
    return fig


def _write_hspy(path, image, *, scale, scan_unit, units, name, cyclic):
    from rsciio.hspy import file_writer

    axes = []
    if image.ndim == 3:  # channel = navigation, the map = signal (a stack of Signal2D)
        axes.append({"name": "channel", "size": image.shape[0], "offset": 0.0, "scale": 1.0, "units": "",
                     "navigate": True, "index_in_array": 0})
    data = np.ascontiguousarray(image)
    n0 = len(axes)
    for i, (ax, size, sc) in enumerate(zip(("y", "x"), image.shape[-2:], scale, strict=True)):
        axes.append({"name": ax, "size": int(size), "offset": 0.0, "scale": float(sc), "units": scan_unit,
                     "navigate": False, "index_in_array": n0 + i})
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": name, "original_filename": ""},
                     "Signal": {"signal_type": "", "quantity": f"{name} ({units})" if units else name}},
        "original_metadata": {"napari_4dstem": {"name": name, "units": units}},
        "attributes": {"_lazy": False},
        "tmp_parameters": {},
        "package_info": {"package": "", "package_version": ""},  # plain signal: no extension package
        "learning_results": {},
        "models": {},
    }
    file_writer(str(path), signal, show_progressbar=False)
