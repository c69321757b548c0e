"""Zernike moments of diffraction patterns: a linear, rotation-covariant description of every pattern.

Every pattern ``I`` is projected onto the Zernike polynomials ``V_nm(rho, theta) = R_n^m(rho) e^{i m theta}``
on a disc of ``radius`` pixels about ``center``:

    Z_nm = (n + 1) / pi * sum_ij I[i, j] conj(V_nm(i, j)) dA,     dA = 1 / radius^2,

with ``theta = atan2(i - cy, j - cx)`` (detector row down, column right: the COM convention of
docs/conventions.md, so ``conj(Z_11) / Z_00 * radius / 2`` is the COM vector ``x + i y`` of the disc) and
``V`` averaged over each pixel's area (``oversample`` points per axis). Only ``m >= 0`` is kept
(``Z_n,-m = conj(Z_nm)`` for real patterns). A pattern turned the way ``scipy.ndimage.rotate(p, t)`` and
``np.rot90`` turn it (counter-clockwise on screen) has ``Z'_nm = Z_nm e^{+i m t}``.

The moments are one chunked weighted-sum pass over the data (:func:`napari_4dstem.blocks.iter_weighted_sums`)
with the real and imaginary parts of the sampled basis as detector weight maps (:func:`zernike_weights`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dataset import Dataset4D, as_dataset
from .errors import DataError
from .params import check_arguments
from .executor import Linear
from .progress import Steps, run_steps

#: Default radial order (measured on abTEM graphene, docs/zernike.md).
DEFAULT_ORDER = 6
#: Default disc: this many bright-field radii (clipped to the detector).
DEFAULT_RADIUS_BF = 1.5
#: Sub-pixel points per axis for the pixel-averaged basis.
OVERSAMPLE = 4
MAX_ORDER = 40


def zernike_indices(order: int) -> np.ndarray:
    """``(K, 2)`` int array of ``(n, m)``, ``0 <= m <= n <= order``, ``n - m`` even, sorted by n then m."""
    order = _check_order(order)
    return np.array([(n, m) for n in range(order + 1) for m in range(n % 2, n + 1, 2)], dtype=np.int64)


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= int(order) <= MAX_ORDER:
        raise DataError(f"Zernike order must be an integer 0..{MAX_ORDER}, got {order!r}",
                        hint="e.g. order=8 (the default)")
    return int(order)


def radial_polynomial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """``R_n^m(rho) = (-1)^k rho^m P_k^(m, 0)(1 - 2 rho^2)``, ``k = (n - m) / 2`` (stable Jacobi form)."""
    from scipy.special import eval_jacobi

    m = abs(int(m))
    if (n - m) % 2 or m > n:
        return np.zeros_like(np.asarray(rho, np.float64))
    k = (n - m) // 2
    rho = np.asarray(rho, np.float64)
    return (-1.0) ** k * rho**m * eval_jacobi(k, m, 0.0, 1.0 - 2.0 * rho**2)


def zernike_basis(shape: tuple[int, int], order: int, radius: float, center: tuple[float, float],
                  oversample: int = OVERSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """The sampled basis ``V_nm`` averaged over every pixel (zero outside the disc): ``(K, H, W)`` complex, indices.

    Pixels cut by the disc's edge are averaged over their inside part only (their points outside count 0).
    The last few bases are cached (read-only arrays).
    """
    order = _check_order(order)
    if not radius or radius <= 0 or not math.isfinite(radius):
        raise DataError(f"Zernike disc radius must be a positive number of pixels, got {radius!r}")
    return _basis((int(shape[0]), int(shape[1])), order, float(radius), (float(center[0]), float(center[1])),
                  max(1, int(oversample)))


@functools.lru_cache(maxsize=8)
def _basis(shape, order, radius, center, s):
    idx = zernike_indices(order)
    h, w = shape
    sub = (np.arange(s) + 0.5) / s - 0.5  # sub-pixel offsets, symmetric about the pixel centre
    yy = (np.arange(h)[:, None] + sub[None, :]).ravel() - float(center[0])
    xx = (np.arange(w)[:, None] + sub[None, :]).ravel() - float(center[1])
    Y, X = np.meshgrid(yy / radius, xx / radius, indexing="ij")
    rho = np.hypot(Y, X)
    theta = np.arctan2(Y, X)
    inside = rho <= 1.0
    out = np.zeros((len(idx), h, w), np.complex128)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for k, (n, m) in enumerate(idx):
        r = cache.setdefault((n, m), radial_polynomial(n, m, rho))
        v = np.where(inside, r * np.exp(1j * m * theta), 0.0)
        out[k] = v.reshape(h, s, w, s).mean(axis=(1, 3))
    out.flags.writeable = False
    idx.flags.writeable = False
    return out, idx


def zernike_weights(shape: tuple[int, int], order: int = DEFAULT_ORDER, radius: float | None = None,
                    center: tuple[float, float] | None = None, oversample: int = OVERSAMPLE
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Detector weight maps of the moments: ``(2K, H, W)`` float64 and the ``(K, 2)`` indices ``(n, m)``.

    ``weights[:K]`` and ``weights[K:]`` are the real and imaginary parts of ``(n + 1) / (pi radius^2) conj(V_nm)``,
    so ``Z = sums[..., :K] + 1j * sums[..., K:]`` for the per-frame weighted sums of the weights (the imaginary
    maps of ``m = 0`` are zero). ``radius`` defaults to half the smaller detector side, ``center`` to the
    geometric centre ``(N - 1) / 2``.
    """
    h, w = int(shape[0]), int(shape[1])
    if center is None:
        center = ((h - 1) / 2.0, (w - 1) / 2.0)
    if radius is None:
        radius = min(h, w) / 2.0
    v, idx = zernike_basis((h, w), order, float(radius), center, oversample)
    norm = (idx[:, 0] + 1.0)[:, None, None] / (math.pi * float(radius) ** 2)
    c = np.conj(v) * norm
    return np.concatenate([c.real, c.imag]), idx


