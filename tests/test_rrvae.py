"""rrVAE engine: loss terms, rotation equivariance, learning, determinism, files, cancel, bad input."""
from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_4dstem.errors import Cancelled, DataError, ModelError  # noqa: E402
from napari_4dstem.rrvae import (RRVAE, LatentMaps, RRVAEConfig, circular_r, defect_alarm, defect_map,  # noqa: E402
                                 neighbourhood_outlier, pearson_r, zscore_at)
from napari_4dstem.rrvae import train as rtrain  # noqa: E402
from napari_4dstem.rrvae.model import Decoder, coord_grid, kl_terms, recon_term  # noqa: E402


def blob_pattern(n: int, angle: float = 0.0) -> np.ndarray:
    """An asymmetric analytic pattern (three Gaussians), rotated by ``angle`` about the centre."""
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    out = np.zeros((n, n))
    for (r, t, s, a) in [(0.45, 0.0, 0.12, 1.0), (0.3, 2.2, 0.10, 0.6), (0.0, 0.0, 0.25, 0.4)]:
        py = c - r * c * math.sin(t + angle)
        px = c + r * c * math.cos(t + angle)
        out += a * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * (s * n) ** 2))
    return out


@pytest.fixture(scope="module")
def rotated_set():
    rng = np.random.default_rng(1)
    angles = rng.uniform(-1.0, 1.0, size=(16, 16))
    pats = np.stack([blob_pattern(12, a) for a in angles.ravel()]).reshape(16, 16, 12, 12)
    pats -= pats.mean((0, 1))
    pats = (pats - pats.min()) / (pats.max() - pats.min())
    return pats.astype(np.float32), angles


def tiny_data(seed=0, shape=(6, 6, 12, 12)):
    rng = np.random.default_rng(seed)
    return rng.random(shape).astype(np.float32)


def tiny_cfg(**kw):
    base = dict(epochs=2, batch_size=8, hidden=16, seed=0, threads=1)
    base.update(kw)
    return RRVAEConfig(**base)


# -- loss terms ---------------------------------------------------------------------------------
def test_kl_terms_match_closed_form_and_torch_distributions():
    mean = torch.tensor([[0.3, 0.5, -1.2], [-2.0, 0.0, 0.7]], dtype=torch.float64)
    logsd = torch.tensor([[-1.5, 0.2, -0.3], [-3.0, -0.1, 0.4]], dtype=torch.float64)
    prior = 0.1
    kl_rot, kl_z = kl_terms(mean, logsd, 1, prior)
    for i in range(2):
        s = math.exp(logsd[i, 0])
        # KL(N(mu, s^2) || N(mu, prior^2)): the prior sits on the posterior mean, constraining only the spread
        ref = math.log(prior / s) + s * s / (2 * prior**2) - 0.5
        assert kl_rot[i].item() == pytest.approx(ref, rel=1e-12)
        q = torch.distributions.Normal(mean[i, 1:], logsd[i, 1:].exp())
        p = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
        assert kl_z[i].item() == pytest.approx(torch.distributions.kl_divergence(q, p).sum().item(), rel=1e-12)
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    tgt = torch.tensor([[0.0, 2.5, 5.0]])
    assert recon_term(pred, tgt).item() == pytest.approx(0.5 * (1 + 0.25 + 4))
    assert recon_term(pred, tgt, 4.0).item() == pytest.approx(2 * (1 + 0.25 + 4))


def test_training_loss_is_the_sum_of_the_terms_on_a_tiny_batch():
    m = RRVAE(tiny_cfg())
    net = m._new_net(16)
    grid = coord_grid(4, 4)
    x = torch.rand(3, 16)
    loss, terms = m._loss(net, grid, x, torch.Generator().manual_seed(5), 1.0)
    # recompute by hand with the same noise
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        mu, ls = net.encoder(x)
        z = mu + ls.exp() * torch.randn(mu.shape, generator=g)
        gx = grid.numpy()
        out = np.empty((3, 16))
        for b in range(3):
            a = z[b, 0].item()
            rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
            coords = torch.from_numpy((gx @ rot).astype(np.float32))
            h = torch.tanh(net.decoder.coord(coords) + net.decoder.latent(z[b, 1:]))
            for lin in net.decoder.dense:
                h = torch.tanh(lin(h))
            out[b] = net.decoder.out(h)[:, 0].numpy()
        rec = 0.5 * ((out - x.numpy()) ** 2).sum(1)
        s0 = ls[:, 0].exp().numpy()
        klr = np.log(0.1 / s0) + s0**2 / 0.02 - 0.5
        klz = (-ls[:, 1:] + 0.5 * ls[:, 1:].exp() ** 2 + 0.5 * mu[:, 1:] ** 2 - 0.5).sum(1).numpy()
    np.testing.assert_allclose(terms.detach().numpy(), [rec.mean(), klr.mean(), klz.mean()], rtol=1e-4)
    assert loss.item() == pytest.approx(rec.mean() + klr.mean() + klz.mean(), rel=1e-4)


