"""COM / DPC: against a per-pattern reference, synthetic rotations/flips, atom columns, bad input."""
from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from scipy import ndimage

from napari_4dstem import Calibration, Dataset4D, center_of_mass
from napari_4dstem.com import integrate_gradient, iter_center_of_mass, rotate_flip
from napari_4dstem.errors import Cancelled, DataError
from napari_4dstem.progress import Progress


def reference_com(data, cy, cx, mask=None):
    """Independent per-pattern first moment (float64 loop)."""
    sy, sx, h, w = data.shape
    ii, jj = np.indices((h, w), dtype=np.float64)
    x = np.zeros((sy, sx))
    y = np.zeros((sy, sx))
    for a in range(sy):
        for b in range(sx):
            p = data[a, b].astype(np.float64)
            if mask is not None:
                p = p * mask
            s = p.sum()
            if s > 0:
                x[a, b] = (p * (jj - cx)).sum() / s
                y[a, b] = (p * (ii - cy)).sum() / s
    return x, y


def angdist(a, b):
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def atoms(shared_data):
    meta = json.loads((shared_data / "sim" / "graphene_pristine.json").read_text())
    at = meta["ground_truth"]["atoms"]
    return np.array([[a["y_px"] for a in at], [a["x_px"] for a in at]])


def test_com_matches_per_pattern_reference(graphene_clean):
    res = center_of_mass(graphene_clean, rotation=0, flip=False)
    rx, ry = reference_com(graphene_clean, 31.5, 31.5)
    assert np.abs(rx).max() > 0.1  # a real signal, not zeros
    np.testing.assert_allclose(res.x, rx, atol=1e-4, rtol=0)
    np.testing.assert_allclose(res.y, ry, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(res.raw_x, res.x)
    assert res.rotation_deg == 0 and res.flip is False and res.units == "px"
    np.testing.assert_allclose(res.magnitude, np.hypot(rx, ry), atol=1e-4)
    np.testing.assert_allclose(res.angle, np.arctan2(ry, rx), atol=1e-3)
    json.dumps(res.parameters)


def test_com_mask_center_and_calibrated_center(graphene_clean):
    d = graphene_clean[:8, :8]
    res = center_of_mass(d, rotation=0, flip=False, mask=("disc", 14), center=(31.0, 32.0))
    ii, jj = np.indices((64, 64))
    disc = np.hypot(ii - 31.0, jj - 32.0) <= 14
    rx, ry = reference_com(d, 31.0, 32.0, disc)
    np.testing.assert_allclose(res.x, rx, atol=1e-4)
    np.testing.assert_allclose(res.y, ry, atol=1e-4)
    # a calibrated detector centre replaces (N-1)/2
    ds = Dataset4D(d, Calibration(detector_center=(30.0, 33.0)))
    res2 = center_of_mass(ds, rotation=0, flip=False)
    rx2, ry2 = reference_com(d, 30.0, 33.0)
    np.testing.assert_allclose(res2.x, rx2, atol=1e-4)
    np.testing.assert_allclose(res2.y, ry2, atol=1e-4)


def test_center_mean_and_descan(graphene_clean):
    d = graphene_clean[:16, :16]
    res = center_of_mass(d, rotation=0, flip=False, center="mean")
    mean_pattern = d.astype(np.float64).mean(axis=(0, 1))
    ii, jj = np.indices((64, 64))
    cy = (mean_pattern * ii).sum() / mean_pattern.sum()
    cx = (mean_pattern * jj).sum() / mean_pattern.sum()
    rx, ry = reference_com(d, cy, cx)
    np.testing.assert_allclose(res.x, rx, atol=1e-4)
    np.testing.assert_allclose(res.parameters["center_used"], [cy, cx], atol=1e-6)
    # a descan ramp added by shifting patterns is removed by the plane fit
    shifted = np.zeros_like(d)
    for a in range(16):
        shifted[a] = np.roll(d[a], a // 4, axis=-1)  # x shift grows with scan row
    plane = center_of_mass(shifted, rotation=0, flip=False, descan="plane")
    none = center_of_mass(shifted, rotation=0, flip=False)
    assert np.abs(none.x.mean()) > 0.5
    assert abs(plane.x.mean()) < 1e-9 and abs(plane.y.mean()) < 1e-9
    mean = center_of_mass(d, rotation=0, flip=False, descan="mean")
    assert abs(mean.x.mean()) < 1e-12


def test_auto_rotation_unmodified(graphene_clean):
    res = center_of_mass(graphene_clean)
    assert angdist(res.rotation_deg, 0.0) < 1.0
    assert res.flip is False
    c = res.curl_curves
    assert c["angles_deg"].shape == c["rms_curl_flip_false"].shape == c["rms_curl_flip_true"].shape == (360,)
    assert angdist(float(np.argmin(c["rms_curl_flip_false"])), 0.0) <= 1 or \
        angdist(float(np.argmin(c["rms_curl_flip_false"])), 180.0) <= 1
    assert c["rms_curl_flip_false"].min() < 0.2 * c["rms_curl_flip_true"].min()


@pytest.mark.parametrize("angle,flip", [(37.0, False), (200.0, True)])
def test_auto_rotation_recovers_synthetic(graphene_clean, angle, flip, atoms):
    d = graphene_clean[..., ::-1] if flip else graphene_clean  # flip = det_x reversed
    d = np.clip(ndimage.rotate(d, angle, axes=(3, 2), reshape=False, order=1), 0, None)
    res = center_of_mass(d)
    assert res.flip is flip
    assert angdist(res.rotation_deg, angle) < 1.0, res.rotation_deg
    ref = center_of_mass(graphene_clean, rotation=0, flip=False)
    # the corrected field matches the unrotated one (rotation of patterns loses the corners)
    assert np.corrcoef(res.x.ravel(), ref.x.ravel())[0, 1] > 0.98
    # and iCOM is bright at the atom columns
    at = ndimage.map_coordinates(res.icom, atoms, order=1)
    assert at.mean() > res.icom.mean() + res.icom.std()


def test_given_rotation_and_flip_are_applied(graphene_clean):
    d = graphene_clean[:12, :12]
    raw = center_of_mass(d, rotation=0, flip=False)
    res = center_of_mass(d, rotation=30.0, flip=True)
    xr, yr = rotate_flip(raw.x, raw.y, 30.0, True)
    t = math.radians(30)
    np.testing.assert_allclose(res.x, -(math.cos(t) * raw.x - math.sin(t) * raw.y))
    np.testing.assert_allclose(res.y, math.sin(t) * raw.x + math.cos(t) * raw.y)
    np.testing.assert_allclose(res.x, xr)
    np.testing.assert_allclose(res.raw_x, raw.x)


def test_divergence_negative_and_icom_bright_at_atoms(graphene_clean, atoms):
    res = center_of_mass(graphene_clean, rotation=0, flip=False)
    div_at = ndimage.map_coordinates(res.divergence, atoms, order=1)
    assert div_at.mean() < res.divergence.mean() - 2 * res.divergence.std()
    icom_at = ndimage.map_coordinates(res.icom, atoms, order=1)
    assert icom_at.mean() > res.icom.mean() + 1.5 * res.icom.std()
    # iCOM correlates with a map of Gaussians at the atom positions
    yy, xx = np.indices(res.icom.shape)
    amap = sum(np.exp(-((yy - ay) ** 2 + (xx - ax) ** 2) / (2 * 3.0**2)) for ay, ax in atoms.T)
    assert np.corrcoef(res.icom.ravel(), amap.ravel())[0, 1] > 0.6


def test_integrate_gradient_recovers_potential():
    yy, xx = np.indices((40, 50), dtype=np.float64)
    phi = np.exp(-((yy - 18) ** 2 + (xx - 27) ** 2) / 30.0) - np.exp(-((yy - 8) ** 2 + (xx - 10) ** 2) / 10.0)
    gy, gx = np.gradient(phi)
    rec = integrate_gradient(gx, gy, highpass=0.0)
    assert np.corrcoef(rec.ravel(), phi.ravel())[0, 1] > 0.99


def test_scan_step_scales_divergence(graphene_clean):
    d = graphene_clean[:10, :10]
    a = center_of_mass(d, rotation=0, flip=False)
    b = center_of_mass(Dataset4D(d, Calibration(scan_step=(0.5, 0.5), scan_unit="Å")), rotation=0, flip=False)
    np.testing.assert_allclose(b.divergence, a.divergence / 0.5)


def test_units_mrad(graphene_clean):
    d = graphene_clean[:6, :6]
    ds = Dataset4D(d, Calibration(detector_pixel=(2.5, 2.5), detector_unit="mrad"))
    a = center_of_mass(ds, rotation=0, flip=False, units="mrad")
    b = center_of_mass(d, rotation=0, flip=False)
    np.testing.assert_allclose(a.x, 2.5 * b.x)
    assert a.units == "mrad"
    with pytest.raises(DataError, match="calibration"):
        center_of_mass(d, rotation=0, flip=False, units="mrad")


def test_zero_frames_and_integer_overflow():
    rng = np.random.default_rng(1)
    d = rng.integers(200, 256, size=(4, 5, 32, 32)).astype(np.uint8)
    d[1, 2] = 0  # an empty frame
    res = center_of_mass(d, rotation=0, flip=False)
    assert np.isfinite(res.x).all() and res.x[1, 2] == 0 and res.y[1, 2] == 0
    assert np.isfinite(res.icom).all() and np.isfinite(res.divergence).all()
    # totals exceed uint8 and uint16: accumulated exactly
    np.testing.assert_array_equal(res.total, d.sum(axis=(2, 3), dtype=np.int64))
    rx, ry = reference_com(d, 15.5, 15.5)
    np.testing.assert_allclose(res.x, rx, atol=1e-10)
    d16 = (d.astype(np.uint16) * 257)
    res16 = center_of_mass(d16, rotation=0, flip=False)
    np.testing.assert_array_equal(res16.total, d16.sum(axis=(2, 3), dtype=np.int64))
    # an all-zero dataset gives finite zeros, also with auto rotation
    z = center_of_mass(np.zeros((5, 5, 8, 8), np.float32))
    assert np.isfinite(z.x).all() and np.isfinite(z.rotation_deg)


def test_bad_input():
    d = np.ones((4, 4, 16, 16), np.float32)
    with pytest.raises(DataError, match="negative"):
        center_of_mass(d - 1.5, rotation=0, flip=False)
    with pytest.raises(DataError, match="shape"):
        center_of_mass(d, mask=np.ones((8, 8), bool))
    with pytest.raises(DataError):
        center_of_mass(d, rotation="sideways")
    with pytest.raises(DataError):
        center_of_mass(d, descan="cubic")
    with pytest.raises(DataError):
        center_of_mass(np.ones((4, 16, 16)))


def test_progress_and_cancel(graphene_clean):
    d = graphene_clean[:16]
    steps = []
    center_of_mass(d, block_bytes=2**20, callback=steps.append)
    assert len(steps) > 1 and all(isinstance(s, Progress) for s in steps)
    assert steps[-1].done == steps[-1].total
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        center_of_mass(d, block_bytes=2**20, cancel=ev)
    gen = iter_center_of_mass(d, rotation=0, flip=False)
    with pytest.raises(StopIteration) as stop:
        while True:
            next(gen)
    assert stop.value.value.x.shape == (16, 64)


def test_blocks_match_single_pass(graphene_clean):
    d = graphene_clean[:20]
    a = center_of_mass(d, rotation=0, flip=False, block_bytes=300_000)
    b = center_of_mass(d, rotation=0, flip=False, block_bytes=2**30)
    np.testing.assert_allclose(a.x, b.x, atol=1e-9)


def _libertem_correction(y, x, scan_rotation, flip_y):
    """LiberTEM's documented transform: rotate_deg(a) @ flip_y applied to (y, x) vectors."""
    a = math.radians(scan_rotation)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    flip = np.array([[-1, 0], [0, 1]]) if flip_y else np.eye(2)
    yt, xt = (rot @ flip) @ np.stack([y.ravel(), x.ravel()])
    return yt.reshape(y.shape), xt.reshape(x.shape)


def _py4dstem_correction(y, x, theta_deg, transpose):
    """py4DSTEM's rotation of (com_x, com_y) = (row, column) components, with optional transpose."""
    t = math.radians(theta_deg)
    cx_, cy_ = (x, y) if transpose else (y, x)  # py4DSTEM's x is our row axis
    rx = math.cos(t) * cx_ - math.sin(t) * cy_
    ry = math.sin(t) * cx_ + math.cos(t) * cy_
    return rx, ry  # (row, column) = our (y, x)


@pytest.mark.parametrize("rot,flip", [(37.0, False), (200.0, True), (123.0, True), (-20.0, False)])
def test_documented_mapping_to_libertem_and_py4dstem(rot, flip):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 5, 6))
    ox, oy = rotate_flip(x, y, rot, flip)
    # docs/conventions.md: LiberTEM scan_rotation = rot (no flip) or 180 - rot with flip_y=True
    sr = rot if not flip else 180.0 - rot
    ly, lx = _libertem_correction(y, x, sr, flip)
    np.testing.assert_allclose((lx, ly), (ox, oy), atol=1e-12)
    # py4DSTEM: com_rotation = -rot (no flip), rot - 90 with transpose=True
    th = -rot if not flip else rot - 90.0
    py, px = _py4dstem_correction(y, x, th, flip)
    np.testing.assert_allclose((px, py), (ox, oy), atol=1e-12)


