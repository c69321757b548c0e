"""Defect scoring (site z against intact sites), the defect alarm's null, and the Anscombe transform."""
import numpy as np
import pytest

from napari_4dstem.errors import DataError
from napari_4dstem.rrvae.maps import (DEFECT_ALARM_THRESHOLD, LatentMaps, defect_alarm, defect_map, site_scores,
                                      zscore_at)


def _lattice(shape=(64, 64), period=(10.3, 11.9)):
    yy, xx = np.indices(shape, dtype=np.float64)
    return np.cos(2 * np.pi * yy / period[0]) + np.cos(2 * np.pi * xx / period[1])


def _sites(shape=(64, 64), period=(10.3, 11.9), margin=4):
    return [(y, x) for y in np.arange(0, shape[0], period[0]) for x in np.arange(0, shape[1], period[1])
            if margin <= y <= shape[0] - 1 - margin and margin <= x <= shape[1] - 1 - margin]


def test_site_scores_planted_outlier_analytic():
    # intact sites with values 0..4 (mean 2, std sqrt(2.5)) and a defect of 10: z = 8 / sqrt(2.5); leave-one-out
    # z of the extreme intact sites: (4 - 1.5) / std(0, 1, 2, 3) = 2.5 / sqrt(5 / 3)
    m = np.zeros((32, 32))
    intact = [(4, 4), (4, 20), (20, 4), (27, 27), (12, 28)]
    for v, (y, x) in enumerate(intact):
        m[y, x] = v
    m[15, 15] = 10.0
    r = site_scores(m, [(15, 15)], intact, radius=0.4)
    assert r["site_z"] == pytest.approx(8 / np.sqrt(2.5))
    assert r["intact_max"] == pytest.approx(2.5 / np.sqrt(5 / 3))
    assert r["singled_out"] is True and r["n_intact"] == 5
    m[15, 15] = -6.0  # a hole (a vacancy in an ADF image) counts the same, with its sign
    r = site_scores(m, [(15, 15), (0, 31)], intact, radius=0.4)  # the most deviant of several defect points
    assert r["site_z"] == pytest.approx(-8 / np.sqrt(2.5)) and r["singled_out"]
    m[15, 15] = 3.0
    assert site_scores(m, [(15, 15)], intact, radius=0.4)["singled_out"] is False
    # the robust peak score (the project's earlier z): constant map, one raised pixel: analytic std fallback
    m = np.zeros((32, 32))
    m[10, 12] = 5.0
    assert zscore_at(m, (10, 12), 4) == pytest.approx(5.0 / (5.0 * np.sqrt(m.size - 1) / m.size))


def test_site_scores_lattice_with_dopant():
    rng = np.random.default_rng(0)
    m = _lattice() + 0.05 * rng.standard_normal((64, 64))
    sites = _sites()
    d = sites[len(sites) // 2]
    m_def = m.copy()
    yy, xx = np.indices(m.shape)
    m_def += 1.5 * np.exp(-((yy - d[0]) ** 2 + (xx - d[1]) ** 2) / (2 * 1.5 ** 2))
    intact = [s for s in sites if np.hypot(s[0] - d[0], s[1] - d[1]) > 8]
    r = site_scores(m_def, [d], intact)
    assert r["singled_out"] and r["site_z"] > 5
    r0 = site_scores(m, [d], intact)  # the same site without the dopant is an ordinary one
    assert not r0["singled_out"] and abs(r0["site_z"]) < 3
    # a circular map: an angle near +-pi wraps, scored by its deviation from the circular mean
    a = np.full((32, 32), np.pi - 0.01) + 0.01 * rng.standard_normal((32, 32))
    a[16, 16] = -np.pi + 0.5  # 0.51 rad away, across the cut
    rc = site_scores(np.angle(np.exp(1j * a)), [(16, 16)], [(5, 5), (26, 26), (5, 26), (26, 5)], circular=True)
    assert rc["singled_out"] and rc["site_z"] > 20


def _latent_maps(channels):
    c = np.asarray(channels, np.float32)
    return LatentMaps(angle=np.zeros(c.shape[1:], np.float32), angle_unwrapped=np.zeros(c.shape[1:], np.float32),
                      angle_sd=np.full(c.shape[1:], 0.1, np.float32), latents=c,
                      latent_sd=np.full(c.shape, 0.1, np.float32))


def test_defect_alarm_null_and_planted_defect():
    # defect-free noisy lattices (a period that is not a whole number of pixels) give no alarm;
    # the same lattice with one site changed does, at that site
    base = np.stack([_lattice(), _lattice(period=(11.9, 10.3))])
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noisy = base + 0.3 * rng.standard_normal(base.shape)
        e = defect_map(_latent_maps(noisy))
        a = defect_alarm(e)
        assert not a["alarm"], a["score"]
    d = (33, 30)
    yy, xx = np.indices((64, 64))
    bump = 2.0 * np.exp(-((yy - d[0]) ** 2 + (xx - d[1]) ** 2) / (2 * 2.0 ** 2))
    rng = np.random.default_rng(5)
    noisy = base + 0.3 * rng.standard_normal(base.shape)
    noisy[0] += bump
    a = defect_alarm(defect_map(_latent_maps(noisy)))
    assert a["alarm"] and a["score"] > DEFECT_ALARM_THRESHOLD
    assert np.hypot(a["where"][0] - d[0], a["where"][1] - d[1]) <= 4


def test_anscombe_stabilises_poisson_variance():
    torch = pytest.importorskip("torch")
    from napari_4dstem.rrvae.data import View, anscombe, inverse_anscombe

    rng = np.random.default_rng(1)
    for lam in (5.0, 20.0, 200.0):
        x = rng.poisson(lam, 50_000).astype(np.float64)
        assert np.var(x) == pytest.approx(lam, rel=0.03)  # raw variance follows the mean
        assert np.var(anscombe(x)) == pytest.approx(1.0, abs=0.04)
    y = np.linspace(1, 50, 7)
    assert inverse_anscombe(anscombe(y)) == pytest.approx(y)
    assert torch.allclose(anscombe(torch.tensor([3.0])), torch.tensor([2 * np.sqrt(3.375)], dtype=torch.float32))
    # the View: a bright and a dark half of the detector get the same noise variance after the transform
    lam = np.ones((8, 8))
    lam[:, :4] = 100.0
    lam[:, 4:] = 9.0
    counts = rng.poisson(lam, (4000, 8, 8)).astype(np.float32)
    v = View((8, 8), None, "none", None, transform="anscombe")
    v.fit(counts)
    out = v.forward(torch.from_numpy(counts)).numpy().reshape(-1, 8, 8)
    assert out[:, :, :4].var(0).mean() == pytest.approx(1.0, abs=0.05)
    assert out[:, :, 4:].var(0).mean() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(DataError, match="anscombe"):
        View((8, 8), None, "none", None, transform="anscombe").fit(counts - 50)


def test_transform_is_a_checked_config_field():
    from napari_4dstem.rrvae import RRVAEConfig

    assert RRVAEConfig(transform="anscombe").transform == "anscombe"
    with pytest.raises(DataError, match="transform"):
        RRVAEConfig(transform="log")
