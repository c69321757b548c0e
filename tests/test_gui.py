"""The napari GUI: reader, linked layers and selection, docks from the manifest, workflow, Stop, results.

Run under a display (pytest-xvfb starts Xvfb). Click handlers are tested by calling them with a fake
event (synthetic Qt clicks on the canvas are brittle); waits use qtbot.waitUntil.
"""
from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_4dstem.gui import _layers, _reader  # noqa: E402
from _gui_helpers import PLUGIN, DOCKS, npy_scan, open_docks, preprocess_once, small_sample  # noqa: E402
from napari_4dstem.gui._layers import MARKER_NAME, PATTERN_NAME  # noqa: E402
from napari_4dstem.gui._session import get_session  # noqa: E402

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]


class FakeMouse:
    def __init__(self, position, type_="mouse_press"):
        self.position, self.type, self.button, self.modifiers = position, type_, 1, ()


def click(viewer, world_pos, drag_to=()):
    """Run the viewer's mouse-drag callbacks for a press at ``world_pos`` (and moves to ``drag_to``)."""
    for cb in list(viewer.mouse_drag_callbacks):
        ev = FakeMouse(world_pos)
        gen = cb(viewer, ev)
        if gen is None or not hasattr(gen, "__next__"):
            continue
        try:
            next(gen)
            for pos in drag_to:
                ev.type, ev.position = "mouse_move", pos
                next(gen)
            ev.type = "mouse_release"
            next(gen)
        except StopIteration:
            pass


def _npy(tmp_path, shape=(6, 7, 16, 12), name="scan.npy"):
    return npy_scan(tmp_path, shape, name)


def test_reader_npy_gives_navigator_and_linked_pattern(make_napari_viewer, tmp_path):
    p, data = _npy(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    names = [layer.name for layer in viewer.layers]
    assert "navigator" in names and MARKER_NAME in names
    assert PATTERN_NAME not in names  # the pattern lives in detector space, never in the scan canvas
    nav = viewer.layers["navigator"]
    assert nav.data.shape == data.shape[:2]
    # navigator is the total intensity (sum image); reference computed independently in float64
    np.testing.assert_allclose(nav.data, data.sum(axis=(2, 3), dtype=np.float64), rtol=1e-5)
    assert tuple(nav.axis_labels) == ("scan_y", "scan_x")
    s = get_session(viewer)
    assert s.dataset.shape == data.shape
    pattern = s.pattern_layer
    s.set_display(scaling="linear")
    # a click on the navigator selects that pixel and updates the one pattern layer in place
    n_layers = len(viewer.layers)
    click(viewer, (4.0, 2.2))
    assert s.selected == (4, 2)
    assert s.pattern_layer is pattern and len(viewer.layers) == n_layers
    np.testing.assert_array_equal(pattern.data, data[4, 2])
    np.testing.assert_array_equal(s.pattern(), data[4, 2])
    np.testing.assert_array_equal(viewer.layers[MARKER_NAME].data, [[4, 2]])
    # dragging scrubs through pixels
    click(viewer, (1.0, 1.0), drag_to=[(1.0, 2.0), (2.0, 5.0)])
    assert s.selected == (2, 5)
    np.testing.assert_array_equal(pattern.data, data[2, 5])
    # a click outside the scan changes nothing
    click(viewer, (3.0, 30.0))
    assert s.selected == (2, 5)
    # arrow keys are bound on the viewer and move the selection
    up = [f for k, f in viewer.keymap.items() if str(k) == "Up"]
    assert up, "Up is not bound"
    up[0](viewer)
    assert s.selected == (1, 5)
    np.testing.assert_array_equal(pattern.data, data[1, 5])


def test_reader_bad_file_is_a_notification(make_napari_viewer, tmp_path, monkeypatch):
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    shown = []
    monkeypatch.setattr(_reader, "show_error", lambda msg: shown.append(msg))
    assert _reader.read_4dstem(str(bad)) == [(None,)]
    assert len(shown) == 1 and "broken.npy" in shown[0]
    viewer = make_napari_viewer()
    viewer.open(str(bad), plugin=PLUGIN)  # must not raise
    assert len(viewer.layers) == 0
    assert _reader.napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert _reader.napari_get_reader(str(bad)) is _reader.read_4dstem


def _rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def test_reader_stays_lazy_on_a_2gib_memmap(tmp_path, monkeypatch):
    monkeypatch.setattr(_layers, "ASYNC_NAVIGATOR_BYTES", 2**62)  # compute here, even if a viewer is around
    shape = (256, 256, 128, 128)  # 2 GiB of uint16, written only in two rows (sparse file)
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint16, shape=shape)
    mm[10, :, 60:68, 60:68] = 7
    mm[200, 3] = 1
    mm.flush()
    del mm
    before = _rss_anon_bytes()
    layers = _reader.read_4dstem(str(tmp_path / "big.npy"))
    grew = _rss_anon_bytes() - before
    nav = layers[0][0]
    ds = layers[0][1]["metadata"]["napari_4dstem"]["dataset"]
    assert isinstance(ds.data, np.memmap)
    assert nav.shape == (256, 256)
    assert nav[10, 0] == 7 * 64 and nav[200, 3] == 128 * 128 and nav[0, 0] == 0
    assert grew < 512 * 2**20, f"opening a 2 GiB file took {grew / 2**20:.0f} MiB of anonymous memory"
    # cached: a second open does not recompute (same array object)
    assert _reader.read_4dstem(str(tmp_path / "big.npy"))[0][0] is nav


