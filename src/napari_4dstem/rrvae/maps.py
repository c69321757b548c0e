"""Encoded maps and the correlations of the paper's stopping rule."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError


@dataclass
class LatentMaps:
    """Per-pattern encoder outputs arranged as scan maps ``(scan_y, scan_x)``.

    ``angle`` is wrapped to (-pi, pi]; ``angle_unwrapped`` is the encoder's raw mean. ``latents`` and
    ``latent_sd`` are ``(K, scan_y, scan_x)``; ``*_sd`` are posterior standard deviations (exp of log-sd).
    ``translations`` / ``translation_sd`` are ``(2, scan_y, scan_x)`` (dx, dy in grid units) or None.
    """

    angle: np.ndarray
    angle_unwrapped: np.ndarray
    angle_sd: np.ndarray
    latents: np.ndarray
    latent_sd: np.ndarray
    translations: np.ndarray | None = None
    translation_sd: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi]."""
    w = np.mod(a + np.pi, 2 * np.pi) - np.pi
    return np.where(w == -np.pi, np.pi, w)


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (NaN where either is constant or non-finite)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


# -- circular correlation (rot branch) ---------------------------------------------------------
def circular_r(a: np.ndarray, b: np.ndarray, method: str = "fisher-lee") -> float:
    """Circular correlation of two angle maps: +1 when ``a = b + c``, -1 when ``a = -b + c`` (any offset c).

    ``method="fisher-lee"`` (default; Fisher & Lee, Biometrika 70, 327 (1983); Fisher, *Statistical
    analysis of circular data* (1993), eq. 6.36): the correlation of ``sin(a_i - a_j)`` with
    ``sin(b_i - b_j)`` over all pairs, computed in O(n). It needs no mean direction, so it stays meaningful
    when the angles cover the whole circle, as the COM angle of a scan over atoms does.
    ``method="js"`` (Jammalamadaka & SenGupta 2001, eq. 8.2.2): the correlation of ``sin(a - mean(a))``
    with ``sin(b - mean(b))``; for angles spread over the circle their mean directions are ill defined and
    a smooth, one-to-one but not exactly linear relation can score anything (``a = -b + 0.6 sin b`` over a
    full turn: -0.50, Fisher-Lee -0.84; docs/rrvae.md, "Rotation map and the stopping rule").
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if method == "js":
        sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
        sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
        den = np.sqrt((sa * sa).sum() * (sb * sb).sum())
        return float((sa * sb).sum() / den) if den > 0 else float("nan")
    if method != "fisher-lee":
        raise ValueError(f"unknown circular correlation method {method!r}: use 'fisher-lee' or 'js'")
    n = a.size
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    num = 4.0 * ((ca * cb).sum() * (sa * sb).sum() - (ca * sb).sum() * (sa * cb).sum())
    den2 = ((n * n - np.cos(2 * a).sum() ** 2 - np.sin(2 * a).sum() ** 2)
            * (n * n - np.cos(2 * b).sum() ** 2 - np.sin(2 * b).sum() ** 2))
    return float(num / np.sqrt(den2)) if den2 > 1e-12 * n**4 else float("nan")
# -- end circular correlation ------------------------------------------------------------------


def zscore_max(m: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Largest |z-score| in a map and where it is (to single out a defect)."""
    m = np.asarray(m, np.float64)
    sd = m.std()
    if not sd > 0:
        return 0.0, (0, 0)
    z = np.abs(m - m.mean()) / sd
    i = int(np.nanargmax(z))
    return float(z.flat[i]), tuple(int(v) for v in np.unravel_index(i, m.shape))  # type: ignore[return-value]


def robust_zscore(m: np.ndarray) -> np.ndarray:
    """``(m - median) / (1.4826 MAD)`` of a map (the plain z-score where the MAD is 0)."""
    m = np.asarray(m, np.float64)
    med = np.nanmedian(m)
    mad = 1.4826 * np.nanmedian(np.abs(m - med))
    if not mad > 0:
        mad = np.nanstd(m)
    return (m - med) / mad if mad > 0 else np.zeros_like(m)


