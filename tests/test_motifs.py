"""Zernike motifs: classes, class averages, the outlier map, the patch mode."""
from __future__ import annotations

import numpy as np
import pytest

import napari_4dstem
from napari_4dstem import DataError, make_sample
from napari_4dstem.motifs import (auto_smooth, cluster, find_atoms, iter_class_means, nearest_neighbour_distance,
                                  noise_ratio, patch_motifs, zernike_motifs)
from napari_4dstem.rrvae.maps import zscore_at


@pytest.fixture(scope="module")
def vacancy():
    return make_sample("graphene_vacancy", scan_shape=(48, 48))  # vacancy at scan pixel (24, 24)


@pytest.fixture(scope="module")
def vacancy_motifs(vacancy):
    return napari_4dstem.zernike_motifs(vacancy)


def test_outlier_map_singles_out_the_vacancy(vacancy, vacancy_motifs):
    r = vacancy_motifs
    peak = np.unravel_index(int(np.argmax(r.outlier)), r.outlier.shape)
    assert np.hypot(peak[0] - 24, peak[1] - 24) <= 4
    assert zscore_at(r.outlier, (24, 24), 4) > 5
    # far from the defect the map is flat (a lattice repeats its neighbourhoods)
    far = r.outlier.copy()
    yy, xx = np.indices(far.shape)
    assert far[np.hypot(yy - 24, xx - 24) > 12].max() < 0.5 * r.outlier.max()
    assert np.isclose(np.median(r.outlier), 1.0, rtol=1e-3)


def test_shapes_labels_and_class_means_equal_direct_averages(vacancy, vacancy_motifs):
    r = vacancy_motifs
    data = np.asarray(vacancy.data, np.float64)
    assert r.labels.shape == (48, 48) and r.outlier.shape == (48, 48) and r.angle.shape == (48, 48)
    assert r.pcs.shape[1:] == (48, 48) and r.pcs.shape[0] == r.parameters["n_components"]
    assert 1 <= r.n_classes <= 8 and r.counts.sum() == 48 * 48
    assert set(np.unique(r.labels)) == set(range(r.n_classes))
    assert r.class_means.shape == (r.n_classes, 64, 64)
    for c in range(r.n_classes):
        np.testing.assert_allclose(r.class_means[c], data[r.labels == c].mean(0), rtol=1e-5, atol=1e-9)
    # the class-mean moments are the mean moments of the members
    zm = r.zernike.moments.reshape(-1, r.zernike.moments.shape[-1])
    np.testing.assert_allclose(r.class_moments[1], zm[r.labels.ravel() == 1].mean(0))
    # the explained variance of the first PCs is sorted and the BIC was computed for every k tried
    assert np.all(np.diff(r.explained) <= 1e-12) and len(r.selection) == 8