def test_big_file_navigator_comes_from_a_worker(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(_layers, "ASYNC_NAVIGATOR_BYTES", 0)  # treat this small file as big
    p, data = _npy(tmp_path, shape=(6, 7, 16, 12), name="async.npy")
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)  # returns before the navigator is computed
    s = get_session(viewer)
    nav = viewer.layers["navigator"]
    ref = data.sum(axis=(2, 3), dtype=np.float64)
    qtbot.waitUntil(lambda: np.allclose(nav.data, ref, rtol=1e-5), timeout=30_000)
    assert viewer.layers["navigator"] is nav and s.maps["navigator"] is not None
    assert not nav.metadata["napari_4dstem"]["pending"]


def test_docks_come_from_the_manifest(make_napari_viewer):
    from napari_4dstem.gui._inspector import InspectorWidget
    from napari_4dstem.gui._rrvae_widget import RRVAEWidget
    from napari_4dstem.gui._com_widget import COMWidget
    from napari_4dstem.gui._data_widget import DataWidget
    from napari_4dstem.gui._detector_widget import DetectorWidget
    from napari_4dstem.gui._preprocess_widget import PreprocessWidget

    viewer = make_napari_viewer()
    expected = {"Data": DataWidget, "Preprocess": PreprocessWidget, "COM / DPC": COMWidget, "rrVAE": RRVAEWidget,
                "Inspector": InspectorWidget, "Detector": DetectorWidget}
    sessions = set()
    for name, cls in expected.items():
        _, w = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert isinstance(w, cls)
        sessions.add(id(w.session))
    assert len(sessions) == 1, "all docks of one viewer share one session"


def _docks(viewer, qtbot, names=DOCKS + ("Detector",)):
    """The docks a test needs (each canvas dock, Inspector and Detector, is a GL canvas more to draw)."""
    return open_docks(viewer, qtbot, names)


_small_sample = small_sample


