"""Drawn regions as masks, and a reduced copy of a dataset for live virtual images (no GUI).

The GUI draws virtual detectors on the detector view (point, circle, annulus, rectangle, polygon) and regions
on the scan view (rectangle, polygon). This module turns such a geometry into a mask, and keeps a small copy
of the data (detector binned, scan subsampled) against which a detector mask gives an approximate virtual
image in milliseconds while the shape is dragged. The exact image comes from
:func:`napari_4dstem.virtual_image` afterwards.

Geometry is in pixels of the space it is drawn in, ``(y, x)`` pairs, pixel-centre convention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dataset import Dataset4D
from .errors import DataError
from .progress import Progress, Steps

ROI_KINDS = ("point", "circle", "annulus", "rectangle", "polygon")
#: Bytes the reduced copy may take (float32).
LIVE_BYTES = 64 * 2**20


def polygon_mask(shape: tuple[int, int], vertices) -> np.ndarray:
    """Pixels whose centre lies inside the polygon ``vertices`` ``(n, 2)`` of ``(y, x)`` or on its edge
    (even-odd rule; a rectangle from (1, 2) to (4, 6) holds rows 1-4 and columns 2-6)."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise DataError(f"a polygon needs at least 3 (y, x) vertices, got an array of shape {v.shape}")
    yy, xx = np.indices(shape, dtype=np.float64)
    inside = np.zeros(shape, dtype=bool)
    edge = np.zeros(shape, dtype=bool)
    y0, x0 = v[-1]
    for y1, x1 in v:
        crosses = (y1 > yy) != (y0 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (yy - y1) * (x0 - x1) / (y0 - y1)
        inside ^= crosses & (xx < xc)
        # on the edge (within 1e-6 px) counts as inside
        dy, dx = y1 - y0, x1 - x0
        L2 = dy * dy + dx * dx
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / L2, 0, 1) if L2 > 0 else np.zeros(shape)
        edge |= np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)) <= 1e-6
        y0, x0 = y1, x1
    return inside | edge


def rectangle_vertices(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float64)


def roi_mask(shape: tuple[int, int], kind: str, **geometry) -> np.ndarray:
    """Boolean mask of a drawn region.

    ``point``: ``center=(y, x)`` (the nearest pixel); ``circle``: ``center``, ``outer`` (radius);
    ``annulus``: ``center``, ``inner``, ``outer``; ``rectangle``: ``corners=((y0, x0), (y1, x1))`` (pixel
    centres inside, edges included); ``polygon``: ``vertices``.
    """
    if kind not in ROI_KINDS:
        raise DataError(f"unknown region kind {kind!r}", hint=f"use one of {', '.join(ROI_KINDS)}")
    m = np.zeros(shape, dtype=bool)
    if kind == "point":
        cy, cx = (int(round(float(c))) for c in geometry["center"])
        if not (0 <= cy < shape[0] and 0 <= cx < shape[1]):
            raise DataError(f"the point detector at ({cy}, {cx}) lies outside the detector {shape}")
        m[cy, cx] = True
        return m
    if kind in ("circle", "annulus"):
        cy, cx = (float(c) for c in geometry["center"])
        inner = float(geometry.get("inner") or 0.0) if kind == "annulus" else 0.0
        outer = float(geometry["outer"])
        yy, xx = np.indices(shape, dtype=np.float64)
        r = np.hypot(yy - cy, xx - cx)
        return (r >= inner) & (r <= outer)
    if kind == "rectangle":
        (y0, x0), (y1, x1) = geometry["corners"]
        ya, yb = sorted((float(y0), float(y1)))
        xa, xb = sorted((float(x0), float(x1)))
        yy, xx = np.indices(shape, dtype=np.float64)
        return (yy >= ya) & (yy <= yb) & (xx >= xa) & (xx <= xb)
    return polygon_mask(shape, geometry["vertices"])


def virtual_spec(shape: tuple[int, int], kind: str, **geometry) -> dict:
    """Keywords for :func:`napari_4dstem.virtual_image` that compute a drawn detector exactly.

    Circles and annuli keep their radii (``kind="annulus"``, ``center``, ``inner``, ``outer`` in pixels), so
    the image is the one ``virtual_image`` gives for the same radii; other shapes become a ``mask``.
    """
    if kind in ("circle", "annulus"):
        inner = float(geometry.get("inner") or 0.0) if kind == "annulus" else 0.0
        return {"kind": "annulus", "inner": inner, "outer": float(geometry["outer"]),
                "center": tuple(float(c) for c in geometry["center"]), "units": "px"}
    return {"kind": "mask", "mask": roi_mask(shape, kind, **geometry)}