# -- rotation equivariance ----------------------------------------------------------------------
def test_decoder_is_equivariant_to_rotation():
    torch.manual_seed(0)
    dec = Decoder(2, 32, 2).double()
    n = 17
    grid = coord_grid(n, n).double()
    z = torch.randn(1, 2, dtype=torch.float64)
    with torch.no_grad():
        canon = dec(grid, z, torch.zeros(1, dtype=torch.float64)).reshape(n, n).numpy()
        quarter = dec(grid, z, torch.tensor([math.pi / 2], dtype=torch.float64)).reshape(n, n).numpy()
        # an arbitrary angle equals the canonical decoder at explicitly rotated coordinates
        a = 0.7
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        explicit = dec(torch.from_numpy(grid.numpy() @ rot), z, torch.zeros(1, dtype=torch.float64)).numpy()
        folded = dec(grid, z, torch.tensor([a], dtype=torch.float64)).numpy()
    # a quarter turn permutes pixels exactly: the decoded image is the canonical one turned by 90 degrees
    np.testing.assert_allclose(quarter, np.rot90(canon, k=-1), atol=1e-12)
    assert not np.allclose(quarter, canon, atol=1e-3)
    np.testing.assert_allclose(folded, explicit, atol=1e-12)


def test_reconstruction_as_measured_uses_the_encoded_angle(rotated_set):
    pats, _ = rotated_set
    m = RRVAE(tiny_cfg(epochs=1))
    m.fit(pats[:4, :4])
    maps = m.encode(pats[:4, :4])
    meas = m.reconstruct(pats[:4, :4], indices=[[1, 2]])
    canon = m.reconstruct(pats[:4, :4], indices=[[1, 2]], as_measured=False)
    z = maps.latents[:, 1, 2]
    np.testing.assert_allclose(meas[0], m.decode(z, angle=maps.angle_unwrapped[1, 2]), atol=1e-5)
    np.testing.assert_allclose(canon[0], m.decode(z), atol=1e-5)
    assert m.reconstruct(pats[:4, :4]).shape == (4, 4, 12, 12)


# -- learning -----------------------------------------------------------------------------------
def _angle_fit(model, pats, angles):
    """circular r (JS: blind to the scale over this +-1 rad range), slope and residual sd (rad) of the encoded
    angle against the true one."""
    enc = model.encode(pats).angle_unwrapped.ravel().astype(np.float64)
    a = np.vstack([angles.ravel(), np.ones(angles.size)]).T
    coef, *_ = np.linalg.lstsq(a, enc, rcond=None)
    return circular_r(enc, angles.ravel(), method="js"), coef[0], float(np.std(enc - a @ coef))


def test_rotation_map_recovers_known_angles(rotated_set):
    """Rotated copies of one pattern: the angle map follows the true angle up to offset, sign and scale.

    (Content latents can absorb part of a rotation, so the scale is not pinned to 1.)
    """
    pats, angles = rotated_set
    cfg = RRVAEConfig(epochs=10, batch_size=16, lr=3e-3, hidden=64, latent_dim=1, scaling="std", threads=1,
                      precision="float32")
    untrained = RRVAE(RRVAEConfig(**{**cfg.to_dict(), "epochs": 1}))
    untrained.fit(pats)
    untrained.net.load_state_dict(untrained._new_net(pats.shape[2] * pats.shape[3]).state_dict())
    r0, slope0, _ = _angle_fit(untrained, pats, angles)
    assert abs(slope0) < 0.5  # a random encoder does not span the angles
    m = RRVAE(cfg)
    m.fit(pats, com_angle=angles)
    r, slope, resid = _angle_fit(m, pats, angles)
    assert abs(r) > 0.85 and abs(slope) > 0.5, (r, slope)
    assert resid / abs(slope) < 0.3  # error in units of the true angle (rad)
    enc = m.encode(pats).angle_unwrapped
    assert m.history[-1]["circ_r"] == pytest.approx(circular_r(enc, angles), abs=1e-6)  # Fisher-Lee