def test_whole_workflow_on_the_sample(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_4dstem.com import center_of_mass

    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot)
    s = docks["Data"].session
    ds = _small_sample()
    s.set_dataset(ds)
    assert docks["Data"].info.text().count("(12, 12, 32, 32)") == 1
    # preprocess in a worker
    docks["Preprocess"].target_size.setValue(32)
    docks["Preprocess"].run()
    qtbot.waitUntil(lambda: s.preprocessed is not None, timeout=60_000)
    assert s.preprocessed.shape == (12, 12, 32, 32)
    # COM: the map shown is the core's result for the same parameters, on the scan grid, linked
    docks["COM / DPC"].run()
    qtbot.waitUntil(lambda: s.com is not None, timeout=60_000)
    # the sample's detector is calibrated in mrad: COM is shown in mrad (issue 10, item 12)
    ref = center_of_mass(ds, rotation="auto", flip="auto", units="mrad")
    assert s.com.units == "mrad" and "mrad" in docks["COM / DPC"].status.text()
    mag = viewer.layers["COM magnitude"]
    np.testing.assert_allclose(mag.data, ref.magnitude, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mag.scale, ds.calibration.scan_scale())
    assert viewer.layers["COM angle"].colormap.name == "twilight"
    qtbot.waitUntil(lambda: docks["COM / DPC"].plot.rendered >= 1, timeout=30_000)  # curl plot drawn off-thread
    # rrVAE: 2 epochs of a tiny model, then the maps
    rr = docks["rrVAE"]
    rr.form.set(hidden=16)
    rr.train(epochs=2, mode="fast")
    assert rr.train_btn.text() == "Stop"
    qtbot.waitUntil(lambda: s.encoded is not None, timeout=120_000)
    assert rr.train_btn.text() == "Train"
    assert len(s.model.history) == 2 and len(rr.reports) == 2
    assert rr.plot.rendered >= 2  # live loss / r plot, once per epoch, in the GUI thread
    # the curves are the history's numbers: the total loss and the per-latent r of each epoch
    np.testing.assert_allclose(rr.plot.curves["loss"], [h["loss"] for h in s.model.history])
    np.testing.assert_allclose(rr.plot.curves["r[z1]"], [h["r"][0] for h in s.model.history])
    assert viewer.layers["rrVAE angle"].colormap.name == "twilight"
    assert viewer.layers["rrVAE z1"].data.shape == (12, 12)
    # the residual map: each pattern's reconstruction error, as the core computes it
    res = viewer.layers["rrVAE reconstruction error"].data
    np.testing.assert_allclose(res, s.model.reconstruction_error(s.preprocessed), rtol=1e-5)
    assert np.all(res > 0) and viewer.layers["rrVAE reconstruction error"].scale[0] == pytest.approx(ds.calibration.scan_scale()[0])
    # the outlier map, as the core computes it from the shown maps
    np.testing.assert_allclose(viewer.layers["rrVAE outlier"].data, s.model.outlier_map(maps=s.encoded), rtol=1e-5)
    assert rr.epoch.count() == 2  # both epochs' weights are kept for a model this small
    first = s.encoded
    rr.use_checkpoint(1)  # the epoch picker: weights of epoch 1, maps re-encoded
    qtbot.waitUntil(lambda: s.encoded is not first, timeout=60_000)
    assert s.model.epoch == 1
    np.testing.assert_allclose(viewer.layers["rrVAE z1"].data, s.model.encode(s.preprocessed).latents[0], rtol=1e-5)
    # select a pixel by clicking a scan map: the Inspector shows that pixel's patterns
    sy, sx = ds.calibration.scan_scale()
    click(viewer, (5 * sy, 7 * sx))
    assert s.selected == (5, 7)
    insp = docks["Inspector"]
    qtbot.waitUntil(lambda: insp.recon_pixel == (5, 7), timeout=30_000)  # reconstructions come from a worker
    from napari_4dstem.gui._inspector import pixel_reconstructions

    want = pixel_reconstructions(s.model, s.preprocessed.frame(5, 7))
    rec = insp.layers["reconstruction"].data
    assert rec.shape == s.preprocessed.detector_shape and np.isfinite(rec).all()
    np.testing.assert_allclose(rec, s.model.reconstruct(s.preprocessed.rows(5, 6)[:, 7:8])[0, 0], rtol=1e-5)
    # the residual is against the model's input (binned to its grid), not the raw pattern
    size = s.model.view.size
    assert insp.layers["model input"].data.shape == insp.layers["residual"].data.shape == (size, size)
    np.testing.assert_allclose(insp.layers["residual"].data, want["model input"] - _bin(rec, size), atol=1e-4)
    assert insp.layers["canonical"].data.shape == rec.shape
    # one contrast for input and reconstructions; a symmetric one for the residual
    lims = {n: tuple(insp.layers[n].contrast_limits) for n in insp.layers}
    assert lims["model input"] == lims["reconstruction"] == lims["canonical"]
    assert lims["residual"][0] == pytest.approx(-lims["residual"][1])
    # panels of different grids cover the same detector area
    ext = {n: np.multiply(insp.layers[n].data.shape, insp.layers[n].scale) for n in insp.layers}
    np.testing.assert_allclose(ext["model input"], ext["reconstruction"], rtol=1e-6)
    assert all(insp.layers[n].name_overlay.visible and insp.layers[n].colorbar.visible for n in insp.layers)
    assert "(5, 7)" in insp.text.text() and "rrVAE angle" in insp.text.text() and "COM" in insp.text.text()
    assert f"r(input, reconstruction) = {want['r']:.3f}" in insp.text.text()
    # rapid clicks: one reconstruction worker at a time, stale clicks are skipped, the last one is shown
    started = []
    real = s.workers.start
    monkeypatch.setattr(s.workers, "start", lambda *a, **k: started.append(1) or real(*a, **k))
    for k in range(6):
        s.select(k, 11 - k)
    qtbot.waitUntil(lambda: insp.recon_pixel == (5, 6), timeout=30_000)
    assert len(started) <= 2
    np.testing.assert_allclose(insp.layers["reconstruction"].data,
                               s.model.reconstruct(s.preprocessed.rows(5, 6)[:, 6:7])[0, 0], rtol=1e-5)
    # saved and reopened, the residual map comes back as a linked layer
    out = docks["Data"].save(str(tmp_path / "res.h5"))
    viewer2 = make_napari_viewer()
    viewer2.open(str(out), plugin=PLUGIN)
    np.testing.assert_allclose(viewer2.layers["rrVAE reconstruction error"].data, viewer.layers["rrVAE reconstruction error"].data)


