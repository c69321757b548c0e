"""Results file (schema, round trip, atomic writes, versioning) and exports (TIFF, PNG, .hspy)."""
from __future__ import annotations

import errno
import hashlib
import json

import h5py
import numpy as np
import pytest

from napari_4dstem import FourDSTEMError, ReaderError
from napari_4dstem.results import (SCHEMA_VERSION, Results, WriteError, load_results, save_results,
                                   source_provenance)


def _results() -> Results:
    rng = np.random.default_rng(0)
    r = Results(shape=(6, 5, 8, 8), dtype="uint16",
                calibration={"scan_step": [0.2, 0.25], "scan_unit": "Å", "detector_pixel": [2.5, 2.5],
                             "detector_unit": "mrad"},
                provenance={"path": "/nowhere/scan.mib", "size": 123, "header_sha256": "ab" * 32},
                versions={"napari-4dstem": "0.1.0"})
    for k in ("x", "y", "magnitude", "angle", "divergence", "curl", "icom"):
        r.maps[f"com/{k}"] = rng.normal(size=(6, 5))
    r.maps["navigator"] = rng.random((6, 5)).astype(np.float32)
    r.maps["virtual/bf"] = rng.random((6, 5))
    r.maps["rrvae/latents"] = rng.normal(size=(2, 6, 5)).astype(np.float32)
    r.units.update({"com/x": "mrad", "com/angle": "rad"})
    r.history = [{"epoch": 1, "loss": 3.5, "r": [0.1, -0.2], "val_loss": None},
                 {"epoch": 2, "loss": 2.5, "r": [0.3, -0.6], "val_loss": None}]
    r.checkpoints = {"last": bytes(range(256)) * 3, "best": b"\x00\x01best"}
    r.parameters = {"preprocess": {"target_size": 64, "mask": ["disc", 3.0]}, "com": {"rotation": "auto"}}
    r.info = {"rrvae_best_epoch": 2}
    return r


def test_round_trip_keeps_everything(tmp_path):
    r = _results()
    p = save_results(tmp_path / "r.h5", r)
    q = load_results(p)
    assert sorted(q.maps) == sorted(r.maps)
    for k, a in r.maps.items():
        np.testing.assert_array_equal(q.maps[k], a)
        assert q.maps[k].dtype == a.dtype
    assert q.units["com/x"] == "mrad" and q.units["com/angle"] == "rad"
    assert q.history == r.history
    assert q.checkpoints == r.checkpoints
    assert q.parameters == r.parameters
    assert q.calibration == r.calibration and q.provenance == r.provenance
    assert q.shape == (6, 5, 8, 8) and q.dtype == "uint16"
    assert q.info == r.info and q.schema_version == SCHEMA_VERSION
    assert q.group("com").keys() == {"x", "y", "magnitude", "angle", "divergence", "curl", "icom"}
    assert q.scan_scale == (0.2, 0.25) and q.scan_unit == "Å"


def test_file_layout_is_the_documented_one(tmp_path):
    p = save_results(tmp_path / "r.h5", _results())
    with h5py.File(p, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert json.loads(f.attrs["parameters"])["preprocess"]["target_size"] == 64
        assert json.loads(f.attrs["calibration"])["scan_unit"] == "Å"
        assert json.loads(f.attrs["provenance"])["header_sha256"] == "ab" * 32
        assert "napari-4dstem" in json.loads(f.attrs["versions"])
        for k in ("x", "y", "magnitude", "angle", "divergence", "curl", "icom"):
            d = f[f"com/{k}"]
            assert d.shape == (6, 5)
            np.testing.assert_allclose(d.attrs["scale"], [0.2, 0.25])
            assert d.attrs["scale_units"] == "Å"
            assert "units" in d.attrs
        assert f["com/x"].attrs["units"] == "mrad"
        assert list(f["rrvae/latents"].attrs["axes"]) == ["channel", "scan_y", "scan_x"]
        np.testing.assert_array_equal(f["rrvae/history/loss"][()], [3.5, 2.5])
        np.testing.assert_array_equal(f["rrvae/history/r"][()], [[0.1, -0.2], [0.3, -0.6]])
        assert np.isnan(f["rrvae/history/val_loss"][()]).all()
        assert f["rrvae/checkpoints/best"][()].tobytes() == b"\x00\x01best"
        assert "navigator" in f and "virtual/bf" in f


def test_existing_file_is_not_overwritten(tmp_path):
    p = tmp_path / "r.h5"
    p.write_bytes(b"precious")
    with pytest.raises(WriteError, match="already exists") as e:
        save_results(p, _results())
    assert str(p) in str(e.value)
    assert p.read_bytes() == b"precious"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.h5"]  # no temporary left
    save_results(p, _results(), overwrite=True)
    assert "com/x" in load_results(p).maps


def test_unwritable_destination_gives_clear_error_and_no_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="not a folder"):
        save_results(blocker / "r.h5", _results())
    with pytest.raises(WriteError, match="does not exist"):
        save_results(tmp_path / "missing" / "r.h5", _results())
    with pytest.raises(WriteError, match="folder"):
        save_results(tmp_path, _results(), overwrite=True)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["afile"]