def test_fast_mode_bins_and_reconstructs_at_full_size(rotated_set):
    pats, angles = rotated_set
    m = RRVAE(RRVAEConfig(mode="fast", detector_size=8, epochs=2, hidden=16, batch_size=64, threads=1))
    m.fit(pats, com_angle=angles)
    assert m.view.n_pixels == 64
    assert m.reconstruct(pats, indices=[0, 5]).shape == (2, 12, 12)
    assert m.encode(pats).latents.shape == (2, 16, 16)


# -- stopping rule, checkpoints, determinism ----------------------------------------------------
def test_stopping_rule_records_r_and_restores_any_epoch():
    x = tiny_data()
    mag = x.sum((2, 3))
    m = RRVAE(tiny_cfg(epochs=3))
    hist = m.fit(x, com_magnitude=mag)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and sorted(m.checkpoints) == [1, 2, 3]
    best = max(hist, key=lambda h: abs(h["r_best"]))
    assert m.best_epoch == best["epoch"]
    m.restore(1)
    lat1 = m.encode(x).latents
    assert pearson_r(lat1[0], mag) == pytest.approx(hist[0]["r"][0], abs=1e-6)
    # epoch 1 of a 3-epoch run is the model of a 1-epoch run with the same seed
    one = RRVAE(tiny_cfg(epochs=1))
    one.fit(x, com_magnitude=mag)
    np.testing.assert_array_equal(one.encode(x).latents, lat1)
    with pytest.raises(ModelError):
        m.restore(7)


def test_same_seed_same_maps_other_seed_other_maps():
    x = tiny_data()
    a, b, c = RRVAE(tiny_cfg()), RRVAE(tiny_cfg()), RRVAE(tiny_cfg(seed=1))
    for m in (a, b, c):
        m.fit(x)
    np.testing.assert_array_equal(a.encode(x).latents, b.encode(x).latents)
    assert not np.array_equal(a.encode(x).latents, c.encode(x).latents)


