"""Python arguments of the public entry points are checked through params.TABLE before any data are read."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import napari_4dstem as n4
from napari_4dstem import DataError, Dataset4D, ReaderError, params


class NoRead:
    """A 4-D array-like that fails the test if anything reads it."""

    shape = (4, 4, 16, 16)
    dtype = np.dtype(np.float32)
    ndim = 4
    reads = 0

    def __getitem__(self, key):
        NoRead.reads += 1
        raise AssertionError(f"data were read: [{key}]")

    def __array__(self, *args, **kwargs):
        NoRead.reads += 1
        raise AssertionError("data were read: __array__")


@pytest.fixture
def ds():
    NoRead.reads = 0
    yield Dataset4D(NoRead())
    assert NoRead.reads == 0, "an argument check came after a read"


def _next(gen):
    return next(gen)


CASES = [
    (lambda ds, d: n4.center_of_mass(ds, rotation="x"), r"center_of_mass\(\) argument rotation = 'x'"),
    (lambda ds, d: n4.center_of_mass(ds, flip="yes"), r"center_of_mass\(\) argument flip = 'yes'"),
    (lambda ds, d: n4.center_of_mass(ds, mask=("ring", 3)), r"argument mask = \('ring', 3\): must be"),
    (lambda ds, d: n4.center_of_mass(ds, descan="linear"), r"descan = 'linear' \(unknown\): must be one of"),
    (lambda ds, d: n4.center_of_mass(ds, block_bytes=0), r"block_bytes = 0: must be a whole number >= 1"),
    (lambda ds, d: _next(n4.com.iter_center_of_mass(ds, center="middle")),
     r"iter_center_of_mass\(\) argument center = 'middle'"),
    (lambda ds, d: n4.virtual_image(ds, kind="annulus", inner=20, outer=8),
     r"virtual_image\(\) argument inner = 20 must be smaller than outer = 8"),
    (lambda ds, d: n4.virtual_image(ds, kind="haadf"), r"kind = 'haadf' \(unknown\): must be one of 'bf'"),
    (lambda ds, d: n4.virtual_image(ds, kind="bf", outer=-2), r"outer = -2: must be a finite number > 0"),
    (lambda ds, d: n4.virtual_image(ds, kind="mask"), r"kind = 'mask' needs mask"),
    (lambda ds, d: n4.virtual_image(ds, units="nm"), r"units = 'nm'"),
    (lambda ds, d: n4.virtual_images(ds, {"a": {"kind": "bf", "oter": 3}}),
     r"virtual_images\(\) detector 'a': unknown parameter\(s\) \['oter'\]"),
    (lambda ds, d: n4.virtual_images(ds, {"a": {"kind": "bf", "center": (1,)}}),
     r"detector 'a': center = \(1,\): must be"),
    (lambda ds, d: n4.virtual_images(ds, ["bf"]), r"virtual_images\(\) argument detectors = \['bf'\]: must be a dict"),
    (lambda ds, d: _next(n4.virtual.iter_virtual_images(ds, {"a": {"kind": "adf"}}, block_bytes=-1)),
     r"iter_virtual_images\(\) argument block_bytes = -1"),
    (lambda ds, d: n4.Preprocessing(bin_factor="two"), r"Preprocessing\(\) argument bin_factor = 'two': must be"),
    (lambda ds, d: n4.Preprocessing(crop_scan=(4, 2, 0, 3)), r"crop_scan = \[4, 2, 0, 3\]: must be \[y0, y1"),
    (lambda ds, d: n4.Preprocessing(normalize="bogus"), r"normalize = 'bogus' \(unknown\)"),
    (lambda ds, d: n4.Preprocessing(pca_drop=[-1]), r"pca_drop = \[-1\]"),
    (lambda ds, d: n4.Preprocessing(mask=np.ones((3, 3, 3))), r"mask = <ndarray of shape \(3, 3, 3\), float64>"),
    (lambda ds, d: n4.RRVAEConfig(lr="fast"), r"RRVAEConfig\(\) argument lr = 'fast': must be a finite number"),
    (lambda ds, d: n4.RRVAE(epochs=2.5), r"RRVAEConfig\(\) argument epochs = 2.5: must be a whole number"),
    (lambda ds, d: n4.RRVAE("fast"), r"RRVAE\(\) argument config = 'fast': must be an RRVAEConfig"),
    (lambda ds, d: n4.analyze(ds, overwrite="yes"), r"analyze\(\) argument overwrite = 'yes': must be true or false"),
    (lambda ds, d: n4.analyze(ds, out=5), r"analyze\(\) argument out = 5: must be a file path"),
    (lambda ds, d: n4.analyze(np.zeros((2, 2, 4, 4))),
     r"analyze\(\) argument source = <ndarray of shape \(2, 2, 4, 4\), float64>: must be a file path or a Dataset4D"),
    (lambda ds, d: n4.analyze(ds, params=[1]), r"analyze\(\) argument params = \[1\]: must be a dict"),
    (lambda ds, d: n4.analyze(ds, {"com": {"rotation": "left"}}), r"\[com\] rotation = 'left': must be"),
]


@pytest.mark.parametrize("call, match", CASES, ids=[m[:40] for _, m in CASES])
def test_bad_argument_is_one_line_before_any_read(ds, tmp_path, call, match):
    with pytest.raises(DataError, match=match) as e:
        call(ds, tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("options, match", [
    ({"nav_shape": (0, 3)}, r"load\(\) argument nav_shape = \(0, 3\): must be two positive integers"),
    ({"nav_shape": ("a", 2)}, r"nav_shape = \('a', 2\)"),
    ({"cube": 1.5}, r"cube = 1.5: must be a whole number"),
    ({"lazy": "no"}, r"lazy = 'no': must be true or false"),
    ({"nan_policy": "warn"}, r"nan_policy = 'warn' \(unknown\): must be one of 'raise', 'ignore'"),
    ({"key": ""}, r"key = '': must be a non-empty name"),
])
def test_load_checks_options_before_opening_the_file(tmp_path, options, match):
    missing = tmp_path / "nothere.npy"  # a read would say "not found": the option is refused first
    with pytest.raises(ReaderError, match=match) as e:
        n4.load(missing, **options)
    assert "nothere.npy" in str(e.value) and "\n" not in str(e.value)


def test_load_path_of_the_wrong_type():
    with pytest.raises(ReaderError, match=r"load\(\) argument path = 5: must be a file path"):
        n4.load(5)


def test_unknown_load_option_still_named(tmp_path):
    with pytest.raises(ReaderError, match="unknown option"):
        n4.load(tmp_path / "x.npy", navshape=(2, 2))


def _disc_frames():
    """4 x 4 scan of 16 x 16 frames: a bright disc of radius 3 about (7.5, 7.5) shifted by +1 px in x on
    the right half of the scan; the analytic COM x is 0 on the left and 1 on the right."""
    yy, xx = np.mgrid[:16, :16]
    a = np.zeros((4, 4, 16, 16), np.float32)
    for j in range(4):
        cx = 7.5 + (1 if j >= 2 else 0)
        a[:, j] = ((yy - 7.5) ** 2 + (xx - cx) ** 2 <= 9).astype(np.float32)
    return a


def test_good_python_values_still_work(tmp_path):
    a = _disc_frames()
    ds = Dataset4D(a)
    com = n4.center_of_mass(ds, rotation=np.float32(0.0), flip=np.bool_(False), center=np.array([7.5, 7.5]),
                            mask=("disc", 6), block_bytes=np.int64(4096))
    np.testing.assert_allclose(com.x[:, :2], 0, atol=1e-9)
    np.testing.assert_allclose(com.x[:, 2:], 1, atol=1e-9)
    yy, xx = np.mgrid[:16, :16]
    ring = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 >= 2 ** 2) & ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 6 ** 2)
    img = n4.virtual_image(ds, kind="annulus", inner=2, outer=6.0, center=(7.5, 7.5)).image
    np.testing.assert_allclose(img, (a * ring).sum(axis=(2, 3)))
    out = n4.Preprocessing(bin_factor=np.int64(2), target_size=None, crop_scan=np.array([0, 2, 0, 4]),
                           normalize=None, subtract_mean=False).fit_transform(ds)
    assert out.shape == (2, 4, 8, 8)
    np.save(tmp_path / "stack.npy", a.reshape(16, 16, 16))
    assert n4.load(tmp_path / "stack.npy", nav_shape=np.array([2, 8])).shape == (2, 8, 16, 16)
    assert n4.RRVAE(n4.RRVAEConfig(epochs=1, lr=np.float64(1e-3))).config.epochs == 1


# Every keyword of an entry point is checked: a new keyword must be added to the table (or to CALLS).
ENTRY = {
    "center_of_mass": ("napari_4dstem.com", {"data", "callback", "cancel"}),
    "iter_center_of_mass": ("napari_4dstem.com", {"data"}),
    "virtual_image": ("napari_4dstem.virtual", {"data", "callback", "cancel"}),
    "iter_virtual_image": ("napari_4dstem.virtual", {"data"}),
    "virtual_images": ("napari_4dstem.virtual", {"data", "callback", "cancel", "detectors"}),
    "iter_virtual_images": ("napari_4dstem.virtual", {"data", "detectors"}),
    "Preprocessing": ("napari_4dstem.preprocess", set()),
    "analyze": ("napari_4dstem.pipeline", {"callback", "cancel"}),
    "RRVAE": ("napari_4dstem.rrvae", {"kwargs"}),
}


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_every_keyword_of_an_entry_point_is_in_the_table(name):
    import importlib

    module, free = ENTRY[name]
    fn = getattr(importlib.import_module(module), name)
    section, extra, _ = params.CALLS[name]
    checked = set(params.TABLE[section] if section else ()) | set(extra)
    assert set(inspect.signature(fn).parameters) - free == checked


def test_load_options_are_all_checked():
    from napari_4dstem.io.checks import OPTIONS

    section, extra, _ = params.CALLS["load"]
    assert set(OPTIONS) | {"path"} == set(params.TABLE[section]) | set(extra)
