"""Rotationally invariant VAE (rrVAE) for 4D-STEM: the paper's model, faithful by default, with a fast mode.

torch is imported only in this subpackage. See docs/rrvae.md.
"""
from __future__ import annotations

from .config import RRVAEConfig
from .maps import (LatentMaps, circular_r, defect_map, neighbourhood_outlier, pearson_r, robust_zscore, zscore_at,
                   zscore_max)
from .train import RRVAE

__all__ = ["RRVAE", "LatentMaps", "RRVAEConfig", "circular_r", "defect_map", "neighbourhood_outlier", "pearson_r",
           "robust_zscore", "zscore_at", "zscore_max"]