@dataclass
class ZernikeResult:
    """Zernike moments of every pattern.

    ``moments``: ``(scan_y, scan_x, K)`` complex128; ``indices``: ``(K, 2)`` int ``(n, m)``; ``radius`` and
    ``center`` (detector pixels) of the disc; ``orthogonality``: the sampled basis' Gram matrix check
    (``max_offdiag``, ``max_diag_error``, ``condition``); ``parameters``: everything needed to redo it.
    """

    moments: np.ndarray
    indices: np.ndarray
    radius: float
    center: tuple[float, float]
    detector_shape: tuple[int, int]
    orthogonality: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> int:
        return int(self.indices[:, 0].max()) if len(self.indices) else 0

    def invariants(self, phases: bool = False) -> np.ndarray:
        """Rotation-invariant features ``(scan_y, scan_x, F)``: see :func:`invariant_features`."""
        return invariant_features(self.moments, self.indices, phases=phases)

    def rotation(self, m: int = 1) -> np.ndarray:
        """Rotation map (radians): see :func:`rotation_map`."""
        return rotation_map(self.moments, self.indices, m=m)

    def reconstruct(self, index=None) -> np.ndarray:
        """Patterns from their moments (see :func:`reconstruct`); ``index`` = (iy, ix) or None for all."""
        z = self.moments if index is None else self.moments[index]
        return reconstruct(z, self.indices, self.detector_shape, self.radius, self.center)


def orthogonality_report(shape, order, radius, center, oversample: int = OVERSAMPLE) -> dict[str, float]:
    return dict(_ortho((int(shape[0]), int(shape[1])), int(order), float(radius),
                       (float(center[0]), float(center[1])), int(oversample)))


