"""Nothing the tool does damages the source or leaves a half-written result: interruption, cancel, full disk."""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_4dstem import Cancelled, ModelError, run_steps
from napari_4dstem.cli import main

PY = sys.executable


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from napari_4dstem.sample import make_sample

    return make_sample(scan_shape=(10, 10), detector_shape=(24, 24))


def _fingerprint(folder):
    """sha256, size and mtime of every file in a folder."""
    out = {}
    for p in sorted(folder.iterdir()):
        st = p.stat()
        out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


SHARED_MIB = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
                  ) / "real" / "merlin-4x2-real" / "001_4x2_6bit.mib"


@pytest.mark.parametrize("fmt", ["npy", "h5", "mib"])
def test_source_is_byte_identical_after_analyze(sample, tmp_path, fmt):
    src_dir = tmp_path / "data"
    src_dir.mkdir()
    src = src_dir / f"scan.{fmt}"
    if fmt == "mib":
        if not SHARED_MIB.exists():
            pytest.skip(f"shared data {SHARED_MIB} not found")
        src = src_dir / SHARED_MIB.name
        shutil.copy2(SHARED_MIB, src)
        shutil.copy2(SHARED_MIB.with_suffix(".hdr"), src_dir)
        extra = ["--no-rrvae"]
    elif fmt == "npy":
        np.save(src, np.asarray(sample.data))
        extra = ["--epochs", "1", "--fast"]
    else:
        with h5py.File(src, "w") as f:
            f.create_dataset("data", data=np.asarray(sample.data), chunks=(1, 10, 24, 24))
        extra = ["--no-rrvae", "--key", "data"]
    before = _fingerprint(src_dir)
    out = tmp_path / "r.h5"
    assert main(["analyze", str(src), "--out", str(out), "-q", *extra]) == 0
    assert out.exists()
    assert _fingerprint(src_dir) == before  # same bytes, same mtime, nothing written beside it


_DISK_FULL = r"""
import resource, signal, sys
import numpy as np
from napari_4dstem.results import Results, save_results, WriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # files may not grow past 200 kB
r = Results(shape=(64, 64, 8, 8), dtype="float32")
r.maps["com/x"] = np.random.default_rng(0).random((400, 400))  # 1.3 MB, incompressible
try:
    save_results(sys.argv[1], r)
except WriteError as e:
    print(e)
    sys.exit(3)
"""