def test_resumed_training_equals_straight_training(tmp_path):
    """2 epochs, save, load, 2 more (resume) == 4 straight epochs, bit for bit (same seed, 1 thread, CPU).

    Exact equality holds because resume restores the weights, the Adam moments and step counts and the
    random-number state (shuffling, sampling noise, pixel subsets) of the last completed epoch.
    """
    x = tiny_data()
    mag = x.sum((2, 3))
    straight = RRVAE(tiny_cfg(epochs=4, val_fraction=0.2))
    straight.fit(x, com_magnitude=mag)
    first = RRVAE(tiny_cfg(epochs=2, val_fraction=0.2))
    first.fit(x, com_magnitude=mag)
    first.save(tmp_path / "m.rrvae")
    resumed = RRVAE.load(tmp_path / "m.rrvae")
    resumed.config.epochs = 4
    resumed.fit(x, com_magnitude=mag, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for key in ("loss", "recon", "kl_rot", "kl_content", "val_loss", "r"):
        assert [h[key] for h in resumed.history] == [h[key] for h in straight.history], key
    np.testing.assert_array_equal(resumed.encode(x).latents, straight.encode(x).latents)
    assert resumed.best_epoch == straight.best_epoch and sorted(resumed.checkpoints) == [1, 2, 3, 4]
    # at config.epochs already, resume has nothing to do
    resumed.fit(x, com_magnitude=mag, resume=True)
    assert len(resumed.history) == 4
    # without resume, a loaded model starts afresh (same seed: the straight run again)
    again = RRVAE.load(tmp_path / "m.rrvae")
    again.config.epochs = 4
    again.fit(x, com_magnitude=mag)
    assert [h["epoch"] for h in again.history] == [1, 2, 3, 4]
    np.testing.assert_array_equal(again.encode(x).latents, straight.encode(x).latents)  # same seed from scratch
    # a model without stored Adam/RNG state (older files) still resumes, from the last epoch's weights
    old = RRVAE.load(tmp_path / "m.rrvae")
    old._train_state = None
    old.config.epochs = 3
    old.fit(x, resume=True)
    assert [h["epoch"] for h in old.history] == [1, 2, 3]
    with pytest.raises(DataError, match="resume"):
        old.config.epochs = 5
        old.fit(tiny_data(shape=(6, 6, 10, 10)), resume=True)


def test_validation_split_reports_val_loss():
    m = RRVAE(tiny_cfg(val_fraction=0.25))
    hist = m.fit(tiny_data())
    assert all(h["val_loss"] is not None and np.isfinite(h["val_loss"]) for h in hist)


# -- files ---------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    x = tiny_data()
    m = RRVAE(tiny_cfg(mode="fast", detector_size=8, translation=True, epochs=2))
    m.fit(x, com_magnitude=x.sum((2, 3)))
    p = tmp_path / "model.rrvae"
    m.save(p, preprocessing={"normalize": "minmax", "target_size": 12})
    r = RRVAE.load(p)
    a, b = m.encode(x), r.encode(x)
    for name in ("angle", "latents", "latent_sd", "translations"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(m.reconstruct(x, indices=[3]), r.reconstruct(x, indices=[3]))
    assert r.history == m.history and r.best_epoch == m.best_epoch
    assert r.preprocessing == {"normalize": "minmax", "target_size": 12}
    assert r.config == m.config and sorted(r.checkpoints) == sorted(m.checkpoints)


def test_corrupt_or_foreign_model_files_raise_model_error(tmp_path):
    bad = tmp_path / "bad.rrvae"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="bad.rrvae"):
        RRVAE.load(bad)
    m = RRVAE(tiny_cfg(epochs=1))
    m.fit(tiny_data())
    good = tmp_path / "good.rrvae"
    m.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.rrvae"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        RRVAE.load(trunc)
    payload = torch.load(good, weights_only=True)
    payload["version"] = 99
    other = tmp_path / "other.rrvae"
    torch.save(payload, other)
    with pytest.raises(ModelError, match="version 99"):
        RRVAE.load(other)
    with pytest.raises(ModelError):
        RRVAE.load(tmp_path / "missing.rrvae")


# -- cancel --------------------------------------------------------------------------------------
def test_cancel_mid_epoch_keeps_last_completed_epoch(monkeypatch):
    monkeypatch.setattr(rtrain, "PROGRESS_SECONDS", 0.0)  # report after every batch
    x = tiny_data()
    ref = RRVAE(tiny_cfg(epochs=1))
    ref.fit(x)
    m = RRVAE(tiny_cfg(epochs=3))
    gen = m.iter_fit(x)
    seen = []
    for p in gen:
        seen.append(p)
        if p.info.get("epoch") == 2 and not p.info["epoch_done"]:
            break
    assert any(p.info.get("epoch_done") for p in seen)
    gen.close()
    assert len(m.history) == 1 and m.epoch == 1
    np.testing.assert_array_equal(m.encode(x).latents, ref.encode(x).latents)


def test_fit_with_cancel_event_raises_cancelled_and_keeps_model():
    x = tiny_data()
    ev = threading.Event()

    def cb(p):
        if p.info.get("epoch_done"):
            ev.set()

    m = RRVAE(tiny_cfg(epochs=3))
    with pytest.raises(Cancelled):
        m.fit(x, callback=cb, cancel=ev)
    assert m.epoch == 1 and m.trained
    m.encode(x)


def test_cancel_before_first_epoch_leaves_untrained_model(monkeypatch):
    monkeypatch.setattr(rtrain, "PROGRESS_SECONDS", 0.0)
    ev = threading.Event()
    ev.set()
    m = RRVAE(tiny_cfg(epochs=2))
    with pytest.raises(Cancelled):
        m.fit(tiny_data(), cancel=ev)
    assert not m.trained
    with pytest.raises(ModelError, match="not trained"):
        m.encode(tiny_data())


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: np.full((4, 4, 8, 8), np.nan, np.float32), "NaN"),
    (lambda: np.ones((4, 4, 8, 8), np.float32), "constant"),
    (lambda: tiny_data(shape=(1, 1, 8, 8)), "1 x 1"),
    (lambda: tiny_data(shape=(4, 4, 8, 10)), "not square"),
    (lambda: tiny_data(shape=(4, 8, 8)), "scan_y, scan_x"),
])
def test_bad_input_raises_data_error(make, match):
    with pytest.raises(DataError, match=match):
        RRVAE(tiny_cfg()).fit(make())


