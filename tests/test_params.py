"""params.py: the table covers every parameter of the functions it feeds, and its checks are real."""
from __future__ import annotations

import pytest

from napari_4dstem import params
from napari_4dstem.errors import DataError


@pytest.mark.parametrize("section", ["load", "preprocess", "com", "rrvae"])
def test_table_covers_every_keyword_of_the_function(section):
    assert params.signature_names(section) == set(params.TABLE[section])


def test_virtual_table_covers_detector_mask():
    import inspect

    from napari_4dstem.virtual import detector_mask

    assert set(inspect.signature(detector_mask).parameters) - {"ds", "_cache"} == set(params.TABLE["virtual.*"])


@pytest.mark.parametrize("section, key, good, bad", [
    ("rrvae", "epochs", [1, 30, None], [0, 2.5, "ten", True, -1]),
    ("rrvae", "lr", [1e-4, 0.5, None], [0, -1, "fast", float("nan"), float("inf")]),
    ("rrvae", "seed", [0, 2**32 - 1], [-1, 2**32, 2**70, 1.0]),
    ("rrvae", "time_limit", [None, 0.5, 600], [0, -5, "1h"]),
    ("rrvae", "val_fraction", [0.0, 0.5], [1.0, -0.1]),
    ("preprocess", "center", [None, "auto", [3, 4.5]], ["middle", [1], [1, 2, 3], ["a", "b"]]),
    ("preprocess", "mask", [None, ["disc", 3], ["annulus", 1, 2], [[0, 1], [1, 0]]],
     [["disc", -1], ["annulus", 3, 2], ["ring", 1], "disc", [[["x"]]]]),
    ("com", "rotation", ["auto", 0, -12.5], ["left", None, True]),
    ("com", "flip", ["auto", True, False], ["yes", 1]),
    ("load", "nav_shape", [None, [2, 3], (4, 4)], [[0, 3], [2], ["a", 2]]),
    ("load", "key", ["0", "data", 3], ["", None, 1.5]),
])
def test_values(section, key, good, bad):
    for v in good:
        params.check_params({section: {key: v}})
    for v in bad:
        with pytest.raises(DataError, match=rf"\[{section}\] {key} = .*: must be"):
            params.check_params({section: {key: v}})


def test_top_level_and_unknown_names():
    params.check_params({"navigator": "bf", "run_rrvae": False, "defect_models": 3})
    for bad, match in [({"navigator": "max"}, "navigator = 'max'"), ({"run_rrvae": "no"}, "run_rrvae"),
                       ({"defect_models": 0}, "defect_models"), ({"rrvea": {}}, "unknown section"),
                       ({"virtual": {"x": {"kind": "bf", "oter": 3}}}, r"unknown \[virtual.x\]"),
                       ({"virtual": {"x": {"kind": "bf", "inner": 4, "outer": 2}}}, "smaller than outer")]:
        with pytest.raises(DataError, match=match):
            params.check_params(bad)


def test_a_new_keyword_not_yet_in_the_table_is_accepted_unchecked(monkeypatch):
    monkeypatch.setattr(params, "signature_names", lambda s: {"brand_new"} if s == "com" else set())
    params.check_params({"com": {"brand_new": object()}})
    with pytest.raises(DataError, match="unknown"):
        params.check_params({"com": {"not_in_signature": 1}})


def test_rrvae_config_checks_types_through_the_table():
    from napari_4dstem.rrvae import RRVAEConfig

    with pytest.raises(DataError, match="epochs = 'ten'"):
        RRVAEConfig(epochs="ten")
    with pytest.raises(DataError, match="time_limit = -5"):
        RRVAEConfig(time_limit=-5)


def test_toml_none_means_none_where_none_is_allowed(tmp_path):
    """TOML has no null: the documented Anscombe recipe writes normalize = "none"."""
    from napari_4dstem.errors import DataError
    from napari_4dstem.params import load_config

    p = tmp_path / "p.toml"
    p.write_text('[preprocess]\nsubtract_mean = false\nnormalize = "None"\n\n[rrvae]\ntransform = "none"\n')
    cfg = load_config(p)
    assert cfg["preprocess"]["normalize"] is None
    assert cfg["rrvae"]["transform"] == "none"  # one of its own choices: kept as written
    p.write_text('navigator = "none"\n')  # None is not allowed there: still an error naming it
    with pytest.raises(DataError, match="navigator"):
        load_config(p)
