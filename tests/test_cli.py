"""The ``napari-4dstem`` command line and the headless pipeline behind it."""
from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

from napari_4dstem.cli import TextProgress, main
from napari_4dstem.progress import Progress
from napari_4dstem.results import load_results

DOCUMENTED = ["com/x", "com/y", "com/magnitude", "com/angle", "com/divergence", "com/curl", "com/icom",
              "virtual/bf", "virtual/adf", "navigator", "rrvae/angle", "rrvae/latents", "rrvae/latent_sd"]


@pytest.fixture(scope="module")
def sample_npy(tmp_path_factory):
    from napari_4dstem.sample import make_sample

    ds = make_sample(scan_shape=(12, 12), detector_shape=(32, 32))
    p = tmp_path_factory.mktemp("src") / "scan.npy"
    np.save(p, np.asarray(ds.data))
    return p


@pytest.fixture(scope="module")
def analyzed(sample_npy, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "results.h5"
    cfg = out.with_name("params.toml")
    cfg.write_text("[rrvae]\nthreads = 1\nepochs = 50\n")  # the --epochs flag must win over the file
    rc = main(["analyze", str(sample_npy), "--out", str(out), "--config", str(cfg), "--epochs", "2", "--fast",
               "--seed", "3", "-q"])
    assert rc == 0
    return out


def _one_error_line(capsys, rc, expected_rc=1):
    err = capsys.readouterr().err
    assert rc == expected_rc, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-4dstem: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_analyze_writes_the_documented_groups(analyzed, sample_npy):
    r = load_results(analyzed)
    assert set(DOCUMENTED) <= set(r.maps)
    for k in DOCUMENTED:
        assert r.maps[k].shape[-2:] == (12, 12), k
    assert r.maps["rrvae/latents"].shape == (2, 12, 12)
    data = np.load(sample_npy)
    np.testing.assert_allclose(r.maps["navigator"], data.sum(axis=(2, 3), dtype=np.float64), rtol=1e-6)
    assert len(r.history) == 2 and {"loss", "recon", "kl_rot", "kl_content"} <= set(r.history[0])
    assert {"best", "last"} <= set(r.checkpoints)
    assert r.parameters["rrvae"]["epochs"] == 2 and r.parameters["rrvae"]["mode"] == "fast"
    assert r.parameters["rrvae"]["threads"] == 1
    assert r.parameters["rrvae"]["seed"] == 3 and r.parameters["preprocess"]["random_state"] == 3
    assert r.provenance["path"] == str(sample_npy.resolve()) and r.provenance["size"] == sample_npy.stat().st_size
    assert r.versions["napari-4dstem"] and r.versions["numpy"] == np.__version__
    with h5py.File(analyzed, "r") as f:
        assert {"com", "virtual", "navigator", "rrvae"} <= set(f)
        assert "history" in f["rrvae"] and "checkpoints" in f["rrvae"]


def test_saved_parameters_and_checkpoint_reproduce_the_maps(analyzed, sample_npy):
    """The recorded preprocessing params + the 'best' checkpoint give back the stored latent maps.

    (The maps are encoded at the best epoch, the paper's stopping rule; 'last' is the final epoch.)
    """
    from napari_4dstem.io import load
    from napari_4dstem.preprocess import Preprocessing
    from napari_4dstem.rrvae import RRVAE

    r = load_results(analyzed)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in r.parameters["preprocess"].items()}
    pre = Preprocessing(**params).fit_transform(load(sample_npy))
    best = RRVAE.load(r.checkpoint_path("best", analyzed.parent))
    assert best.epoch == r.info["rrvae_best_epoch"]
    maps = best.encode(pre)
    np.testing.assert_allclose(maps.latents, r.maps["rrvae/latents"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps.angle, r.maps["rrvae/angle"], atol=1e-4)
    np.testing.assert_allclose(best.reconstruction_error(pre), r.maps["rrvae/reconstruction_error"], rtol=1e-4)
    assert r.maps["rrvae/outlier"].shape == maps.angle.shape
    last = RRVAE.load(r.checkpoint_path("last", analyzed.parent))
    assert last.epoch == r.history[-1]["epoch"]


def test_existing_output_needs_overwrite(analyzed, sample_npy, capsys):
    before = analyzed.read_bytes()
    rc = main(["analyze", str(sample_npy), "--out", str(analyzed), "--no-rrvae", "-q"])
    line = _one_error_line(capsys, rc)
    assert "already exists" in line and str(analyzed) in line and "--overwrite" in line
    assert analyzed.read_bytes() == before


def test_overwrite_and_config_file(sample_npy, tmp_path, capsys):
    out = tmp_path / "r.h5"
    out.write_bytes(b"old")
    cfg = tmp_path / "params.toml"
    cfg.write_text('[preprocess]\ntarget_size = 16\n\n[com]\nrotation = 0.0\nflip = false\n\n'
                   '[virtual.haadf]\nkind = "annulus"\ninner = 8\nouter = 15\n')
    rc = main(["analyze", str(sample_npy), "--out", str(out), "--config", str(cfg), "--no-rrvae", "--overwrite"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "maps" in captured.err  # progress went to stderr (no preprocessing without the rrVAE)
    assert f"wrote {out}" in captured.out
    r = load_results(out)
    assert set(r.group("virtual")) == {"haadf"}
    assert r.parameters["preprocess"]["target_size"] == 16
    assert r.info["com_rotation_deg"] == 0.0 and r.info["com_flip"] is False
    assert not any(k.startswith("rrvae") for k in r.maps)
    # the annulus image is the sum over 8 <= radius <= 15 px: check one position against numpy
    frame = np.load(sample_npy)[4, 7].astype(np.float64)
    ii, jj = np.indices(frame.shape)
    rad = np.hypot(ii - 15.5, jj - 15.5)
    ref = frame[(rad >= 8) & (rad <= 15)].sum()
    assert r.maps["virtual/haadf"][4, 7] == pytest.approx(ref, rel=0.05)


@pytest.mark.parametrize("text, match", [
    ("[rrvae]\nlatnet_dim = 3\n", "unknown [rrvae] parameter(s) ['latnet_dim']"),
    ("[preproces]\n", "unknown section"),
    ("[com\n", "not valid TOML"),
    (b"\xff\xfe\x00binary", "not a text (UTF-8) file"),
])
def test_bad_config_is_one_clear_line(sample_npy, tmp_path, capsys, text, match):
    cfg = tmp_path / "p.toml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "r.h5"
    rc = main(["analyze", str(sample_npy), "--out", str(out), "--config", str(cfg)])
    line = _one_error_line(capsys, rc)
    assert match in line and str(cfg) in line
    assert not out.exists()


def test_bad_input_file_is_one_line_and_debug_shows_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage" * 10)
    out = tmp_path / "r.h5"
    line = _one_error_line(capsys, main(["analyze", str(bad), "--out", str(out), "-q"]))
    assert str(bad) in line
    assert main(["analyze", str(bad), "--out", str(out), "-q", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


def test_unwritable_output_fails_before_any_work(sample_npy, tmp_path, capsys, monkeypatch):
    import napari_4dstem.pipeline as pipeline

    monkeypatch.setattr(pipeline, "iter_analyze", lambda *a, **k: pytest.fail("ran the analysis"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_error_line(capsys, main(["analyze", str(sample_npy), "--out", str(blocker / "r.h5")]))
    assert "not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_output_may_not_replace_the_input(sample_npy, capsys):
    before = sample_npy.read_bytes()
    line = _one_error_line(capsys, main(["analyze", str(sample_npy), "--out", str(sample_npy), "--overwrite"]))
    assert "input" in line
    assert sample_npy.read_bytes() == before


def test_ctrl_c_while_saving_exits_130_without_file(sample_npy, tmp_path, capsys, monkeypatch):
    import napari_4dstem.results as res

    def interrupted(path, data):
        with open(path, "wb") as fh:
            fh.write(data[: data.nbytes // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(res, "_write_bytes", interrupted)
    out = tmp_path / "r.h5"
    rc = main(["analyze", str(sample_npy), "--out", str(out), "--no-rrvae", "-q"])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_info_prints_shape_dtype_calibration(sample_npy, capsys):
    assert main(["info", str(sample_npy)]) == 0
    out = capsys.readouterr().out
    assert "(12, 12, 32, 32)" in out and "float32" in out and "scan_step" in out
    assert main(["info", str(sample_npy), "--json", "--nav-shape", "6,24"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["shape"] == [6, 24, 32, 32] and d["dtype"] == "float32"
    assert d["source"]["size"] == sample_npy.stat().st_size
    line = _one_error_line(capsys, main(["info", str(sample_npy), "--nav-shape", "5,5"]))
    assert "nav_shape" in line


def test_info_on_a_zarr_folder(tmp_path, capsys):
    import zarr

    d = tmp_path / "scan.zarr"
    z = zarr.open_array(str(d), mode="w", shape=(3, 4, 8, 8), chunks=(1, 4, 8, 8), dtype="uint16")
    z[:] = 7
    assert main(["info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "(3, 4, 8, 8)" in out and "uint16" in out and "sha256 of metadata files" in out


def test_info_on_a_results_file(analyzed, capsys):
    assert main(["info", str(analyzed)]) == 0
    out = capsys.readouterr().out
    assert "napari-4dstem results" in out and "com/magnitude" in out and "2 epochs" in out
    assert main(["info", str(analyzed), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["maps"]["rrvae/latents"]["shape"] == [2, 12, 12] and d["checkpoints"] == ["best", "last"]


def test_export_command(analyzed, tmp_path, capsys):
    import tifffile

    out = tmp_path / "maps"
    assert main(["export", str(analyzed), "--to", str(out), "--format", "tif,hspy",
                 "--maps", "com/magnitude,rrvae/latents"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["com_magnitude.hspy", "com_magnitude.tif",
                                                     "rrvae_latents.hspy", "rrvae_latents.tif"]
    r = load_results(analyzed)
    np.testing.assert_allclose(tifffile.imread(out / "com_magnitude.tif"), r.maps["com/magnitude"], rtol=1e-6)
    capsys.readouterr()
    line = _one_error_line(capsys, main(["export", str(analyzed), "--to", str(out), "--maps", "com/magnitude",
                                         "--format", "tif"]))
    assert "already exists" in line
    line = _one_error_line(capsys, main(["export", str(analyzed), "--to", str(out), "--format", "jpg"]))
    assert "unknown export format" in line
    line = _one_error_line(capsys, main(["export", str(analyzed), "--to", str(out), "--maps", "com/nope"]))
    assert "no map 'com/nope'" in line


def test_command_line_usage_errors(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as e:
        main(["analyze", "x.npy", "--out", "y.h5", "--nav-shape", "a,b"])
    assert e.value.code == 2
    assert "Y,X" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["analyze", "x.npy", "--fast", "--faithful", "--out", "y.h5"])
    assert e.value.code == 2
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as e:
            main(["analyze", "x.npy", "--out", "y.h5", "--defect-models", bad])
        assert e.value.code == 2
        assert "--defect-models" in capsys.readouterr().err


def test_demo_help_and_missing_gui(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    assert "--screenshot" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "napari_4dstem.gui.demo", None)  # import now fails
    line = _one_error_line(capsys, main(["demo"]))
    assert "needs the GUI" in line and "pip install" in line


def test_text_progress_in_a_log_prints_deciles_and_stage_ends():
    import io

    buf = io.StringIO()
    pr = TextProgress(buf)
    for i in range(101):
        pr(Progress(i, 100, "x", {"stage": "com", "stage_index": 3, "n_stages": 8}))
    pr(Progress(1, 1, "com done", {"stage": "com", "stage_index": 3, "n_stages": 8, "stage_done": True}))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 12 and lines[0].startswith("[4/8] com: 0%") and lines[-1].startswith("[4/8] com: done")


def test_console_script_is_installed(sample_npy):
    import shutil
    import subprocess
    from pathlib import Path

    exe = Path(sys.executable).parent / "napari-4dstem"
    exe = str(exe) if exe.exists() else shutil.which("napari-4dstem")
    if exe is None:
        pytest.skip("the napari-4dstem console script is not installed (pip install -e .)")
    proc = subprocess.run([exe, "info", str(sample_npy)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(12, 12, 32, 32)" in proc.stdout
    proc = subprocess.run([exe, "info", str(sample_npy.with_name("missing.npy"))], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "not found" in proc.stderr


def test_default_virtual_detectors_that_cannot_be_built_are_skipped_not_fatal(capsys):
    """Empty frames: the default BF/ADF radii cannot be found; the run goes on with a warning.
    Detectors the user asked for are not skipped: they fail with the reason."""
    from napari_4dstem import DataError, as_dataset
    from napari_4dstem.pipeline import analyze

    ds = as_dataset(np.zeros((4, 5, 8, 8), np.uint16))
    r = analyze(ds, {"run_rrvae": False})
    assert "virtual/bf" not in r.maps and len(r.info["warnings"]) == 2
    assert "flat" in r.info["warnings"][0]
    np.testing.assert_array_equal(r.maps["navigator"], np.zeros((4, 5)))
    with pytest.raises(DataError, match="flat"):
        analyze(ds, {"run_rrvae": False, "virtual": {"bf": {"kind": "bf"}}})


def test_hints_name_command_line_flags(tmp_path, capsys):
    # the core's hints say nav_shape=/key=; on the command line the user needs --nav-shape/--key
    stack = tmp_path / "stack.npy"
    np.save(stack, np.zeros((6, 4, 4), np.float32))
    assert main(["info", str(stack)]) == 1
    err = capsys.readouterr().err
    assert "--nav-shape SCAN_Y,SCAN_X" in err and "nav_shape=" not in err
    assert main(["info", str(stack), "--nav-shape", "2,3"]) == 0
    npz = tmp_path / "two.npz"
    np.savez(npz, a=np.zeros((1, 1, 2, 2)), b=np.zeros((1, 1, 2, 2)))
    assert main(["info", str(npz)]) == 1
    err = capsys.readouterr().err
    assert "--key 'a'" in err and "key=" not in err