def _bin(img, size):
    f = img.shape[0] // size
    return img.reshape(size, f, size, f).mean(axis=(1, 3))


_PREPARED = {}


def _ready_to_train(make_napari_viewer, qtbot):
    """A viewer with the docks, the small sample preprocessed, and a small rrVAE configured. The dock
    preprocesses once per module; later calls reuse its output (preprocessing is tested elsewhere)."""
    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Preprocess", "rrVAE"))
    s = preprocess_once(_PREPARED, docks, qtbot)
    rr = docks["rrVAE"]
    rr.form.set(hidden=16)
    return viewer, s, rr


def test_average_defect_maps_of_several_models(make_napari_viewer, qtbot):
    """The rrVAE dock's "Average defect maps": the outlier layer becomes the mean of the current model's map and
    those of models trained like it from the next seeds (computed here by hand with the core)."""
    from napari_4dstem.rrvae import RRVAE

    viewer, s, rr = _ready_to_train(make_napari_viewer, qtbot)
    rr.train(epochs=1, mode="fast")  # one epoch each: the averaging is what is tested
    qtbot.waitUntil(lambda: s.encoded is not None, timeout=120_000)
    one = np.array(viewer.layers["rrVAE outlier"].data)
    w = rr.average_defects(n_models=2)
    assert rr.average_btn.text() == "Stop averaging" and not rr.train_btn.isEnabled()
    qtbot.waitUntil(lambda: rr.average_worker is None, timeout=120_000)
    assert rr.train_btn.isEnabled() and w is not None
    other = RRVAE(dataclasses.replace(s.model.config, seed=s.model.config.seed + 1))
    other.fit(s.preprocessed)
    other.restore(other.best_epoch)
    want = np.mean([one, other.outlier_map(maps=other.encode(s.preprocessed))], axis=0)
    np.testing.assert_allclose(viewer.layers["rrVAE outlier"].data, want, rtol=1e-4, atol=1e-5)
    assert "mean of 2 models" in rr.status.text()