def test_bad_parameters_and_odd_detectors():
    with pytest.raises(DataError, match="latent_dim"):
        RRVAEConfig(latent_dim=0)
    with pytest.raises(DataError, match="mode"):
        RRVAEConfig(mode="turbo")
    x = tiny_data(shape=(4, 4, 11, 11))  # odd detectors are fine: the grid centre is pixel 5
    m = RRVAE(tiny_cfg(epochs=1))
    m.fit(x)
    assert m.reconstruct(x, indices=[0]).shape == (1, 11, 11)
    with pytest.raises(DataError, match="com_magnitude"):
        RRVAE(tiny_cfg()).fit(x, com_magnitude=np.zeros((3, 3)))
    with pytest.raises(DataError, match="detector"):
        m.encode(tiny_data(shape=(2, 2, 12, 12)))
    with pytest.raises(ModelError):
        RRVAE().encode(x)


def test_config_round_trip_and_mode_defaults():
    f = RRVAEConfig(mode="fast")
    assert (f.lr, f.batch_size, f.detector_size, f.scaling) == (1e-3, 64, 32, "std")
    d = RRVAEConfig()
    assert (d.lr, d.batch_size, d.latent_dim, d.rotation_prior, d.hidden, d.layers) == (1e-4, 20, 2, 0.1, 128, 2)
    assert RRVAEConfig.from_dict(f.to_dict()) == f
    assert RRVAEConfig(mode="fast", lr=5e-4).lr == 5e-4


