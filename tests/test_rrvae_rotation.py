"""rrVAE rotation map: the circular correlation, the angle parametrisation, the stopping rule, wrapping."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_4dstem.errors import DataError  # noqa: E402
from napari_4dstem.rrvae import RRVAE, RRVAEConfig, circular_r, pearson_r  # noqa: E402
from napari_4dstem.rrvae.maps import wrap_angle  # noqa: E402
from napari_4dstem.rrvae.model import Encoder  # noqa: E402
from napari_4dstem.rrvae.train import choose_epoch, stop_score  # noqa: E402


def _pairwise_fisher_lee(a, b):
    """Fisher & Lee (1983) from its definition: correlation of sin(a_i - a_j), sin(b_i - b_j) over pairs i < j."""
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sin(a[i] - a[j]), np.sin(b[i] - b[j])
    return float((da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum()))


def test_circular_r_is_fisher_lee_and_holds_over_the_full_circle():
    rng = np.random.default_rng(3)
    b = rng.uniform(-np.pi, np.pi, 120)
    a = -b + 0.7 + rng.normal(0, 0.6, b.size)
    assert circular_r(a, b) == pytest.approx(_pairwise_fisher_lee(a, b), rel=1e-10)
    assert circular_r(b + 2.0, b) == pytest.approx(1.0) and circular_r(-b + 1.0, b) == pytest.approx(-1.0)
    assert circular_r(b + 2 * np.pi, b) == pytest.approx(1.0)  # blind to wrapping
    assert abs(circular_r(rng.uniform(-np.pi, np.pi, 4000), rng.uniform(-np.pi, np.pi, 4000))) < 0.05
    # a smooth one-to-one map of the circle, a little off linear: Fisher-Lee sees it, JS's sin-correlation does not
    b = rng.uniform(-np.pi, np.pi, 4000)
    a = -b + 0.6 * np.sin(b)
    assert circular_r(a, b) < -0.8
    assert circular_r(a, b, method="js") > -0.6
    with pytest.raises(ValueError):
        circular_r(a, b, method="pearson")


def test_angle_maps_wrap_to_half_open_interval():
    a = np.array([-np.pi, np.pi, 3 * np.pi, -3 * np.pi + 1e-9, 0.5 + 4 * np.pi, -7.0])
    w = wrap_angle(a)
    assert (w > -np.pi).all() and (w <= np.pi).all()
    np.testing.assert_allclose(np.exp(1j * w), np.exp(1j * a), atol=1e-12)
    np.testing.assert_allclose(w[[0, 1, 2, 4]], [np.pi, np.pi, np.pi, 0.5], atol=1e-9)


def test_vector_encoder_gives_the_atan2_of_its_two_mean_outputs():
    torch.manual_seed(0)
    enc = Encoder(16, 8, 1, 3, angle="vector")  # angle + 2 content latents from a 4-wide mean head
    assert enc.mean.out_features == 4 and enc.logsd.out_features == 3
    x = torch.randn(5, 16)
    m, ls = enc(x)
    raw = enc.mean(torch.tanh(enc.dense[0](x)))
    torch.testing.assert_close(m[:, 0], torch.atan2(raw[:, 1], raw[:, 0]))
    torch.testing.assert_close(m[:, 1:], raw[:, 2:])
    assert ls.shape == (5, 3)
    # the angle output stays in [-pi, pi]: no wrap-around to learn
    assert float(m[:, 0].detach().abs().max()) <= math.pi


def _fake(epoch, r, c, loss=1.0):
    return {"epoch": epoch, "r_best": r, "circ_r": c, "loss": loss, "val_loss": None, "r": [r]}


def test_stopping_rule_picks_the_epoch_with_the_documented_score():
    hist = [_fake(1, -0.99, 0.30), _fake(2, -0.93, -0.91), _fake(3, 0.95, 0.85), _fake(4, float("nan"), 0.99)]
    assert [stop_score(h, "latent+rotation") for h in hist[:3]] == pytest.approx([0.30, 0.91, 0.85])
    assert choose_epoch(hist, "latent") == 1  # the paper: |r| alone
    assert choose_epoch(hist, "latent+rotation") == 2  # min(|r|, |circ r|)
    # no COM angle: the combined rule falls back to |r|; no COM at all: the lowest loss
    assert choose_epoch([_fake(1, 0.5, None), _fake(2, -0.7, None)], "latent+rotation") == 2
    assert choose_epoch([_fake(1, None, None, 3.0), _fake(2, None, None, 2.0)], "latent+rotation") == 2
    assert choose_epoch([], "latent") is None


def test_mode_defaults_and_old_model_configs():
    f, d = RRVAEConfig(mode="fast"), RRVAEConfig()
    assert (f.angle, f.stop_rule) == ("linear", "latent+rotation")
    assert (d.angle, d.stop_rule) == ("linear", "latent")  # faithful: atomai's angle, the paper's rule
    assert RRVAEConfig.from_dict(f.to_dict()) == f
    old = {k: v for k, v in f.to_dict().items() if k not in ("angle", "stop_rule")}  # a file from before
    assert (RRVAEConfig.from_dict(old).angle, RRVAEConfig.from_dict(old).stop_rule) == ("linear", "latent")
    v = RRVAEConfig(mode="fast", angle="vector")
    assert RRVAEConfig.from_dict(v.to_dict()).angle == "vector"
    with pytest.raises(DataError, match="angle"):
        RRVAEConfig(angle="polar")
    with pytest.raises(DataError, match="stop_rule"):
        RRVAEConfig(stop_rule="loss")


def _blob(n, angle):
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    out = np.zeros((n, n))
    for (r, t, s, a) in [(0.45, 0.0, 0.12, 1.0), (0.3, 2.2, 0.10, 0.6), (0.0, 0.0, 0.25, 0.4)]:
        out += a * np.exp(-((yy - c + r * c * math.sin(t + angle)) ** 2 + (xx - c - r * c * math.cos(t + angle)) ** 2)
                          / (2 * (s * n) ** 2))
    return out


@pytest.fixture(scope="module")
def full_turn():
    """One pattern turned by known angles spread over the whole circle (the wrap-around is in the data)."""
    rng = np.random.default_rng(2)
    ang = rng.uniform(-np.pi, np.pi, (16, 16))
    pats = np.stack([_blob(12, a) for a in ang.ravel()]).reshape(16, 16, 12, 12).astype(np.float32)
    return pats, ang


def _train(pats, ang, **kw):
    cfg = RRVAEConfig(**{**dict(mode="fast", angle="vector", epochs=8, pca_components=0, threads=1, hidden=32,
                                batch_size=16, latent_dim=1, precision="float32"), **kw})
    m = RRVAE(cfg)
    m.fit(pats, com_magnitude=np.cos(ang), com_angle=ang)
    return m


def test_vector_angle_follows_known_rotations_over_the_full_circle(full_turn, tmp_path):
    pats, ang = full_turn
    m = _train(pats, ang)
    # the recorded circ r is the Fisher-Lee r of the encoded angle (a pattern drawn at angle a is the
    # canonical one turned by -a, so the angle map turns against the pattern: r near -1)
    enc = m.encode(pats)
    r = circular_r(enc.angle, ang)
    assert m.history[-1]["circ_r"] == pytest.approx(r, abs=1e-6)
    assert r < -0.95, [h["circ_r"] for h in m.history]
    np.testing.assert_allclose(np.exp(1j * enc.angle), np.exp(1j * enc.angle_unwrapped), atol=1e-5)
    assert m.best_epoch == choose_epoch(m.history, "latent+rotation")
    # the parametrisation survives save/load (the file's config says "vector")
    m.save(tmp_path / "v.rrvae")
    back = RRVAE.load(tmp_path / "v.rrvae")
    assert back.config.angle == "vector"
    np.testing.assert_array_equal(back.encode(pats).angle, enc.angle)


def test_stop_rules_choose_from_the_same_history(full_turn):
    pats, ang = full_turn
    m = _train(pats, ang, epochs=3, stop_rule="latent")
    h = m.history
    assert all(set(r) >= {"r_best", "circ_r"} for r in h)
    assert m.best_epoch == max(h, key=lambda r: abs(r["r_best"]))["epoch"]
    # the latent map's recorded r is that of the restored epoch's encoding
    m.restore(m.best_epoch)
    r = pearson_r(m.encode(pats).latents[0], np.cos(ang))
    assert abs(r) == pytest.approx(abs(next(x for x in h if x["epoch"] == m.best_epoch)["r_best"]), abs=1e-6)
    json.dumps(h)  # plain numbers (results files store the history as JSON)
