"""The napari GUI: reader, sample data, dock widgets and the demo. The only code that imports napari and Qt.

The public scripting surface is :func:`session` (docs/gui.md): ``s = napari_4dstem.gui.session(viewer)``, then
``s.select(y, x)``, ``s.selection``, ``s.dataset``, ``s.pattern()``, ``s.add_virtual_detector(name, kind,
**geometry)``, ``s.virtual_image(name)``, ``s.region_mean(vertices)``, ``s.set_display(...)``.
"""
from __future__ import annotations


def session(viewer):
    """The analysis session of a napari viewer (created on first use): state, layers and scripting methods.

    Works after ``viewer.open(path, plugin="napari-4dstem")``, after reopening a results file, and with the
    plugin's docks (they share it). See docs/gui.md for the methods.
    """
    from ._session import get_session

    return get_session(viewer)


__all__ = ["session"]
