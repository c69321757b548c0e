"""Centre of mass (COM) / differential phase contrast (DPC) with automatic rotation calibration.

Conventions (docs/conventions.md, section "COM / DPC"):

* The raw COM of a frame about the centre ``(cy, cx)`` is ``x = sum(I * (j - cx)) / sum(I)``,
  ``y = sum(I * (i - cy)) / sum(I)`` with ``i`` the detector row and ``j`` the detector column.
  Frames whose (masked) sum is zero give 0.
* The detector is modelled as ``measured = R(rotation) F(flip) true``: ``F`` reverses ``det_x``,
  ``R(theta)`` is what ``scipy.ndimage.rotate(pattern, theta)`` does to a pattern. The correction
  is ``x' = cos t x - sin t y``, ``y' = sin t x + cos t y`` (``t`` = rotation), then ``x' -> -x'`` if flip.
* After correction COM points toward the nuclei: divergence is negative and iCOM bright at atoms.

The per-frame sums come from one chunked matrix product: without a mask the weights are outer
products, so detector rows times ``[1, j - cx]``, ``(n*H, W) @ (W, 2)``, suffice; with a mask, frames
``(n, H*W)`` times the masked maps ``[1, i - cy, j - cx]``. The data are never cast as a whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .executor import Linear, iter_run
from .geometry import detector_pixel_mrad, shape_mask
from .dataset import Dataset4D, as_dataset
from .errors import DataError
from .params import check_arguments
from .progress import Steps, run_steps

#: Angles sampled for the displayed curl curves.
CURVE_ANGLES = np.arange(360)
#: Gaussian sigma (scan pixels) of the smoothing used only for the rotation/flip estimate.
ESTIMATE_SMOOTH_PX = 1.0


@dataclass
class COMResult:
    """COM / DPC maps, all ``(scan_y, scan_x)`` float64, in the scan frame after rotation/flip.

    ``x, y`` are in ``units`` (detector pixels or mrad); ``raw_x, raw_y`` are the same before the
    rotation/flip correction (after centre and descan). ``divergence``/``curl`` are per scan step
    unit (per scan pixel when uncalibrated); ``icom`` is ``x, y`` integrated over the scan (units x
    scan length). ``curl_curves`` holds ``angles_deg`` and the RMS curl for both flip states.
    """

    x: np.ndarray
    y: np.ndarray
    magnitude: np.ndarray
    angle: np.ndarray
    divergence: np.ndarray
    curl: np.ndarray
    icom: np.ndarray
    raw_x: np.ndarray
    raw_y: np.ndarray
    total: np.ndarray
    rotation_deg: float
    flip: bool
    curl_curves: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)
    units: str = "px"

    def maps(self) -> dict[str, np.ndarray]:
        """The scan maps by name (for display or saving)."""
        return {k: getattr(self, k) for k in ("x", "y", "magnitude", "angle", "divergence", "curl", "icom")}


# -- small vector-field helpers -------------------------------------------------------------------
def rotate_flip(x: np.ndarray, y: np.ndarray, rotation_deg: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Apply the correction: rotate the measured vectors by ``rotation_deg``, then reverse x if ``flip``."""
    t = math.radians(rotation_deg)
    c, s = math.cos(t), math.sin(t)
    xr = c * x - s * y
    yr = s * x + c * y
    return (-xr if flip else xr), yr


