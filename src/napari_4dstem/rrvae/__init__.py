"""Rotationally invariant VAE (rrVAE) for 4D-STEM: the paper's model, faithful by default, with a fast mode.

torch is imported only in this subpackage, and only with :class:`RRVAE` (``rrvae.train``): the config and the
map helpers (``rrvae.maps``) import without it, so the Zernike motifs and the pipeline share them cheaply.
See docs/rrvae.md.
"""
from __future__ import annotations

from .config import RRVAEConfig
from .maps import (LatentMaps, circular_r, defect_alarm, defect_map, neighbourhood_outlier, pearson_r, robust_zscore,
                   site_scores, site_value, zscore_at, zscore_max)

__all__ = ["RRVAE", "LatentMaps", "RRVAEConfig", "circular_r", "defect_alarm", "defect_map", "neighbourhood_outlier",
           "pearson_r", "robust_zscore", "site_scores", "site_value", "zscore_at", "zscore_max"]


def __getattr__(name: str):
    if name == "RRVAE":  # loads torch
        from .train import RRVAE

        return RRVAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
