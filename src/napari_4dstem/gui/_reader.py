"""npe2 reader: a 4D-STEM file opens as a navigator image in scan space plus one diffraction-pattern layer.

The 4-D array stays lazy: only the navigator (computed block by block by the core) and one pattern
are read. The :class:`~napari_4dstem.Dataset4D` travels in the layers' metadata, where the session
(see ``_session.py``) picks it up so that clicks and the docks find it. A results file (HDF5 with a
``schema_version`` attribute) reopens as the saved maps instead.
"""
from __future__ import annotations

import os

import napari  # noqa: F401  (the GUI subpackage is where napari is imported; a test relies on it)
from napari.utils.notifications import show_error

from napari_4dstem.errors import FourDSTEMError
from napari_4dstem.io import SUPPORTED, load

from ._common import toast_text
from ._layers import dataset_layers

EXTENSIONS = tuple(SUPPORTED)  # the core's list; napari.yaml's filename_patterns match it (a test checks)


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
    in_viewer = attach_session()
    try:
        if is_results_file(path):
            from ._results import results_layers

            return results_layers(path)
        ds = load(path)
        return dataset_layers(ds, in_viewer=in_viewer)
    except FourDSTEMError as e:
        show_error(toast_text(e))
    except (OSError, ValueError, KeyError, TypeError, MemoryError) as e:  # foreign-library failures
        show_error(f"{os.path.basename(path)}: could not open as 4D-STEM data ({type(e).__name__}: {e})")
    return [(None,)]


def attach_session() -> bool:
    """The one side effect of reading: the viewer opening our layers gets a session, which adopts them when
    they are inserted (napari gives a reader no viewer; the current one is the one opening). True when
    there is a viewer."""
    viewer = napari.current_viewer()
    if viewer is None:
        return False
    from ._session import get_session

    get_session(viewer)
    return True


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