# -- reduced copy for live images ------------------------------------------------------------------
@dataclass
class ReducedCopy:
    """The data with the detector binned by ``bin`` and the scan subsampled by ``stride``, float32.

    ``frames`` is ``(n_y, n_x, det_y // bin, det_x // bin)``; a virtual image from it is exact for masks made
    of whole ``bin x bin`` blocks and otherwise weights each block by the fraction of it the mask covers
    (the intensity is assumed uniform inside a block, an error only along the mask's edge).
    """

    frames: np.ndarray
    bin: int
    stride: int
    scan_shape: tuple[int, int]
    detector_shape: tuple[int, int]

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """The mask as block weights: the fraction of each ``bin x bin`` block it covers (frames hold block sums)."""
        b = self.bin
        h, w = self.frames.shape[2:]
        m = np.asarray(mask, dtype=np.float32)[:h * b, :w * b]
        return m.reshape(h, b, w, b).mean(axis=(1, 3))

    def image(self, mask: np.ndarray) -> np.ndarray:
        """Approximate virtual image on the full scan grid (nearest-neighbour upsampled where subsampled)."""
        w = self.weights(mask).ravel()
        ny, nx = self.frames.shape[:2]
        small = self.frames.reshape(ny * nx, -1) @ w
        img = small.reshape(ny, nx)
        if self.stride > 1:
            img = np.repeat(np.repeat(img, self.stride, 0), self.stride, 1)[:self.scan_shape[0], :self.scan_shape[1]]
        return img


def reduced_geometry(ds: Dataset4D, max_bytes: int = LIVE_BYTES, max_det: int = 32) -> tuple[int, int]:
    """``(bin, stride)``: the detector binned to at most ~``max_det`` pixels a side, then the scan subsampled
    until the float32 copy fits in ``max_bytes``."""
    dy, dx = ds.detector_shape
    b = max(1, math.ceil(max(dy, dx) / max_det))
    b = min(b, dy, dx)
    stride = 1
    while True:
        ny, nx = -(-ds.scan_shape[0] // stride), -(-ds.scan_shape[1] // stride)
        if ny * nx * (dy // b) * (dx // b) * 4 <= max_bytes or (ny == 1 and nx == 1):
            return b, stride
        stride *= 2


def iter_reduced_copy(ds: Dataset4D, max_bytes: int = LIVE_BYTES, max_det: int = 32) -> Steps[ReducedCopy]:
    """Build the :class:`ReducedCopy` in one pass over the scan rows (yields ``Progress``)."""
    b, stride = reduced_geometry(ds, max_bytes, max_det)
    dy, dx = ds.detector_shape
    h, w = dy // b, dx // b
    rows = list(range(0, ds.scan_shape[0], stride))
    ny, nx = len(rows), -(-ds.scan_shape[1] // stride)
    out = np.empty((ny, nx, h, w), dtype=np.float32)
    per = max(1, (8 * 2**20) // max(1, ds.scan_shape[1] * dy * dx * ds.dtype.itemsize))  # ~8 MiB per read
    done = 0
    for k in range(0, ny, per):
        for j, r in enumerate(rows[k:k + per]):
            row = ds.rows(r, r + 1)[0, ::stride, :h * b, :w * b].astype(np.float32, copy=False)
            out[k + j] = row.reshape(nx, h, b, w, b).sum(axis=(2, 4))
        done = min(ny, k + per)
        yield Progress(done, ny, "reduced copy for live virtual images")
    return ReducedCopy(out, b, stride, tuple(ds.scan_shape), (dy, dx))


def iter_region_mean(ds: Dataset4D, scan_mask: np.ndarray) -> Steps[np.ndarray]:
    """Mean pattern (float64) of the frames where ``scan_mask`` ``(scan_y, scan_x)`` is true, row block by block."""
    m = np.asarray(scan_mask, dtype=bool)
    if m.shape != tuple(ds.scan_shape):
        raise DataError(f"the region mask has shape {m.shape}, the scan is {ds.scan_shape}")
    n = int(m.sum())
    if n == 0:
        raise DataError("the drawn region covers no scan pixel", hint="draw it over the scan")
    ys = np.flatnonzero(m.any(axis=1))
    y0, y1 = int(ys[0]), int(ys[-1]) + 1
    per = max(1, ds.rows_per_block())
    acc = np.zeros(ds.detector_shape, dtype=np.float64)
    total = -(-(y1 - y0) // per)
    for i, a in enumerate(range(y0, y1, per)):
        b = min(y1, a + per)
        block = ds.rows(a, b)
        sel = m[a:b]
        if sel.any():
            acc += block[sel].sum(axis=0, dtype=np.float64)
        yield Progress(i + 1, total, "region average")
    return acc / n