def test_classes_follow_the_lattice(vacancy, vacancy_motifs):
    """Classes repeat with the lattice: a shift by one lattice vector maps most labels onto themselves."""
    ds, r = vacancy, vacancy_motifs
    # the lattice repeats along x every 16.4 px here (the atoms' x_px: 7.6, 24.0, 40.4, ...)
    xs = sorted({round(a["x_px"], 2) for a in ds.metadata["atoms"] if abs(a["y_px"] - 5.06) < 0.1})
    shift = int(round(xs[1] - xs[0]))
    same = (r.labels[:, shift:] == r.labels[:, :-shift]).mean()
    half = (r.labels[:, shift // 2:] == r.labels[:, :-(shift // 2)]).mean()
    assert same > 0.6 and same > half + 0.3


def test_iter_class_means_in_blocks():
    rng = np.random.default_rng(0)
    data = rng.random((6, 5, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (6, 5))
    ds = napari_4dstem.as_dataset(data)
    means = napari_4dstem.run_steps(iter_class_means(ds, labels, 3, block_bytes=200))
    for c in range(3):
        np.testing.assert_allclose(means[c], data[labels == c].mean(0), rtol=1e-6)


@pytest.mark.parametrize("method", ["gmm", "kmeans", "hdbscan"])
def test_cluster_methods_find_three_blobs(method):
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [6, 0], [0, 6]])
    x = np.concatenate([c + rng.normal(size=(150, 2)) for c in centres])
    truth = np.repeat(np.arange(3), 150)
    labels, dist, sel, _ = cluster(x, "auto", method, seed=0)
    # every true blob is mostly one label, and different blobs get different labels
    major = [np.bincount(labels[truth == t]).argmax() for t in range(3)]
    assert len(set(major)) == 3
    assert np.mean([np.mean(labels[truth == t] == major[t]) for t in range(3)]) > 0.9
    assert dist.shape == (450,) and np.all(dist >= 0)
    if method == "gmm":
        assert min(sel, key=sel.get) == "3"  # BIC picks 3


def test_noise_ratio_and_auto_smoothing():
    clean = make_sample("graphene_pristine", scan_shape=(12, 12))
    noisy = make_sample("graphene_pristine", scan_shape=(12, 12), dose=1e4, seed=2)
    zc, zn = napari_4dstem.zernike_moments(clean), napari_4dstem.zernike_moments(noisy)
    assert noise_ratio(clean, zc, "moments") is None  # not counts
    rho = noise_ratio(noisy, zn, "moments")
    assert rho > 1  # 1e4 e/pattern: graphene's signal is buried
    assert auto_smooth(None) == 0 and auto_smooth(rho) >= 1.0 and auto_smooth(1e9) == 2.5


def test_motifs_from_moments_and_bad_parameters(vacancy):
    z = napari_4dstem.zernike_moments(vacancy, order=4)
    r = zernike_motifs(z, n_classes=3, method="kmeans")
    assert r.class_means is None and r.n_classes == 3 and r.parameters["smooth_used"] == 0
    for kw in ({"method": "spectral"}, {"features": "pixels"}, {"n_components": 0}, {"smooth": -1},
               {"n_classes": 0}):
        with pytest.raises(DataError):
            zernike_motifs(z, **kw)


def test_invariant_features_put_rotated_patterns_in_one_class():
    """Patterns and the same patterns turned by 90 degrees: with invariant features they share their class."""
    base = np.asarray(make_sample("graphene_pristine", scan_shape=(8, 8)).data)
    both = np.concatenate([base, np.rot90(base, 1, axes=(2, 3))], axis=1)  # (8, 16, 64, 64)
    r = zernike_motifs(both, features="invariant", n_classes=3, class_means=False, smooth=0)
    assert np.mean(r.labels[:, :8] == r.labels[:, 8:]) > 0.9
    rm = zernike_motifs(both, features="moments", n_classes=3, class_means=False, smooth=0)
    assert np.mean(rm.labels[:, :8] == rm.labels[:, 8:]) < 0.9  # the orientation counts here


def _lattice_image(n=72, a=12.0, odd=None, seed=0):
    """A hexagonal lattice of Gaussian atoms; ``odd`` = index of an atom drawn elongated (a different motif)."""
    rng = np.random.default_rng(seed)
    pts = [(i * a * np.sqrt(3) / 2, j * a + (i % 2) * a / 2) for i in range(-1, 9) for j in range(-1, 8)]
    pts = [(y + 4, x + 4) for y, x in pts if 0 <= y + 4 < n and 0 <= x + 4 < n]
    yy, xx = np.indices((n, n), dtype=np.float64)
    img = np.zeros((n, n))
    for k, (y, x) in enumerate(pts):
        if k == odd:
            img += np.exp(-((yy - y) ** 2 / 3.0 + (xx - x) ** 2 / 18.0))
            img += 0.8 * np.exp(-((yy - y) ** 2 + (xx - x - 4) ** 2) / 2.0)
        else:
            img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 6.0)
    return img + 0.01 * rng.normal(size=img.shape), np.array(pts)


def test_find_atoms_and_nearest_neighbour_distance():
    img, pts = _lattice_image()
    assert abs(nearest_neighbour_distance(img) - 12.0) < 1.0
    found = find_atoms(img)
    inner = pts[(pts[:, 0] > 3) & (pts[:, 0] < 68) & (pts[:, 1] > 3) & (pts[:, 1] < 68)]
    d = np.hypot(*(found[:, None] - inner[None]).transpose(2, 0, 1))
    assert np.all(d.min(0) < 0.5)  # every inner atom found within half a pixel
    assert len(found) <= len(pts)


def test_patch_mode_gives_the_odd_atom_its_own_class():
    _, pts = _lattice_image()
    odd = int(np.argmin(np.hypot(pts[:, 0] - 36, pts[:, 1] - 36)))  # an atom near the centre
    img, pts = _lattice_image(odd=odd)
    res = patch_motifs(img, n_classes=2)
    k = int(np.argmin(np.hypot(*(res.positions - pts[odd]).T)))
    assert np.hypot(*(res.positions[k] - pts[odd])) < 3.5  # its satellite pulls the centroid
    # the odd atom falls in a minority class (with at most a neighbour that sees its satellite)
    counts = np.bincount(res.labels)
    assert res.labels[k] != counts.argmax() and counts[res.labels[k]] <= 3 and counts.max() >= len(res.labels) - 3
    assert res.class_means.shape[1:] == (2 * res.patch_radius + 1,) * 2
    # the same image turned by 90 degrees: same split (rotation-invariant features)
    res90 = patch_motifs(np.rot90(img).copy(), n_classes=2)
    p90 = (img.shape[1] - 1 - pts[odd][1], pts[odd][0])  # np.rot90 maps (y, x) to (W - 1 - x, y)
    k90 = int(np.argmin(np.hypot(*(res90.positions - p90).T)))
    c90 = np.bincount(res90.labels)
    assert res90.labels[k90] != c90.argmax() and c90[res90.labels[k90]] <= 3


