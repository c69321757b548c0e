"""The built-in phase-object simulator (napari_4dstem.sample).

References: analytic properties (unitarity, aperture radius, Poisson statistics, a Gaussian
blur computed by hand), physics (attractive potential: COM toward atoms; a vacancy weakens and a
Si dopant strengthens the deflection) and the abTEM multislice simulation in the shared data.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_4dstem import Dataset4D, DataError
from napari_4dstem.sample import (graphene_supercell, interaction_constant, make_sample, sample_kinds,
                                  simulate_4dstem, wavelength_A)


def com(data):
    """First moment about the detector centre (N - 1) / 2, in detector pixels: (com_y, com_x)."""
    ny, nx = data.shape[-2:]
    ky, kx = np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2
    s = data.sum((-2, -1))
    return (data.sum(-1) * ky).sum(-1) / s, (data.sum(-2) * kx).sum(-1) / s


def vacuum(detector_shape=(64, 64), **kw):
    empty = (np.zeros((0, 2)), [], (20.0, 20.0), (10.0, 10.0), 0.1, (1, 1))
    return simulate_4dstem(*empty, detector_shape, **kw)[0, 0]


def test_constants_match_published_values():
    # Kirkland (2010) table 2.2 / abTEM JSON: 60 kV -> 0.04866 Å; sigma(60 kV) ~ 1.1e-3 rad/(V Å)
    assert wavelength_A(60e3) == pytest.approx(0.04866060485948613, rel=1e-5)
    assert wavelength_A(200e3) == pytest.approx(0.02508, rel=1e-3)
    assert interaction_constant(200e3) == pytest.approx(7.29e-4, rel=5e-3)  # Kirkland: 0.00072884


def test_vacuum_probe_is_the_aperture_disc():
    pat = vacuum()
    assert pat.sum() == pytest.approx(1.0, abs=1e-5)  # unit probe, disc entirely on the detector
    # the aperture edge (half amplitude) at 31 / 2.5 = 12.4 px: the amplitude's area is pi r^2
    amp = np.sqrt(pat)
    assert math.sqrt(amp.sum() / amp.max() / math.pi) == pytest.approx(31.0 / 2.5, abs=0.05)
    # edge pixels of row 31 (0.5 px off axis): amplitude linear over one pixel, 1/2 at 12.4 px
    r = np.hypot(0.5, np.array([11.5, 12.5, 13.5]))
    np.testing.assert_allclose(pat[31, [43, 44, 45]] / pat.max(), np.clip(12.9 - r, 0, 1) ** 2, atol=1e-5)
    cy, cx = com(pat)
    assert abs(cy) < 1e-4 and abs(cx) < 1e-4  # centred on (31.5, 31.5)
    # other energy, aperture and an odd detector keep the disc radius and centre
    pat = vacuum((33, 33), semiangle_mrad=20.0, detector_pixel_mrad=2.0, energy_ev=200e3)
    amp = np.sqrt(pat)
    assert math.sqrt(amp.sum() / amp.max() / math.pi) == pytest.approx(10.0, abs=0.05)
    cy, cx = com(pat)
    assert abs(cy) < 1e-4 and abs(cx) < 1e-4  # centred on pixel (16, 16)


def test_normalisation_unitary_and_detector_loss():
    pos, cell = graphene_supercell(8, 5)
    args = (pos, ["C"] * len(pos), cell, (10.0, 10.0), 0.3, (3, 3))
    # a detector as large as the simulation window (band limit 160 mrad -> 192 px) collects
    # every electron: the exit wave keeps the probe's norm
    full = simulate_4dstem(*args, detector_shape=(192, 192), max_angle_mrad=160.0)
    np.testing.assert_allclose(full.sum((2, 3)), 1.0, atol=3e-6)
    small = simulate_4dstem(*args, detector_shape=(64, 64))
    s = small.sum((2, 3))
    # what falls outside +-80 mrad is small (abTEM: mean 0.99978) and positive
    assert np.all(s < 1.0) and np.all(s > 0.998)
    np.testing.assert_allclose(small, full[:, :, 64:128, 64:128], rtol=1e-4, atol=1e-9)


def test_dataset_calibration_provenance_metadata():
    ds = make_sample("graphene_vacancy", scan_shape=(48, 48))
    assert isinstance(ds, Dataset4D) and ds.shape == (48, 48, 64, 64) and ds.dtype == np.float32
    cal = ds.calibration
    assert cal.scan_step == (0.15, 0.15) and cal.scan_unit == "Å"
    assert cal.detector_pixel == (2.5, 2.5) and cal.detector_unit == "mrad"
    assert cal.beam_energy_ev == 60e3 and cal.convergence_semiangle_mrad == 31.0
    assert cal.detector_center == (31.5, 31.5)
    assert ds.provenance.reader == "sample" and ds.provenance.options["kind"] == "graphene_vacancy"
    assert set(ds.provenance.options) >= {"scan_shape", "detector_shape", "scan_step_A", "energy_ev", "dose",
                                          "semiangle_mrad", "detector_pixel_mrad", "source_size_A", "seed"}
    json.dumps(ds.provenance.to_dict())
    d = ds.metadata["defect"]
    assert d["kind"] == "vacancy" and (d["y_px"], d["x_px"]) == (24.0, 24.0)
    atoms = np.array([(a["y_px"], a["x_px"]) for a in ds.metadata["atoms"]])
    # three neighbours 1.42 Å from the vacancy, none on it
    dist = np.hypot(*(atoms - 24.0).T) * 0.15
    assert dist.min() == pytest.approx(2.46 / math.sqrt(3), abs=1e-3) and np.sum(dist < 1.5) == 3
    # the caller gets its own writable copy
    ds.data[:] = 0
    assert make_sample("graphene_vacancy").data.sum() > 1000
    assert set(sample_kinds()) == {"graphene_vacancy", "graphene_pristine", "graphene_si"}


def test_bad_parameters_raise_data_error():
    with pytest.raises(DataError, match="graphene_vacancy"):
        make_sample("graphite")
    with pytest.raises(DataError):
        make_sample(dose=-1)
    with pytest.raises(DataError):
        make_sample(scan_shape=(0, 4))


def test_com_points_toward_nearest_atom():
    ds = make_sample("graphene_pristine")
    cy, cx = com(ds.data)
    atoms = np.array([(a["y_px"], a["x_px"]) for a in ds.metadata["atoms"]])
    step, margin = 0.15, 10
    cos = []
    for iy in range(margin, 48 - margin):
        for ix in range(margin, 48 - margin):
            v = atoms - (iy, ix)
            d = np.hypot(*v.T) * step
            j = np.argsort(d)
            if 0.2 < d[j[0]] < 0.6 and d[j[1]] > 1.0:
                u = v[j[0]] / np.hypot(*v[j[0]])
                cos.append((cy[iy, ix] * u[0] + cx[iy, ix] * u[1]) / np.hypot(cy[iy, ix], cx[iy, ix]))
    cos = np.array(cos)
    assert len(cos) > 50
    assert cos.min() > 0.8 and cos.mean() > 0.97


def test_com_toward_atoms_in_abtem_data_too(graphene_npz):
    # The same convention holds for the independent abTEM simulation (the sign reference).
    with np.load(graphene_npz) as z:
        ab = z["clean"]
    meta = json.loads(graphene_npz.with_suffix(".json").read_text())
    atoms = np.array([(a["y_px"], a["x_px"]) for a in meta["ground_truth"]["atoms"]])
    cy, cx = com(ab)
    cos = []
    for ay, ax in atoms:
        for dy, dx in ((0, 3), (3, 0), (0, -3), (-3, 0)):
            iy, ix = int(round(ay + dy)), int(round(ax + dx))
            if 0 <= iy < 64 and 0 <= ix < 64:
                cos.append(((ay - iy) * cy[iy, ix] + (ax - ix) * cx[iy, ix])
                           / math.hypot(ay - iy, ax - ix) / math.hypot(cy[iy, ix], cx[iy, ix]))
    assert min(cos) > 0.8


def _ring_mean(ds, r_A=(0.2, 0.6)):
    cy, cx = com(ds.data)
    mag = np.hypot(cy, cx)
    d = ds.metadata["defect"]
    yy, xx = np.mgrid[:mag.shape[0], :mag.shape[1]]
    r = np.hypot(yy - d["y_px"], xx - d["x_px"]) * ds.calibration.scan_step[0]
    return mag[(r > r_A[0]) & (r < r_A[1])].mean()


def test_vacancy_and_dopant_change_the_deflection_at_the_site():
    pristine = _ring_mean(make_sample("graphene_pristine"))
    vacancy = _ring_mean(make_sample("graphene_vacancy"))
    si = _ring_mean(make_sample("graphene_si"))
    # around a carbon site the beam is pulled toward the atom; with the atom gone, much less;
    # silicon (Z = 14) pulls harder than carbon (Z = 6)
    assert vacancy < 0.5 * pristine
    assert si > 1.5 * pristine


def test_noise_is_poisson_at_the_dose_and_seeded():
    kw = dict(kind="graphene_pristine", scan_shape=(16, 16), dose=1e4)
    a, b = make_sample(seed=1, **kw), make_sample(seed=1, **kw)
    c = make_sample(seed=2, **kw)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert np.all(a.data == np.round(a.data)) and a.data.min() >= 0
    clean = make_sample("graphene_pristine", scan_shape=(16, 16)).data
    totals = a.data.sum((2, 3))
    expected = 1e4 * clean.sum((2, 3))
    # 256 patterns: the mean total is the dose within 4 standard errors; variance ~ mean (Poisson)
    assert abs(totals.mean() - expected.mean()) < 4 * math.sqrt(1e4 / 256)
    assert np.var(totals - expected) == pytest.approx(1e4, rel=0.3)


def test_source_size_blur_is_a_gaussian_over_scan_positions():
    fwhm, step = 0.45, 0.15
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2))) / step  # 1.27 px
    blurred = make_sample("graphene_pristine", scan_shape=(8, 8), detector_shape=(16, 16),
                          source_size_A=fwhm).data
    pad = 6
    big = make_sample("graphene_pristine", scan_shape=(8 + 2 * pad, 8 + 2 * pad), detector_shape=(16, 16)).data
    # by hand: normalised Gaussian weights (truncated at 3 sigma) around scan pixel (3, 5)
    yy, xx = np.mgrid[-pad:pad + 1, -pad:pad + 1]
    w = np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2)) * (np.maximum(abs(yy), abs(xx)) <= int(3 * sigma + 0.5))
    w /= w.sum()
    y, x = 3 + pad, 5 + pad
    ref = np.tensordot(w, big[y - pad:y + pad + 1, x - pad:x + pad + 1], axes=([0, 1], [0, 1]))
    np.testing.assert_allclose(blurred[3, 5], ref, rtol=2e-3, atol=1e-7)


def test_matches_abtem_graphene(graphene_npz):
    """Simulate the abTEM field of view (32 x 32 of its 64 x 64 scan) and compare COM maps."""
    meta = json.loads(graphene_npz.with_suffix(".json").read_text())
    with np.load(graphene_npz) as z:
        ab = z["clean"][:32, :32]
    pos, cell = graphene_supercell(16, 9)
    np.testing.assert_allclose(cell, meta["supercell_A"][:2], rtol=1e-9)
    step, origin = meta["scan_step_A"], np.array(meta["scan_origin_A"])
    # our lattice reproduces abTEM's atom positions in the field of view
    ours = {(round((p[1] - origin[1]) / step, 2), round((p[0] - origin[0]) / step, 2)) for p in pos}
    theirs = {(round(a["y_px"], 2), round(a["x_px"], 2)) for a in meta["ground_truth"]["atoms"]}
    assert theirs <= ours
    mine = simulate_4dstem(pos, ["C"] * len(pos), cell, origin, step, (32, 32), (64, 64),
                           meta["detector_pixel_mrad"], meta["energy_eV"], meta["semiangle_mrad"])
    am, mm = np.hypot(*com(ab)), np.hypot(*com(mine))
    assert mm.mean() / am.mean() == pytest.approx(1.0, abs=0.1)  # measured 1.02 (full scan)
    assert np.corrcoef(am.ravel(), mm.ravel())[0, 1] > 0.99  # measured 0.9999
    assert np.corrcoef(ab.ravel(), mine.ravel())[0, 1] > 0.99  # whole patterns