def test_correlation_helpers_against_references():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson_r(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    ang = rng.uniform(-1, 1, 200)
    assert circular_r(ang, ang + 2.0) == pytest.approx(1.0)
    assert circular_r(ang, -ang) == pytest.approx(-1.0)
    assert abs(circular_r(ang, rng.uniform(-np.pi, np.pi, 200))) < 0.3


def test_signal_scaling_estimates_the_signal_std_under_noise():
    from napari_4dstem.rrvae.data import View

    rng = np.random.default_rng(0)
    sy = sx = 32
    yy, xx = np.mgrid[:sy, :sx] / sy
    amp = np.sin(2 * np.pi * yy) * np.cos(2 * np.pi * xx)  # smooth over the scan, as real signal is
    basis = rng.normal(size=(8, 8))
    clean = amp[..., None, None] * basis
    noisy = clean + rng.normal(scale=2.0, size=clean.shape)
    true_sd = float((clean - clean.mean((0, 1))).std())
    v = View((8, 8), None, "signal")
    v.fit(noisy.reshape(-1, 8, 8).astype(np.float32), (sy, sx))
    assert v.std == pytest.approx(true_sd, rel=0.15)
    s = View((8, 8), None, "std")
    s.fit(noisy.reshape(-1, 8, 8).astype(np.float32), (sy, sx))
    assert s.std > 3 * true_sd  # the global std is mostly noise


def test_reconstruction_error_map_flags_an_odd_pattern(rotated_set):
    pats, _ = rotated_set
    odd = pats.copy()
    odd[7, 9] = np.random.default_rng(3).random(odd.shape[2:]).astype(np.float32)  # one pattern unlike the rest
    m = RRVAE(tiny_cfg(epochs=3, hidden=32, batch_size=16, lr=3e-3, scaling="std"))
    m.fit(odd)
    err = m.reconstruction_error(odd)
    assert err.shape == (16, 16)
    assert np.unravel_index(np.argmax(err), err.shape) == (7, 9)


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    x = tiny_data()
    eager, comp = RRVAE(tiny_cfg(precision="float32")), RRVAE(tiny_cfg(precision="float32", compile=True))
    for m in (eager, comp):
        m.fit(x)
    np.testing.assert_allclose([h["loss"] for h in comp.history], [h["loss"] for h in eager.history], rtol=1e-4)


# -- defect maps and noisy data ----------------------------------------------------------------
def lattice_map(n=48, defect=None, period=(9.3, 11.7)):
    """A 2-D periodic map (incommensurate with the pixel grid) with an optional local bump."""
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    m = np.cos(2 * np.pi * xx / period[0]) + np.cos(2 * np.pi * (0.5 * xx + yy) / period[1])
    if defect is not None:
        m += 1.5 * np.exp(-((yy - defect[0]) ** 2 + (xx - defect[1]) ** 2) / (2 * 2.0**2))
    return m


def test_neighbourhood_outlier_singles_out_a_break_in_a_lattice():
    site = (20, 27)
    per = (8.0, 8.0)
    m = neighbourhood_outlier(np.stack([lattice_map(defect=site, period=per), lattice_map(period=(16.0, 8.0))]),
                              radius=4, step=2)
    assert m.shape == (48, 48) and np.isfinite(m).all()
    peak = np.unravel_index(np.argmax(m), m.shape)
    assert np.hypot(peak[0] - site[0], peak[1] - site[1]) <= 2
    assert zscore_at(m, site) > 4.5
    # a pristine lattice has nothing that stands out
    clean = neighbourhood_outlier(np.stack([lattice_map(period=per), lattice_map(period=(16.0, 8.0))]),
                                  radius=4, step=2)
    assert zscore_at(clean, site) < 2.5
    assert clean.max() < 0.01 * m.max()  # every window of a commensurate lattice repeats exactly
    # robust z-score against a hand computation; plain z-score = (value - mean) / std
    x = np.zeros((9, 9))
    x[4, 4], x[0, 0] = 10.0, 1.0
    mad = 1.4826 * np.median(np.abs(x - np.median(x)))
    assert mad == 0  # falls back to the std
    assert zscore_at(x, (4, 4), radius=0) == pytest.approx(10 / x.std())
    assert zscore_at(x, (4, 4), radius=0, robust=False) == pytest.approx((10 - x.mean()) / x.std())


def test_pca_view_keeps_the_signal_subspace_and_survives_save_load(tmp_path):
    from napari_4dstem.rrvae.data import View

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 64))
    coef = rng.normal(size=(400, 3)) * [5.0, 3.0, 2.0]
    clean = (coef @ basis).reshape(400, 8, 8).astype(np.float32)
    noisy = clean + rng.normal(scale=0.5, size=clean.shape).astype(np.float32)
    v = View((8, 8), None, "none", components=3)
    v.fit(noisy)
    den = v.forward(torch.from_numpy(noisy)).numpy()
    err_before = np.abs(noisy.reshape(400, -1) - clean.reshape(400, -1)).mean()
    err_after = np.abs(den - clean.reshape(400, -1)).mean()
    assert err_after < 0.35 * err_before  # 3 of 64 noise dimensions remain: sqrt(3/64) ~ 0.22
    x = tiny_data()
    m = RRVAE(tiny_cfg(mode="fast", detector_size=8, epochs=1))
    assert m.config.pca_components == 8 and RRVAEConfig().pca_components == 0
    m.fit(x)
    assert m.view.basis.shape == (64, 8)
    m.save(tmp_path / "p.rrvae")
    r = RRVAE.load(tmp_path / "p.rrvae")
    np.testing.assert_array_equal(m.encode(x).latents, r.encode(x).latents)
    with pytest.raises(DataError, match="pca_components"):
        RRVAEConfig(pca_components=-1)


def test_outlier_map_of_a_trained_model_scores_its_encoded_maps():
    """The model's outlier map is the squared neighbourhood score of its content latents, their log sds, the
    rotation (cos, sin) and its log sd, spread by a Gaussian and divided by its median (computed here by hand)."""
    from scipy import ndimage

    x = tiny_data(shape=(16, 16, 12, 12))
    m = RRVAE(tiny_cfg(epochs=1))
    m.fit(x)
    maps = m.encode(x)
    ch = np.concatenate([maps.latents, np.log(maps.latent_sd), np.cos(maps.angle)[None], np.sin(maps.angle)[None],
                         np.log(maps.angle_sd)[None]])
    e = ndimage.gaussian_filter(neighbourhood_outlier(ch, radius=2, step=1, smooth=1.0).astype(np.float64) ** 2,
                                1.5, mode="nearest")
    np.testing.assert_allclose(m.outlier_map(x, radius=2, smooth=1.0, spread=1.5), e / np.median(e), rtol=1e-4)
    assert m.outlier_map(maps=maps).shape == (16, 16)
    with pytest.raises(DataError):
        m.outlier_map()