# -- results file, pipeline, command line ---------------------------------------------------------
def test_analyze_writes_the_zernike_group_and_reads_it_back(tmp_path):
    import h5py

    from napari_4dstem import load_results
    from napari_4dstem.pipeline import analyze
    from napari_4dstem.zernike_io import read_zernike_group

    ds = make_sample("graphene_vacancy", scan_shape=(12, 12), detector_shape=(32, 32))
    out = tmp_path / "r.h5"
    res = analyze(ds, {"run_rrvae": False, "run_zernike": True, "zernike": {"order": 6, "n_classes": 3}}, out=out)
    assert res.parameters["zernike"]["order"] == 6 and res.parameters["zernike"]["n_classes_used"] == 3
    with h5py.File(out) as f:
        g = f["zernike"]
        for name in ("features", "angle", "labels", "outlier", "class_means"):
            assert name in g, name
        assert list(g["class_means"].attrs["axes"]) == ["class", "det_y", "det_x"]
        assert g["class_means"].shape == (3, 32, 32) and g["labels"].shape == (12, 12)
        assert g.attrs["indices"].shape == (16, 2)
    back = read_zernike_group(out)
    assert back["parameters"]["order"] == 6
    np.testing.assert_array_equal(back["labels"], res.maps["zernike/labels"])
    # the class means are the means of the member patterns
    data = np.asarray(ds.data, np.float64)
    for c in range(3):
        np.testing.assert_allclose(back["class_means"][c], data[back["labels"] == c].mean(0), rtol=1e-5, atol=1e-8)
    assert "zernike/outlier" in load_results(out).maps


def test_write_zernike_group_from_a_motif_result(tmp_path, vacancy_motifs):
    import h5py

    from napari_4dstem.zernike_io import read_zernike_group, write_zernike_group

    with h5py.File(tmp_path / "m.h5", "w") as f:
        write_zernike_group(f, vacancy_motifs)
    d = read_zernike_group(tmp_path / "m.h5")
    np.testing.assert_allclose(d["outlier"], vacancy_motifs.outlier)
    assert d["features"].shape == np.moveaxis(vacancy_motifs.features, -1, 0).shape
    assert d["parameters"]["counts"] == vacancy_motifs.counts.tolist()
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    from napari_4dstem import ReaderError

    with pytest.raises(ReaderError):
        read_zernike_group(tmp_path / "empty.h5")


def test_cli_zernike_flag_and_config_section(tmp_path):
    from napari_4dstem.cli import analyze_params, build_parser
    from napari_4dstem.pipeline import load_config

    cfg = tmp_path / "p.toml"
    cfg.write_text("[zernike]\norder = 6\nmethod = \"kmeans\"\n")
    args = build_parser().parse_args(["analyze", "in.npy", "-o", "r.h5", "--zernike", "--no-rrvae",
                                      "--config", str(cfg)])
    p = analyze_params(args)
    assert p["run_zernike"] is True and p["run_rrvae"] is False and p["zernike"]["order"] == 6
    cfg.write_text("[zernike]\norderr = 6\n")
    with pytest.raises(DataError, match="orderr"):
        load_config(cfg)


def test_motifs_dock_shows_labels_outlier_and_class_average(make_napari_viewer, qtbot):
    from napari_4dstem.gui._motifs_widget import ATOMS, LABELS, MEAN, OUTLIER, MotifsWidget, find_dataset
    from napari_4dstem.gui._reader import dataset_layers

    viewer = make_napari_viewer()
    w = MotifsWidget(viewer)
    w.run()  # no data yet: a message, no crash
    assert "open" in w.status.text()
    ds = make_sample("graphene_vacancy", scan_shape=(16, 16), detector_shape=(32, 32))
    for data, kw, kind in dataset_layers(ds, navigator=np.asarray(ds.data).sum((2, 3))):
        getattr(viewer, f"add_{kind}")(data, **kw)
    assert find_dataset(viewer) is ds
    w.classes.setValue(3)
    worker = w.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert w.result is not None and w.result.n_classes == 3
    np.testing.assert_array_equal(viewer.layers[LABELS].data, w.result.labels + 1)
    assert viewer.layers[OUTLIER].data.shape == (16, 16)
    w.pick.setValue(2)
    np.testing.assert_allclose(viewer.layers[MEAN].data, w.result.class_means[2], rtol=1e-6)
    assert viewer.layers[MEAN].metadata["class"] == 2
    # picking a label in the labels layer shows that class
    viewer.layers[LABELS].selected_label = 2
    assert w.pick.value() == 1 and viewer.layers[MEAN].metadata["class"] == 1
    layer = w.atoms()
    assert layer is None or (layer.name == ATOMS and len(layer.data) == len(layer.properties["motif_class"]))


def test_zernike_params_table_matches_the_function():
    # the [zernike] section of params.toml lists exactly zernike_motifs' keywords, with its choices
    import inspect

    from napari_4dstem import motifs
    from napari_4dstem.params import TABLE, check_params

    keys = set(inspect.signature(motifs.zernike_motifs).parameters) - {"data", "callback", "cancel"}
    assert set(TABLE["zernike"]) == keys
    for m in motifs.METHODS:
        check_params({"zernike": {"method": m}})
    for f in motifs.FEATURES:
        check_params({"zernike": {"features": f}})
    with pytest.raises(DataError, match="order"):
        check_params({"zernike": {"order": "six"}})
    with pytest.raises(DataError, match="run_zernike"):
        check_params({"run_zernike": "yes"})
