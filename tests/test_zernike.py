"""Zernike moments: rotation covariance, a direct integral, the sampled basis, derived maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

import napari_4dstem
from napari_4dstem import DataError, make_sample
from napari_4dstem.zernike import (invariant_features, orthogonality_report, reconstruct, rotation_map,
                                   zernike_indices, zernike_weights)


def _radial_factorial(n, m, rho):
    """R_n^m by the textbook factorial sum (independent of the Jacobi form used by the module)."""
    m = abs(m)
    out = np.zeros_like(rho)
    for s in range((n - m) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s) / (math.factorial(s) * math.factorial((n + m) // 2 - s)
                                                 * math.factorial((n - m) // 2 - s))
        out += c * rho ** (n - 2 * s)
    return out


@pytest.fixture(scope="module")
def graphene():
    """Held-out-style patterns: the built-in simulator's Si-doped graphene, a 12 x 12 scan, with noise."""
    ds = make_sample("graphene_si", scan_shape=(12, 12), dose=1e5, seed=3)
    return ds.with_data(np.asarray(ds.data, np.float64))  # float64: sums exact to 1e-12


def test_indices_count_and_parity():
    idx = zernike_indices(8)
    assert len(idx) == 25
    assert ((idx[:, 0] - idx[:, 1]) % 2 == 0).all() and (idx[:, 1] >= 0).all() and (idx[:, 1] <= idx[:, 0]).all()
    assert len({tuple(r) for r in idx.tolist()}) == len(idx)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_keeps_magnitude_and_turns_phase_by_m_times_90(graphene, k):
    data = np.asarray(graphene.data)
    turned = np.rot90(data, k, axes=(2, 3)).copy()  # counter-clockwise as displayed (rows down)
    a = napari_4dstem.zernike_moments(data)  # defaults: disc found in the data, separately for each
    b = napari_4dstem.zernike_moments(turned)
    m = a.indices[:, 1]
    scale = np.abs(a.moments).max()
    np.testing.assert_allclose(np.abs(b.moments), np.abs(a.moments), atol=1e-12 * scale)
    expect = a.moments * np.exp(1j * m * k * np.pi / 2)
    np.testing.assert_allclose(b.moments, expect, atol=1e-12 * scale)
    # float32 data are summed in float32: equal to its rounding
    a32 = napari_4dstem.zernike_moments(data.astype(np.float32))
    b32 = napari_4dstem.zernike_moments(turned.astype(np.float32))
    np.testing.assert_allclose(b32.moments, a32.moments * np.exp(1j * m * k * np.pi / 2), atol=2e-6 * scale)
    # a non-trivial check: some moments with m not a multiple of 4 are far from zero
    assert np.abs(a.moments[..., m % 4 != 0]).max() > 1e-3 * scale


def test_moments_equal_a_direct_polar_integral():
    """A smooth off-centre pattern on a fine detector: the pass equals a Gauss-Legendre x trapezoid integral."""
    n_det, r = 128, 60.0
    c = ((n_det - 1) / 2, (n_det - 1) / 2)
    s0, y0, x0 = 14.0, 9.0, -17.0

    def f(y, x):  # detector pixels about the centre
        return np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * s0**2)) * (1 + 0.3 * np.cos(x / 7.0))

    ii, jj = np.indices((n_det, n_det), dtype=np.float64)
    pat = f(ii - c[0], jj - c[1])
    res = napari_4dstem.zernike_moments(pat[None, None], order=8, radius=r, center=c)
    # direct integral over the unit disc: Z = (n+1)/pi int f conj(V) rho drho dtheta
    g, wg = np.polynomial.legendre.leggauss(120)
    rho = (g + 1) / 2
    wr = wg / 2
    th = np.linspace(0, 2 * np.pi, 480, endpoint=False)
    RR, TT = np.meshgrid(rho, th, indexing="ij")
    vals = f(r * RR * np.sin(TT), r * RR * np.cos(TT))
    for k, (n, m) in enumerate(res.indices):
        v = _radial_factorial(n, m, RR) * np.exp(1j * m * TT)
        z = (n + 1) / np.pi * np.sum(vals * np.conj(v) * RR * wr[:, None]) * (2 * np.pi / len(th))
        assert abs(res.moments[0, 0, k] - z) < 2e-3 * abs(res.moments[0, 0, 0]), (n, m)