def test_full_disk_gives_clear_error_and_no_partial_file(tmp_path):
    out = tmp_path / "r.h5"
    proc = subprocess.run([PY, "-c", _DISK_FULL, str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "not enough space" in proc.stdout and str(out) in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_during_training_exits_cleanly(sample, tmp_path, sig, code):
    src = tmp_path / "scan.npy"
    np.save(src, np.asarray(sample.data))
    out = tmp_path / "r.h5"
    cmd = [PY, "-c", "import sys; from napari_4dstem.cli import main; sys.exit(main())",
           "analyze", str(src), "--out", str(out), "--epochs", "10000", "--fast"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        t0 = time.monotonic()
        for line in proc.stderr:  # wait until training has started
            lines.append(line)
            if "rrvae" in line or time.monotonic() - t0 > 60:
                break
        assert any("rrvae" in ln for ln in lines), "".join(lines)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, rest
    assert "no results file was written" in rest and "Traceback" not in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.npy"]  # no output, no temporary


@pytest.mark.parametrize("stage", ["load", "maps", "maps-navigator-only", "com", "preprocess", "save"])
def test_cancel_at_each_stage_leaves_no_file(sample, tmp_path, stage):
    from napari_4dstem.pipeline import iter_analyze

    out = tmp_path / "r.h5"
    cancel = threading.Event()
    seen = []

    def cb(p):
        seen.append(p.info.get("stage"))
        if p.info.get("stage") == stage:
            cancel.set()

    params = {"run_rrvae": stage == "preprocess"}  # without the rrVAE there is no preprocessing
    if stage == "maps-navigator-only":
        stage = "maps"
        params["virtual"] = {}  # without virtual images the navigator is its own pass
    with pytest.raises(Cancelled):
        run_steps(iter_analyze(sample, params, out=out), cb, cancel, "analysis")
    assert seen[-1] == stage
    assert list(tmp_path.iterdir()) == []


def test_cancelled_training_keeps_the_last_good_model(sample, tmp_path):
    """Stop after the 2nd epoch: the model is the 2nd epoch's, usable, and its results save and reload."""
    from napari_4dstem.preprocess import Preprocessing
    from napari_4dstem.results import Results, load_results, save_results
    from napari_4dstem.rrvae import RRVAE, RRVAEConfig

    pre = Preprocessing(target_size=12).fit_transform(sample)
    model = RRVAE(RRVAEConfig(mode="fast", epochs=50, batch_size=25, detector_size=None, threads=1))
    cancel = threading.Event()
    epochs = []

    def cb(p):
        if p.info.get("epoch_done"):
            epochs.append(p.info["epoch"])
            if len(epochs) == 2:
                cancel.set()

    with pytest.raises(Cancelled):
        model.fit(pre, callback=cb, cancel=cancel)
    assert [h["epoch"] for h in model.history] == [1, 2]
    maps = model.encode(pre)
    assert np.isfinite(maps.latents).all()
    r = Results.from_analysis(sample, rrvae_model=model, maps=maps)
    assert {"last", "best"} <= set(r.checkpoints)
    q = load_results(save_results(tmp_path / "r.h5", r))
    again = RRVAE.load(q.checkpoint_path("last", tmp_path)).encode(pre)
    np.testing.assert_allclose(again.latents, maps.latents, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stop_at", [1, 3])
def test_training_stopped_at_any_step_is_consistent(sample, tmp_path, stop_at):
    """Close the training generator (napari's worker.quit()) after `stop_at` progress steps."""
    from napari_4dstem.preprocess import Preprocessing
    from napari_4dstem.results import Results
    from napari_4dstem.rrvae import RRVAE

    pre = Preprocessing(target_size=12).fit_transform(sample)
    model = RRVAE(mode="fast", epochs=10, batch_size=25, detector_size=None, threads=1)
    gen = model.iter_fit(pre)
    for _ in range(stop_at):
        next(gen)
    gen.close()
    done = [h["epoch"] for h in model.history]
    assert done == list(range(1, len(done) + 1)) and len(done) <= stop_at
    if not done:  # stopped inside the first epoch (progress also comes every few batches): no model at all
        assert not model.trained
        with pytest.raises(ModelError, match="not trained"):
            model.encode(pre)
        r = Results.from_analysis(sample, rrvae_model=model)
        assert r.checkpoints == {} and r.history == []
        return
    assert model.trained and model.epoch == done[-1]  # the last completed epoch's weights
    assert model.best_epoch in done
    r = Results.from_analysis(sample, rrvae_model=model, maps=model.encode(pre))
    assert len(r.history) == len(done) and "last" in r.checkpoints
    assert np.isfinite(r.maps["rrvae/latents"]).all()


def test_training_resumes_from_a_checkpoint(sample, tmp_path):
    from napari_4dstem.rrvae import RRVAE

    params = inspect.signature(RRVAE.iter_fit).parameters
    if "resume" not in params:
        pytest.skip("RRVAE.iter_fit has no resume option: training restarts from scratch (reported to the lead)")
    from napari_4dstem.preprocess import Preprocessing

    pre = Preprocessing(target_size=12).fit_transform(sample)
    model = RRVAE(mode="fast", epochs=2, batch_size=25)
    model.fit(pre)
    model.save(tmp_path / "m.pt")
    again = RRVAE.load(tmp_path / "m.pt")
    again.config.epochs = 3
    again.fit(pre, resume=True)
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.history[:2] == model.history


def test_no_temporary_files_after_many_writes(tmp_path):
    """Writes that fail (existing file) or succeed leave only the named file in the folder."""
    from napari_4dstem.results import Results, WriteError, save_results

    r = Results(shape=(2, 2, 2, 2), dtype="uint8")
    r.maps["navigator"] = np.ones((2, 2))
    save_results(tmp_path / "a.h5", r)
    for _ in range(5):
        with pytest.raises(WriteError):
            save_results(tmp_path / "a.h5", r)
        save_results(tmp_path / "a.h5", r, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]
    assert oct(os.stat(tmp_path / "a.h5").st_mode & 0o777) != oct(0o600)  # normal permissions, not mkstemp's


def test_every_documented_bad_input_gives_a_project_error():
    """The cases of docs/bad_inputs.md: each is a FourDSTEMError (or a clean CLI exit), none accepted or crashing."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "bad_inputs_table.py"
    spec = importlib.util.spec_from_file_location("bad_inputs_table", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    outcomes = [mod.run_case(c) for c in mod.cases()]
    assert len(outcomes) >= 30
    bad = [f"[{o.case.area}] {o.case.what}: {o.kind}: {o.message}" for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    assert all(o.message for o in outcomes)