@functools.lru_cache(maxsize=8)
def _ortho(shape, order, radius, center, oversample):
    """How orthonormal the sampled basis is: Gram matrix ``G_ab = (n_a + 1)/(pi r^2) sum conj(V_a) V_b``.

    The continuous basis gives the identity; returns the largest off-diagonal ``|G|``, the largest
    ``|G_aa - 1|`` and the condition number of ``G`` (over all ``m``, both signs).
    """
    v, idx = zernike_basis(shape, order, radius, center, oversample)
    # both signs of m: V_n,-m = conj(V_nm)
    neg = idx[:, 1] > 0
    full = np.concatenate([v, np.conj(v[neg])]).reshape(-1, v.shape[1] * v.shape[2])
    n = np.concatenate([idx[:, 0], idx[neg, 0]]).astype(np.float64)
    g = ((n + 1.0)[:, None] / (math.pi * radius**2)) * (np.conj(full) @ full.T)
    off = g - np.diag(np.diag(g))
    s = np.linalg.svd(g, compute_uv=False)
    return tuple({"max_offdiag": float(np.abs(off).max()) if len(g) > 1 else 0.0,
                  "max_diag_error": float(np.abs(np.diag(g) - 1).max()),
                  "condition": float(s[0] / s[-1]) if s[-1] > 0 else float("inf")}.items())


def default_geometry(ds: Dataset4D, radius=None, center=None) -> tuple[float, tuple[float, float], dict]:
    """The disc: centre = the calibrated detector centre, else the geometric centre ``(N - 1) / 2`` (as COM;
    exactly rotation-covariant under 90-degree turns of a square detector); radius = ``DEFAULT_RADIUS_BF`` x
    the bright-field radius (from the calibrated convergence angle, else the radius holding 99 % of the mean
    pattern's intensity: robust to the interference inside coherent discs), clipped to the largest disc inside
    the detector. Explicit values win."""
    from .blocks import sample_mean_pattern
    from .virtual import detector_pixel_mrad

    h, w = ds.detector_shape
    info: dict[str, Any] = {}
    if center is None:
        center = ds.detector_center
        info["center_from"] = "calibration" if ds.calibration.detector_center is not None else "detector centre"
    center = (float(center[0]), float(center[1]))
    edge = min(center[0] + 0.5, h - 0.5 - center[0], center[1] + 0.5, w - 0.5 - center[1])
    if edge <= 0:
        raise DataError(f"the Zernike disc centre {center} lies outside the {h} x {w} detector",
                        path=ds.provenance.source_path, hint="give center=(y, x) in detector pixels")
    if radius is None:
        r_bf = None
        mr = detector_pixel_mrad(ds)
        alpha = ds.calibration.convergence_semiangle_mrad
        if alpha and mr:
            r_bf, info["radius_from"] = float(alpha) / float(np.mean(mr)), "convergence angle"
        else:
            r_bf = intensity_radius(sample_mean_pattern(ds), center, 0.99)
            info["radius_from"] = "99% of the mean pattern"
        if r_bf:
            radius = min(DEFAULT_RADIUS_BF * r_bf, edge)
            info["bf_radius_px"] = float(r_bf)
        else:
            radius, info["radius_from"] = edge, "detector"
    radius = float(radius)
    if not radius > 0 or not math.isfinite(radius):
        raise DataError(f"Zernike disc radius must be a positive number of pixels, got {radius!r}")
    return radius, center, info


def intensity_radius(pattern: np.ndarray, center, fraction: float = 0.99) -> float | None:
    """Radius (pixels) about ``center`` inside which ``fraction`` of the pattern's intensity lies (None if empty)."""
    p = np.clip(np.asarray(pattern, np.float64), 0, None)
    tot = p.sum()
    if not tot > 0 or not np.isfinite(tot):
        return None
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - center[0], xx - center[1]).ravel()
    o = np.argsort(r, kind="stable")
    c = np.cumsum(p.ravel()[o]) / tot
    return float(max(r[o][min(np.searchsorted(c, fraction), len(c) - 1)], 1.0))


