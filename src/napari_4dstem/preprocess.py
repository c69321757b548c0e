"""Preprocessing of 4D-STEM patterns for learning (rrVAE) and display.

:class:`Preprocessing` follows scikit-learn: constructor arguments are stored unchanged, ``fit``
learns (centre, hot pixels, mean pattern, PCA, scaling), ``transform`` applies, learned state ends
in ``_``. The order of operations is fixed (docs/analysis.md):

1. scan crop; 2. hot-pixel repair (raw detector); 3. re-centre the detector on the centre (crop/pad,
whole pixels); 4. bin by summation (crop to a multiple of the factor, centred); 5. detector mask;
6. ``normalize="total"`` (each pattern / its sum); 7. PCA denoising (reconstruction adds the PCA mean
back); 8. subtract the mean pattern; 9. ``minmax`` / ``zscore`` / ``std`` scaling with global statistics.

Steps 1-6 run block by block over scan rows on the source; steps 7-9 run on the float32 result,
which must fit in memory (a 64 x 64 binned stack is small; otherwise a :class:`DataError` says to bin
more or crop the scan).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .blocks import bin_frames, fast_dtype
from .executor import Buffer, Reducer
from .geometry import find_bf_disc, shape_mask
from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D, as_dataset, available_memory
from .errors import DataError
from .params import check_arguments
from .progress import Progress, Steps, run_steps

NORMALIZE = (None, "minmax", "total", "zscore", "std")
PCA_METHODS = ("auto", "full", "randomized", "incremental")
#: Largest scan smoothing that ``scan_sigma="auto"`` chooses (scan pixels): keeps atomic-scale detail.
AUTO_SCAN_SIGMA_MAX = 1.5


# -- standalone binning ---------------------------------------------------------------------------
def _sum_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return np.dtype(np.uint32 if dtype.itemsize <= 2 else np.uint64)
    if dtype.kind in "ib":
        return np.dtype(np.int64)
    if dtype == np.float64:
        return dtype
    return np.dtype(np.float32)


def bin_geometry(detector_shape: tuple[int, int], factor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(crop_start, binned_shape)``: a non-dividing detector is cropped symmetrically to a multiple."""
    if int(factor) != factor or factor < 1:
        raise DataError(f"the bin factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    h, w = detector_shape
    if factor > min(h, w):
        raise DataError(f"bin factor {factor} is larger than the detector {detector_shape}",
                        hint="use a smaller factor")
    return ((h % factor) // 2, (w % factor) // 2), (h // factor, w // factor)


def _binned_center(center: tuple[float, float], crop: tuple[int, int], factor: int) -> tuple[float, float]:
    # binned pixel k covers source pixels crop + k f .. crop + k f + f - 1, centre crop + k f + (f-1)/2
    return tuple((c - c0 - (factor - 1) / 2.0) / factor for c, c0 in zip(center, crop))  # type: ignore


def _square_window(crop, shape, center, factor):
    """Crop the longer binned axis to the shorter one, centred on the beam (the rrVAE needs square patterns)."""
    n = min(shape)
    start = []
    for c0, size, c in zip(crop, shape, center):
        off = int(np.clip(round(c - (n - 1) / 2.0), 0, size - n))
        start.append(c0 + off * factor)
    return tuple(start), (n, n)


def _scaled_pixel(ds: Dataset4D, factor: int):
    p = ds.calibration.detector_pixel
    if p is None:
        return p
    return tuple(None if v is None else float(v) * factor for v in p)


def bin_detector(ds, factor: int) -> Dataset4D:
    """Sum ``factor x factor`` detector pixels (lazy, via dask; integer data accumulate wide).

    A detector that is not a multiple of ``factor`` is cropped symmetrically (the extra rows/columns
    are split between both edges, the larger half at the end). The calibration is updated:
    ``detector_pixel`` x factor and ``detector_center`` mapped to the binned pixels.
    """
    ds = as_dataset(ds)
    (y0, x0), (h, w) = bin_geometry(ds.detector_shape, factor)
    factor = int(factor)
    if factor == 1:
        return ds
    arr = ds.to_dask()[:, :, y0:y0 + h * factor, x0:x0 + w * factor]
    sy, sx = ds.scan_shape
    binned = arr.reshape(sy, sx, h, factor, w, factor).sum(axis=(3, 5), dtype=_sum_dtype(ds.dtype))
    return ds.with_data(binned, note=f"binned detector by {factor} (crop start {(y0, x0)})",
                        detector_pixel=_scaled_pixel(ds, factor),
                        detector_center=_binned_center(ds.detector_center, (y0, x0), factor))


def reduce_detector(ds, target_size: int = 64) -> Dataset4D:
    """Bin the detector by the integer factor that brings its smaller side closest to ``target_size``."""
    ds = as_dataset(ds)
    return bin_detector(ds, factor_for_target(ds.detector_shape, target_size))


def factor_for_target(detector_shape: tuple[int, int], target_size: int) -> int:
    if int(target_size) != target_size or target_size < 1:
        raise DataError(f"target_size must be a positive integer, got {target_size!r}")
    return max(1, int(round(min(detector_shape) / target_size)))


# -- hot pixels -----------------------------------------------------------------------------------
def find_hot_pixels(pattern: np.ndarray, threshold: float = 8.0) -> np.ndarray:
    """Boolean map of isolated hot pixels in a mean pattern.

    A pixel is hot when it exceeds the median of its 3 x 3 neighbourhood by ``threshold`` robust
    standard deviations (1.4826 x MAD of the pattern minus its median filter) *and* is more than
    twice its brightest neighbour, so the edge of the bright-field disc is never flagged.
    """
    from scipy import ndimage

    p = np.asarray(pattern, dtype=np.float64)
    med = ndimage.median_filter(p, size=3, mode="nearest")
    resid = p - med
    sigma = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    fp = np.ones((3, 3), bool)
    fp[1, 1] = False
    nmax = ndimage.maximum_filter(p, footprint=fp, mode="nearest")
    sigma = sigma if sigma > 0 else max(float(np.abs(resid).max()) * 1e-3, 1e-30)
    return (resid > threshold * sigma) & (p > 2.0 * np.maximum(nmax, 0))


def _repair_plan(hot: np.ndarray) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """For each hot pixel, its good 3 x 3 neighbours (the value is replaced by their median)."""
    plan = []
    h, w = hot.shape
    for i, j in zip(*np.nonzero(hot)):
        ii, jj = [], []
        for a in range(max(0, i - 1), min(h, i + 2)):
            for b in range(max(0, j - 1), min(w, j + 2)):
                if not hot[a, b]:
                    ii.append(a)
                    jj.append(b)
        plan.append((int(i), int(j), np.array(ii, int), np.array(jj, int)))
    return plan


# -- the estimator --------------------------------------------------------------------------------
class Preprocessing:
    """Detector binning, centring, masks, hot pixels, mean subtraction, normalisation and PCA denoising.

    Parameters
    ----------
    bin_factor
        Integer detector binning factor (sum); overrides ``target_size``.
    target_size
        Bin to about ``target_size`` pixels on the smaller detector side (integer factor,
        ``round(min(H, W) / target_size)``). ``None`` with ``bin_factor=None``: no binning.
    center
        ``None`` (keep the detector as it is), ``"auto"`` (bright-field disc of the mean pattern) or
        ``(y, x)`` in source detector pixels: the detector is cropped/padded (zeros) by whole pixels so
        that this point lands within half a pixel of the detector's geometric centre.
    crop_scan
        ``(y0, y1, x0, x1)`` scan window (Python slice bounds) or None.
    mask
        None, a boolean/weight array of the *output* detector shape, ``("disc", r)`` or
        ``("annulus", r0, r1)`` in output pixels about the output detector centre.
    remove_hot_pixels
        Repair isolated hot pixels found in the mean pattern (median of good neighbours, per frame).
    subtract_mean
        Subtract the mean pattern (after PCA).
    normalize
        ``"minmax"`` (global min-max to [0, 1] after mean subtraction, as the rrVAE paper / atomai),
        ``"total"`` (each pattern divided by its sum, before everything else), ``"zscore"`` (per detector
        pixel: subtract its mean, divide by its standard deviation), ``"std"`` (divide by the global
        standard deviation) or None.
    pca_components, pca_drop, pca_method
        PCA denoising: keep ``pca_components`` components, zero the indices in ``pca_drop``, and
        reconstruct (the PCA mean is added back). ``pca_method``: ``"full"``, ``"randomized"``,
        ``"incremental"`` (scikit-learn; batches) or ``"auto"`` (incremental when a dense SVD would not
        fit in memory).
    hot_pixel_threshold
        Robust standard deviations above the local median for a hot pixel.
    block_bytes
        Source bytes read per block.
    random_state
        Seed for randomized PCA (results are reproducible).
    square
        Crop a non-square (binned) detector to a square centred on the beam, as the rrVAE needs
        (a 128 x 256 Merlin ROI becomes 128 x 128 before binning to 64 x 64). ``False`` keeps the shape.
    scan_sigma
        Gaussian smoothing of the patterns over the scan (sigma in scan pixels), after binning and before
        PCA: averages the Poisson noise of neighbouring patterns. ``0`` = off (the paper), a number, or
        ``"auto"`` (default): for counting-detector data (integer counts) whose Poisson noise outweighs the
        signal (noise-to-signal variance ratio ``rho > 1``), ``sigma = min(sqrt(rho / pi), 1.5, 0.8 l)``,
        where ``l`` is the signal's correlation length over the scan (from the covariance of neighbouring
        patterns, which noise does not reach): coarse scans are barely smoothed. Otherwise 0 (noiseless or
        non-count data are left as they are). The value used is ``scan_sigma_``.

    Attributes (after fit)
    ----------------------
    center_, bin_factor_, hot_pixels_, raw_mean_pattern_, mean_pattern_, pca_, explained_variance_ratio_,
    data_min_, data_max_, scale_, detector_shape_, calibration_, scan_sigma_ (the smoothing used),
    noise_ratio_ (Poisson noise / signal variance of the binned patterns; None if not estimated)
    """

    def __init__(self, bin_factor: int | None = None, target_size: int | None = 64, center=None,
                 crop_scan=None, mask=None, remove_hot_pixels: bool = False, subtract_mean: bool = True,
                 normalize: str | None = "minmax", pca_components: int | None = None, pca_drop=(),
                 pca_method: str = "auto", hot_pixel_threshold: float = 8.0, block_bytes: int | None = None,
                 random_state: int = 0, square: bool = True, scan_sigma: float | str = "auto"):
        check_arguments("Preprocessing", locals())  # types and ranges, before any read
        self.bin_factor = bin_factor
        self.target_size = target_size
        self.center = center
        self.crop_scan = crop_scan
        self.mask = mask
        self.remove_hot_pixels = remove_hot_pixels
        self.subtract_mean = subtract_mean
        self.normalize = normalize
        self.pca_components = pca_components
        self.pca_drop = pca_drop
        self.pca_method = pca_method
        self.hot_pixel_threshold = hot_pixel_threshold
        self.block_bytes = block_bytes
        self.random_state = random_state
        self.square = square
        self.scan_sigma = scan_sigma

    # -- scikit-learn protocol ------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (arrays and tuples become lists)."""
        names = ("bin_factor", "target_size", "center", "crop_scan", "mask", "remove_hot_pixels",
                 "subtract_mean", "normalize", "pca_components", "pca_drop", "pca_method",
                 "hot_pixel_threshold", "block_bytes", "random_state", "square", "scan_sigma")
        return {n: _jsonable(getattr(self, n)) for n in names}

    def set_params(self, **params) -> Preprocessing:
        for k, v in params.items():
            if k not in self.get_params():
                raise DataError(f"unknown preprocessing parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(self, ds) -> Preprocessing:
        """Learn the centre, hot pixels, mean pattern, PCA and scaling from ``ds``."""
        run_steps(self.iter_fit_transform(ds), what="preprocessing")
        return self

    def fit_transform(self, ds, callback=None, cancel=None) -> Dataset4D:
        """Fit and return the preprocessed float32 dataset (in memory)."""
        return run_steps(self.iter_fit_transform(ds), callback, cancel, "preprocessing")

    def transform(self, ds, callback=None, cancel=None) -> Dataset4D:
        """Apply the fitted preprocessing to ``ds`` (same detector shape as the fitted data)."""
        return run_steps(self.iter_transform(ds), callback, cancel, "preprocessing")

    def iter_fit_transform(self, ds) -> Steps[Dataset4D]:
        """Generator form of :meth:`fit_transform`."""
        return (yield from self._run(as_dataset(ds), fit=True))

    def iter_transform(self, ds) -> Steps[Dataset4D]:
        """Generator form of :meth:`transform`."""
        if not hasattr(self, "center_"):
            raise DataError("this Preprocessing is not fitted yet", hint="call fit() or fit_transform() first")
        return (yield from self._run(as_dataset(ds), fit=False))

    # -- the work -------------------------------------------------------------------------------
    def _validate(self, ds: Dataset4D) -> None:
        if self.normalize not in NORMALIZE:
            raise DataError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if self.pca_method not in PCA_METHODS:
            raise DataError(f"pca_method must be one of {PCA_METHODS}, got {self.pca_method!r}")
        sig = self.scan_sigma
        if not (sig == "auto" or (isinstance(sig, (int, float)) and not isinstance(sig, bool)
                                  and math.isfinite(sig) and sig >= 0)):
            raise DataError(f"scan_sigma must be 'auto' or a number >= 0 (scan pixels), got {sig!r}",
                            hint="0 turns the smoothing off")
        if ds.dtype.kind not in "biuf":
            raise DataError(f"cannot preprocess data of type {ds.dtype}", path=ds.provenance.source_path)

    def _scan_window(self, ds: Dataset4D) -> tuple[int, int, int, int]:
        sy, sx = ds.scan_shape
        if self.crop_scan is None:
            return 0, sy, 0, sx
        try:
            y0, y1, x0, x1 = (int(v) for v in self.crop_scan)
        except (TypeError, ValueError):
            raise DataError(f"crop_scan must be (y0, y1, x0, x1), got {self.crop_scan!r}") from None
        if not (0 <= y0 < y1 <= sy and 0 <= x0 < x1 <= sx):
            raise DataError(f"crop_scan {self.crop_scan} is outside the scan {ds.scan_shape} or empty",
                            path=ds.provenance.source_path, hint="use 0 <= y0 < y1 <= scan_y, same for x")
        return y0, y1, x0, x1

    def _geometry(self, ds: Dataset4D, raw_mean: np.ndarray | None):
        """Fit the detector geometry: centre, window shift, bin factor, output shape, mask."""

        h, w = ds.detector_shape
        if self.center is None:
            center, shift = ds.detector_center, (0, 0)
        else:
            if isinstance(self.center, str):
                if self.center != "auto":
                    raise DataError(f"center must be None, 'auto' or (y, x), got {self.center!r}")
                cy, cx, _ = find_bf_disc(raw_mean)
            else:
                try:
                    cy, cx = (float(v) for v in self.center)
                except (TypeError, ValueError):
                    raise DataError(f"center must be None, 'auto' or (y, x), got {self.center!r}") from None
            center = (cy, cx)
            shift = (int(round(cy - (h - 1) / 2.0)), int(round(cx - (w - 1) / 2.0)))
        self.center_ = (float(center[0]), float(center[1]))
        self.shift_ = shift
        local_center = (center[0] - shift[0], center[1] - shift[1])
        if self.bin_factor is not None:
            f = self.bin_factor
        elif self.target_size is not None:
            f = factor_for_target((h, w), self.target_size)
        else:
            f = 1
        crop, out_shape = bin_geometry((h, w), f)
        if self.square and out_shape[0] != out_shape[1]:
            crop, out_shape = _square_window(crop, out_shape, _binned_center(local_center, crop, f), f)
        self.bin_factor_ = int(f)
        self.bin_crop_ = crop
        self.detector_shape_ = out_shape
        out_center = _binned_center(local_center, crop, self.bin_factor_)
        mask = self.mask
        m = None if mask is None else shape_mask(out_shape, out_center, mask)
        if mask is not None and m is None:
            m = np.asarray(mask)
            if m.shape != out_shape:
                raise DataError(f"the mask has shape {m.shape}, the preprocessed detector is {out_shape}",
                                path=ds.provenance.source_path,
                                hint="give the mask in the binned/centred detector's shape")
        self.mask_ = None if m is None else m.astype(np.float32)
        self.calibration_ = ds.calibration.replace(
            detector_center=(float(out_center[0]), float(out_center[1])),
            detector_pixel=_scaled_pixel(ds, self.bin_factor_))

    def _stage1(self, frames: np.ndarray) -> np.ndarray:
        """Hot pixels, centring window, binning, mask, per-pattern total: (n, h, w) float32 from (n, H, W)."""
        n, h, w = frames.shape
        x = frames
        f = self.bin_factor_
        (cy0, cx0), (bh, bw) = self.bin_crop_, self.detector_shape_
        if not self._plan and self.shift_ == (0, 0) and f > 1 and fast_dtype(x.dtype):
            # counts: exact integer sums in one compiled pass
            return self._finish_frames(bin_frames(x, f, (cy0, cx0), (bh, bw)))
        if self._plan:
            x = x.astype(np.float32, copy=True)
            for i, j, ii, jj in self._plan:
                x[:, i, j] = np.median(x[:, ii, jj], axis=1) if len(ii) else 0
        sy, sx = self.shift_
        if (sy, sx) != (0, 0):
            out = np.zeros((n, h, w), dtype=x.dtype)
            ys, ye = max(0, sy), min(h, h + sy)
            xs, xe = max(0, sx), min(w, w + sx)
            out[:, ys - sy:ye - sy, xs - sx:xe - sx] = x[:, ys:ye, xs:xe]
            x = out
        x = x[:, cy0:cy0 + bh * f, cx0:cx0 + bw * f]
        if f > 1:
            x = x.reshape(n, bh, f, bw, f)
            x = x.sum(axis=(2, 4), dtype=np.float64 if x.dtype.itemsize > 4 or x.dtype.kind != "f"
                      else np.float32)
        return self._finish_frames(x.astype(np.float32, copy=False))

    def _finish_frames(self, x: np.ndarray) -> np.ndarray:
        if self.mask_ is not None:
            x = x * self.mask_
        if self.normalize == "total":
            s = x.sum(axis=(1, 2), dtype=np.float64)
            x = x / np.where(s != 0, s, 1.0).astype(np.float32)[:, None, None]
        return x

    def _pca(self, n_samples: int, n_features: int, nbytes: int):
        from sklearn.decomposition import PCA, IncrementalPCA

        k = self.pca_components
        if int(k) != k or k < 1:
            raise DataError(f"pca_components must be a positive integer, got {k!r}")
        k = int(k)
        if n_samples < 2:
            raise DataError("PCA needs at least 2 patterns", hint="use a larger scan window or no PCA")
        if k > min(n_samples, n_features):
            raise DataError(f"pca_components={k} is more than the data allow (min(patterns, pixels) = "
                            f"{min(n_samples, n_features)})", hint="use fewer components")
        drop = [int(d) for d in self.pca_drop]
        if any(d < 0 or d >= k for d in drop):
            raise DataError(f"pca_drop {list(self.pca_drop)} must hold component indices 0..{k - 1}")
        method = self.pca_method
        if method == "auto":
            method = "full" if 4 * nbytes < 0.5 * available_memory() else "incremental"
            if method == "full" and min(n_samples, n_features) > 2000 and k < 0.2 * min(n_samples, n_features):
                method = "randomized"
        if method == "incremental":
            return IncrementalPCA(n_components=k, batch_size=max(5 * k, 1024)), method
        return PCA(n_components=k, svd_solver=method, random_state=self.random_state), method

    def _run(self, ds: Dataset4D, fit: bool) -> Steps[Dataset4D]:
        from .executor import MeanPattern, iter_run

        win = self.prepare(ds, fit, None)
        if fit and (self.remove_hot_pixels or self.center == "auto"):
            # the raw mean pattern comes first: hot pixels and the centre shape the binning
            (res,) = yield from iter_run(ds, [MeanPattern()], window=win, block_bytes=self._bytes(),
                                         message="mean pattern")
            self.prepare(ds, fit, res["mean"])
        (binned,) = yield from iter_run(ds, [self.binning_reducer(ds, fit)], window=win,
                                        block_bytes=self._bytes(), message="binning and centring")
        return (yield from self.iter_finish(ds, binned, fit))

    def _bytes(self) -> int:
        return self.block_bytes or DEFAULT_BLOCK_BYTES

    def needs_raw_mean(self) -> bool:
        """Whether fitting needs the raw mean pattern before binning (hot pixels, ``center="auto"``)."""
        return bool(self.remove_hot_pixels or self.center == "auto")

    def prepare(self, ds: Dataset4D, fit: bool, raw_mean: np.ndarray | None) -> tuple[int, int, int, int]:
        """Validate, and when fitting learn the geometry (centre, hot pixels, binning, mask) from ``raw_mean``
        (the mean raw pattern, needed when :meth:`needs_raw_mean`); returns the scan window."""
        self._validate(ds)
        win = self._scan_window(ds)
        if fit:
            if raw_mean is not None and not np.isfinite(raw_mean).all():
                raise DataError("the data hold NaN or infinite values", path=ds.provenance.source_path)
            self.raw_mean_pattern_ = raw_mean
            hot = (find_hot_pixels(raw_mean, self.hot_pixel_threshold) if self.remove_hot_pixels and
                   raw_mean is not None else np.zeros(ds.detector_shape, bool))
            self.hot_pixels_ = hot
            if hot.any() and raw_mean is not None:
                raw_mean = raw_mean.copy()
                for i, j, ii, jj in _repair_plan(hot):
                    raw_mean[i, j] = np.median(raw_mean[ii, jj]) if len(ii) else 0
            self._plan = _repair_plan(hot)
            if raw_mean is not None or not self.needs_raw_mean():
                self._geometry(ds, raw_mean)
            self.input_detector_shape_ = ds.detector_shape
        else:
            if ds.detector_shape != self.input_detector_shape_:
                raise DataError(f"the detector {ds.detector_shape} differs from the fitted one "
                                f"{self.input_detector_shape_}", path=ds.provenance.source_path,
                                hint="fit a new Preprocessing on this data")
            self._plan = _repair_plan(self.hot_pixels_)
        return win

    def binning_reducer(self, ds: Dataset4D, fit: bool = True) -> BinnedPatterns:
        """The reducer that bins (and repairs, centres, masks) every frame into the float32 stack, in the
        executor's single pass; :meth:`iter_finish` completes the preprocessing from its result."""
        y0, y1, x0, x1 = self._scan_window(ds)
        bh, bw = self.detector_shape_
        out_bytes = (y1 - y0) * (x1 - x0) * bh * bw * 4
        if out_bytes > 0.5 * available_memory():
            raise DataError(f"the preprocessed stack ({out_bytes / 2**30:.1f} GiB float32) does not fit in memory",
                            path=ds.provenance.source_path,
                            hint="bin more (bin_factor / target_size) or crop the scan (crop_scan)")
        # integer counts (Poisson) let the auto smoothing judge the noise; floats and signed ints are checked
        check_counts = fit and self.scan_sigma == "auto" and ds.dtype.kind in "fi"
        return BinnedPatterns(self, ds.dtype.kind == "f", check_counts, ds.dtype.kind in "bu")

    def iter_finish(self, ds: Dataset4D, binned: dict, fit: bool) -> Steps[Dataset4D]:
        """Scan smoothing, PCA, mean subtraction and scaling on the binned stack (in memory, no data read)."""
        y0, y1, x0, x1 = self._scan_window(ds)
        n_rows, n_cols = y1 - y0, x1 - x0
        bh, bw = self.detector_shape_
        n = n_rows * n_cols
        if binned["nonfinite"]:
            raise DataError("the data hold NaN or infinite values", path=ds.provenance.source_path,
                            hint="replace them (np.nan_to_num) before preprocessing")
        X = binned["x"].reshape(n, bh * bw)
        counts = binned["counts"]
        total, done = 3, 0
        if fit:
            self.scan_sigma_, self.noise_ratio_ = self._scan_sigma(X, counts, (n_rows, n_cols))
        if getattr(self, "scan_sigma_", 0.0) > 0 and n_rows * n_cols > 1:
            _smooth_scan(X.reshape(n_rows, n_cols, -1), self.scan_sigma_)

        if self.pca_components is not None:
            if fit:
                pca, method = self._pca(n, bh * bw, X.nbytes)
                if method == "incremental":
                    bs = pca.batch_size
                    starts = list(range(0, n, bs))
                    if len(starts) > 1 and n - starts[-1] < pca.n_components:
                        starts.pop()  # the last batch must hold at least n_components patterns
                    for s0, s1 in zip(starts, starts[1:] + [n]):
                        pca.partial_fit(X[s0:s1])
                else:
                    pca.fit(X)
                self.pca_ = pca
                self.pca_method_ = method
                self.explained_variance_ratio_ = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
            drop = [int(d) for d in self.pca_drop]
            for s in range(0, n, 65536):
                z = self.pca_.transform(X[s:s + 65536])
                if drop:
                    z[:, drop] = 0
                X[s:s + 65536] = self.pca_.inverse_transform(z)
        done += 1
        yield Progress(done, total, "PCA")

        if fit:
            self.mean_pattern_ = X.mean(axis=0, dtype=np.float64).astype(np.float32).reshape(bh, bw)
        if self.subtract_mean:
            X -= self.mean_pattern_.reshape(1, -1)
        done += 1
        yield Progress(done, total, "mean pattern")

        if fit:
            self.data_min_ = float(X.min()) if X.size else 0.0
            self.data_max_ = float(X.max()) if X.size else 0.0
            self.scale_ = 1.0
            self.offset_ = 0.0
            if self.normalize == "minmax":
                rng = self.data_max_ - self.data_min_
                self.offset_, self.scale_ = self.data_min_, (rng if rng > 0 else 1.0)
            elif self.normalize == "std":
                sd = float(X.std(dtype=np.float64))
                self.scale_ = sd if sd > 0 else 1.0
            elif self.normalize == "zscore":
                mu = X.mean(axis=0, dtype=np.float64)
                sd = X.std(axis=0, dtype=np.float64)
                self.offset_ = mu.astype(np.float32)
                self.scale_ = np.where(sd > 0, sd, 1.0).astype(np.float32)
        if self.normalize in ("minmax", "std", "zscore"):
            X -= np.float32(self.offset_) if np.isscalar(self.offset_) else self.offset_
            X /= np.float32(self.scale_) if np.isscalar(self.scale_) else self.scale_
        done += 1
        yield Progress(done, total, "normalising")

        params = self.get_params()
        out = ds.with_data(X.reshape(n_rows, n_cols, bh, bw), name=f"{ds.name} (preprocessed)",
                           note=f"preprocessed: {params}",
                           detector_center=self.calibration_.detector_center,
                           detector_pixel=self.calibration_.detector_pixel)
        out.metadata["preprocessing"] = params
        out.metadata["preprocessing_fitted"] = self.fitted_values()
        return out

    def fitted_values(self) -> dict[str, Any]:
        """Values chosen from the data at fit time that ``get_params`` does not show ("auto" choices)."""
        rho = getattr(self, "noise_ratio_", None)
        return {"scan_sigma": float(getattr(self, "scan_sigma_", 0.0)),
                "noise_ratio": None if rho is None or not math.isfinite(rho) else float(rho),
                "bin_factor": int(getattr(self, "bin_factor_", 1)),
                "center": [float(c) for c in getattr(self, "center_", ())] or None}

    def _scan_sigma(self, X: np.ndarray, counts: bool, scan: tuple[int, int]) -> tuple[float, float | None]:
        """The scan smoothing to use, and the Poisson noise-to-signal ratio (see ``scan_sigma``)."""
        if self.scan_sigma != "auto":
            return float(self.scan_sigma), None
        if not counts or self.normalize == "total" or min(scan) < 2:
            return 0.0, None
        var = noise = cov = 0.0
        w = None if self.mask_ is None else np.abs(self.mask_.reshape(-1).astype(np.float64))
        (sy, sx), n = scan, X.shape[0]
        for cols in _pixel_bands(X):  # a band of detector pixels at a time (bounded memory)
            d = X[:, cols].astype(np.float64)
            mean = d.mean(axis=0)
            d -= mean
            d = d.reshape(sy, sx, -1)
            var += float((d * d).sum()) / n
            # Poisson: a binned pixel's noise variance is its expected count (x the mask weight)
            noise += float(((1.0 if w is None else w[cols]) * np.maximum(mean, 0)).sum())
            # neighbours share signal but not noise: their covariance is the signal's alone
            cov += 0.5 * (float((d[1:] * d[:-1]).sum()) / ((sy - 1) * sx)
                          + float((d[:, 1:] * d[:, :-1]).sum()) / (sy * (sx - 1)))
        signal = var - noise
        if not signal > 0:
            return 0.0, float("inf")
        rho = noise / signal
        r1 = cov / signal  # signal correlation of neighbouring scan positions
        if rho <= 1.0 or not r1 > 0:
            return 0.0, rho
        # correlation length (Gaussian model r1 = exp(-1 / 2 l^2)); smoothing well inside it keeps the signal
        length = math.sqrt(-0.5 / math.log(min(r1, 0.999)))
        # a Gaussian of sigma divides white-noise variance by 4 pi sigma^2: aim at noise = signal / 4
        return float(min(math.sqrt(rho / math.pi), AUTO_SCAN_SIGMA_MAX, 0.8 * length)), rho


class BinnedPatterns(Reducer):
    """Reducer: each frame repaired, centred, binned and masked into the float32 stack of the preprocessing
    (``{"x": (scan_y, scan_x, h*w), "counts": bool, "nonfinite": bool}``)."""

    def __init__(self, pp: Preprocessing, check_finite: bool, check_counts: bool, counts: bool):
        self.pp, self.check_finite, self.check_counts, self.counts = pp, check_finite, check_counts, counts

    def buffers(self):
        bh, bw = self.pp.detector_shape_
        return {"x": Buffer("nav", (bh * bw,), "float32"), "nonfinite": Buffer("sig", (1,), "float64", "max"),
                "noncount": Buffer("sig", (1,), "float64", "max")}

    def process(self, frames, bufs):
        if self.check_finite and not np.isfinite(frames).all():
            bufs["nonfinite"][0] = 1
            return
        if self.check_counts and not bufs["noncount"][0] > 0:
            if not (frames.min() >= 0 and np.array_equal(frames, np.rint(frames))):
                bufs["noncount"][0] = 1  # one non-integer block settles it
        bufs["x"][:] = self.pp._stage1(frames).reshape(len(frames), -1)

    def finalize(self, bufs, info):
        counts = self.counts or (self.check_counts and not bufs["noncount"][0] > 0)
        return {"x": bufs["x"], "counts": bool(counts), "nonfinite": bool(bufs["nonfinite"][0] > 0)}


def _pixel_bands(X: np.ndarray, band_bytes: int = 64 * 2**20):
    """Slices of the last axis of ``X`` such that a float64 copy of one band stays within ``band_bytes``."""
    n = int(np.prod(X.shape[:-1]))
    step = max(1, band_bytes // (8 * max(n, 1)))
    return [slice(p0, p0 + step) for p0 in range(0, X.shape[-1], step)]


def _smooth_scan(X: np.ndarray, sigma: float) -> None:
    """Gaussian smoothing over the two scan axes of ``(sy, sx, p)``, in place, a band of pixels at a time."""
    from scipy import ndimage

    for cols in _pixel_bands(X):
        X[:, :, cols] = ndimage.gaussian_filter(X[:, :, cols], (sigma, sigma, 0), mode="nearest")


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
