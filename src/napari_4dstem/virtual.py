"""Virtual detectors: bright field, annular bright field, annular dark field, annuli, arbitrary masks.

All detectors of one call are computed in a single pass as one chunked matrix product of the
flattened frames with the stacked masks, ``(n, H*W) @ (H*W, k)`` (see :mod:`napari_4dstem.blocks`).
Radii are in detector pixels (``units="px"``) or mrad (``units="mrad"``, needs a calibration);
a pixel belongs to a detector when its centre lies at ``inner <= r <= outer`` from the centre.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blocks import iter_weighted_sums, sample_mean_pattern
from .dataset import Dataset4D, as_dataset
from .errors import DataError
from .params import check_arguments
from .executor import Linear, iter_run
from .progress import Steps, run_steps

KINDS = ("bf", "abf", "adf", "annulus", "mask")


@dataclass
class VirtualImage:
    """A virtual detector image (scan_y, scan_x), the detector mask used and the parameters."""

    image: np.ndarray
    mask: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


# -- geometry (in .geometry; the names stay importable from here) -------------------------------
from .geometry import (  # noqa: E402,F401
    annulus_mask, default_bf_radius, detector_pixel_mrad, electron_wavelength_A, find_bf_disc)


def _resolve_center(ds: Dataset4D, center, pattern_fn) -> tuple[float, float]:
    if center is None:
        return ds.detector_center
    if isinstance(center, str):
        if center != "auto":
            raise DataError(f"center must be None, 'auto' or (y, x), got {center!r}")
        cy, cx, _ = find_bf_disc(pattern_fn())
        return (cy, cx)
    c = tuple(float(v) for v in center)
    if len(c) != 2:
        raise DataError(f"center must be (y, x), got {center!r}")
    return c  # type: ignore[return-value]


def detector_mask(ds: Dataset4D, kind: str = "bf", inner: float | None = None, outer: float | None = None,
                  units: str = "px", mask=None, center=None, _cache: dict | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The boolean detector mask for one virtual detector and the parameters actually used.

    Default radii: from the calibration (``convergence_semiangle_mrad``) when the detector is
    calibrated in mrad, else from the bright-field disc found in the mean of a few scan rows.
    ``bf``: ``0..r_bf``; ``abf``: ``r_bf/2..r_bf``; ``adf``: ``1.1 r_bf..edge``.
    """
    ds = as_dataset(ds)
    cache = _cache if _cache is not None else {}

    def pattern():
        if "pattern" not in cache:
            cache["pattern"] = sample_mean_pattern(ds)
        return cache["pattern"]

    if kind not in KINDS:
        raise DataError(f"unknown virtual detector kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    if units not in ("px", "mrad"):
        raise DataError(f"units must be 'px' or 'mrad', got {units!r}")
    shape = ds.detector_shape
    params: dict[str, Any] = {"kind": kind, "units": units}
    if kind == "mask":
        if mask is None:
            raise DataError("kind='mask' needs mask=<boolean or weight array of the detector's shape>")
        m = np.asarray(mask)
        if m.shape != shape:
            raise DataError(f"the mask has shape {m.shape}, the detector is {shape}",
                            path=ds.provenance.source_path, hint="make the mask the detector's shape")
        params["mask"] = "array"
        return m.astype(np.float64) if m.dtype != bool else m, params

    c = _resolve_center(ds, center, pattern)
    params["center"] = [c[0], c[1]]
    scale = (1.0, 1.0)
    if units == "mrad":
        mr = detector_pixel_mrad(ds)
        if mr is None:
            raise DataError("radii in mrad need a detector calibration (detector_pixel in mrad, or in 1/Å "
                            "with the beam energy)", path=ds.provenance.source_path,
                            hint="use units='px' or set the calibration")
        scale = mr

    def r_bf() -> float:
        return default_bf_radius(ds, units, pattern)

    if kind == "bf":
        inner = 0.0 if inner is None else inner
        outer = r_bf() if outer is None else outer
    elif kind == "abf":
        if inner is None or outer is None:
            rb = r_bf()
            inner = rb / 2 if inner is None else inner
            outer = rb if outer is None else outer
    elif kind == "adf":
        inner = 1.1 * r_bf() if inner is None else inner
    elif kind == "annulus":
        if inner is None and outer is None:
            inner = r_bf()
        inner = 0.0 if inner is None else inner
    if outer is not None and inner is not None and outer < inner:
        raise DataError(f"outer radius {outer} is smaller than inner radius {inner}")
    params.update(inner=float(inner), outer=None if outer is None else float(outer))
    m = annulus_mask(shape, c, inner, outer, scale)
    if not m.any():
        raise DataError(f"the {kind} detector ({inner}..{outer} {units}) covers no detector pixel",
                        path=ds.provenance.source_path, hint="check the radii and the units")
    return m, params


# -- images --------------------------------------------------------------------------------------
class VirtualDetectors(Linear):
    """Reducer: several virtual detector images from one set of masks -> ``{name: VirtualImage}``."""

    def __init__(self, names, masks, params):
        super().__init__(np.stack(masks))
        self.names, self.masks, self.params = list(names), list(masks), list(params)

    def finalize(self, bufs, info):
        sums = bufs["sums"]
        return {name: VirtualImage(sums[..., k], m, p)
                for k, (name, m, p) in enumerate(zip(self.names, self.masks, self.params))}


def virtual_reducer(data, detectors: dict[str, dict], block_bytes: int | None = None) -> VirtualDetectors:
    """The :class:`VirtualDetectors` reducer for ``detectors`` (masks built now, from the data's geometry)."""
    ds = as_dataset(data)
    if not detectors:
        raise DataError("no virtual detector given", hint="e.g. {'adf': {'kind': 'adf'}}")
    cache: dict = {}
    masks, params = [], []
    for name, spec in detectors.items():
        m, p = detector_mask(ds, _cache=cache, **dict(spec))
        masks.append(np.asarray(m, dtype=np.float64))
        params.append(dict(p, name=name, block_bytes=block_bytes))
    return VirtualDetectors(list(detectors), masks, params)


def iter_virtual_images(data, detectors: dict[str, dict], block_bytes: int | None = None) -> Steps[dict]:
    """Generator form of :func:`virtual_images`."""
    check_arguments("iter_virtual_images", locals())  # types and ranges, before any read
    ds = as_dataset(data)
    red = virtual_reducer(ds, detectors, block_bytes)
    (out,) = yield from iter_run(ds, [red], block_bytes=block_bytes, message="virtual detectors")
    return out


def virtual_images(data, detectors: dict[str, dict], block_bytes: int | None = None,
                   callback=None, cancel=None) -> dict[str, VirtualImage]:
    """Several virtual detector images in one pass over the data.

    Parameters
    ----------
    data
        Dataset4D or 4-D array.
    detectors
        ``{name: {"kind": ..., "inner": ..., "outer": ..., "units": ..., "mask": ..., "center": ...}}``.

    Returns
    -------
    ``{name: VirtualImage}``; images are float64 sums of the source intensities.
    """
    check_arguments("virtual_images", locals())  # types and ranges, before any read
    return run_steps(iter_virtual_images(data, detectors, block_bytes), callback, cancel, "virtual detectors")


def iter_virtual_image(data, kind: str = "bf", inner: float | None = None, outer: float | None = None,
                       units: str = "px", mask=None, center=None, block_bytes: int | None = None
                       ) -> Steps[VirtualImage]:
    """Generator form of :func:`virtual_image`."""
    check_arguments("iter_virtual_image", locals())  # types and ranges, before any read
    spec = dict(kind=kind, inner=inner, outer=outer, units=units, mask=mask, center=center)
    res = yield from iter_virtual_images(data, {kind: spec}, block_bytes)
    return res[kind]


def virtual_image(data, kind: str = "bf", inner: float | None = None, outer: float | None = None,
                  units: str = "px", mask=None, center=None, block_bytes: int | None = None,
                  callback=None, cancel=None) -> VirtualImage:
    """One virtual detector image.

    Parameters
    ----------
    data
        Dataset4D or 4-D array.
    kind
        ``"bf"`` (disc), ``"abf"`` (annular bright field), ``"adf"`` (annular dark field to the
        detector edge), ``"annulus"`` (explicit radii) or ``"mask"`` (``mask=`` boolean or weight map).
    inner, outer
        Radii in ``units``; ``None`` picks the defaults described in :func:`detector_mask`.
    units
        ``"px"`` or ``"mrad"`` (needs the detector calibration).
    center
        ``None`` (calibrated or geometric detector centre), ``"auto"`` (bright-field disc) or ``(y, x)``.

    Returns
    -------
    VirtualImage with ``image`` (scan_y, scan_x) float64, ``mask`` and ``parameters``.
    """
    check_arguments("virtual_image", locals())  # types and ranges, before any read
    return run_steps(iter_virtual_image(data, kind, inner, outer, units, mask, center, block_bytes),
                     callback, cancel, "virtual image")


def iter_navigator_image(ds, kind: str = "sum", block_bytes: int | None = None) -> Steps[np.ndarray]:
    """Generator form of :func:`navigator_image`."""
    ds = as_dataset(ds)
    if kind == "sum":
        sums = yield from iter_weighted_sums(ds, np.ones(ds.detector_shape), block_bytes, message="navigator")
        return sums[..., 0]
    if kind == "bf":
        res = yield from iter_virtual_image(ds, "bf", block_bytes=block_bytes)
        return res.image
    raise DataError(f"unknown navigator kind {kind!r}", hint="use 'sum' or 'bf'")


def navigator_image(ds, kind: str = "sum", block_bytes: int | None = None, callback=None,
                    cancel=None) -> np.ndarray:
    """A scan-shaped image for the GUI navigator: total intensity (``"sum"``) or virtual bright field."""
    return run_steps(iter_navigator_image(ds, kind, block_bytes), callback, cancel, "navigator")