def test_chunked_pass_equals_a_plain_sum_with_the_factorial_basis(graphene):
    data = np.asarray(graphene.data)
    r, c = 18.0, (31.5, 31.5)
    res = napari_4dstem.zernike_moments(data, order=6, radius=r, center=c, oversample=1, block_bytes=200_000)
    ii, jj = np.indices(data.shape[2:], dtype=np.float64)
    y, x = (ii - c[0]) / r, (jj - c[1]) / r
    rho, th = np.hypot(y, x), np.arctan2(y, x)
    for k, (n, m) in enumerate(res.indices):
        v = np.where(rho <= 1, _radial_factorial(n, m, rho) * np.exp(1j * m * th), 0)
        ref = (n + 1) / (np.pi * r * r) * np.einsum("abij,ij->ab", data.astype(np.float64), np.conj(v))
        np.testing.assert_allclose(res.moments[..., k], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_sampled_basis_orthogonality_is_reported_and_improves_with_radius():
    small = orthogonality_report((64, 64), 8, 8.0, (31.5, 31.5))
    large = orthogonality_report((128, 128), 8, 60.0, (63.5, 63.5))
    assert set(large) == {"max_offdiag", "max_diag_error", "condition"}
    assert large["max_offdiag"] < 0.06 and large["max_diag_error"] < 0.06 and large["condition"] < 1.2
    assert small["max_offdiag"] > large["max_offdiag"] and small["condition"] > large["condition"]
    res = napari_4dstem.zernike_moments(np.ones((1, 1, 64, 64)), order=4, radius=20.0)
    assert res.orthogonality["condition"] >= 1.0


def test_m1_moment_is_the_com_of_the_disc_and_the_rotation_map_minus_its_angle(graphene):
    """arg Z_11 = -atan2(com_y, com_x) exactly when the intensity lies inside the disc; with the default disc on
    the graphene scan the rotation map follows the COM angle with reversed sign."""
    data = np.asarray(graphene.data, np.float64)
    r, c = 20.0, (31.5, 31.5)
    ii, jj = np.indices(data.shape[2:])
    inside = np.hypot(ii - c[0], jj - c[1]) <= r - 1.5  # whole pixels inside the disc
    masked = data * inside
    res = napari_4dstem.zernike_moments(masked, order=3, radius=r, center=c)
    com = napari_4dstem.center_of_mass(masked, rotation=0, flip=False, center=c)
    k11 = int(np.flatnonzero((res.indices == (1, 1)).all(1))[0])
    k00 = 0
    v = np.conj(res.moments[..., k11]) / res.moments[..., k00].real * r / 2
    np.testing.assert_allclose(v.real, com.x, atol=1e-6)
    np.testing.assert_allclose(v.imag, com.y, atol=1e-6)
    ang = rotation_map(res.moments, res.indices, m=1)
    np.testing.assert_allclose(np.exp(1j * ang), np.exp(-1j * com.angle), atol=1e-8)
    # default disc, unmasked data
    from napari_4dstem.rrvae.maps import circular_r
    full = napari_4dstem.zernike_moments(data)
    com_full = napari_4dstem.center_of_mass(data, rotation=0, flip=False)
    assert np.mean(np.cos(full.rotation(1) + com_full.angle)) > 0.95
    assert circular_r(full.rotation(1), com_full.angle) < -0.5


def test_rotation_map_follows_a_turn_of_the_pattern():
    from scipy import ndimage

    n = 96
    ii, jj = np.indices((n, n), dtype=np.float64) - (n - 1) / 2
    base = np.exp(-((ii - 12) ** 2 + (jj - 4) ** 2) / 60.0) + 0.5 * np.exp(-((ii + 3) ** 2 + (jj + 15) ** 2) / 30.0)
    angles = [0.0, 20.0, 75.0, 140.0]
    pats = np.stack([ndimage.rotate(base, a, reshape=False, order=3) for a in angles])[None]
    res = napari_4dstem.zernike_moments(pats, order=6, radius=44.0, center=((n - 1) / 2,) * 2)
    for m in (1, 2, 3):
        got = res.rotation(m)[0] * m
        want = np.radians(angles) * m + got[0]
        np.testing.assert_allclose(np.angle(np.exp(1j * (got - want))), 0, atol=0.03)


def test_invariants_unchanged_by_rotation(graphene):
    data = np.asarray(graphene.data)
    a = napari_4dstem.zernike_moments(data, order=6, radius=18.0, center=(31.5, 31.5))
    b = napari_4dstem.zernike_moments(np.rot90(data, 1, axes=(2, 3)).copy(), order=6, radius=18.0,
                                      center=(31.5, 31.5))
    fa, fb = a.invariants(phases=True), b.invariants(phases=True)
    assert fa.shape[-1] > len(a.indices)
    np.testing.assert_allclose(fb, fa, atol=1e-9 * np.abs(fa).max())
    # the invariants still tell patterns apart
    assert np.std(fa[..., 1:], axis=(0, 1)).max() > 1e-3 * np.abs(fa).max()


def test_reconstruction_of_a_band_limited_pattern_and_convergence():
    n, r = 64, 30.0
    c = ((n - 1) / 2,) * 2
    w, idx = zernike_weights((n, n), order=6, radius=r, center=c)
    # a pattern made of a few basis functions is recovered (up to the sampled basis' non-orthogonality)
    true = np.zeros(len(idx), complex)
    true[[0, 3, 7, 12]] = [1.0, 0.4 - 0.2j, 0.3j, -0.25]
    pat = reconstruct(true, idx, (n, n), r, c)
    res = napari_4dstem.zernike_moments(pat[None, None], order=6, radius=r, center=c)
    np.testing.assert_allclose(res.moments[0, 0], true, atol=0.05)
    # a smooth pattern: reconstruction error falls with the order
    ii, jj = np.indices((n, n), dtype=np.float64) - c[0]
    smooth = np.exp(-((ii - 5) ** 2 + (jj + 8) ** 2) / 200.0)
    inside = np.hypot(ii, jj) <= r - 1
    errs = []
    for order in (2, 6, 12):
        z = napari_4dstem.zernike_moments(smooth[None, None], order=order, radius=r, center=c)
        rec = z.reconstruct((0, 0))
        errs.append(float(np.sqrt(np.mean((rec - smooth)[inside] ** 2))))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.02


def test_default_disc_from_the_convergence_angle_or_the_intensity(graphene):
    res = napari_4dstem.zernike_moments(graphene)  # calibrated: 31 mrad at 2.5 mrad per pixel
    p = res.parameters
    assert p["radius_from"] == "convergence angle" and p["center_from"] == "calibration"
    assert np.isclose(p["bf_radius_px"], 31 / 2.5) and np.isclose(res.radius, 1.5 * 31 / 2.5)
    plain = napari_4dstem.zernike_moments(np.asarray(graphene.data))  # no calibration: from the data
    q = plain.parameters
    assert q["radius_from"] == "99% of the mean pattern" and q["center_from"] == "detector centre"
    assert abs(q["bf_radius_px"] - 31 / 2.5) < 1.5 and plain.center == (31.5, 31.5)
    assert res.moments.shape == (12, 12, 16) and res.moments.dtype == np.complex128


@pytest.mark.parametrize("kw", [{"order": -1}, {"order": 2.5}, {"order": 99}, {"radius": 0}, {"radius": "big"},
                                {"center": (1, 2, 3)}, {"center": (500.0, 3.0)}])
def test_bad_parameters_raise_dataerror(kw):
    with pytest.raises(DataError):
        napari_4dstem.zernike_moments(np.ones((2, 2, 16, 16)), **kw)


def test_weights_layout():
    w, idx = zernike_weights((32, 32), order=4, radius=15.0)
    k = len(idx)
    assert w.shape == (2 * k, 32, 32) and w.dtype == np.float64
    assert np.abs(w[k:][idx[:, 1] == 0]).max() == 0  # m = 0: real
    z = invariant_features(np.ones((3, k), complex), idx)
    assert z.shape == (3, k)
