"""Keep a vispy Mesh's shader linked while its vertices move (a dragged virtual detector or scan region).

napari draws a Shapes layer with two vispy ``MeshVisual``s (faces and highlights). On every mouse move of a drag
it sets their data, and ``MeshVisual._update_data`` then builds a new ``Function`` for the colour transform, the
same GLSL each time; a new shader object counts as a code change, so vispy re-generates and re-links both
programs before the next draw. With software OpenGL (Xvfb, llvmpipe; remote desktops) that took most of the
detector canvas's 50-60 ms per frame of a drag (measured in benchmarks/bench_gui.py). :func:`install` makes
each mesh reuse its own pass-through transform, so a move only uploads the new vertices; the colormapped case
(one value per vertex, which depends on the colormap) is left as vispy builds it. Checked against vispy 0.14-0.17;
without the private method it does nothing.
"""
from __future__ import annotations

_ATTR = "_napari_4dstem_pass_colour"


def install() -> bool:
    """Patch ``vispy.visuals.MeshVisual`` once (idempotent). Returns whether the patch is in place."""
    from vispy.visuals.mesh import MeshVisual

    original = getattr(MeshVisual, "_build_color_transform", None)
    if original is None:
        return False
    if getattr(original, "_napari_4dstem", False):
        return True

    def _build_color_transform(self, colors):
        if colors.ndim == 2 and colors.shape[1] == 1:  # values through a colormap: vispy's own
            return original(self, colors)
        fun = self.__dict__.get(_ATTR)
        if fun is None:
            fun = self.__dict__[_ATTR] = original(self, colors)
        return fun

    _build_color_transform._napari_4dstem = True
    MeshVisual._build_color_transform = _build_color_transform
    return True
