"""Input checks and the model's own view of the patterns (optional binning and std scaling)."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..dataset import Dataset4D
from ..errors import DataError


def as_patterns(patterns) -> np.ndarray:
    """Preprocessed patterns as float32 numpy ``(scan_y, scan_x, h, w)``, checked."""
    if isinstance(patterns, Dataset4D):
        if not patterns.fits_in_memory(4):
            raise DataError(f"{patterns.shape} patterns do not fit in memory as float32",
                            path=patterns.provenance.source_path,
                            hint="bin the detector or crop the scan with Preprocessing first")
        arr = np.empty(patterns.shape, np.float32)
        for sl, block in patterns.iter_blocks():
            arr[sl] = block
    else:
        arr = np.asarray(patterns, dtype=np.float32)
    if arr.ndim != 4:
        raise DataError(f"the rrVAE needs patterns shaped (scan_y, scan_x, det_y, det_x), got {arr.shape}",
                        hint="reshape a stack of N patterns to (1, N, h, w)")
    sy, sx, h, w = arr.shape
    if sy * sx < 2:
        raise DataError(f"a {sy} x {sx} scan has too few patterns to train on", hint="use a scan of >= 2 positions")
    if h != w:
        raise DataError(f"the detector is not square ({h} x {w}); the rotation acts on a square grid",
                        hint="crop or pad it to a square (Preprocessing(target_size=...))")
    if h < 4:
        raise DataError(f"the detector is too small ({h} x {w})", hint="use patterns of at least 4 x 4 pixels")
    if not np.isfinite(arr).all():
        raise DataError("the patterns contain NaN or infinite values", hint="mask or fix those pixels first")
    if float(arr.max()) == float(arr.min()):
        raise DataError("all patterns are constant: nothing to learn", hint="check the data and preprocessing")
    return arr


def anscombe(x):
    """Anscombe's variance-stabilising transform ``2 sqrt(x + 3/8)``: Poisson counts -> variance ~1.

    (numpy or torch; within 2 % of unit variance from a mean of ~4 counts up.)"""
    if isinstance(x, torch.Tensor):
        return 2.0 * torch.sqrt(torch.clamp(x, min=0.0) + 0.375)
    return 2.0 * np.sqrt(np.maximum(x, 0.0) + 0.375)


def inverse_anscombe(y):
    """The algebraic inverse of :func:`anscombe` (``(y / 2)^2 - 3/8``)."""
    return (y / 2.0) ** 2 - 0.375


def grid_size(det_size: int, size: int | None) -> int:
    """The model's grid (pixels per side) for a square detector of ``det_size`` and ``detector_size=size``."""
    return det_size if size is None or size >= det_size else int(size)


