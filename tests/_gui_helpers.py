"""Helpers shared by the GUI test modules (data files, docks, a small preprocessed session)."""
from __future__ import annotations

import numpy as np

PLUGIN = "napari-4dstem"
DOCKS = ("Data", "Preprocess", "COM / DPC", "rrVAE", "Inspector")


def npy_scan(tmp_path, shape, name="scan.npy", seed=1):
    """A random uint16 scan saved as .npy: ``(path, data)``."""
    data = np.random.default_rng(seed).integers(0, 1000, size=shape, dtype=np.uint16)
    p = tmp_path / name
    np.save(p, data)
    return p, data


def open_docks(viewer, qtbot, names=DOCKS) -> dict:
    docks = {n: viewer.window.add_plugin_dock_widget(PLUGIN, n)[1] for n in names}
    qtbot.wait(10)  # the docks hook the main window once the event loop has run
    return docks


def small_sample():
    from napari_4dstem.sample import make_sample

    return make_sample(scan_shape=(12, 12), detector_shape=(32, 32))


def preprocess_once(cache: dict, docks: dict, qtbot, target_size: int | None = None):
    """The small sample preprocessed by the Preprocess dock once per ``cache`` (a module's dict), then reused
    (the preprocessing itself is tested elsewhere; these tests need its output). Returns the session."""
    s = next(iter(docks.values())).session  # every dock of a viewer shares its session
    if not cache:
        s.set_dataset(small_sample())
        if target_size is not None:
            docks["Preprocess"].target_size.setValue(target_size)
        docks["Preprocess"].run()
        qtbot.waitUntil(lambda: s.preprocessed is not None, timeout=60_000)
        cache.update(dataset=s.dataset, pp=s.preprocessing, out=s.preprocessed)
    else:
        s.set_dataset(cache["dataset"])
        s.set_preprocessed(cache["pp"], cache["out"])
    return s