def divergence_curl(x: np.ndarray, y: np.ndarray, step: tuple[float, float] = (1.0, 1.0)
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Divergence ``dx/dX + dy/dY`` and curl ``dy/dX - dx/dY`` by central differences (scan step aware)."""
    if min(x.shape) < 2:
        z = np.zeros_like(x, dtype=np.float64)
        return z, z.copy()
    dx_dy, dx_dx = np.gradient(x, step[0], step[1])
    dy_dy, dy_dx = np.gradient(y, step[0], step[1])
    return dx_dx + dy_dy, dy_dx - dx_dy


def integrate_gradient(x: np.ndarray, y: np.ndarray, step: tuple[float, float] = (1.0, 1.0),
                       highpass: float = 0.25) -> np.ndarray:
    """Fourier integration of a gradient field: ``phi`` with ``grad(phi) ~ (x, y)``.

    The field is mirror-extended (x odd along scan_x, y odd along scan_y) to avoid the seams of a
    non-periodic scan; ``highpass`` (in units of the lowest frequency of the extended grid)
    regularises the division by ``k^2``. The mean of the result is zero.
    """
    ny, nx = x.shape
    gx = np.block([[x, -x[:, ::-1]], [x[::-1, :], -x[::-1, ::-1]]])
    gy = np.block([[y, y[:, ::-1]], [-y[::-1, :], -y[::-1, ::-1]]])
    ky = np.fft.fftfreq(2 * ny, d=step[0])[:, None]
    kx = np.fft.rfftfreq(2 * nx, d=step[1])[None, :]
    k0 = highpass * min(1.0 / (2 * ny * step[0]), 1.0 / (2 * nx * step[1]))
    den = kx**2 + ky**2 + k0**2
    den[0, 0] = 1.0  # the mean of phi is undetermined: set to zero below
    phi_k = (kx * np.fft.rfft2(gx) + ky * np.fft.rfft2(gy)) / (2j * np.pi * den)
    phi_k[0, 0] = 0.0
    phi = np.fft.irfft2(phi_k, s=gx.shape)[:ny, :nx]
    return phi - phi.mean()


def _interior(a: np.ndarray) -> np.ndarray:
    return a[1:-1, 1:-1] if min(a.shape) > 4 else a


def curl_curve(x: np.ndarray, y: np.ndarray, flip: bool, step=(1.0, 1.0), angles_deg=CURVE_ANGLES
               ) -> tuple[np.ndarray, float]:
    """RMS curl (interior pixels) of the corrected field versus the correction angle, for one flip state.

    Returns the curve over ``angles_deg`` and the exact minimising angle (mod 180 degrees). Curl is
    linear in the rotation: with ``u = F m`` the corrected field is ``F R(t) m = R(s t) u``
    (``s = -1`` with flip, since a reflection reverses rotations), and
    ``curl(R(a) u) = cos a curl(u) + sin a div(u)``: the mean square curl is a quadratic form in
    ``(cos t, sin t)`` whose minimum is its smaller eigenvector.
    """
    ux = -x if flip else x
    div, curl = divergence_curl(ux, y, step)
    a = _interior(curl).ravel()
    b = _interior(div).ravel() * (-1.0 if flip else 1.0)
    # plain sums, not BLAS dot: multi-threaded BLAS on small vectors can stall on a busy machine
    ab = float(np.sum(a * b))
    m = np.array([[float(np.sum(a * a)), ab], [ab, float(np.sum(b * b))]]) / max(a.size, 1)
    t = np.radians(angles_deg)
    rms = np.sqrt(np.maximum(m[0, 0] * np.cos(t) ** 2 + 2 * m[0, 1] * np.sin(t) * np.cos(t)
                             + m[1, 1] * np.sin(t) ** 2, 0))
    _, v = np.linalg.eigh(m)
    best = math.degrees(math.atan2(v[1, 0], v[0, 0])) % 180.0
    return rms, best


def _atom_sign(div: np.ndarray, adf: np.ndarray | None) -> tuple[int, str]:
    """+1 if the corrected divergence is already negative at atom columns, else -1, and how it was decided.

    Atom columns are where ``adf`` (a virtual ADF image, or the per-frame second moment
    ``sum(I r^2)/sum(I)`` when no bright-field disc is found) is high. If that map is uninformative
    (|correlation with the divergence| < 0.2), the skewness of the divergence decides: sharp negative
    extrema at the nuclei.
    """
    d = _interior(div).ravel()
    d = d - d.mean()
    if adf is not None:
        a = _interior(adf).ravel()
        a = a - a.mean()
        den = math.sqrt(float(np.sum(a * a)) * float(np.sum(d * d)))
        r = float(np.sum(a * d)) / den if den > 0 else 0.0
        if abs(r) >= 0.2:
            return (1 if r < 0 else -1), f"correlation={r:.3f}"
    sd = float(d.std())
    skew = float(np.mean(d**3)) / sd**3 if sd > 0 else 0.0
    return (1 if skew <= 0 else -1), f"divergence_skewness={skew:.3f}"


def _atom_signal(ds: Dataset4D, c0) -> tuple[str, np.ndarray, np.ndarray | None]:
    """Separable detector weights ``a(i) + b(j)`` for an image bright at atom columns.

    A dark-field detector made of the detector rows with ``|i - cy| > R``, ``R`` = 1.1 x the
    bright-field disc radius found in a few scan rows (two bands above and below the disc: like an
    ADF image, bright where the probe sits on a nucleus; ``b`` is None). Without a disc, the second
    moment ``(i - cy)^2 + (j - cx)^2``. Returns ``(kind, a, b)``.
    """
    from .blocks import sample_mean_pattern
    from .geometry import find_bf_disc

    h, wd = ds.detector_shape
    iy, jx = np.arange(h, dtype=np.float64), np.arange(wd, dtype=np.float64)
    try:
        cy, cx, r = find_bf_disc(sample_mean_pattern(ds))
        a = (np.abs(iy - cy) > 1.1 * r).astype(np.float64)
        if a.sum() >= 2:
            return "adf", a, None
    except DataError:
        pass
    return "second_moment", (iy - c0[0]) ** 2, (jx - c0[1]) ** 2


def _fit_plane(v: np.ndarray, valid: np.ndarray) -> np.ndarray:
    ii, jj = np.indices(v.shape, dtype=np.float64)
    a = np.stack([np.ones(valid.sum()), ii[valid], jj[valid]], axis=1)
    coef, *_ = np.linalg.lstsq(a, v[valid], rcond=None)
    return coef[0] + coef[1] * ii + coef[2] * jj


def _detector_mask(ds: Dataset4D, mask, center) -> tuple[np.ndarray | None, Any]:
    if mask is None:
        return None, None
    shaped = shape_mask(ds.detector_shape, center, mask)
    if shaped is not None:
        return shaped.astype(np.float64), list(mask)
    m = np.asarray(mask)
    if m.shape != ds.detector_shape:
        raise DataError(f"the COM mask has shape {m.shape}, the detector is {ds.detector_shape}",
                        path=ds.provenance.source_path, hint="make the mask the detector's shape")
    if m.dtype != bool and (not np.isfinite(m).all() or m.min() < 0):
        raise DataError("the COM mask must be boolean or non-negative finite weights")
    return m.astype(np.float64), "array"


# -- main entry -----------------------------------------------------------------------------------
class COMReducer(Linear):
    """Reducer: the per-frame sums ``[1, i - cy, j - cx, (atom signal)]`` -> :class:`COMResult`."""

    def __init__(self, weights, state: dict):
        super().__init__(weights, check_negative=True)
        self.state = state
        self.defer = False  # True: finalize returns the sums, complete() makes the result later

    def finalize(self, bufs, info):
        return bufs["sums"] if self.defer else self.complete(bufs["sums"])

    def complete(self, sums: np.ndarray) -> COMResult:
        """The COM maps from the per-frame sums (rotation and flip search, divergence, curl, iCOM)."""
        return _com_from_sums(sums, **self.state)


def com_reducer(data, rotation="auto", flip="auto", mask=None, center=None, descan=None, units: str = "px",
                block_bytes: int | None = None, icom_highpass: float = 0.25) -> COMReducer:
    """The :class:`COMReducer` for these parameters (validated, weights built; nothing of the scan read
    except a small sample of frames for the automatic 180-degree decision)."""
    ds = as_dataset(data)
    if units not in ("px", "mrad"):
        raise DataError(f"units must be 'px' or 'mrad', got {units!r}")
    if descan not in (None, "mean", "plane"):
        raise DataError(f"descan must be None, 'mean' or 'plane', got {descan!r}")
    if not (rotation == "auto" or isinstance(rotation, (int, float, np.number))):
        raise DataError(f"rotation must be 'auto' or degrees, got {rotation!r}")
    if not (flip == "auto" or isinstance(flip, (bool, np.bool_))):
        raise DataError(f"flip must be 'auto', True or False, got {flip!r}")

    # the reference centre the weights are built around
    if center is None or (isinstance(center, str) and center == "mean"):
        c0 = ds.detector_center
    elif isinstance(center, str):
        raise DataError(f"center must be None, 'mean' or (y, x), got {center!r}")
    else:
        c0 = tuple(float(v) for v in center)
        if len(c0) != 2:
            raise DataError(f"center must be (y, x), got {center!r}")
    m, mask_desc = _detector_mask(ds, mask, c0)
    mr = None
    if units == "mrad":
        mr = detector_pixel_mrad(ds)
        if mr is None:
            raise DataError("COM in mrad needs a detector calibration (detector_pixel in mrad, or 1/Å with "
                            "the beam energy)", path=ds.provenance.source_path, hint="use units='px'")

    auto = rotation == "auto" or flip == "auto"
    h, wd = ds.detector_shape
    iy, jx = np.arange(h, dtype=np.float64), np.arange(wd, dtype=np.float64)
    atom_signal = _atom_signal(ds, c0) if auto else None
    # 1, i - cy, j - cx (outer products: the executor evaluates them from row and column sums); with
    # auto rotation a 4th map bright at atom columns, for the 180-degree decision (same pass)
    w = [np.ones((h, wd)), np.broadcast_to((iy - c0[0])[:, None], (h, wd)),
         np.broadcast_to((jx - c0[1])[None, :], (h, wd))]
    if auto:
        b = np.zeros(wd) if atom_signal[2] is None else atom_signal[2]
        w.append(np.add.outer(atom_signal[1], b))
    w = np.stack(w)
    if m is not None:
        w = w * m
    cal = ds.calibration
    step = (1.0, 1.0)
    if cal.scan_step is not None and all(s for s in cal.scan_step):
        step = (float(cal.scan_step[0]), float(cal.scan_step[1]))
    state = dict(rotation=rotation, flip=flip, center=center, c0=c0, mask_desc=mask_desc, descan=descan,
                 units=units, mr=mr, step=step, block_bytes=block_bytes, icom_highpass=icom_highpass,
                 atom_kind=None if atom_signal is None else atom_signal[0])
    return COMReducer(w, state)


def iter_center_of_mass(data, rotation="auto", flip="auto", mask=None, center=None, descan=None,
                        units: str = "px", block_bytes: int | None = None, icom_highpass: float = 0.25
                        ) -> Steps[COMResult]:
    """Generator form of :func:`center_of_mass` (yields Progress, returns COMResult)."""
    check_arguments("iter_center_of_mass", locals())  # types and ranges, before any read
    ds = as_dataset(data)
    red = com_reducer(ds, rotation, flip, mask, center, descan, units, block_bytes, icom_highpass)
    (res,) = yield from iter_run(ds, [red], block_bytes=block_bytes, message="centre of mass")
    return res


def _com_from_sums(sums, rotation, flip, center, c0, mask_desc, descan, units, mr, step, block_bytes,
                   icom_highpass, atom_kind) -> COMResult:
    auto = atom_kind is not None
    total = sums[..., 0]
    valid = total > 0
    safe = np.where(valid, total, 1.0)
    y = np.where(valid, sums[..., 1] / safe, 0.0)
    x = np.where(valid, sums[..., 2] / safe, 0.0)
    adf = None
    if auto:
        adf = sums[..., 3] if atom_kind == "adf" else np.where(valid, sums[..., 3] / safe, 0.0)

    center_used = [c0[0], c0[1]]
    if isinstance(center, str) and center == "mean":
        tot = total.sum()
        if tot > 0:
            dy, dx = sums[..., 1].sum() / tot, sums[..., 2].sum() / tot
            y = np.where(valid, y - dy, 0.0)
            x = np.where(valid, x - dx, 0.0)
            center_used = [c0[0] + dy, c0[1] + dx]
    if descan is not None and valid.any():
        if descan == "mean":
            y = np.where(valid, y - y[valid].mean(), 0.0)
            x = np.where(valid, x - x[valid].mean(), 0.0)
        elif valid.sum() >= 3:
            y = np.where(valid, y - _fit_plane(y, valid), 0.0)
            x = np.where(valid, x - _fit_plane(x, valid), 0.0)
    if units == "mrad":
        y, x = y * mr[0], x * mr[1]

    # rotation / flip
    # curl/divergence statistics use a lightly smoothed field: shot noise is white, atoms are not
    xe, ye = (ndimage.gaussian_filter(x, ESTIMATE_SMOOTH_PX), ndimage.gaussian_filter(y, ESTIMATE_SMOOTH_PX)) \
        if min(x.shape) > 4 else (x, y)
    flips = [False, True] if flip == "auto" else [bool(flip)]
    curves: dict[str, Any] = {"angles_deg": CURVE_ANGLES.astype(np.float64)}
    choice = []
    for f in flips:
        rms, best = curl_curve(xe, ye, f, step)
        curves[f"rms_curl_flip_{str(f).lower()}"] = rms
        t = best if rotation == "auto" else float(rotation)
        cx_, cy_ = rotate_flip(xe, ye, t, f)
        _, cu = divergence_curl(cx_, cy_, step)
        choice.append((float(np.sqrt(np.mean(_interior(cu) ** 2))), f, t))
    for f in (False, True):  # both curves for display, even when one flip is given
        key = f"rms_curl_flip_{str(f).lower()}"
        if key not in curves:
            curves[key] = curl_curve(xe, ye, f, step)[0]
    _, flip_used, rot = min(choice, key=lambda c: c[0])
    sign_rule = None
    if rotation == "auto":
        cx_, cy_ = rotate_flip(xe, ye, rot, flip_used)
        div, _ = divergence_curl(cx_, cy_, step)
        if adf is not None and min(adf.shape) > 4:
            adf = ndimage.gaussian_filter(adf, ESTIMATE_SMOOTH_PX)
        sgn, sign_rule = _atom_sign(div, adf)
        sign_rule = f"{atom_kind}: {sign_rule}"
        if sgn < 0:
            rot = (rot + 180.0) % 360.0
        # report in [-1, 359): an unrotated detector reads as ~0, not 359.9
        rot = rot - 360.0 if rot >= 359.0 else rot
    xs, ys = rotate_flip(x, y, rot, flip_used)
    div, curl = divergence_curl(xs, ys, step)
    icom = integrate_gradient(xs, ys, step, icom_highpass)

    params = {
        "rotation": rotation if rotation == "auto" else float(rotation),
        "flip": flip if flip == "auto" else bool(flip),
        "rotation_deg": float(rot), "flip_used": bool(flip_used),
        "mask": mask_desc, "center": center if (center is None or isinstance(center, str)) else list(c0),
        "center_used": center_used, "descan": descan, "units": units, "block_bytes": block_bytes,
        "scan_step": list(step), "icom_highpass": icom_highpass, "sign_rule": sign_rule,
        "estimate_smooth_px": ESTIMATE_SMOOTH_PX,
        "zero_sum_frames": int((~valid).sum()),
    }
    return COMResult(
        x=xs, y=ys, magnitude=np.hypot(xs, ys), angle=np.arctan2(ys, xs), divergence=div, curl=curl,
        icom=icom, raw_x=x, raw_y=y, total=total, rotation_deg=float(rot), flip=bool(flip_used),
        curl_curves=curves, parameters=params, units=units,
    )


def center_of_mass(data, rotation="auto", flip="auto", mask=None, center=None, descan=None,
                   units: str = "px", block_bytes: int | None = None, icom_highpass: float = 0.25,
                   callback=None, cancel=None) -> COMResult:
    """Centre of mass (DPC) maps of a 4D-STEM dataset.

    Parameters
    ----------
    data
        Dataset4D or plain 4-D array ``(scan_y, scan_x, det_y, det_x)`` of non-negative intensities
        (raw or binned; not mean-subtracted). Negative values raise :class:`DataError`.
    rotation
        ``"auto"`` (minimum RMS curl, 180-degree ambiguity resolved so that the divergence is negative
        at atom columns) or the scan-detector rotation in degrees.
    flip
        ``"auto"`` (the flip state with the lower minimum curl) or True/False (det_x reversed).
    mask
        None, a detector-shaped boolean/weight array, ``("disc", r)`` or ``("annulus", r0, r1)`` (pixels,
        about ``center``).
    center
        None (calibrated detector centre, else ``(N-1)/2``), ``"mean"`` (the mean pattern's COM) or ``(y, x)``.
    descan
        None, ``"mean"`` (subtract the mean COM) or ``"plane"`` (subtract a fitted plane per component).
    units
        ``"px"`` (detector pixels) or ``"mrad"`` (needs the detector calibration).
    block_bytes
        Source bytes read per block.
    callback, cancel
        Progress callback and ``threading.Event`` to cancel (see :func:`napari_4dstem.run_steps`).

    Returns
    -------
    COMResult
    """
    check_arguments("center_of_mass", locals())  # types and ranges, before any read
    return run_steps(iter_center_of_mass(data, rotation, flip, mask, center, descan, units, block_bytes,
                                         icom_highpass), callback, cancel, "centre of mass")