class View:
    """The patterns as the networks see them: binned to ``size``, optionally PCA-denoised, and scaled.

    ``components``: project the binned patterns onto their leading ``components`` principal axes (and back)
    before scaling (None = off).

    ``scaling="none"`` leaves values as given (faithful: min-max data, as in the paper);
    ``"std"`` subtracts the mean pattern and divides by the global std; ``"signal"`` divides by the std of
    the signal alone: the total variance minus the noise variance, estimated from differences between
    neighbouring scan positions (see docs/rrvae.md). On clean data the two agree.

    ``transform="anscombe"``: :func:`anscombe` of each input pixel first (counts: non-negative data as
    measured, e.g. ``Preprocessing(subtract_mean=False, normalize=None)``), so that Poisson noise has the
    same variance in the dark field as in the bright disc and a Gaussian likelihood fits it.
    """

    def __init__(self, det_shape: tuple[int, int], size: int | None, scaling: str, components: int | None = None,
                 transform: str = "none"):
        self.transform = transform
        self.det_shape = tuple(int(s) for s in det_shape)
        self.size = grid_size(self.det_shape[0], size)
        self.scaling = scaling
        self.components = None if not components else int(components)
        self.mean: torch.Tensor | None = None       # (size*size,) mean of binned patterns
        self.mean_full: torch.Tensor | None = None  # (h*w,) for reconstructions at full size
        self.std = 1.0
        self.pca_mean: torch.Tensor | None = None   # (size*size,) mean removed before the PCA projection
        self.basis: torch.Tensor | None = None      # (size*size, components) leading principal axes

    @property
    def n_pixels(self) -> int:
        return self.size * self.size

    def bin(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h, w) -> (N, size*size)."""
        if self.transform == "anscombe":
            x = anscombe(x)
        if self.size != self.det_shape[0]:
            x = F.adaptive_avg_pool2d(x[:, None], (self.size, self.size))[:, 0]
        return x.reshape(x.shape[0], -1)

    def fit(self, x: np.ndarray, scan_shape: tuple[int, int] | None = None) -> None:
        """Learn the scaling from all patterns ``(N, h, w)`` (``scan_shape`` for the noise estimate)."""
        if self.transform == "anscombe" and float(x.min()) < 0:
            raise DataError("transform='anscombe' needs counts, but the patterns hold negative values",
                            hint="preprocess with subtract_mean=False and normalize=None, or use transform='none'")
        t = torch.from_numpy(x)
        b = self.bin(t)
        if self.components is not None and self.components < b.shape[1]:
            # PCA denoising: keep the leading axes of the binned patterns (exact eigh of the covariance,
            # deterministic); under Poisson noise the signal lives in a few of them (docs/rrvae.md)
            self.pca_mean = b.mean(0)
            c = (b - self.pca_mean).double()
            _, vec = torch.linalg.eigh(c.T @ c)
            self.basis = vec[:, -self.components:].flip(1).float().contiguous()
            b = self._project(b)
        if self.scaling == "none":
            return
        self.mean = b.mean(0)
        tf = anscombe(t) if self.transform == "anscombe" else t
        self.mean_full = tf.reshape(tf.shape[0], -1).mean(0)
        var = float((b - self.mean).var())
        if self.scaling == "signal" and scan_shape is not None and min(scan_shape) > 1:
            g = b.reshape(*scan_shape, -1)
            # neighbours share nearly all signal: half the variance of their difference is the noise
            noise = 0.25 * (float((g[1:] - g[:-1]).var()) + float((g[:, 1:] - g[:, :-1]).var()))
            var = max(var - noise, 0.01 * var)
        std = var ** 0.5
        self.std = std if std > 0 else 1.0

    def _project(self, b: torch.Tensor) -> torch.Tensor:
        if self.basis is None:
            return b
        m, v = self.pca_mean.to(b.device), self.basis.to(b.device)
        return m + ((b - m) @ v) @ v.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h, w) as given -> (N, size*size) as the model sees it."""
        b = self._project(self.bin(x))
        if self.scaling != "none":
            b = (b - self.mean) / self.std
        return b

    def inverse_full(self, y: torch.Tensor) -> torch.Tensor:
        """Decoder output on the full grid (N, h*w) back to the units of the input."""
        if self.scaling != "none":
            y = y * self.std + self.mean_full
        return inverse_anscombe(y) if self.transform == "anscombe" else y

    def state(self) -> dict:
        return {"det_shape": list(self.det_shape), "size": self.size, "scaling": self.scaling, "std": self.std,
                "mean": self.mean, "mean_full": self.mean_full, "components": self.components,
                "pca_mean": self.pca_mean, "basis": self.basis, "transform": self.transform}

    @classmethod
    def from_state(cls, s: dict) -> View:
        v = cls(tuple(s["det_shape"]), s["size"], s["scaling"], s.get("components"), s.get("transform", "none"))
        v.std, v.mean, v.mean_full = float(s["std"]), s["mean"], s["mean_full"]
        v.pca_mean, v.basis = s.get("pca_mean"), s.get("basis")
        if v.basis is None:
            v.components = None
        return v
