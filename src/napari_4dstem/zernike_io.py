"""The ``/zernike`` group of a results file (docs/results.md): Zernike motif maps, class means, parameters.

The maps travel in :class:`~napari_4dstem.results.Results` like every other map (``zernike_maps`` gives them
their keys); :func:`write_zernike_group`, called by ``results._write`` after the maps, adds what the generic
writer cannot know: detector axes and scale for ``class_means``, the ``(n, m)`` indices and the parameters as
attributes of the group. It also writes a whole :class:`~napari_4dstem.motifs.MotifResult` into any open HDF5
file. :func:`read_zernike_group` reads the group back as plain arrays.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

GROUP = "zernike"
#: The scan maps of the group (``(scan_y, scan_x)`` or channel first) and the detector-space stack.
SCAN_MAPS = ("features", "angle", "labels", "outlier", "class_distance", "pcs")
DETECTOR_MAPS = ("class_means",)


def zernike_maps(result) -> dict[str, np.ndarray]:
    """``{"zernike/NAME": array}`` of a :class:`~napari_4dstem.motifs.MotifResult` for ``Results.maps``.

    ``features`` is channel first ``(F, scan_y, scan_x)`` like the other stacks of the file.
    """
    out = {
        f"{GROUP}/features": np.moveaxis(np.asarray(result.features, np.float32), -1, 0),
        f"{GROUP}/angle": np.asarray(result.angle, np.float32),
        f"{GROUP}/labels": np.asarray(result.labels, np.int32),
        f"{GROUP}/outlier": np.asarray(result.outlier, np.float32),
        f"{GROUP}/class_distance": np.asarray(result.class_distance, np.float32),
        f"{GROUP}/pcs": np.asarray(result.pcs, np.float32),
    }
    if result.class_means is not None:
        out[f"{GROUP}/class_means"] = np.asarray(result.class_means, np.float32)
    return out


def zernike_parameters(result) -> dict[str, Any]:
    """The parameters of the group (JSON-able): everything :func:`napari_4dstem.motifs.zernike_motifs` used,
    the ``(n, m)`` indices, class counts, explained variance, the model selection scores."""
    p = dict(result.parameters)
    z = result.zernike
    if z is not None:
        p["indices"] = np.asarray(z.indices).tolist()
        p["radius"], p["center"] = float(z.radius), [float(c) for c in z.center]
    p["counts"] = np.asarray(result.counts).tolist()
    p["explained_variance_ratio"] = np.asarray(result.explained).tolist()
    p["selection"] = {str(k): float(v) for k, v in result.selection.items()}
    return _jsonable(p)


def write_zernike_group(h5file, result) -> None:
    """Write or complete ``/zernike`` in an open h5py file.

    ``result`` is a :class:`~napari_4dstem.results.Results` (its ``zernike/*`` maps are already written by
    ``results._write``: only attributes are added; nothing happens without them) or a ``MotifResult`` (every
    map and the parameters are written here).
    """
    maps = getattr(result, "maps", None)
    if isinstance(maps, dict):  # a Results
        if GROUP not in h5file:
            return
        params = (getattr(result, "parameters", {}) or {}).get(GROUP, {})
        cal = getattr(result, "calibration", {}) or {}
    else:
        params = zernike_parameters(result)
        cal = {}
        for key, arr in zernike_maps(result).items():
            if key in h5file:
                del h5file[key]
            h5file.create_dataset(key, data=arr, compression="gzip" if arr.size > 4096 else None)
    g = h5file[GROUP]
    g.attrs["parameters"] = json.dumps(_jsonable(params))
    if "indices" in params:
        g.attrs["indices"] = np.asarray(params["indices"], np.int64).reshape(-1, 2)
    for name in SCAN_MAPS:
        if name in g:
            g[name].attrs["axes"] = (["feature", "scan_y", "scan_x"] if name == "features" else
                                     ["component", "scan_y", "scan_x"] if name == "pcs" else ["scan_y", "scan_x"])
    if "angle" in g:
        g["angle"].attrs["units"] = "rad"
    if "class_means" in g:
        d = g["class_means"]
        d.attrs["axes"] = ["class", "det_y", "det_x"]
        pix = cal.get("detector_pixel") or (None, None)
        d.attrs["scale"] = [float(s) if s else 1.0 for s in pix]
        d.attrs["scale_units"] = (cal.get("detector_unit") or "px") if all(pix) else "px"
        d.attrs["units"] = "mean intensity per pixel"


def read_zernike_group(source) -> dict[str, Any]:
    """``/zernike`` of a results file (a path or an open h5py file) as ``{name: array, "parameters": dict}``."""
    import h5py

    from .errors import ReaderError

    if isinstance(source, (h5py.File, h5py.Group)):
        return _read(source, getattr(source, "filename", "results file"))
    try:
        with h5py.File(source, "r") as f:
            return _read(f, source)
    except OSError as e:
        raise ReaderError(f"not a readable HDF5 file ({e})", path=source,
                          hint="give a results file written by napari-4dstem analyze --zernike") from None


def _read(f, path) -> dict[str, Any]:
    from .errors import ReaderError

    if GROUP not in f:
        raise ReaderError("the results file has no /zernike group", path=path,
                          hint="run napari-4dstem analyze ... --zernike")
    g = f[GROUP]
    out: dict[str, Any] = {k: g[k][()] for k in g if hasattr(g[k], "shape")}
    out["parameters"] = json.loads(g.attrs.get("parameters", "{}"))
    return out


def _jsonable(x):
    from .results import _jsonable as to_json  # one JSON conversion for every results group

    return to_json(x)


__all__ = ["zernike_maps", "zernike_parameters", "write_zernike_group", "read_zernike_group"]
