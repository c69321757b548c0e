"""Names, units and layer keywords shared by the reader, the results I/O and the session (imports none of them).

Two canvases: scan space (the main viewer: navigator, every map, the selection marker, scan regions) and
detector space (the Detector dock's own viewer model: the pattern and the virtual detectors). Each canvas
has one unit for all its layers: Å/nm (or pixels) in scan space, mrad or 1/Å (or pixels) in detector space.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from napari_4dstem.dataset import Calibration, Dataset4D
from napari_4dstem.progress import run_steps

#: Key of our entry in ``layer.metadata``: ``{"role": ..., "dataset": Dataset4D}``.
META_KEY = "napari_4dstem"
MARKER_NAME = "selected pixel"
PATTERN_NAME = "diffraction pattern"
NAVIGATOR_NAME = "navigator"
REGION_NAME = "scan region"
SCAN_LABELS = ("scan_y", "scan_x")
DET_LABELS = ("det_y", "det_x")
#: Roles of the layers that live in scan space (the main canvas).
SCAN_ROLES = ("navigator", "map", "marker", "region")

_UNIT_NAMES = {"Å": "angstrom", "A": "angstrom", "angstrom": "angstrom", "nm": "nm", "pm": "pm", "µm": "um",
               "um": "um"}
_RECIPROCAL = ("1/å", "1/a", "1/angstrom", "a^-1", "å^-1")

# (path, mtime, size, reader options, shape) -> navigator; small, in memory
_NAV_CACHE: OrderedDict = OrderedDict()
_NAV_CACHE_SIZE = 16
#: Above this size (source bytes) a viewer gets the navigator from a worker, not while File > Open waits.
ASYNC_NAVIGATOR_BYTES = 256 * 2**20


def napari_units(unit: str | None):
    """A scan unit napari (pint) understands, or None."""
    return _UNIT_NAMES.get(unit) if unit else None


def ours(layer, role: str | None = None) -> bool:
    m = layer.metadata.get(META_KEY) if hasattr(layer, "metadata") else None
    return isinstance(m, dict) and (role is None or m.get("role") == role)


def role_of(layer) -> str | None:
    return layer.metadata[META_KEY].get("role") if ours(layer) else None


def scan_layer_kwargs(cal: Calibration) -> dict:
    """Scale, units and axis labels of every scan-space layer: the scan step when both steps are known."""
    step_known = all(cal.scan_step) and napari_units(cal.scan_unit) is not None
    scale = cal.scan_scale() if step_known else (1.0, 1.0)
    units = napari_units(cal.scan_unit) if step_known else "pixel"
    return {"scale": scale, "units": (units, units), "axis_labels": SCAN_LABELS}


def scan_unit_label(cal: Calibration) -> str:
    u = scan_layer_kwargs(cal)["units"][0]
    return {"angstrom": "Å", "pixel": "px"}.get(u, u)


def detector_units(cal: Calibration) -> tuple[tuple[float, float], str]:
    """``((scale_y, scale_x), unit)`` of detector space: mrad, 1/Å or pixels (never mixed)."""
    pix = cal.detector_pixel
    unit = (cal.detector_unit or "").lower()
    if pix is not None and all(p for p in pix):
        if unit == "mrad":
            return (float(pix[0]), float(pix[1])), "mrad"
        if unit in _RECIPROCAL:
            return (float(pix[0]), float(pix[1])), "1/Å"
    return (1.0, 1.0), "px"


_PINT_DET = {"mrad": "mrad", "1/Å": "1/angstrom", "px": "pixel"}


def detector_layer_kwargs(cal: Calibration) -> dict:
    scale, unit = detector_units(cal)
    return {"scale": scale, "units": (_PINT_DET[unit],) * 2, "axis_labels": DET_LABELS}


def _cache_key(ds: Dataset4D):
    src = ds.provenance.source_path
    if not src or not os.path.exists(src):
        return None  # in-memory data: not cached
    st = os.stat(src)
    # the notes tell crops (and other derived views) of the same file apart
    return (os.path.abspath(src), st.st_mtime_ns, st.st_size, repr(sorted(ds.provenance.options.items())),
            ds.shape, tuple(ds.provenance.notes))


def iter_cached_navigator(ds: Dataset4D):
    """Generator form of :func:`cached_navigator` (yields the core's Progress while computing)."""
    from napari_4dstem.virtual import iter_navigator_image

    key = _cache_key(ds)
    if key is not None and key in _NAV_CACHE:
        _NAV_CACHE.move_to_end(key)
        return _NAV_CACHE[key]
    nav = yield from iter_navigator_image(ds)
    nav = np.asarray(nav, dtype=np.float32)
    if key is not None:
        _NAV_CACHE[key] = nav
        while len(_NAV_CACHE) > _NAV_CACHE_SIZE:
            _NAV_CACHE.popitem(last=False)
    return nav


def cached_navigator(ds: Dataset4D) -> np.ndarray:
    """The navigator (sum image) of ``ds``, computed block by block once per file version (path + mtime +
    size + reader options), then kept in memory."""
    return run_steps(iter_cached_navigator(ds))


def navigator_is_cached(ds: Dataset4D) -> bool:
    return _cache_key(ds) in _NAV_CACHE


def dataset_layers(ds: Dataset4D, navigator: np.ndarray | None = None, in_viewer: bool = False) -> list:
    """Layer data tuples for a dataset: its navigator in scan space (the pattern is drawn in detector space).

    ``in_viewer``: a big file's navigator (not cached yet, over ``ASYNC_NAVIGATOR_BYTES``) starts as zeros and
    is computed by the session in a worker (``pending`` in the metadata), so File > Open returns at once.
    """
    pending = False
    if navigator is not None:
        nav = navigator
    elif in_viewer and ds.nbytes > ASYNC_NAVIGATOR_BYTES and not navigator_is_cached(ds):
        nav, pending = np.zeros(ds.scan_shape, np.float32), True
    else:
        nav = cached_navigator(ds)
    name = os.path.basename(ds.provenance.source_path) if ds.provenance.source_path else ds.name
    kw = dict(scan_layer_kwargs(ds.calibration), name=NAVIGATOR_NAME, colormap="gray",
              metadata={META_KEY: {"role": "navigator", "dataset": ds, "source": name, "pending": pending}})
    return [(nav, kw, "image")]
