"""Detector geometry in one place: masks, the bright-field disc, mrad per pixel, the electron wavelength.

Used by COM (:mod:`.com`), the virtual detectors (:mod:`.virtual`) and preprocessing (:mod:`.preprocess`).
Conventions (docs/conventions.md): pixel-centre coordinates, pairs are ``(y, x)``; a pixel belongs to a
ring ``inner <= r <= outer`` when its centre does.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import DataError

#: Units a detector calibration in reciprocal length may carry (converted to mrad with the beam energy).
RECIPROCAL_UNITS = ("1/å", "1/a", "1/angstrom", "a^-1", "å^-1")


def electron_wavelength_A(energy_ev: float) -> float:
    """Relativistic electron wavelength in Å."""
    return 12.264259 / math.sqrt(energy_ev * (1.0 + 0.97846914e-6 * energy_ev))


def detector_pixel_mrad(ds) -> tuple[float, float] | None:
    """Detector pixel size (y, x) in mrad, or None when the calibration does not give it."""
    cal = ds.calibration
    if cal.detector_pixel is None or any(p is None for p in cal.detector_pixel):
        return None
    unit = (cal.detector_unit or "").lower()
    if unit == "mrad":
        return (float(cal.detector_pixel[0]), float(cal.detector_pixel[1]))
    if unit in RECIPROCAL_UNITS and cal.beam_energy_ev:
        k = electron_wavelength_A(cal.beam_energy_ev) * 1000.0
        return (float(cal.detector_pixel[0]) * k, float(cal.detector_pixel[1]) * k)
    return None


def find_bf_disc(pattern: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """Bright-field disc ``(cy, cx, radius)`` in pixels from a mean pattern.

    Pixels above ``threshold`` x (top - background) + background, where the background is the median of the
    pattern and the top the maximum after a 3 x 3 median filter (one hot pixel does not set it), form the disc.
    Gaps of up to two pixels are closed and holes filled first: a dead row or column through the disc (chip
    gaps, a rebinning seam) would otherwise split it and leave half of it. The centre is the intensity-weighted
    centroid of the region and the radius comes from its area (``sqrt(area / pi)``), robust to a ragged edge.
    """
    from scipy import ndimage

    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise DataError("the mean pattern is not a finite 2-D image; cannot find the bright-field disc")
    bg = float(np.median(p))
    top = float(ndimage.median_filter(p, size=3, mode="nearest").max()) if min(p.shape) >= 3 else float(p.max())
    if top <= bg:
        top = float(p.max())
    if top <= bg:
        raise DataError("the mean pattern is flat (all frames empty or uniform); cannot find the "
                        "bright-field disc", hint="give the centre and radii explicitly")
    sel = p > bg + threshold * (top - bg)
    if min(p.shape) >= 8:
        closed = ndimage.binary_closing(np.pad(sel, 2), structure=np.ones((3, 3), bool), iterations=2)[2:-2, 2:-2]
        sel = ndimage.binary_fill_holes(sel | closed)
    # keep the brightest connected region by total intensity (ignores hot pixels and far spots)
    lab, _ = ndimage.label(sel)
    peak = np.unravel_index(np.argmax(np.where(sel, p, -np.inf)), p.shape)
    sums = ndimage.sum(p, lab, index=np.arange(1, lab.max() + 1))
    region = lab == (int(np.argmax(sums)) + 1) if len(sums) else lab == lab[peak]
    w = np.maximum(p - bg, 0) * region
    if not w.sum() > 0:
        w = region.astype(np.float64)
    ii, jj = np.indices(p.shape)
    cy = float((w * ii).sum() / w.sum())
    cx = float((w * jj).sum() / w.sum())
    r = math.sqrt(region.sum() / math.pi)
    return cy, cx, r


def annulus_mask(shape: tuple[int, int], center: tuple[float, float], inner: float = 0.0,
                 outer: float | None = None, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Boolean mask of pixels whose centre lies at ``inner <= r <= outer`` (``outer=None``: no limit).

    ``scale`` converts pixels to the radius unit per axis (mrad per pixel, or 1).
    """
    ii, jj = np.indices(shape, dtype=np.float64)
    r = np.hypot((ii - center[0]) * scale[0], (jj - center[1]) * scale[1])
    m = r >= inner
    if outer is not None:
        m &= r <= outer
    return m


def shape_mask(shape: tuple[int, int], center: tuple[float, float], spec, what: str = "mask"):
    """A mask from ``("disc", r)`` / ``("annulus", r0, r1)`` about ``center``, or None if ``spec`` is not such a tuple."""
    if not (isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str)):
        return None
    if spec[0] == "disc" and len(spec) == 2:
        return annulus_mask(shape, center, 0.0, float(spec[1]))
    if spec[0] == "annulus" and len(spec) == 3:
        return annulus_mask(shape, center, float(spec[1]), float(spec[2]))
    raise DataError(f"{what} {spec!r} not understood", hint="use ('disc', r), ('annulus', r0, r1) or an array")


def default_bf_radius(ds, units: str, pattern_fn) -> float:
    """Bright-field disc radius in ``units``: the calibrated convergence semi-angle, else the disc found in
    ``pattern_fn()`` (a mean pattern)."""
    cal = ds.calibration
    mr = detector_pixel_mrad(ds)
    if cal.convergence_semiangle_mrad and mr is not None:
        r_mrad = float(cal.convergence_semiangle_mrad)
        return r_mrad if units == "mrad" else r_mrad / float(np.mean(mr))
    _, _, r_px = find_bf_disc(pattern_fn())
    if units == "mrad":
        if mr is None:
            raise DataError("radii in mrad need a detector calibration", path=ds.provenance.source_path,
                            hint="use units='px' or set the calibration")
        return r_px * float(np.mean(mr))
    return r_px