def test_kernel_paths_agree_with_a_direct_sum(graphene_clean, monkeypatch):
    d = graphene_clean[:24]
    h, w = d.shape[2:]
    ii, jj = np.indices((h, w), dtype=np.float64)

    def direct(data, m):
        f = data.astype(np.float64) * m
        tot = f.sum(axis=(2, 3))
        return (f * (jj - (w - 1) / 2)).sum(axis=(2, 3)) / tot, (f * (ii - (h - 1) / 2)).sum(axis=(2, 3)) / tot

    a = center_of_mass(d, rotation=0, flip=False)  # float data: row and column sums
    ref_x, ref_y = direct(d, 1.0)
    np.testing.assert_allclose(a.raw_x, ref_x, atol=1e-5)
    m = 0.5 + np.random.default_rng(0).random((h, w))  # weights: the dense matrix product
    b = center_of_mass(d, rotation=0, flip=False, mask=m, block_bytes=2**20)
    ref_x, ref_y = direct(d, m)
    np.testing.assert_allclose(b.raw_x, ref_x, atol=1e-5)
    np.testing.assert_allclose(b.raw_y, ref_y, atol=1e-5)
    # counts: the compiled integer kernel, one or two threads, equal to the float64 sums to the last bit
    c16 = np.round(d * 5000).astype(np.uint16)
    ref_x, ref_y = direct(c16, 1.0)
    for t in ("1", "2"):
        monkeypatch.setenv("NAPARI_4DSTEM_THREADS", t)
        c = center_of_mass(c16, rotation=0, flip=False, block_bytes=2**18)
        np.testing.assert_allclose(c.raw_x, ref_x, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(c.raw_y, ref_y, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(c.total, c16.sum(axis=(2, 3), dtype=np.uint64))