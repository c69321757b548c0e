"""Encoded maps and the correlations of the paper's stopping rule."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def circular_r(a: np.ndarray, b: np.ndarray) -> float:
    """Circular correlation of two angle maps (Jammalamadaka & SenGupta 2001, eq. 8.2.2).

    Insensitive to a global offset of either angle; negative when one turns the other way.
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
    sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
    den = np.sqrt((sa * sa).sum() * (sb * sb).sum())
    return float((sa * sb).sum() / den) if den > 0 else float("nan")


def zscore_max(m: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Largest |z-score| in a map and where it is (to single out a defect)."""
    m = np.asarray(m, np.float64)
    sd = m.std()
    if not sd > 0:
        return 0.0, (0, 0)
    z = np.abs(m - m.mean()) / sd
    i = int(np.nanargmax(z))
    return float(z.flat[i]), tuple(int(v) for v in np.unravel_index(i, m.shape))  # type: ignore[return-value]
