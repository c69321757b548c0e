"""Virtual detectors against direct sums; default radii; units; bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_4dstem import Calibration, Dataset4D
from napari_4dstem.errors import DataError
from napari_4dstem.virtual import (
    annulus_mask, find_bf_disc, navigator_image, virtual_image, virtual_images,
)


def direct_sum(data, mask):
    """Independent reference: loop over patterns, boolean indexing, float64."""
    out = np.zeros(data.shape[:2])
    for a in range(data.shape[0]):
        for b in range(data.shape[1]):
            out[a, b] = data[a, b][mask].astype(np.float64).sum()
    return out


def test_bf_disc_equals_direct_sum(graphene_clean):
    d = graphene_clean[:16, :16]
    res = virtual_image(d, "bf", outer=12.0)
    ii, jj = np.indices((64, 64))
    disc = np.hypot(ii - 31.5, jj - 31.5) <= 12.0
    np.testing.assert_array_equal(res.mask, disc)
    np.testing.assert_allclose(res.image, direct_sum(d, disc), rtol=1e-5)
    assert res.parameters["outer"] == 12.0 and res.parameters["kind"] == "bf"


def test_find_bf_disc_on_graphene(graphene_clean):
    # 31 mrad at 2.5 mrad/px -> radius 12.4 px about (31.5, 31.5)
    cy, cx, r = find_bf_disc(graphene_clean.mean(axis=(0, 1)))
    assert abs(cy - 31.5) < 0.3 and abs(cx - 31.5) < 0.3
    assert abs(r - 12.4) < 0.6
    # a synthetic disc off centre
    ii, jj = np.indices((80, 90))
    p = (np.hypot(ii - 30.2, jj - 50.7) <= 15).astype(float) + 0.01
    cy, cx, r = find_bf_disc(p)
    assert abs(cy - 30.2) < 0.2 and abs(cx - 50.7) < 0.2 and abs(r - 15) < 0.5


def test_find_bf_disc_survives_a_dead_row_and_a_hot_pixel():
    # a dead detector row through the disc (chip gap, rebinning seam) once split it and returned half of it,
    # with the centre 5 px off and the radius 8.6 instead of 12.4 (the abTEM defect scans)
    ii, jj = np.indices((64, 64))
    p = (np.hypot(ii - 31.5, jj - 31.5) <= 12.4).astype(float) + 0.001
    p[31] *= 0.3          # a dim row across the disc
    p[:, 32] *= 1.6       # a bright column
    p[5, 5] = 50.0        # a hot pixel far outside
    cy, cx, r = find_bf_disc(p)
    assert abs(cy - 31.5) < 0.3 and abs(cx - 31.5) < 0.3
    assert abs(r - 12.4) < 0.5
    p[31] = 0.0           # a dead row
    cy, cx, r = find_bf_disc(p)
    assert abs(cy - 31.5) < 0.3 and abs(r - 12.4) < 0.5


def test_defaults_work_uncalibrated_and_adf_is_bright_at_atoms(graphene_clean, shared_data):
    imgs = virtual_images(graphene_clean, {"bf": {"kind": "bf"}, "abf": {"kind": "abf"}, "adf": {"kind": "adf"}})
    r_bf = imgs["bf"].parameters["outer"]
    assert 11.5 < r_bf < 13.5
    assert imgs["adf"].parameters["inner"] == pytest.approx(1.1 * r_bf)
    assert imgs["abf"].parameters["inner"] == pytest.approx(r_bf / 2)
    # one pass gives the same as separate calls
    np.testing.assert_allclose(imgs["adf"].image, virtual_image(graphene_clean, "adf").image)
    # bf + everything outside it = total
    total = graphene_clean.sum(axis=(2, 3), dtype=np.float64)
    outside = virtual_image(graphene_clean, "annulus", inner=r_bf + 1e-9).image
    np.testing.assert_allclose(imgs["bf"].image + outside, total, rtol=1e-5)
    meta = json.loads((shared_data / "sim" / "graphene_pristine.json").read_text())
    at = np.array([[a["y_px"] for a in meta["ground_truth"]["atoms"]],
                   [a["x_px"] for a in meta["ground_truth"]["atoms"]]])
    adf = imgs["adf"].image
    assert ndimage.map_coordinates(adf, at, order=1).mean() > adf.mean() + adf.std()


def test_mrad_units_and_calibrated_defaults(graphene_clean):
    d = graphene_clean[:8, :8]
    cal = Calibration(detector_pixel=(2.5, 2.5), detector_unit="mrad", convergence_semiangle_mrad=31.0)
    ds = Dataset4D(d, cal)
    a = virtual_image(ds, "annulus", inner=40, outer=70, units="mrad")
    b = virtual_image(d, "annulus", inner=16, outer=28)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.image, b.image)
    bf = virtual_image(ds, "bf", units="mrad")
    assert bf.parameters["outer"] == 31.0
    np.testing.assert_array_equal(bf.mask, annulus_mask((64, 64), (31.5, 31.5), 0, 12.4))
    # reciprocal-space calibration with the beam energy converts to mrad
    k = 2.5 / (0.04866060485948613 * 1000)
    ds2 = Dataset4D(d, Calibration(detector_pixel=(k, k), detector_unit="1/Å", beam_energy_ev=60000.0))
    c = virtual_image(ds2, "annulus", inner=40, outer=70, units="mrad")
    np.testing.assert_array_equal(c.mask, a.mask)
    with pytest.raises(DataError, match="mrad"):
        virtual_image(d, "bf", outer=10, units="mrad")


def test_arbitrary_mask_and_integer_overflow():
    rng = np.random.default_rng(0)
    d = rng.integers(60000, 65536, size=(3, 4, 32, 32)).astype(np.uint16)
    m = rng.random((32, 32)) > 0.3
    res = virtual_image(d, "mask", mask=m)
    exact = np.array([[int(d[a, b][m].astype(np.int64).sum()) for b in range(4)] for a in range(3)])
    assert exact.max() > 2**24  # beyond float32's exact integers and uint16
    np.testing.assert_array_equal(res.image, exact)
    w = rng.random((32, 32))
    np.testing.assert_allclose(virtual_image(d, "mask", mask=w).image,
                               (d * w).sum(axis=(2, 3)), rtol=1e-12)


def test_navigator(graphene_clean):
    d = graphene_clean[:8]
    np.testing.assert_allclose(navigator_image(d), d.sum(axis=(2, 3), dtype=np.float64), rtol=1e-5)
    bf = navigator_image(d, "bf")
    assert bf.shape == (8, 64) and (bf > 0).all()


def test_bad_input():
    d = np.ones((2, 2, 8, 8), np.float32)
    with pytest.raises(DataError, match="shape"):
        virtual_image(d, "mask", mask=np.ones((4, 4), bool))
    with pytest.raises(DataError):
        virtual_image(d, "mask")
    with pytest.raises(DataError, match="unknown"):
        virtual_image(d, "haadf")
    with pytest.raises(DataError, match="no detector pixel"):
        virtual_image(d, "annulus", inner=100, outer=200)
    with pytest.raises(DataError, match="flat"):
        virtual_image(d, "bf")  # uniform patterns: no disc to find
    with pytest.raises(DataError):
        virtual_image(d, "annulus", inner=5, outer=2)


def test_mean_pattern_and_sample_helpers(graphene_clean):
    from napari_4dstem.blocks import iter_mean_pattern, sample_mean_pattern
    from napari_4dstem.dataset import as_dataset
    from napari_4dstem.progress import run_steps

    d = graphene_clean[:8]
    mean, mx = run_steps(iter_mean_pattern(as_dataset(d), block_bytes=2**20, with_max=True))
    np.testing.assert_allclose(mean, d.astype(np.float64).mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_array_equal(mx, d.max(axis=(0, 1)))
    rows = sample_mean_pattern(as_dataset(d), max_frames=128)  # rows 0 and 7
    np.testing.assert_allclose(rows, d[[0, 7]].astype(np.float64).mean(axis=(0, 1)), rtol=1e-6)