def zscore_at(m: np.ndarray, site, radius: float = 4.0, robust: bool = True) -> float:
    """The z-score of a map at a site: the largest ``|z|`` within ``radius`` pixels of ``site = (y, x)``.

    ``robust=True``: ``z = (m - median) / (1.4826 MAD)`` (blind to the defect's own pixels); ``False``:
    ``(m - mean) / std``. This is the number docs/rrvae.md reports for defects.
    """
    m = np.asarray(m, np.float64)
    z = np.abs(robust_zscore(m) if robust else (m - m.mean()) / (m.std() or 1.0))
    yy, xx = np.indices(m.shape)
    near = np.hypot(yy - site[0], xx - site[1]) <= radius
    return float(np.nanmax(np.where(near, z, -np.inf)))


def neighbourhood_outlier(channels: np.ndarray, radius: int = 3, step: int = 1, smooth: float = 0.0,
                          exclude: int | None = None, max_references: int = 4096, seed: int = 0,
                          subpixel: bool = False) -> np.ndarray:
    """How unlike the rest of the scan each position's neighbourhood of map values is.

    Every map in ``channels`` ``(C, scan_y, scan_x)`` is robustly standardised (median, MAD); the values
    on a ``(2 radius + 1)^2`` window (every ``step``-th pixel) around each scan position form its descriptor;
    the score is the Euclidean distance to the most similar descriptor centred at least ``exclude`` pixels
    away (default ``2 radius + 1``: windows that do not overlap). A periodic lattice repeats every
    neighbourhood elsewhere in the scan, so scores stay low; a defect's neighbourhood has no match.
    ``smooth`` (pixels): Gaussian smoothing of the maps first, for noisy data. Only windows inside the scan
    and clear of the smoothing's edge effects are compared: positions within ``radius + ceil(2 smooth)`` of
    the edge take the score of the nearest compared position. Scans of more than
    ``max_references`` positions are compared against that many random positions (seeded).
    ``subpixel``: also compare with half-pixel references (the means of horizontally, vertically and
    diagonally neighbouring windows): a lattice whose period is not a whole number of scan pixels repeats a
    window only half a pixel off, and noiseless data would otherwise show bands of false outliers.

    Returns a ``(scan_y, scan_x)`` float32 map (0 = a perfect match exists elsewhere).
    """
    from scipy import ndimage

    c = np.asarray(channels, np.float64)
    if c.ndim == 2:
        c = c[None]
    _, h, w = c.shape
    r, step = int(radius), max(1, int(step))
    r = max(0, min(r, (min(h, w) - 1) // 4))  # leave room for windows that do not overlap
    c = np.stack([robust_zscore(ch) for ch in c])
    if smooth and smooth > 0:
        c = np.stack([ndimage.gaussian_filter(ch, smooth, mode="nearest") for ch in c])
    # only windows that lie inside the scan and clear of the band where the smoothing meets the edge
    # (less averaging there, so larger scores on noisy data): padding would invent neighbourhoods
    b = r + (int(math.ceil(2 * smooth)) if smooth and smooth > 0 else 0)
    b = max(r, min(b, (min(h, w) - 1) // 2 - r))
    ih, iw = h - 2 * b, w - 2 * b
    offs = range(-r, r + 1, step)
    f = np.stack([c[:, b + dy:b + dy + ih, b + dx:b + dx + iw] for dy in offs for dx in offs], 1)
    f = f.reshape(-1, ih, iw)  # (D, ih, iw)
    yy, xx = np.indices((ih, iw), dtype=np.float64)
    refs = [(f, yy, xx)]
    if subpixel:
        refs += [((f[:, :, 1:] + f[:, :, :-1]) / 2, yy[:, :-1], xx[:, :-1] + 0.5),
                 ((f[:, 1:] + f[:, :-1]) / 2, yy[:-1] + 0.5, xx[:-1]),
                 ((f[:, 1:, 1:] + f[:, :-1, :-1] + f[:, 1:, :-1] + f[:, :-1, 1:]) / 4, yy[:-1, :-1] + 0.5,
                  xx[:-1, :-1] + 0.5)]
    q = np.ascontiguousarray(f.reshape(f.shape[0], -1).T, dtype=np.float32)  # (N, D)
    fr = np.concatenate([np.ascontiguousarray(a.reshape(a.shape[0], -1).T) for a, _, _ in refs]).astype(np.float32)
    ry = np.concatenate([a.ravel() for _, a, _ in refs])
    rx = np.concatenate([a.ravel() for _, _, a in refs])
    if len(fr) > max_references * len(refs):
        pick = np.sort(np.random.default_rng(seed).choice(len(fr), max_references * len(refs), replace=False))
        fr, ry, rx = fr[pick], ry[pick], rx[pick]
    # positions in half pixels as small integers: the exclusion test is cheap integer arithmetic
    qy, qx = (2 * yy.ravel()).astype(np.int32), (2 * xx.ravel()).astype(np.int32)
    ry, rx = np.round(2 * ry).astype(np.int32), np.round(2 * rx).astype(np.int32)
    sq, sqr = (q * q).sum(1), (fr * fr).sum(1)
    ex = 2 * (2 * r + 1 if exclude is None else int(exclude))
    score = np.full(len(q), np.inf)
    for i0 in range(0, len(q), 512):
        sl = slice(i0, i0 + 512)
        d2 = q[sl] @ fr.T
        d2 *= -2.0
        d2 += sqr[None]
        d2 += sq[sl, None]
        near = np.abs(qy[sl, None] - ry[None]) < ex
        near &= np.abs(qx[sl, None] - rx[None]) < ex
        d2[near] = np.inf
        score[sl] = d2.min(1)
    score = np.sqrt(np.maximum(score, 0.0))
    ok = np.isfinite(score)
    score[~ok] = float(np.median(score[ok])) if ok.any() else 0.0  # no window far enough away (tiny scans)
    # positions near the edge (no full window, or smoothing edge effects) take the nearest computed score
    # (a constant fill would shrink the map's MAD and inflate robust z-scores)
    out = np.pad(score.reshape(ih, iw), ((b, h - b - ih), (b, w - b - iw)), mode="edge")
    return out.astype(np.float32)


#: Channels of :func:`defect_map`: ``all`` (the ``outlier`` map) or the rotation alone (``rotation_outlier``).
DEFECT_CHANNELS = ("all", "rotation")
#: The defect maps of a model, by results key (``rrvae/<key>``): the channels each is made from.
DEFECT_KEYS = {"outlier": "all", "rotation_outlier": "rotation"}


def defect_maps(model, maps: LatentMaps) -> dict:
    """``{key: model.outlier_map(maps=maps, channels=...)}`` for every key of :data:`DEFECT_KEYS`."""
    return {key: model.outlier_map(maps=maps, channels=ch) for key, ch in DEFECT_KEYS.items()}


def defect_map(maps: LatentMaps, radius: int = 3, step: int = 1, smooth: float = 1.0, spread: float = 3.0,
               seed: int = 0, channels: str = "all") -> np.ndarray:
    """The outlier map of :meth:`RRVAE.outlier_map` from encoded maps (see there).

    Channels (``channels="all"``): content latents, their log sds, cos and sin of the rotation, its log sd;
    ``"rotation"``: cos and sin of the rotation alone (where the arrangement of local rotations is unlike
    anywhere else: a rotated bond, broken symmetry). Each position's squared distance to the best-matching
    neighbourhood elsewhere (:func:`neighbourhood_outlier`) is smoothed by a Gaussian of ``spread`` pixels
    and divided by its median over the scan.
    """
    from scipy import ndimage

    if channels not in DEFECT_CHANNELS:
        raise DataError(f"defect map channels must be one of {', '.join(DEFECT_CHANNELS)}, not {channels!r}")
    a = np.asarray(maps.angle, np.float64)
    ch = [np.cos(a)[None], np.sin(a)[None]]
    if channels == "all":
        ch = [np.asarray(maps.latents, np.float64),
              np.log(np.maximum(np.asarray(maps.latent_sd, np.float64), 1e-12)), *ch,
              np.log(np.maximum(np.asarray(maps.angle_sd, np.float64), 1e-12))[None]]
    d = neighbourhood_outlier(np.concatenate(ch), radius=radius, step=step, smooth=smooth, seed=seed)
    e = d.astype(np.float64) ** 2  # energy: adds up over the windows a defect touches
    if spread and spread > 0:
        e = ndimage.gaussian_filter(e, spread, mode="nearest")
    med = float(np.median(e))
    return (e / med if med > 0 else e).astype(np.float32)


def site_value(m: np.ndarray, site, radius: float = 1.5) -> float:
    """Mean of a map over the scan pixels within ``radius`` px of ``site = (y, x)`` (the nearest pixel if none)."""
    m = np.asarray(m, np.float64)
    yy, xx = np.indices(m.shape)
    d = np.hypot(yy - site[0], xx - site[1])
    near = d <= radius
    return float(m[near].mean()) if near.any() else float(m.flat[int(np.argmin(d))])


def site_scores(m: np.ndarray, defect_points, intact_sites, radius: float = 1.5, circular: bool = False) -> dict:
    """How a map singles out a defect against the intact atom sites of the same scan.

    Each site gets its value ``v`` (:func:`site_value`: the map's mean within ``radius`` px). The defect's
    z is ``z_d = (v_d - mean(v_intact)) / std(v_intact)`` (ddof 1; signed: a vacancy in an ADF image is
    negative); with several ``defect_points`` (a Stone-Wales bond: its midpoint and both atoms) the one
    with the largest ``|z|`` counts. Each intact site gets the same z against the *other* intact sites
    (leave one out), and ``singled_out`` is ``|z_d| > intact_max = max |z_i|``. ``circular``: ``m`` is an
    angle, scored as its wrapped deviation from the circular mean. docs/rrvae.md, "Defects without
    atomic-number contrast".
    """
    m = np.asarray(m, np.float64)
    if circular:
        m = np.angle(np.exp(1j * (m - np.angle(np.exp(1j * m).mean()))))
    v = np.array([site_value(m, q, radius) for q in intact_sites], np.float64)
    n = len(v)
    mu, sd = (float(v.mean()), float(v.std(ddof=1))) if n > 1 else (float("nan"), float("nan"))
    z_int = []
    for i in range(n if n > 2 else 0):
        rest = np.delete(v, i)
        s_ = rest.std(ddof=1)
        z_int.append((v[i] - rest.mean()) / s_ if s_ > 0 else 0.0)
    z_int = np.abs(np.array(z_int)) if z_int else np.array([np.nan])
    zs = [(site_value(m, q, radius) - mu) / sd if sd > 0 else float("nan") for q in defect_points]
    z_d = max(zs, key=lambda z: abs(z) if np.isfinite(z) else -1.0) if zs else float("nan")
    return {"site_z": float(z_d), "intact_max": float(np.nanmax(z_int)), "n_intact": int(n),
            "singled_out": bool(abs(z_d) > np.nanmax(z_int)) if zs and n > 2 and np.isfinite(z_d) else None}


#: Alarm threshold of :func:`defect_alarm` (robust z of the map maximum against the rest; docs/rrvae.md,
#: "Defects without atomic-number contrast": the largest value on defect-free abTEM graphene scans stays below).
DEFECT_ALARM_THRESHOLD = 5.0


def defect_alarm(outlier: np.ndarray, edge: int = 8, exclude: float = 8.0,
                 threshold: float = DEFECT_ALARM_THRESHOLD) -> dict:
    """Whether a defect map's highest value stands out from the rest of the scan (its own null).

    On the positions at least ``edge`` px inside the scan (nearer the edge the map is unreliable, see
    docs/rrvae.md), the highest position is scored by leaving its neighbourhood out:
    ``z = (m_max - median) / (1.4826 MAD)``
    with median and MAD over the inner positions farther than ``exclude`` px from it (a defect's own blob
    does not widen its null). ``alarm`` when ``z > threshold``. No atom positions needed.

    Returns ``{"score": z, "alarm": bool, "threshold", "where": (y, x)}`` and ``z_map``, the whole map
    in the same units.
    """
    m = np.asarray(outlier, np.float64)
    h, w = m.shape
    e = int(max(0, min(edge, (min(h, w) - 3) // 2)))
    inner = np.zeros(m.shape, bool)
    inner[e:h - e, e:w - e] = True
    where = np.unravel_index(int(np.argmax(np.where(inner, m, -np.inf))), m.shape)
    yy, xx = np.indices(m.shape)
    rest = m[inner & (np.hypot(yy - where[0], xx - where[1]) > exclude)]
    if rest.size < 8:
        rest = m[inner]
    med = float(np.median(rest))
    mad = 1.4826 * float(np.median(np.abs(rest - med)))
    if not mad > 0:
        mad = float(rest.std()) or 1.0
    z = (m[where] - med) / mad
    return {"score": float(z), "alarm": bool(z > threshold), "threshold": float(threshold),
            "where": (int(where[0]), int(where[1])), "z_map": ((m - med) / mad).astype(np.float32)}


# -- the one function that turns a trained model into maps (CLI pipeline and GUI) ------------------
MAP_KEYS = ("angle", "angle_sd", "latents", "latent_sd", "translations", "translation_sd")


def _concat_maps(parts: list) -> LatentMaps:
    """Row blocks of encoded maps (each from ``model.encode`` on some scan rows) joined along scan_y."""
    def cat(name, axis):
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else np.concatenate(vals, axis=axis)

    return LatentMaps(angle=cat("angle", 0), angle_unwrapped=cat("angle_unwrapped", 0), angle_sd=cat("angle_sd", 0),
                      latents=cat("latents", 1), latent_sd=cat("latent_sd", 1), translations=cat("translations", 1),
                      translation_sd=cat("translation_sd", 1), parameters=dict(parts[0].parameters))


def iter_rrvae_maps(model, patterns, epoch="best", rows_per_step: int | None = None, client=None,
                    threads: int | None = None):
    """The rrVAE maps of a trained model, scan rows at a time (yields ``Progress``; returns a dict).

    ``epoch``: ``"best"`` (the paper's stopping rule: the best epoch's weights when the model kept them),
    an epoch number, or None (the weights loaded now). The model is put back to the epoch it had loaded.
    Returns ``angle``, ``angle_sd``, ``latents``, ``latent_sd`` (and ``translations``, ``translation_sd``),
    ``reconstruction_error`` (per-pattern squared error at its own pose), ``outlier`` and ``rotation_outlier``
    (``model.outlier_map`` of all channels and of the rotation alone),
    ``epoch`` (the epoch whose weights made them) and ``encoded`` (the :class:`LatentMaps`).
    A generator: a GUI worker gets progress and can stop it between steps. With a ``distributed.Client``
    the chunks are encoded on its workers (:func:`iter_encode`). ``threads``: torch threads for the encoding,
    set when it starts, as training does (default the model's ``config.threads``, else the physical cores): the
    GUI encodes in a worker and leaves a core to its event loop, also for a model loaded from a file.
    """
    import torch

    from ..progress import Progress
    from .train import physical_cores

    sy, sx = patterns.shape[:2]
    n = rows_per_step or max(1, 4096 // max(sx, 1))  # ~4096 patterns per step
    steps = -(-sy // n) + 1
    torch.set_num_threads(int(threads or model.config.threads or physical_cores()))
    last = model.epoch
    want = model.best_epoch if epoch == "best" else epoch
    if want is not None and want != model.epoch and want in model.checkpoints:
        model.restore(want)
    try:
        used = model.epoch
        parts, errs = [], []
        if client is not None:
            lm, err = yield from iter_encode(model, patterns, client, chunk_patterns=n * sx)
            parts, errs = [lm], [err]
        rows = patterns.rows if hasattr(patterns, "rows") else (lambda a, b: np.asarray(patterns[a:b]))
        for i, y0 in enumerate(range(0, sy, n) if client is None else ()):
            block = rows(y0, min(sy, y0 + n))
            parts.append(model.encode(block))
            errs.append(model.reconstruction_error(block))
            yield Progress(i + 1, steps, f"encoding scan rows {y0}-{min(sy, y0 + n) - 1} of {sy}")
        lm = _concat_maps(parts)
        lm.parameters["epoch"] = used
        out = {k: getattr(lm, k) for k in MAP_KEYS if getattr(lm, k) is not None}
        out["reconstruction_error"] = np.concatenate(errs, axis=0)
        out.update(defect_maps(model, lm))
        yield Progress(steps, steps, "defect map")
        out["epoch"] = used
        out["encoded"] = lm
    finally:
        if last is not None and last != model.epoch and last in model.checkpoints:
            model.restore(last)
    return out


def rrvae_maps(model, patterns, epoch="best", client=None) -> dict:
    """:func:`iter_rrvae_maps` run to the end, without the ``epoch`` and ``encoded`` entries (results-file maps)."""
    from ..progress import run_steps

    out = run_steps(iter_rrvae_maps(model, patterns, epoch, client=client), what="encoding")
    out.pop("encoded")
    out.pop("epoch")
    return out


#: Patterns encoded per chunk by :func:`iter_encode` (bounds memory; one task each on a cluster).
ENCODE_CHUNK_PATTERNS = 8192


def _encode_chunk(model, chunk: np.ndarray):
    """Encoder maps and reconstruction error of a chunk of scan rows (runs here or on a worker)."""
    return model.encode(chunk), model.reconstruction_error(chunk)


def iter_encode(model, patterns, client=None, chunk_patterns: int | None = None):
    """``(LatentMaps, reconstruction_error)`` of all patterns, encoded a chunk of scan rows at a time.

    Each pattern is encoded on its own, so chunks give the same maps as one call. With a
    ``distributed.Client`` the chunks run on its workers (the model goes to each worker once; the binned
    patterns, small next to the raw scan, travel with their chunk).
    """
    from ..progress import Progress

    arr = getattr(patterns, "data", patterns)
    arr = np.asarray(arr)
    sy, sx = arr.shape[:2]
    step = max(1, (chunk_patterns or ENCODE_CHUNK_PATTERNS) // max(sx, 1))
    starts = list(range(0, sy, step))
    parts: list = [None] * len(starts)
    if client is None:
        for i, a in enumerate(starts):
            parts[i] = _encode_chunk(model, arr[a:a + step])
            yield Progress(i + 1, len(starts), "encoding")
    else:
        from distributed import as_completed

        mf = client.scatter(model, broadcast=True, hash=False)
        futs = {client.submit(_encode_chunk, mf, arr[a:a + step], pure=False): i for i, a in enumerate(starts)}
        try:
            for k, fut in enumerate(as_completed(list(futs)), 1):
                parts[futs[fut]] = fut.result()
                yield Progress(k, len(starts), "encoding (cluster)")
        finally:
            client.cancel([f for f in futs if not f.done()] + [mf])
    lm = _concat_maps([p[0] for p in parts])
    return lm, np.concatenate([p[1] for p in parts], axis=0)
