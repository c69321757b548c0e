"""The outlier map of the pipeline averages several rrVAE models for noisy scans (pipeline.defect_models)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_4dstem.errors import DataError  # noqa: E402
from napari_4dstem.pipeline import AUTO_DEFECT_MODELS, analyze, defect_models  # noqa: E402
from napari_4dstem.preprocess import Preprocessing  # noqa: E402
from napari_4dstem.rrvae import RRVAE, RRVAEConfig  # noqa: E402


def _counts(shape=(12, 12, 16, 16), dose=30.0, seed=0):
    """Poisson counts of a bright spot that drifts smoothly over the scan (noisy: Poisson outweighs signal)."""
    sy, sx, h, w = shape
    yy, xx = np.mgrid[:sy, :sx].astype(np.float64)
    ky, kx = np.mgrid[:h, :w].astype(np.float64)
    cy = (h / 2 + 1.5 * np.sin(yy / 2.0))[..., None, None]
    cx = (w / 2 + 1.5 * np.cos(xx / 2.0))[..., None, None]
    lam = np.exp(-((ky - cy) ** 2 + (kx - cx) ** 2) / 6.0)
    lam *= dose / lam.sum((2, 3), keepdims=True)
    return np.random.default_rng(seed).poisson(lam).astype(np.uint16)


def test_auto_rule():
    fast, faithful = RRVAEConfig(mode="fast"), RRVAEConfig()
    noisy = Preprocessing(target_size=None)
    noisy.fit_transform(_counts())
    assert noisy.scan_sigma_ > 0
    clean = Preprocessing(target_size=None)
    clean.fit_transform(_counts().astype(np.float32) + 0.5)  # not counts: no smoothing
    assert clean.scan_sigma_ == 0
    assert defect_models("auto", fast, noisy, (12, 12)) == AUTO_DEFECT_MODELS
    assert defect_models("auto", fast, clean, (12, 12)) == 1
    assert defect_models("auto", faithful, noisy, (12, 12)) == 1
    assert defect_models("auto", fast, noisy, (256, 256)) == 1  # too many patterns to train 3 times
    assert defect_models(2, faithful, clean, (12, 12)) == 2
    for bad in (0, -1, 1.5, "three", True):
        with pytest.raises(DataError, match="defect_models"):
            defect_models(bad, fast, clean, (12, 12))


def test_outlier_map_is_the_mean_of_the_models_maps():
    from napari_4dstem import Dataset4D

    data = Dataset4D(_counts())
    cfg = dict(mode="fast", epochs=2, hidden=16, batch_size=16, threads=1, detector_size=8, seed=5)
    r = analyze(data, {"rrvae": cfg, "defect_models": 2, "virtual": {}})
    assert r.info["defect_models"] == 2
    # by hand: the same preprocessing, the two models (seeds 5 and 6) at their best epochs
    pre = Preprocessing().fit_transform(data)
    from napari_4dstem.com import center_of_mass

    com = center_of_mass(data)
    maps = []
    for seed in (5, 6):
        m = RRVAE(RRVAEConfig(**{**cfg, "seed": seed}))
        m.fit(pre, com_magnitude=com.magnitude, com_angle=com.angle)
        m.restore(m.best_epoch)
        maps.append(m.outlier_map(maps=m.encode(pre)))
    np.testing.assert_allclose(r.maps["rrvae/outlier"], np.mean(maps, axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(maps[0], maps[1])  # the seeds differ, so the mean is not one model's map
    one = analyze(data, {"rrvae": cfg, "defect_models": 1, "virtual": {}})
    np.testing.assert_allclose(one.maps["rrvae/outlier"], maps[0], rtol=1e-4, atol=1e-5)
    assert "defects" not in one.info["timings_s"]