def test_read_only_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(WriteError, match="permission"):
            save_results(d / "r.h5", _results())
    finally:
        d.chmod(0o700)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, exc):
    import napari_4dstem.results as res

    def failing(path, data):
        with open(path, "wb") as fh:  # half is written, then the disk fills up / the user presses Ctrl-C
            fh.write(data[: data.nbytes // 2])
        raise exc

    monkeypatch.setattr(res, "_write_bytes", failing)
    p = tmp_path / "r.h5"
    if isinstance(exc, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            save_results(p, _results())
    else:
        with pytest.raises(WriteError, match="not enough space") as e:
            save_results(p, _results())
        assert str(p) in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_newer_schema_major_is_refused_minor_is_read(tmp_path):
    p = save_results(tmp_path / "r.h5", _results())
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = "1.7"
    assert "com/x" in load_results(p).maps
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = "2.0"
    with pytest.raises(ReaderError, match="newer") as e:
        load_results(p)
    assert "update napari-4dstem" in str(e.value)


def test_not_a_results_file(tmp_path):
    plain = tmp_path / "data.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros((2, 2, 2, 2))
    with pytest.raises(ReaderError, match="not a napari-4dstem results file"):
        load_results(plain)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ReaderError, match="not a readable HDF5"):
        load_results(junk)
    with pytest.raises(ReaderError, match="not found"):
        load_results(tmp_path / "none.h5")
    good = save_results(tmp_path / "r.h5", _results())
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ReaderError):
        load_results(cut)


def test_source_provenance_checksum_is_of_the_first_mib(tmp_path):
    p = tmp_path / "big.bin"
    data = np.random.default_rng(1).bytes(3 * 2**20 + 17)
    p.write_bytes(data)
    prov = source_provenance(p)
    assert prov["size"] == len(data)
    assert prov["header_sha256"] == hashlib.sha256(data[: 2**20]).hexdigest()
    assert prov["header_sha256"] != hashlib.sha256(data).hexdigest()


def test_from_analysis_collects_com_and_virtual_maps(tmp_path):
    from napari_4dstem.com import center_of_mass
    from napari_4dstem.sample import make_sample
    from napari_4dstem.virtual import navigator_image, virtual_images

    ds = make_sample(scan_shape=(8, 8), detector_shape=(24, 24))
    com = center_of_mass(ds, rotation=0, flip=False)
    vi = virtual_images(ds, {"bf": {"kind": "bf"}, "adf": {"kind": "adf"}})
    nav = navigator_image(ds)
    r = Results.from_analysis(ds, com=com, virtual={k: v.image for k, v in vi.items()}, navigator=nav)
    # independent check: plain first moment about (N-1)/2 of one frame
    f = ds.frame(3, 5).astype(np.float64)
    ii, jj = np.indices(f.shape)
    c = (f.shape[0] - 1) / 2
    np.testing.assert_allclose(r.maps["com/x"][3, 5], (f * (jj - c)).sum() / f.sum(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r.maps["navigator"][3, 5], f.sum(), rtol=1e-6)
    assert r.units["com/angle"] == "rad" and r.units["com/x"] == com.units
    assert r.parameters["com"] and r.calibration["scan_unit"] == "Å"
    assert r.shape == ds.shape
    q = load_results(save_results(tmp_path / "r.h5", r))
    np.testing.assert_array_equal(q.maps["virtual/adf"], vi["adf"].image)
    assert q.scan_scale == tuple(ds.calibration.scan_step)


# -- exports ------------------------------------------------------------------------------------
def test_tiff_round_trip_with_scale(tmp_path):
    import tifffile

    from napari_4dstem.export import export_map

    a = np.random.default_rng(2).random((7, 9)).astype(np.float32)
    p = export_map(tmp_path / "m.tif", a, scale=(0.2, 0.5), scan_unit="Å", units="mrad", name="com/x")
    with tifffile.TiffFile(p) as t:
        np.testing.assert_array_equal(t.asarray(), a)
        page = t.pages[0]
        xr, yr = page.tags["XResolution"].value, page.tags["YResolution"].value
        assert xr[0] / xr[1] == pytest.approx(1 / 0.5) and yr[0] / yr[1] == pytest.approx(1 / 0.2)
        meta = t.imagej_metadata
        assert meta["unit"] == "A"  # ImageJ shows it as Å
        info = json.loads(meta["Info"])
        assert info["units"] == "mrad" and info["scale_units"] == "Å" and info["scale"] == [0.2, 0.5]
    stack = np.random.default_rng(3).random((2, 7, 9))
    p2 = export_map(tmp_path / "s.tiff", stack, scale=(1, 1), name="rrvae/latents")
    with tifffile.TiffFile(p2) as t:
        np.testing.assert_array_equal(t.asarray(), stack.astype(np.float32))
        assert t.series[0].axes == "CYX"


def test_png_has_colorbar_scale_and_cyclic_angles(tmp_path):
    import matplotlib.image

    from napari_4dstem.export import CYCLIC_CMAP, export_map, map_figure

    a = np.linspace(-np.pi, np.pi, 48).reshape(6, 8)
    p = export_map(tmp_path / "angle.png", a, scale=(0.2, 0.2), scan_unit="Å", units="rad", name="com/angle")
    img = matplotlib.image.imread(p)
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0
    fig = map_figure(a, scale=(0.2, 0.2), scan_unit="Å", units="rad", name="com/angle", cyclic=True)
    ax, cax = fig.axes
    im = ax.images[0]
    assert im.get_cmap().name == CYCLIC_CMAP and im.get_clim() == (-np.pi, np.pi)
    assert "0.2" in ax.get_title() and "Å" in ax.get_title()
    assert cax.get_ylabel() == "rad"
    # the extent is in scan units: 8 columns of 0.2 Å
    x0, x1, _, _ = im.get_extent()
    assert x1 - x0 == pytest.approx(8 * 0.2)
    fig2 = map_figure(a, units="mrad", name="com/magnitude")
    assert fig2.axes[0].images[0].get_cmap().name != CYCLIC_CMAP


def test_hspy_round_trip_through_rosettasciio(tmp_path):
    from rsciio.hspy import file_reader

    from napari_4dstem.export import export_map

    a = np.random.default_rng(4).random((5, 6))
    p = export_map(tmp_path / "m.hspy", a, scale=(0.12, 0.3), scan_unit="nm", units="mrad", name="com/magnitude")
    d = file_reader(str(p))[0]
    np.testing.assert_array_equal(d["data"], a)
    ax = {x["name"]: x for x in d["axes"]}
    assert ax["y"]["scale"] == pytest.approx(0.12) and ax["x"]["scale"] == pytest.approx(0.3)
    assert ax["x"]["units"] == "nm" and not ax["x"]["navigate"]
    assert d["metadata"]["General"]["title"] == "com/magnitude"
    stack = np.random.default_rng(5).random((3, 5, 6))
    d = file_reader(str(export_map(tmp_path / "s.hspy", stack, name="rrvae/latents")))[0]
    np.testing.assert_array_equal(d["data"], stack)
    assert [x["navigate"] for x in d["axes"]] == [True, False, False]


def test_export_refuses_existing_and_unknown_format(tmp_path):
    from napari_4dstem.export import export_map, export_results

    p = tmp_path / "m.tif"
    p.write_bytes(b"keep")
    with pytest.raises(WriteError, match="already exists"):
        export_map(p, np.zeros((3, 3)))
    assert p.read_bytes() == b"keep"
    with pytest.raises(FourDSTEMError, match="unknown export format"):
        export_map(tmp_path / "m.jpg", np.zeros((3, 3)))
    with pytest.raises(FourDSTEMError, match="2-D"):
        export_map(tmp_path / "m.png", np.zeros(3))
    out = export_results(_results(), tmp_path / "maps", formats=("tif", "hspy"))
    names = {q.name for q in out}
    assert "com_angle.tif" in names and "rrvae_latents.hspy" in names and len(out) == 2 * 10


def test_results_never_replace_their_source(tmp_path):
    src = tmp_path / "scan.h5"
    src.write_bytes(b"raw data")
    r = _results()
    r.provenance["path"] = str(src)
    with pytest.raises(WriteError, match="source"):
        save_results(src, r, overwrite=True)
    assert src.read_bytes() == b"raw data"