def test_defect_map_fills_the_ring_around_a_vacancy():
    """A vacancy changes the maps on a ring around it (at its neighbours), not at its centre: small windows
    then score the ring; the spread of the defect map puts the peak back on the site."""
    n, site, per = 64, (30, 33), (8.0, 8.0)
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    ring = np.exp(-(np.hypot(yy - site[0], xx - site[1]) - 5.0) ** 2 / (2 * 1.2**2))
    lat = np.stack([lattice_map(n, period=per) + 1.2 * ring, lattice_map(n, period=(16.0, 8.0))])
    flat = np.zeros((n, n), np.float32)
    maps = LatentMaps(angle=flat, angle_unwrapped=flat, angle_sd=flat + 0.1, latents=lat.astype(np.float32),
                      latent_sd=np.full((2, n, n), 0.5, np.float32))
    raw = neighbourhood_outlier(np.concatenate([lat, np.log(maps.latent_sd)]), radius=2, smooth=0.0)
    d = defect_map(maps, radius=2, smooth=0.0, spread=4.0)
    peak = lambda m: np.hypot(*(np.subtract(np.unravel_index(np.argmax(m), m.shape), site)))  # noqa: E731
    assert peak(raw) > 3  # the raw score peaks on the ring
    assert peak(d) <= 2.5
    z = (d - d.mean()) / d.std()
    assert z[site] > 4.5 and np.median(d) == pytest.approx(1.0)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every thread count is 1")
def test_encoding_in_a_worker_thread_takes_the_threads_asked_for():
    """The GUI encodes in a worker thread and leaves a core to the event loop: the encoding sets the torch
    thread count itself (a model loaded from a file would otherwise encode on every core)."""
    from napari_4dstem.progress import run_steps
    from napari_4dstem.rrvae.maps import iter_rrvae_maps

    data = tiny_data()
    model = RRVAE(tiny_cfg(epochs=1))
    model.fit(data)
    seen, before = {}, torch.get_num_threads()

    def work():
        out = run_steps(iter_rrvae_maps(model, data, epoch=None, threads=1))
        seen["encoding"], seen["maps"] = torch.get_num_threads(), out

    torch.set_num_threads(2)
    try:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen["encoding"] == 1
    np.testing.assert_allclose(seen["maps"]["latents"], model.encode(data).latents, rtol=1e-5, atol=1e-6)


def test_rotation_defect_map_sees_a_local_rotation_the_latents_hide():
    """A rotated bond leaves the content latents (rotation-invariant) as they are and turns the local
    rotation: the rotation-only defect map peaks there and stands out more than in the all-channel map,
    where noisy latent channels dilute it."""
    n, site = 64, (30, 35)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    angle = 0.8 * lattice_map(n, period=(8.0, 8.0))
    angle += 1.2 * np.exp(-((yy - site[0]) ** 2 + (xx - site[1]) ** 2) / (2 * 1.5**2))  # the turned bond
    lat = np.stack([lattice_map(n, period=(8.0, 8.0)), lattice_map(n, period=(16.0, 8.0))])
    lat += rng.normal(0, 0.6, lat.shape)  # latents under Poisson noise
    sd = np.exp(rng.normal(-1.0, 0.3, lat.shape))
    maps = LatentMaps(angle=angle.astype(np.float32), angle_unwrapped=angle.astype(np.float32),
                      angle_sd=np.exp(rng.normal(-2.0, 0.3, (n, n))).astype(np.float32),
                      latents=lat.astype(np.float32), latent_sd=sd.astype(np.float32))
    peak = lambda m: np.hypot(*np.subtract(np.unravel_index(np.argmax(m[8:-8, 8:-8]), (n - 16, n - 16)),  # noqa: E731
                                           np.subtract(site, 8)))
    rot = defect_map(maps, channels="rotation")
    assert peak(rot) <= 3
    assert defect_alarm(rot)["alarm"]
    allch = defect_map(maps)  # the same comparison over all channels: the noisy latents dilute the rotation
    assert defect_alarm(rot)["score"] > 1.5 * defect_alarm(allch)["score"]
    # the rotation map alone: other latents, same map
    other = LatentMaps(angle=maps.angle, angle_unwrapped=maps.angle, angle_sd=maps.angle_sd,
                       latents=rng.normal(size=lat.shape).astype(np.float32), latent_sd=maps.latent_sd)
    np.testing.assert_array_equal(defect_map(other, channels="rotation"), rot)
    with pytest.raises(DataError, match="channels"):
        defect_map(maps, channels="latents")