def iter_zernike_moments(data, order: int = DEFAULT_ORDER, radius: float | None = None, center=None,
                         block_bytes: int | None = None, oversample: int = OVERSAMPLE) -> Steps[ZernikeResult]:
    """Generator form of :func:`zernike_moments` (yields Progress, returns :class:`ZernikeResult`)."""
    check_arguments("iter_zernike_moments", locals())  # types and ranges, before any read
    from .executor import iter_run

    ds = as_dataset(data)
    red = zernike_reducer(ds, order, radius, center, oversample)
    # only the disc's bounding box holds non-zero weights: reduce that crop of the detector (fewer products)
    y0, y1, x0, x1 = red.box
    src = ds
    if (y1 - y0, x1 - x0) != tuple(ds.detector_shape):
        arr = ds.data if isinstance(ds.data, np.ndarray) else ds.to_dask()
        src = ds.with_data(arr[:, :, y0:y1, x0:x1])
        red.w = red.w[:, y0:y1, x0:x1]
    (res,) = yield from iter_run(src, [red], block_bytes=block_bytes, message="Zernike moments")
    return res


class ZernikeMoments(Linear):
    """Reducer: the Zernike moments of every frame -> :class:`ZernikeResult` (joins any one-pass run)."""

    def __init__(self, weights, indices, geometry: dict):
        super().__init__(weights)
        self.indices, self.geometry = indices, geometry
        nz = np.abs(weights).sum(0) > 0
        ys, xs = np.flatnonzero(nz.any(1)), np.flatnonzero(nz.any(0))
        self.box = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)

    def finalize(self, bufs, info):
        g, idx = self.geometry, self.indices
        k = len(idx)
        sums = bufs["sums"]
        z = sums[..., :k].astype(np.complex128)
        z[..., idx[:, 1] > 0] += 1j * sums[..., k:]
        return ZernikeResult(moments=z, indices=idx, radius=g["radius"], center=g["center"],
                             detector_shape=g["detector_shape"], orthogonality=g["orthogonality"],
                             parameters=g["parameters"])


def zernike_reducer(data, order: int = DEFAULT_ORDER, radius: float | None = None, center=None,
                    oversample: int = OVERSAMPLE) -> ZernikeMoments:
    """The :class:`ZernikeMoments` reducer (geometry and weight maps built now; nothing of the scan read but
    the small sample for the default disc)."""
    ds = as_dataset(data)
    order = _check_order(order)
    if center is not None:
        try:
            center = tuple(float(c) for c in center)
        except (TypeError, ValueError):
            raise DataError(f"center must be (y, x) detector pixels, got {center!r}") from None
        if len(center) != 2 or not all(map(math.isfinite, center)):
            raise DataError(f"center must be (y, x) detector pixels, got {center!r}")
    if radius is not None:
        try:
            radius = float(radius)
        except (TypeError, ValueError):
            raise DataError(f"Zernike disc radius must be a number of pixels, got {radius!r}") from None
    radius, center, info = default_geometry(ds, radius, center)
    w, idx = zernike_weights(ds.detector_shape, order, radius, center, oversample)
    k = len(idx)
    rows = np.concatenate([np.arange(k), k + np.flatnonzero(idx[:, 1] > 0)])  # m = 0: no imaginary part
    params = {"order": order, "radius": radius, "center": list(center), "oversample": int(oversample),
              "n_moments": int(k), **info}
    geometry = {"radius": radius, "center": center, "detector_shape": tuple(ds.detector_shape),
                "orthogonality": orthogonality_report(ds.detector_shape, order, radius, center, oversample),
                "parameters": params}
    return ZernikeMoments(w[rows], idx, geometry)


def zernike_moments(data, order: int = DEFAULT_ORDER, radius: float | None = None, center=None,
                    block_bytes: int | None = None, oversample: int = OVERSAMPLE, callback=None,
                    cancel=None) -> ZernikeResult:
    """Zernike moments of every diffraction pattern, in one chunked pass over the data.

    Parameters
    ----------
    data
        Dataset4D or 4-D array ``(scan_y, scan_x, det_y, det_x)`` (or a single 2-D pattern, treated as 1 x 1).
    order
        Largest radial order ``n`` (default 6: K = 16 moments with m >= 0).
    radius
        Disc radius in detector pixels. Default: 1.5 x the bright-field disc radius (from the calibrated
        convergence angle, else the radius holding 99 % of the mean pattern's intensity), clipped to the detector.
    center
        Disc centre ``(y, x)`` in detector pixels. Default: the calibrated detector centre, else ``(N - 1) / 2``
        (the COM default).
    block_bytes, oversample
        Source bytes read per block; sub-pixel points per axis of the pixel-averaged basis.
    callback, cancel
        Progress callback and ``threading.Event`` (see :func:`napari_4dstem.run_steps`).
    """
    check_arguments("zernike_moments", locals())  # types and ranges, before any read
    arr = data
    if isinstance(data, np.ndarray) and data.ndim == 2:
        arr = data[None, None]
    return run_steps(iter_zernike_moments(arr, order, radius, center, block_bytes, oversample), callback, cancel,
                     "Zernike moments")


