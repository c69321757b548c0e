"""Preprocessing against direct numpy/scikit-learn computations; reproducibility; bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.decomposition import PCA

from napari_4dstem import Calibration, Dataset4D, center_of_mass
from napari_4dstem import preprocess as pre
from napari_4dstem.errors import DataError
from napari_4dstem.preprocess import Preprocessing, bin_detector, find_hot_pixels, reduce_detector


@pytest.fixture(scope="module")
def small(graphene_clean):
    """16 x 16 scan positions of the graphene (full 64 x 64 detector), calibrated."""
    cal = Calibration(detector_pixel=(2.5, 2.5), detector_unit="mrad", scan_step=(0.12, 0.12), scan_unit="Å")
    return Dataset4D(np.ascontiguousarray(graphene_clean[:16, :16]), cal)


def raw(ds, **kw):
    base = dict(target_size=None, subtract_mean=False, normalize=None)
    base.update(kw)
    return Preprocessing(**base).fit_transform(ds)


def test_binning_sums_and_updates_calibration(small):
    out = raw(small, bin_factor=4)
    d = small.data.astype(np.float64)
    ref = d.reshape(16, 16, 16, 4, 16, 4).sum(axis=(3, 5))
    assert out.shape == (16, 16, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out.data, ref, rtol=1e-5, atol=1e-9)
    assert out.calibration.detector_pixel == (10.0, 10.0)
    assert out.calibration.detector_center == (7.5, 7.5)  # geometric centre stays geometric
    assert out.calibration.scan_step == (0.12, 0.12)
    # target_size picks the factor: 64 -> 32 is a factor 2
    assert raw(small, target_size=32).detector_shape == (32, 32)
    # binning keeps the physics: COM in mrad is the same before and after
    a = center_of_mass(small, rotation=0, flip=False, units="mrad")
    b = center_of_mass(out, rotation=0, flip=False, units="mrad")
    np.testing.assert_allclose(b.x, a.x, atol=1e-3)


def test_nondividing_factor_crops_symmetrically():
    rng = np.random.default_rng(0)
    d = rng.random((2, 3, 67, 66)).astype(np.float32)
    out = raw(Dataset4D(d), bin_factor=4)
    # 67 = 16*4 + 3 -> crop 1 at the start, 2 at the end; 66 -> 1 and 1
    ref = d[:, :, 1:65, 1:65].astype(np.float64).reshape(2, 3, 16, 4, 16, 4).sum(axis=(3, 5))
    np.testing.assert_allclose(out.data, ref, rtol=1e-5)
    cy, cx = out.calibration.detector_center
    assert cy == pytest.approx((33.0 - 1 - 1.5) / 4) and cx == pytest.approx((32.5 - 1 - 1.5) / 4)
    lazy = bin_detector(Dataset4D(d), 4)
    np.testing.assert_allclose(np.asarray(lazy.data), ref, rtol=1e-5)
    assert lazy.calibration.detector_center == out.calibration.detector_center


def test_bin_detector_integer_is_exact_and_lazy():
    d = np.full((2, 2, 64, 64), 65535, np.uint16)
    b = bin_detector(d, 8)
    assert hasattr(b.data, "compute")  # lazy (dask)
    arr = np.asarray(b.data)
    assert arr.dtype == np.uint32 and (arr == 65535 * 64).all()
    assert reduce_detector(d, 16).detector_shape == (16, 16)
    # COM runs on the lazy binned counts, block by block
    rng = np.random.default_rng(2)
    c = rng.integers(0, 200, size=(3, 4, 32, 32)).astype(np.uint8)
    res = center_of_mass(bin_detector(c, 4), rotation=0, flip=False, mask=["disc", 3.0])
    ref = center_of_mass(c.astype(np.int64).reshape(3, 4, 8, 4, 8, 4).sum(axis=(3, 5)), rotation=0,
                         flip=False, mask=("disc", 3.0))
    np.testing.assert_allclose(res.x, ref.x, atol=1e-12)


def test_center_auto_recentres(small):
    shifted = np.zeros_like(small.data)
    shifted[:, :, 3:, :-5] = small.data[:, :, :-3, 5:]  # disc moves to (34.5, 26.5)
    pp = Preprocessing(center="auto", target_size=None, subtract_mean=False, normalize=None)
    out = pp.fit_transform(Dataset4D(shifted))
    assert abs(pp.center_[0] - 34.5) < 0.3 and abs(pp.center_[1] - 26.5) < 0.3
    np.testing.assert_array_equal(out.data[:, :, :61, 5:], small.data[:, :, :61, 5:])
    assert (out.data[:, :, 61:] == 0).all() and (out.data[:, :, :, :5] == 0).all()
    cy, cx = out.calibration.detector_center
    assert abs(cy - 31.5) <= 0.5 and abs(cx - 31.5) <= 0.5
    pp2 = Preprocessing(center=(34.5, 26.5), target_size=None, subtract_mean=False, normalize=None)
    np.testing.assert_allclose(pp2.fit_transform(Dataset4D(shifted)).data, out.data)


def test_crop_scan_and_mask(small):
    out = raw(small, crop_scan=(2, 10, 4, 7), mask=("disc", 10.0))
    assert out.scan_shape == (8, 3)
    ii, jj = np.indices((64, 64))
    outside = np.hypot(ii - 31.5, jj - 31.5) > 10
    assert (out.data[..., outside] == 0).all()
    np.testing.assert_allclose(out.data[..., ~outside], small.data[2:10, 4:7][..., ~outside])
    m = np.zeros((64, 64), bool)
    m[10:20] = True
    out2 = raw(small, mask=m)
    assert (out2.data[..., ~m] == 0).all()


def test_hot_pixels(small):
    assert not find_hot_pixels(small.data.mean(axis=(0, 1))).any()  # the BF disc edge is not flagged
    d = small.data.copy()
    d[..., 5, 40] = 0.5  # a stuck pixel, far above anything in the pattern
    d[..., 31, 31] += 0.05  # one in the bright-field disc
    pp = Preprocessing(remove_hot_pixels=True, target_size=None, subtract_mean=False, normalize=None)
    out = pp.fit_transform(Dataset4D(d))
    assert set(zip(*np.nonzero(pp.hot_pixels_))) == {(5, 40), (31, 31)}
    nb = small.data[..., 30:33, 30:33].reshape(16, 16, 9)
    np.testing.assert_allclose(out.data[..., 31, 31], np.median(np.delete(nb, 4, axis=-1), axis=-1), rtol=1e-6)
    assert out.data[..., 5, 40].max() < 1e-3


def test_normalisations_match_numpy(small):
    d = small.data.astype(np.float64).reshape(256, -1)
    centred = d - d.mean(axis=0)
    out = Preprocessing(target_size=None, normalize="minmax").fit_transform(small)
    ref = (centred - centred.min()) / (centred.max() - centred.min())
    np.testing.assert_allclose(out.data.reshape(256, -1), ref, atol=2e-6)
    assert out.data.min() == 0 and out.data.max() == pytest.approx(1.0)
    out = Preprocessing(target_size=None, normalize="std").fit_transform(small)
    np.testing.assert_allclose(out.data.reshape(256, -1), centred / centred.std(), atol=1e-4)
    out = Preprocessing(target_size=None, normalize="zscore", subtract_mean=False).fit_transform(small)
    sd = d.std(axis=0)
    ref = np.where(sd > 0, (d - d.mean(axis=0)) / np.where(sd > 0, sd, 1), 0)
    np.testing.assert_allclose(out.data.reshape(256, -1), ref, atol=1e-3)
    out = Preprocessing(target_size=None, normalize="total", subtract_mean=False).fit_transform(small)
    np.testing.assert_allclose(out.data.reshape(256, -1), d / d.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-9)


def test_pca_denoising_matches_sklearn(small):
    pp = Preprocessing(bin_factor=4, normalize=None, pca_components=5, pca_drop=(0,), pca_method="full")
    out = pp.fit_transform(small)
    x = small.data.astype(np.float64).reshape(16, 16, 16, 4, 16, 4).sum(axis=(3, 5)).reshape(256, -1)
    p = PCA(5, svd_solver="full").fit(x)
    z = p.transform(x)
    z[:, 0] = 0
    ref = p.inverse_transform(z)
    ref -= ref.mean(axis=0)
    np.testing.assert_allclose(out.data.reshape(256, -1), ref, atol=1e-5 * np.abs(x).max())
    np.testing.assert_allclose(pp.explained_variance_ratio_, p.explained_variance_ratio_, rtol=1e-3)
    assert pp.explained_variance_ratio_.sum() <= 1.0
    # keeping all components reconstructs the data (the PCA mean is added back)
    full = Preprocessing(bin_factor=4, normalize=None, subtract_mean=False, pca_components=256).fit_transform(small)
    np.testing.assert_allclose(full.data.reshape(256, -1), x, atol=1e-4 * np.abs(x).max())
    # incremental PCA finds the same leading variance
    inc = Preprocessing(bin_factor=4, pca_components=3, pca_method="incremental")
    inc.fit(small)
    np.testing.assert_allclose(inc.explained_variance_ratio_, p.explained_variance_ratio_[:3], rtol=0.05)


def test_same_params_same_result_and_json(small):
    pp = Preprocessing(bin_factor=2, center="auto", mask=("annulus", 0, 20), pca_components=4,
                       pca_method="randomized", normalize="minmax", crop_scan=[0, 12, 0, 16])
    a = pp.fit_transform(small)
    params = json.loads(json.dumps(pp.get_params()))
    b = Preprocessing(**params).fit_transform(small)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(pp.transform(small).data, a.data)
    assert a.metadata["preprocessing"] == params
    assert "preprocessed" in a.provenance.notes[-1]


def test_zero_frames_are_finite(small):
    d = small.data.copy()
    d[3] = 0
    for norm in ("minmax", "total", "zscore", "std", None):
        out = Preprocessing(bin_factor=4, normalize=norm).fit_transform(Dataset4D(d))
        assert np.isfinite(out.data).all()
    z = Preprocessing(normalize="minmax").fit_transform(np.zeros((2, 2, 8, 8), np.uint8))
    assert np.isfinite(z.data).all()


def test_bad_input(small, monkeypatch):
    with pytest.raises(DataError, match="shape"):
        Preprocessing(bin_factor=2, mask=np.ones((64, 64), bool)).fit(small)
    with pytest.raises(DataError, match="more than the data allow"):
        Preprocessing(bin_factor=8, pca_components=65).fit(small)
    with pytest.raises(DataError, match="pca_drop"):
        Preprocessing(bin_factor=8, pca_components=3, pca_drop=(3,)).fit(small)
    with pytest.raises(DataError):
        Preprocessing(normalize="l2").fit(small)
    with pytest.raises(DataError, match="crop_scan"):
        Preprocessing(crop_scan=(0, 40, 0, 4)).fit(small)
    with pytest.raises(DataError):
        Preprocessing(bin_factor=0).fit(small)
    with pytest.raises(DataError, match="larger than the detector"):
        Preprocessing(bin_factor=100).fit(small)
    with pytest.raises(DataError, match="not fitted"):
        Preprocessing().transform(small)
    bad = small.data.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Preprocessing().fit(Dataset4D(bad))
    monkeypatch.setattr(pre, "available_memory", lambda: 1000)
    with pytest.raises(DataError, match="does not fit"):
        Preprocessing().fit(small)


def test_progress_steps(small):
    steps = list(_drive(Preprocessing(bin_factor=4, block_bytes=2**20).iter_fit_transform(small)))
    assert len(steps) >= 4 and steps[-1].done == steps[-1].total


def _drive(gen):
    try:
        while True:
            yield next(gen)
    except StopIteration:
        return


def test_square_crops_long_axis_about_the_beam():
    # a 2x3 scan of 8 x 16 patterns with a single bright pixel at (3, 11): after squaring to 8 x 8 around
    # that beam centre the bright pixel must land inside, at column 11 - 8 = 3 (window start clipped to 8)
    data = np.zeros((2, 3, 8, 16), np.float32)
    data[..., 3, 11] = 1.0
    from napari_4dstem import Calibration, Dataset4D

    ds = Dataset4D(data, Calibration(detector_center=(3.0, 11.0)))
    out = Preprocessing(target_size=None, subtract_mean=False, normalize=None).fit_transform(ds)
    assert out.detector_shape == (8, 8)
    frame = np.asarray(out.data[0, 0])
    assert frame[3, 3] == 1.0 and frame.sum() == 1.0
    kept = Preprocessing(target_size=None, subtract_mean=False, normalize=None, square=False).fit_transform(ds)
    assert kept.detector_shape == (8, 16)


# -- scan smoothing (scan_sigma) ------------------------------------------------------------------------
def _smooth_counts(n=32, det=16, dose=40.0, period=12.0, seed=0):
    """Poisson counts of patterns whose bright spot drifts smoothly over the scan, and their expectation."""
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    ky, kx = np.mgrid[:det, :det].astype(np.float64)
    cy = det / 2 + 2 * np.sin(2 * np.pi * yy / period)
    cx = det / 2 + 2 * np.cos(2 * np.pi * xx / period)
    lam = np.exp(-((ky - cy[..., None, None]) ** 2 + (kx - cx[..., None, None]) ** 2) / 8.0)
    lam *= dose / lam.sum((2, 3), keepdims=True)
    return np.random.default_rng(seed).poisson(lam).astype(np.uint16), lam


def test_scan_sigma_auto_leaves_noiseless_or_non_count_data_alone(small):
    a = Preprocessing().fit_transform(small)  # float, noiseless
    b = Preprocessing(scan_sigma=0).fit_transform(small)
    np.testing.assert_array_equal(a.data, b.data)
    pp = Preprocessing(target_size=None)
    pp.fit_transform(_smooth_counts()[1])  # the (float) expectation: not counts
    assert pp.scan_sigma_ == 0.0 and pp.noise_ratio_ is None


def test_scan_sigma_auto_measures_poisson_noise_and_smooths_counts():
    counts, lam = _smooth_counts()
    pp = Preprocessing(target_size=None, normalize=None, subtract_mean=False)
    out = pp.fit_transform(counts)
    # the noise-to-signal ratio against the truth: noise = mean expected count, signal = variance of the expectation
    true = lam.mean() / lam.reshape(-1, lam.shape[2] * lam.shape[3]).var(0).mean()
    assert pp.noise_ratio_ == pytest.approx(true, rel=0.15)
    assert pp.noise_ratio_ > 1
    want = min(np.sqrt(pp.noise_ratio_ / np.pi), pre.AUTO_SCAN_SIGMA_MAX)
    assert 0.5 < pp.scan_sigma_ <= want + 1e-9
    assert out.metadata["preprocessing_fitted"]["scan_sigma"] == pp.scan_sigma_
    # the smoothing itself: a Gaussian over the two scan axes (scipy as the reference)
    from scipy import ndimage

    ref = ndimage.gaussian_filter(counts.astype(np.float64), (pp.scan_sigma_, pp.scan_sigma_, 0, 0), mode="nearest")
    np.testing.assert_allclose(out.data, ref, rtol=1e-4, atol=1e-4)
    # and it brings the patterns closer to the noiseless expectation
    assert np.abs(out.data - lam).mean() < 0.6 * np.abs(counts - lam).mean()
    # transform() reuses the fitted sigma
    np.testing.assert_array_equal(pp.transform(counts).data, out.data)


def test_scan_sigma_auto_spares_coarse_scans_and_takes_explicit_values():
    counts, _ = _smooth_counts(period=1.7)  # the signal changes from one position to the next
    pp = Preprocessing(target_size=None)
    pp.fit_transform(counts)
    assert pp.scan_sigma_ < 0.5
    pp = Preprocessing(target_size=None, scan_sigma=2.0)
    pp.fit_transform(counts)
    assert pp.scan_sigma_ == 2.0 and pp.get_params()["scan_sigma"] == 2.0
    for bad in (-1, "big", float("nan"), True):
        with pytest.raises(DataError, match="scan_sigma"):
            Preprocessing(scan_sigma=bad).fit_transform(counts)