def test_stop_keeps_the_last_good_model(make_napari_viewer, qtbot):
    viewer, s, rr = _ready_to_train(make_napari_viewer, qtbot)
    rr.train(epochs=500, mode="fast")
    qtbot.waitUntil(lambda: len(rr.reports) >= 1, timeout=60_000)
    rr.toggle()  # the Stop button
    qtbot.waitUntil(lambda: rr.worker is None, timeout=60_000)
    assert rr.train_btn.text() == "Train"
    assert s.model is not None and s.model.trained
    assert 1 <= len(s.model.history) < 500
    qtbot.waitUntil(lambda: s.encoded is not None, timeout=60_000)  # the stopped model's maps are shown
    assert "rrVAE z1" in viewer.layers


def test_results_reopen_as_linked_layers(make_napari_viewer, qtbot, tmp_path):
    p, data = _npy(tmp_path, shape=(6, 7, 16, 12))
    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Data", "COM / DPC"))
    viewer.open(str(p), plugin=PLUGIN)
    s = docks["Data"].session
    docks["COM / DPC"].run()
    qtbot.waitUntil(lambda: s.com is not None, timeout=60_000)
    out = docks["Data"].save(str(tmp_path / "res.h5"))
    assert out is not None and _reader.is_results_file(str(out)) and not _reader.is_results_file(str(p))

    viewer2 = make_napari_viewer()
    viewer2.open(str(out), plugin=PLUGIN)
    s2 = get_session(viewer2)
    np.testing.assert_allclose(viewer2.layers["COM magnitude"].data, s.com.magnitude)
    np.testing.assert_allclose(viewer2.layers["navigator"].data, data.sum(axis=(2, 3), dtype=np.float64),
                               rtol=1e-5)
    # the source still exists: it is reattached and clicking works again
    assert s2.dataset is not None and s2.dataset.shape == data.shape
    click(viewer2, (3.0, 4.0))
    np.testing.assert_array_equal(s2.pattern(), data[3, 4])
    assert s2.com is not None and float(s2.com.x[3, 4]) == pytest.approx(float(s.com.x[3, 4]))