# -- derived maps -------------------------------------------------------------------------------
def invariant_features(moments: np.ndarray, indices: np.ndarray, phases: bool = False) -> np.ndarray:
    """Rotation-invariant features ``(..., F)``: ``|Z_nm|`` for every moment, and with ``phases=True`` also
    the relative phases between moments of equal ``m``: ``Re, Im`` of ``Z_nm conj(Z_n'm) / |Z_n'm|`` for
    ``n' `` the lowest order of that ``m`` (unchanged by a rotation; they tell apart patterns whose rings of
    equal ``m`` are turned against each other)."""
    z = np.asarray(moments)
    idx = np.asarray(indices)
    feats = [np.abs(z)]
    if phases:
        for m in np.unique(idx[:, 1]):
            if m == 0:
                continue
            ks = np.flatnonzero(idx[:, 1] == m)
            ref = z[..., ks[0]]
            u = np.conj(ref) / np.maximum(np.abs(ref), 1e-300)
            for k in ks[1:]:
                p = z[..., k] * u
                feats += [p.real[..., None], p.imag[..., None]]
    out = [f if f.ndim == z.ndim else f[..., None] for f in feats]
    return np.concatenate(out, axis=-1)


def rotation_map(moments: np.ndarray, indices: np.ndarray, m: int = 1) -> np.ndarray:
    """Rotation angle of every pattern from the phase of its lowest ``m``-fold moment, radians in (-pi/m, pi/m].

    ``angle = arg(Z_mm) / m``; a pattern turned by ``t`` (as
    ``scipy.ndimage.rotate`` turns it) has its angle increased by ``t`` (mod ``2 pi / m``). With ``m = 1`` the
    map is minus the raw COM direction: ``arg Z_11 = -atan2(com_y, com_x)`` (docs/zernike.md).
    """
    idx = np.asarray(indices)
    ks = np.flatnonzero(idx[:, 1] == int(m))
    if int(m) <= 0 or not len(ks):
        raise DataError(f"no moments with m = {m} (have m = {sorted(set(idx[:, 1].tolist()))})",
                        hint="raise the order or choose another m >= 1")
    return np.angle(np.asarray(moments)[..., ks[0]]) / int(m)


def reconstruct(moments: np.ndarray, indices: np.ndarray, shape: tuple[int, int], radius: float,
                center: tuple[float, float], oversample: int = 1) -> np.ndarray:
    """Patterns ``(..., H, W)`` from their moments: ``sum_m>=0 (2 - d_m0) Re(Z_nm V_nm)`` inside the disc."""
    v, idx = zernike_basis(shape, int(np.asarray(indices)[:, 0].max()), radius, center, oversample)
    want = {tuple(r) for r in np.asarray(indices).tolist()}
    keep = [i for i, r in enumerate(idx.tolist()) if tuple(r) in want]
    order_map = {tuple(r): i for i, r in enumerate(np.asarray(indices).tolist())}
    z = np.asarray(moments)[..., [order_map[tuple(idx[i])] for i in keep]]
    v = v[keep]
    fac = np.where(idx[keep, 1] == 0, 1.0, 2.0)
    return np.real(np.tensordot(z * fac, v, axes=([-1], [0])))


__all__ = ["ZernikeResult", "zernike_moments", "iter_zernike_moments", "zernike_weights", "zernike_basis",
           "zernike_indices", "radial_polynomial", "orthogonality_report", "invariant_features", "rotation_map",
           "reconstruct", "default_geometry", "intensity_radius"]
