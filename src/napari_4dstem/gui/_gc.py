"""Keep Python's full garbage collections short while the GUI runs.

With napari, Qt, torch and numba loaded the interpreter tracks ~0.8 million objects, and each full (oldest
generation) collection walks all of them: 450-520 ms here, every few seconds while layers are made or a model
trains, in whichever thread allocates at that moment, so the event loop stalled for half a second now and
then (measured in benchmarks/bench_gui.py). ``gc.freeze()`` moves the objects alive at a call into a permanent
generation that collections skip. :func:`refreeze` first thaws what an earlier call froze and collects, so
what was dropped since (an old dataset's layers, a cleared model) is freed there and then: it is called
when a dataset has been opened (the user waits for that anyway; the collection costs ~0.5 s once), when the
first session is made and when the training's imports have been warmed up.

``NAPARI_4DSTEM_GC_FREEZE=0`` turns this off (the test suite does, see tests/conftest.py: napari's viewer
fixture checks that closed viewers are collected).
"""
from __future__ import annotations

import gc
import os


def enabled() -> bool:
    return os.environ.get("NAPARI_4DSTEM_GC_FREEZE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def refreeze() -> bool:
    """Thaw, collect the garbage, then freeze every object alive now. Returns whether it ran."""
    if not enabled():
        return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return True