def test_sample_data_calibration_and_crop(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Data",))
    s = get_session(viewer)
    docks["Data"].load_sample()  # in a worker
    qtbot.waitUntil(lambda: s.dataset is not None, timeout=60_000)
    first = s.dataset
    viewer.open_sample(PLUGIN, "graphene_vacancy")  # the manifest's sample contribution
    assert s.dataset is not first and s.dataset.shape == (48, 48, 64, 64)
    np.testing.assert_array_equal(s.dataset.frame(24, 24), first.frame(24, 24))  # same seed, same data
    assert [layer.name for layer in viewer.layers].count("navigator") == 1  # the old dataset's layers went
    data = docks["Data"]
    assert "48, 48, 64, 64" in data.info.text()
    # correct the scan step: every linked scan-space layer follows
    data.step_y.setText("0.25")
    data.step_x.setText("0.25")
    data.apply_calibration()
    assert s.dataset.calibration.scan_step == (0.25, 0.25)
    for name in ("navigator", MARKER_NAME):
        np.testing.assert_allclose(viewer.layers[name].scale, (0.25, 0.25))
    click(viewer, (10 * 0.25, 20 * 0.25))
    assert s.selected == (10, 20)
    # crop the scan and the detector: a new lazy dataset whose patterns are the cropped originals
    raw = s.dataset
    for k, v in {"sy0": 8, "sy1": 24, "sx0": 4, "sx1": 36, "dy0": 2, "dy1": 62, "dx0": 0, "dx1": 60}.items():
        data.crop[k].setValue(v)
    data.apply_crop()
    assert s.dataset.shape == (16, 32, 60, 60)
    np.testing.assert_array_equal(s.dataset.frame(3, 5), raw.frame(11, 9)[2:62, 0:60])
    assert viewer.layers["navigator"].data.shape == (16, 32)


def test_data_dock_opens_in_a_worker_and_exports_virtual_maps(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    p, data = _npy(tmp_path, shape=(5, 6, 16, 16))
    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Data", "Detector"))
    s = docks["Data"].session
    docks["Data"].open_path(str(p))
    qtbot.waitUntil(lambda: s.dataset is not None, timeout=60_000)
    assert s.dataset.shape == data.shape
    np.testing.assert_allclose(viewer.layers["navigator"].data, data.sum(axis=(2, 3), dtype=np.float64), rtol=1e-5)
    # virtual detectors: an annular dark field and a bright field that add up to at most the total
    docks["Detector"].add_preset("bf")
    docks["Detector"].add_preset("adf")
    qtbot.waitUntil(lambda: "virtual ADF" in viewer.layers and "virtual BF" in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not s.workers.running(), timeout=60_000)
    bf, adf = viewer.layers["virtual BF"].data, viewer.layers["virtual ADF"].data
    assert bf.shape == adf.shape == (5, 6)
    assert np.all(bf + adf <= data.sum(axis=(2, 3)) + 1e-6)
    out = docks["Data"].export(str(tmp_path / "maps"))
    names = {q.name for q in out}
    assert {"navigator.tif", "navigator.png", "virtual_BF.tif", "virtual_ADF.png"} <= names
    assert not any(n.endswith(".hspy") for n in names)  # not ticked by default
    docks["Data"].export_formats["hspy"].setChecked(True)
    docks["Data"].export_formats["png"].setChecked(False)
    out = docks["Data"].export(str(tmp_path / "maps2"))
    assert {q.suffix for q in out} == {".tif", ".hspy"}
    from rsciio.hspy import file_reader

    adf = file_reader(str(tmp_path / "maps2" / "virtual_ADF.hspy"))[0]
    np.testing.assert_allclose(np.asarray(adf["data"]), viewer.layers["virtual ADF"].data, rtol=1e-6)
    # errors from a worker become notifications with the core's message
    from napari_4dstem.gui import _workers

    shown = []
    monkeypatch.setattr(_workers, "show_error", lambda msg: shown.append(msg))
    bad = tmp_path / "cut.npy"
    bad.write_bytes(p.read_bytes()[:300])
    docks["Data"].open_path(str(bad))
    qtbot.waitUntil(lambda: bool(shown), timeout=30_000)
    assert "cut.npy" in shown[0]
    assert s.dataset.shape == data.shape  # the previous dataset stays


# closing the viewer during training: tests/test_gui_issue10.py::test_closing_the_viewer_waits_for_every_worker


def test_writer_contribution_saves_the_session(make_napari_viewer, qtbot, tmp_path):
    from napari_4dstem.gui._results import write_results
    from napari_4dstem.results import load_results

    p, data = _npy(tmp_path, shape=(4, 5, 8, 8))
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    out = write_results(str(tmp_path / "w.h5"), [])
    assert out == [str(tmp_path / "w.h5")]
    r = load_results(out[0])
    np.testing.assert_allclose(r.maps["navigator"], data.sum(axis=(2, 3), dtype=np.float64), rtol=1e-5)
    assert tuple(r.shape) == data.shape


def test_event_loop_probe_sees_a_blocked_loop(qtbot):
    import time

    from qtpy.QtCore import QTimer

    from napari_4dstem.gui.probe import EventLoopProbe

    probe = EventLoopProbe(interval_ms=10, threshold_ms=100)
    probe.start()
    qtbot.wait(100)
    QTimer.singleShot(0, lambda: time.sleep(0.3))  # block the GUI thread once, for 300 ms
    qtbot.wait(200)
    probe.stop()
    assert probe.ticks > 5
    assert probe.stalls and max(probe.stalls) >= 250  # (a loaded machine may add other stalls)
    assert probe.max_stall_ms == max(probe.stalls)


def test_a_cancelled_close_leaves_the_inspector_and_workers_alone(make_napari_viewer, qtbot, monkeypatch):
    class FakeWorker:
        quits = 0

        def quit(self):
            FakeWorker.quits += 1

    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Data", "Inspector"))
    insp, s = docks["Inspector"], docks["Data"].session
    s.workers._workers[FakeWorker()] = None
    win = insp.window()
    monkeypatch.setattr(win, "closeEvent", lambda event: event.ignore())  # the user answers Cancel
    assert win.close() is False
    qtbot.wait(20)
    assert insp.canvas is not None and not insp.canvas.isHidden()
    assert FakeWorker.quits == 0
    monkeypatch.undo()  # now the close goes through: workers are stopped, the second canvas closed
    assert win.close() is True
    assert insp.canvas is None and FakeWorker.quits >= 1


def test_reopen_maps_a_scan_window_back_and_refuses_a_different_file(make_napari_viewer, tmp_path, monkeypatch):
    from napari_4dstem.gui import _results
    from napari_4dstem.io import load
    from napari_4dstem.results import Results, save_results

    p, data = _npy(tmp_path, shape=(6, 7, 16, 12))
    y0, y1, x0, x1 = 1, 5, 2, 6  # what the pipeline records for [preprocess] crop_scan
    window_nav = data[y0:y1, x0:x1].sum(axis=(2, 3), dtype=np.float64)
    r = Results.from_analysis(load(str(p)), navigator=window_nav, info={"scan_window": [y0, y1, x0, x1]})
    out = save_results(tmp_path / "win.h5", r)
    viewer = make_napari_viewer()
    viewer.open(str(out), plugin=PLUGIN)
    s = get_session(viewer)
    assert s.dataset is not None and s.dataset.scan_shape == (4, 4)
    click(viewer, (2.0, 1.0))  # map pixel (2, 1) is pixel (3, 3) of the file
    np.testing.assert_array_equal(s.pattern(), data[y0 + 2, x0 + 1])
    np.testing.assert_allclose(viewer.layers["navigator"].data[2, 1], data[3, 3].sum())
    assert s.scan_offset == (1, 2)
    # another file under the same name and shape: the maps open, the data is not reattached
    warned = []
    monkeypatch.setattr(_results, "show_warning", lambda msg: warned.append(msg))
    np.save(p, (data[::-1] + 1).astype(data.dtype))
    viewer2 = make_napari_viewer()
    viewer2.open(str(out), plugin=PLUGIN)
    assert get_session(viewer2).dataset is None and "navigator" in viewer2.layers
    assert warned and "not the file" in warned[0]


def test_a_scan_crop_saved_from_the_gui_reopens_onto_the_file(make_napari_viewer, qtbot, tmp_path):
    p, data = _npy(tmp_path, shape=(6, 7, 16, 12))
    viewer = make_napari_viewer()
    docks = _docks(viewer, qtbot, ("Data",))
    viewer.open(str(p), plugin=PLUGIN)
    s = docks["Data"].session
    for k, v in {"sy0": 1, "sy1": 5, "sx0": 2, "sx1": 7}.items():
        docks["Data"].crop[k].setValue(v)
    docks["Data"].apply_crop()
    assert s.dataset.shape == (4, 5, 16, 12) and s.scan_offset == (1, 2)
    out = docks["Data"].save(str(tmp_path / "crop.h5"))
    from napari_4dstem.results import load_results

    r = load_results(out)
    assert tuple(r.shape) == data.shape and list(r.info["scan_window"]) == [1, 5, 2, 7]
    viewer2 = make_napari_viewer()
    viewer2.open(str(out), plugin=PLUGIN)
    s2 = get_session(viewer2)
    assert s2.dataset is not None and s2.dataset.scan_shape == (4, 5)
    click(viewer2, (3.0, 4.0))
    np.testing.assert_array_equal(s2.pattern(), data[1 + 3, 2 + 4])
    np.testing.assert_allclose(viewer2.layers["navigator"].data, data[1:5, 2:7].sum(axis=(2, 3), dtype=np.float64),
                               rtol=1e-5)
