"""npe2 reader: a 4D-STEM file opens as a navigator image in scan space plus one diffraction-pattern layer.

The 4-D array stays lazy: only the navigator (computed block by block by the core) and one pattern
are read. The :class:`~napari_4dstem.Dataset4D` travels in the layers' metadata, where the session
(see ``_session.py``) picks it up so that clicks and the docks find it. A results file (HDF5 with a
``schema_version`` attribute) reopens as the saved maps instead.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import napari  # noqa: F401  (the GUI subpackage is where napari is imported; a test relies on it)
import numpy as np
from napari.utils.notifications import show_error

from napari_4dstem.dataset import Dataset4D
from napari_4dstem.errors import FourDSTEMError
from napari_4dstem.io import SUPPORTED, load
from napari_4dstem.progress import run_steps
from napari_4dstem.virtual import iter_navigator_image

from ._session import META_KEY, NAVIGATOR_NAME, PATTERN_NAME, SCAN_LABELS, napari_units

EXTENSIONS = tuple(SUPPORTED)  # the core's list; napari.yaml's filename_patterns match it (a test checks)

# (path, mtime, size, reader options, shape) -> navigator; small, in memory
_NAV_CACHE: OrderedDict = OrderedDict()
_NAV_CACHE_SIZE = 16
#: Above this size (source bytes) a viewer gets the navigator from a worker, not while File > Open waits.
ASYNC_NAVIGATOR_BYTES = 256 * 2**20


def napari_get_reader(path):
    """Return :func:`read_4dstem` when ``path`` looks like a file we read, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = str(path).rstrip("/\\")
    if not p.lower().endswith(EXTENSIONS):
        return None
    return read_4dstem


def read_4dstem(path):
    """Layer data for a 4D-STEM file or a results file. Errors become a notification, not a crash."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    path = str(path)
    _attach_session()
    try:
        if is_results_file(path):
            from ._results import results_layers

            return results_layers(path)
        ds = load(path)
        return dataset_layers(ds)
    except FourDSTEMError as e:
        show_error(str(e))
    except (OSError, ValueError, KeyError, TypeError, MemoryError) as e:  # foreign-library failures
        show_error(f"{path}: could not open as 4D-STEM data ({type(e).__name__}: {e})")
    return [(None,)]


def _attach_session():
    # the session adopts our layers when they are inserted; make sure the viewer opening them has one
    viewer = napari.current_viewer()
    if viewer is not None:
        from ._session import get_session

        get_session(viewer)


def is_results_file(path) -> bool:
    """A results file is HDF5 with a ``schema_version`` root attribute (data files have none)."""
    if not str(path).lower().endswith((".h5", ".hdf5")) or not os.path.isfile(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "schema_version" in f.attrs
    except OSError:
        return False


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


def pattern_placement(ds: Dataset4D) -> dict:
    """Scale and translate that put the pattern beside the navigator at the same height.

    The main canvas is in scan coordinates; the pattern there is an inset, not a calibrated view
    (the Inspector dock shows patterns in detector space).
    """
    sy, sx = ds.calibration.scan_scale()
    ny, nx = ds.scan_shape
    dy, dx = ds.detector_shape
    s = ny * sy / dy
    return {"scale": (s, s), "translate": (-0.5 * sy + 0.5 * s, nx * sx * 1.05 - 0.5 * sx + 0.5 * s)}


def dataset_layers(ds: Dataset4D, navigator: np.ndarray | None = None) -> list:
    """Layer data tuples: the navigator and the pattern at the scan centre.

    In a viewer, a big file's navigator (not cached yet, over ``ASYNC_NAVIGATOR_BYTES``) starts as zeros and
    is computed by the session in a worker (``pending`` in the metadata), so File > Open returns at once.
    """
    pending = False
    if navigator is not None:
        nav = navigator
    elif (ds.nbytes > ASYNC_NAVIGATOR_BYTES and napari.current_viewer() is not None
          and _cache_key(ds) not in _NAV_CACHE):
        nav, pending = np.zeros(ds.scan_shape, np.float32), True
    else:
        nav = cached_navigator(ds)
    cal = ds.calibration
    units = napari_units(cal.scan_unit)
    common = {"axis_labels": SCAN_LABELS}
    if units:
        common["units"] = (units, units)
    name = Path(ds.provenance.source_path).name if ds.provenance.source_path else ds.name
    nav_kw = dict(common, name=NAVIGATOR_NAME, scale=cal.scan_scale(), colormap="gray",
                  metadata={META_KEY: {"role": "navigator", "dataset": ds, "source": name, "pending": pending}})
    iy, ix = ds.scan_shape[0] // 2, ds.scan_shape[1] // 2
    pattern = ds.frame(iy, ix)
    pat_kw = dict(common, name=PATTERN_NAME, colormap="magma", gamma=0.5,
                  metadata={META_KEY: {"role": "pattern", "dataset": ds}}, **pattern_placement(ds))
    return [(nav, nav_kw, "image"), (pattern, pat_kw, "image")]
