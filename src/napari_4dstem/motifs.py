"""Motifs from Zernike moments: PCA, clustering, class averages and an outlier map; the paper's patch mode.

After Dan et al., "Learning motifs and their hierarchies in atomic resolution microscopy", Sci. Adv. 8,
eabk1005 (2022): patterns (or image patches) are projected onto Zernike polynomials, the features reduced
with PCA and grouped by a clustering step; averaging the members of a class gives motifs far less noisy than
any single pattern. No training: seconds for a 64 x 64 scan. See docs/zernike.md.

Two maps tell where the scan is atypical:

* ``outlier`` (the default defect map): how unlike anything else in the scan each position's
  *neighbourhood* of PCA maps is (:func:`napari_4dstem.rrvae.neighbourhood_outlier`, windows of
  ``(2 window + 1)^2`` positions matched against every non-overlapping window), squared, spread by a Gaussian
  of ``spread`` pixels and divided by its median. A lattice repeats its neighbourhoods; a defect does not.
* ``class_distance``: each pattern's Mahalanobis distance to its own class (the Gaussian mixture's
  component), the paper's per-motif spread; weaker for point defects (measured in docs/zernike.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dataset import Dataset4D, as_dataset
from .errors import DataError
from .params import check_arguments
from .progress import Progress, Steps, run_steps
from .zernike import DEFAULT_ORDER, OVERSAMPLE, ZernikeResult, iter_zernike_moments, zernike_moments

METHODS = ("gmm", "kmeans", "hdbscan")
FEATURES = ("moments", "invariant")
#: Largest number of classes tried by ``n_classes="auto"``.
MAX_CLASSES = 8
#: Default number of principal components kept (measured: docs/zernike.md).
DEFAULT_COMPONENTS = 4
#: Largest scan smoothing ``smooth="auto"`` picks (scan pixels).
AUTO_SMOOTH_MAX = 2.5


@dataclass
class MotifResult:
    """Zernike motifs of a scan. Maps are ``(scan_y, scan_x)`` unless said otherwise.

    ``features`` ``(scan_y, scan_x, F)`` float32: what was reduced (standardised); ``pcs`` ``(P, scan_y, scan_x)``
    the principal-component maps (after the scan smoothing); ``explained`` their variance ratios; ``labels`` int
    class per position; ``class_means`` ``(C, det_y, det_x)`` the mean pattern of each class (None until
    computed from the data); ``class_moments`` ``(C, K)`` their mean moments; ``counts`` members per class;
    ``outlier`` the defect map (larger = more atypical, median 1); ``class_distance`` the Mahalanobis distance
    to the own class; ``angle`` the rotation map from the ``m = 1`` phases (radians); ``selection`` the score of
    every number of classes tried (BIC for the mixture, silhouette for k-means).
    """

    features: np.ndarray
    pcs: np.ndarray
    explained: np.ndarray
    labels: np.ndarray
    outlier: np.ndarray
    class_distance: np.ndarray
    angle: np.ndarray
    class_moments: np.ndarray
    counts: np.ndarray
    zernike: ZernikeResult | None = None
    class_means: np.ndarray | None = None
    selection: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(len(self.counts))


# -- features -----------------------------------------------------------------------------------
def feature_matrix(moments: np.ndarray, indices: np.ndarray, kind: str = "moments") -> np.ndarray:
    """``(..., F)`` real features: ``"moments"`` = Re and Im of every moment (Im for m > 0 only: linear in the
    pattern, keeps the orientation); ``"invariant"`` = ``|Z_nm|`` and the relative phases of equal ``m``
    (rotation-invariant, see :func:`napari_4dstem.zernike.invariant_features`)."""
    from .zernike import invariant_features

    z = np.asarray(moments)
    idx = np.asarray(indices)
    if kind == "moments":
        return np.concatenate([z.real, z.imag[..., idx[:, 1] > 0]], axis=-1)
    if kind == "invariant":
        return invariant_features(z, idx, phases=True)
    raise DataError(f"features must be one of {FEATURES}, got {kind!r}")


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    sd = x.std(0)
    return x / np.where(sd > 0, sd, 1.0)


def noise_ratio(ds: Dataset4D | None, zres: ZernikeResult, kind: str) -> float | None:
    """Poisson noise-to-signal variance ratio of the (standardised) features, or None for non-count data.

    For counts, the noise covariance of the linear features is exact: ``W diag(mean pattern) W^T`` (``W`` the
    weight maps); the signal's is the rest of the total covariance. Non-count data: None (treated as noiseless).
    """
    if ds is None or kind != "moments" or not _looks_like_counts(ds):
        return None
    from .blocks import sample_mean_pattern
    from .zernike import zernike_weights

    w, idx = zernike_weights(ds.detector_shape, zres.order, zres.radius, zres.center,
                             zres.parameters.get("oversample", OVERSAMPLE))
    k = len(idx)
    rows = np.concatenate([np.arange(k), k + np.flatnonzero(idx[:, 1] > 0)])
    wm = w[rows].reshape(len(rows), -1)
    lam = np.maximum(sample_mean_pattern(ds).reshape(-1), 0)
    noise_var = ((wm * wm) * lam).sum(1)
    f = feature_matrix(zres.moments, zres.indices, kind).reshape(-1, len(rows))
    total = f.var(0)
    ok = total > 0
    # in standardised units every feature has variance 1, of which noise_var / total is noise
    frac = np.clip(noise_var[ok] / total[ok], 0, 1)
    noise, signal = float(frac.sum()), float((1 - frac).sum())
    return noise / signal if signal > 0 else float("inf")


def _looks_like_counts(ds: Dataset4D) -> bool:
    if ds.dtype.kind in "ui":
        return True
    if ds.dtype.kind != "f":
        return False
    sy, sx = ds.scan_shape
    f = np.asarray(ds.frame(sy // 2, sx // 2), np.float64)
    return bool(np.all(f >= 0) and np.all(f == np.round(f)) and f.sum() > 0)


def auto_smooth(rho: float | None) -> float:
    """Scan smoothing (pixels) for a noise-to-signal ratio: 0 for noiseless or non-count data, else
    ``clip(sqrt(rho / pi) * 2, 1, 2.5)`` (a Gaussian of sigma divides white noise by 4 pi sigma^2)."""
    if rho is None or not rho > 0.05:
        return 0.0
    return float(np.clip(2.0 * math.sqrt(rho / math.pi), 1.0, AUTO_SMOOTH_MAX))


# -- clustering ---------------------------------------------------------------------------------
def cluster(x: np.ndarray, n_classes="auto", method: str = "gmm", seed: int = 0, max_classes: int = MAX_CLASSES
            ) -> tuple[np.ndarray, np.ndarray, dict[str, float], Any]:
    """Group the rows of ``x`` ``(N, P)``: labels, per-row distance to the own class (Mahalanobis for the
    mixture, Euclidean in units of the class spread for k-means), the selection scores, and the model.

    ``method``: ``"gmm"`` (full-covariance Gaussian mixture, ``n_classes="auto"`` = lowest BIC over 1..8),
    ``"kmeans"`` (auto = best silhouette over 2..8) or ``"hdbscan"`` (density-based, finds its own number;
    its noise points get label -1 and are their own class here).
    """
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.mixture import GaussianMixture

    n = len(x)
    if method not in METHODS:
        raise DataError(f"clustering method must be one of {METHODS}, got {method!r}")
    if n_classes != "auto":
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or int(n_classes) < 1:
            raise DataError(f"n_classes must be 'auto' or an integer >= 1, got {n_classes!r}")
        n_classes = min(int(n_classes), n)
    sel: dict[str, float] = {}
    if method == "gmm":
        ks = range(1, min(max_classes, n) + 1) if n_classes == "auto" else [n_classes]
        # the number of classes by BIC on at most 2048 patterns (a lattice's patterns repeat), then one fit on all
        sub = x if n <= 2048 else x[np.sort(np.random.default_rng(seed).choice(n, 2048, replace=False))]
        best = None
        for k in ks:
            g = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(sub)
            b = float(g.bic(sub))
            sel[str(k)] = b
            if best is None or b < best[0]:
                best = (b, k)
        model = GaussianMixture(best[1], covariance_type="full", random_state=seed, reg_covar=1e-4).fit(x)
        labels = model.predict(x)
        dist = np.zeros(n)
        for c in range(model.n_components):
            s = labels == c
            if s.any():
                d = x[s] - model.means_[c]
                dist[s] = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(model.covariances_[c]), d))
        return labels, dist, sel, model
    if method == "kmeans":
        from sklearn.metrics import silhouette_score

        ks = range(2, min(max_classes, n - 1) + 1) if n_classes == "auto" else [n_classes]
        best = None
        rng = np.random.default_rng(seed)
        sub = rng.choice(n, min(n, 2000), replace=False)
        for k in ks:
            km = KMeans(k, n_init=4, random_state=seed).fit(x)
            s = float(silhouette_score(x[sub], km.labels_[sub])) if 1 < k < n else 0.0
            sel[str(k)] = s
            if best is None or s > best[0]:
                best = (s, km)
        model = best[1]
        labels = model.labels_
    else:
        model = HDBSCAN(min_cluster_size=max(5, n // 50), copy=True).fit(x)
        labels = model.labels_.copy()
        labels[labels < 0] = labels.max() + 1  # noise: a class of its own
        sel["n_found"] = float(len(np.unique(labels)))
    dist = np.zeros(n)
    for c in np.unique(labels):
        s = labels == c
        mu = x[s].mean(0)
        spread = np.sqrt(((x[s] - mu) ** 2).sum(1).mean()) or 1.0
        dist[s] = np.sqrt(((x[s] - mu) ** 2).sum(1)) / spread
    return labels, dist, sel, model


# -- the scan mode ------------------------------------------------------------------------------
def iter_motifs(data, order: int = DEFAULT_ORDER, radius: float | None = None, center=None, n_classes="auto",
                method: str = "gmm", features: str = "moments", n_components: int = DEFAULT_COMPONENTS,
                smooth="auto", window: int = 3, spread: float = 3.0, class_means: bool = True, seed: int = 0,
                block_bytes: int | None = None, moments: ZernikeResult | None = None) -> Steps[MotifResult]:
    """Generator form of :func:`zernike_motifs` (yields Progress, returns :class:`MotifResult`).

    ``moments``: the moments of ``data`` already computed (e.g. in the one pass of ``analyze``); then only
    the class averages read the data."""
    check_arguments("iter_motifs", locals())  # types and ranges, before any read
    from scipy import ndimage
    from sklearn.decomposition import PCA

    if features not in FEATURES:
        raise DataError(f"features must be one of {FEATURES}, got {features!r}")
    if method not in METHODS:
        raise DataError(f"clustering method must be one of {METHODS}, got {method!r}")
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise DataError(f"n_components must be an integer >= 1, got {n_components!r}")
    if not (smooth == "auto" or (isinstance(smooth, (int, float)) and not isinstance(smooth, bool) and smooth >= 0)):
        raise DataError(f"smooth must be 'auto' or a number >= 0 (scan pixels), got {smooth!r}")
    if isinstance(data, ZernikeResult):
        zres, ds = data, None
    else:
        ds = as_dataset(data)
        zres = moments if moments is not None else (yield from iter_zernike_moments(ds, order, radius, center,
                                                                                    block_bytes))
    sy, sx, _ = zres.moments.shape
    f = feature_matrix(zres.moments, zres.indices, features).reshape(sy * sx, -1)
    x = _standardise(f)
    rho = noise_ratio(ds, zres, features)
    sigma = auto_smooth(rho) if smooth == "auto" else float(smooth)
    p = min(int(n_components), x.shape[1], max(1, sy * sx - 1))
    pca = PCA(p, random_state=seed).fit(x)
    raw_pcs = pca.transform(x).reshape(sy, sx, p)
    pcs = raw_pcs
    if sigma > 0 and min(sy, sx) > 1:
        pcs = ndimage.gaussian_filter(raw_pcs, (sigma, sigma, 0), mode="nearest")
    flat = pcs.reshape(sy * sx, p)
    labels, dist, sel, _ = cluster(flat, n_classes, method, seed)
    _, labels = np.unique(labels, return_inverse=True)  # 0..C-1
    n_cls = int(labels.max()) + 1
    yield Progress(1, 1, "motif classes")
    if min(sy, sx) >= 8:
        # smoothing inside: windows where it meets the scan edge are left out of the comparison
        d = window_outlier(np.moveaxis(raw_pcs, -1, 0), radius=window, smooth=sigma, seed=seed) ** 2
        if spread and spread > 0:
            d = ndimage.gaussian_filter(d, spread, mode="nearest")
        med = float(np.median(d))
        outlier = d / med if med > 0 else d
    else:  # too small a scan for neighbourhoods: the distance to the class
        outlier = dist.reshape(sy, sx) ** 2
    counts = np.bincount(labels, minlength=n_cls)
    zm = zres.moments.reshape(sy * sx, -1)
    cm = np.stack([zm[labels == c].mean(0) for c in range(n_cls)])
    from .zernike import rotation_map

    angle = rotation_map(zres.moments, zres.indices, 1) if (zres.indices[:, 1] == 1).any() else np.zeros((sy, sx))
    res = MotifResult(features=f.reshape(sy, sx, -1).astype(np.float32), pcs=np.moveaxis(pcs, -1, 0).astype(np.float32),
                      explained=pca.explained_variance_ratio_.astype(np.float64), labels=labels.reshape(sy, sx),
                      outlier=outlier.astype(np.float32), class_distance=dist.reshape(sy, sx).astype(np.float32),
                      angle=angle.astype(np.float32), class_moments=cm, counts=counts, zernike=zres, selection=sel,
                      parameters={**zres.parameters, "n_classes": n_classes, "n_classes_used": n_cls,
                                  "method": method, "features": features, "n_components": p,
                                  "smooth": smooth, "smooth_used": sigma, "noise_ratio": rho, "window": int(window),
                                  "spread": float(spread), "seed": int(seed),
                                  "orthogonality": dict(zres.orthogonality)})
    if class_means and ds is not None:
        res.class_means = yield from iter_class_means(ds, res.labels, n_cls, block_bytes)
    return res


def window_outlier(channels: np.ndarray, radius: int = 3, smooth: float = 0.0, subpixel: bool = True,
                   max_references: int = 4096, seed: int = 0) -> np.ndarray:
    """Distance of every position's window of map values to the most similar window elsewhere in the scan:
    :func:`napari_4dstem.rrvae.neighbourhood_outlier` with its half-pixel references on (``subpixel``), float64.
    """
    from .rrvae.maps import neighbourhood_outlier

    return neighbourhood_outlier(channels, radius=radius, smooth=smooth, max_references=max_references, seed=seed,
                                 subpixel=subpixel).astype(np.float64)


def zernike_motifs(data, order: int = DEFAULT_ORDER, radius: float | None = None, center=None, n_classes="auto",
           method: str = "gmm", features: str = "moments", n_components: int = DEFAULT_COMPONENTS, smooth="auto",
           window: int = 3, spread: float = 3.0, class_means: bool = True, seed: int = 0,
           block_bytes: int | None = None, callback=None, cancel=None) -> MotifResult:
    """Zernike motifs of a 4D-STEM scan: classes, class averages, an outlier map, principal-component maps.

    Parameters
    ----------
    data
        Dataset4D or 4-D array (raw counts or any preprocessing), or a :class:`~napari_4dstem.ZernikeResult`
        (then no class-average patterns, and no noise estimate: ``smooth="auto"`` means 0).
    order, radius, center
        Of the Zernike moments (:func:`napari_4dstem.zernike_moments`).
    n_classes
        ``"auto"`` (chosen by BIC / silhouette) or a number.
    method
        ``"gmm"`` (default), ``"kmeans"`` or ``"hdbscan"`` (see :func:`cluster`).
    features
        ``"moments"`` (default: Re/Im of the moments, standardised; keeps orientation, which in a single
        crystal tells lattice sites apart) or ``"invariant"`` (magnitudes and relative phases: rotation-invariant,
        symmetry-related motifs fall into one class).
    n_components
        Principal components kept (default 4).
    smooth
        Gaussian smoothing of the PC maps over the scan (pixels): ``"auto"`` = from the Poisson noise of count
        data (0 for noiseless data), or a number.
    window, spread
        Neighbourhood radius (scan pixels) and Gaussian spread of the outlier map.
    class_means
        Average the patterns of every class (a second pass over the data).
    """
    check_arguments("zernike_motifs", locals())  # types and ranges, before any read
    return run_steps(iter_motifs(data, order, radius, center, n_classes, method, features, n_components, smooth,
                                 window, spread, class_means, seed, block_bytes), callback, cancel, "Zernike motifs")


def iter_class_means(ds: Dataset4D, labels: np.ndarray, n_classes: int | None = None,
                     block_bytes: int | None = None) -> Steps[np.ndarray]:
    """Mean pattern of every class ``(C, det_y, det_x)`` float64, block by block (one matrix product each)."""
    from .blocks import MATMUL_BLOCK_BYTES, release_pages

    lab = np.asarray(labels).reshape(-1)
    if lab.size != ds.n_frames:
        raise DataError(f"labels have {lab.size} positions, the scan has {ds.n_frames}")
    c = int(lab.max()) + 1 if n_classes is None else int(n_classes)
    h, w = ds.detector_shape
    acc = np.zeros((c, h * w), np.float64)
    bb = block_bytes or MATMUL_BLOCK_BYTES
    total = ds.n_blocks(bb)
    sx = ds.scan_shape[1]
    for i, (rows, block) in enumerate(ds.iter_blocks(bb)):
        flat = block.reshape(-1, h * w)
        ll = lab[rows.start * sx:rows.stop * sx]
        onehot = np.zeros((c, len(ll)), np.float64)
        onehot[ll, np.arange(len(ll))] = 1.0
        acc += onehot @ flat.astype(np.float64, copy=False)
        release_pages(ds.data, rows)
        yield Progress(i + 1, total, "class averages")
    counts = np.bincount(lab, minlength=c).astype(np.float64)
    return (acc / np.maximum(counts, 1)[:, None]).reshape(c, h, w)


# -- the patch mode -----------------------------------------------------------------------------
@dataclass
class PatchMotifs:
    """Atom-centred patches of a scan image and their classes.

    ``positions`` ``(N, 2)`` (y, x) scan pixels of the atom columns found; ``labels`` ``(N,)``; ``features``
    ``(N, F)`` rotation-invariant Zernike features; ``distance`` ``(N,)`` to the own class; ``class_means``
    ``(C, 2 r + 1, 2 r + 1)`` the mean patch of each class; ``patch_radius`` r in pixels.
    """

    positions: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    distance: np.ndarray
    class_means: np.ndarray
    patch_radius: int
    selection: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


def nearest_neighbour_distance(image: np.ndarray) -> float:
    """The shortest repeat distance of an image's bright features (pixels): the first off-centre maximum of
    its autocorrelation (for a lattice of atom columns, the nearest-neighbour spacing)."""
    from scipy import ndimage

    a = np.asarray(image, np.float64)
    a = a - a.mean()
    f = np.fft.rfft2(a, s=(2 * a.shape[0], 2 * a.shape[1]))
    ac = np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, s=(2 * a.shape[0], 2 * a.shape[1])))
    cy, cx = ac.shape[0] // 2, ac.shape[1] // 2
    yy, xx = np.indices(ac.shape)
    r = np.hypot(yy - cy, xx - cx)
    peaks = (ac == ndimage.maximum_filter(ac, size=3)) & (r >= 2) & (r < min(a.shape) / 2) & (ac > 0)
    if not peaks.any():
        return float(min(a.shape) / 4)
    rr, vv = r[peaks], ac[peaks]
    strong = vv >= 0.3 * vv.max()
    return float(rr[strong].min())


def find_atoms(image: np.ndarray, min_distance: float | None = None, threshold: float = 0.5,
               smooth: float = 1.0) -> np.ndarray:
    """Atom columns in a scan image (bright = atom: ADF, iCOM): ``(N, 2)`` (y, x) sub-pixel positions.

    Local maxima of the Gaussian-smoothed image over a disc of ``min_distance`` pixels (default 0.6 x the
    nearest-neighbour spacing from the autocorrelation), at least ``threshold`` of the way from the median to
    the 99th percentile; positions refined by the intensity centroid of the 3 x 3 neighbourhood.
    """
    from scipy import ndimage

    a = np.asarray(image, np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise DataError("find_atoms needs a finite 2-D scan image")
    if smooth:
        a = ndimage.gaussian_filter(a, smooth, mode="nearest")
    md = 0.6 * nearest_neighbour_distance(a) if min_distance is None else float(min_distance)
    size = max(3, int(2 * round(md) + 1))
    yy, xx = np.indices((size, size)) - size // 2
    foot = np.hypot(yy, xx) <= md
    lo, hi = np.median(a), np.percentile(a, 99)
    peak = (a == ndimage.maximum_filter(a, footprint=foot, mode="nearest")) & (a > lo + threshold * (hi - lo))
    pts = np.argwhere(peak).astype(np.float64)
    out = []
    for y, x in pts:
        iy, ix = int(y), int(x)
        y0, y1, x0, x1 = max(iy - 1, 0), min(iy + 2, a.shape[0]), max(ix - 1, 0), min(ix + 2, a.shape[1])
        w = a[y0:y1, x0:x1] - a[y0:y1, x0:x1].min()
        if w.sum() > 0:
            gy, gx = np.indices(w.shape)
            out.append((y0 + (w * gy).sum() / w.sum(), x0 + (w * gx).sum() / w.sum()))
        else:
            out.append((y, x))
    return np.array(out, np.float64).reshape(-1, 2)


def patch_motifs(image: np.ndarray, positions: np.ndarray | None = None, patch_radius: float | None = None,
                 order: int = 6, n_classes="auto", method: str = "gmm", n_components: int = 4, seed: int = 0,
                 **find_kw) -> PatchMotifs:
    """The paper's patch mode on a scan image: atom-centred patches, rotation-invariant Zernike features,
    classes.

    ``positions`` default to :func:`find_atoms`; ``patch_radius`` to the nearest-neighbour spacing (a patch holds
    an atom and its first neighbours). Patches are sampled at the sub-pixel atom positions (cubic
    interpolation); atoms closer than the radius to the edge are dropped.
    """
    from scipy import ndimage
    from sklearn.decomposition import PCA

    img = np.asarray(image, np.float64)
    if img.ndim != 2 or not np.isfinite(img).all():
        raise DataError("patch_motifs needs a finite 2-D scan image")
    if positions is None:
        positions = find_atoms(img, **find_kw)
    pos = np.asarray(positions, np.float64).reshape(-1, 2)
    r = float(patch_radius) if patch_radius is not None else nearest_neighbour_distance(img)
    ri = max(2, int(math.ceil(r)))
    keep = ((pos[:, 0] >= ri) & (pos[:, 0] <= img.shape[0] - 1 - ri) & (pos[:, 1] >= ri)
            & (pos[:, 1] <= img.shape[1] - 1 - ri))
    pos = pos[keep]
    if len(pos) < 2:
        raise DataError(f"only {len(pos)} atom columns lie at least {ri} px inside the image",
                        hint="give positions=, a smaller patch_radius, or a larger scan")
    off = np.arange(-ri, ri + 1, dtype=np.float64)
    gy, gx = np.meshgrid(off, off, indexing="ij")
    patches = np.stack([ndimage.map_coordinates(img, [y + gy, x + gx], order=3, mode="nearest") for y, x in pos])
    zr = zernike_moments(patches[None], order=order, radius=r, center=(ri, ri))
    f = feature_matrix(zr.moments[0], zr.indices, "invariant")
    x = _standardise(f)
    p = min(int(n_components), x.shape[1], max(1, len(x) - 1))
    pc = PCA(p, random_state=seed).fit_transform(x)
    labels, dist, sel, _ = cluster(pc, n_classes, method, seed)
    _, labels = np.unique(labels, return_inverse=True)
    means = np.stack([patches[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    return PatchMotifs(positions=pos, labels=labels, features=f, distance=dist, class_means=means, patch_radius=ri,
                       selection=sel, parameters={"order": order, "radius": r, "n_classes": n_classes,
                                                  "method": method, "n_components": p, "seed": seed})


def params_table() -> dict:
    """The ``[zernike]`` section of :data:`napari_4dstem.params.TABLE` (the types and ranges of the keywords)."""
    from .params import TABLE

    return TABLE["zernike"]


__all__ = ["MotifResult", "PatchMotifs", "zernike_motifs", "window_outlier", "iter_motifs", "cluster", "feature_matrix", "iter_class_means",
           "find_atoms", "patch_motifs", "nearest_neighbour_distance", "noise_ratio", "auto_smooth"]
