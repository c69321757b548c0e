"""`napari-4dstem demo`: napari with the plugin's docks and the built-in sample, optionally trained."""
from __future__ import annotations

import time

PLUGIN = "napari-4dstem"
WORKFLOW_DOCKS = ("Data", "Preprocess", "COM / DPC", "rrVAE")


def wait_for(worker, timeout: float = 600.0) -> None:
    """Process Qt events until ``worker`` (a napari thread worker, or None) has finished."""
    from qtpy.QtWidgets import QApplication

    if worker is None:
        return
    done = []
    worker.finished.connect(lambda: done.append(True))
    t0 = time.perf_counter()
    while not done and time.perf_counter() - t0 < timeout:
        QApplication.processEvents()
        time.sleep(0.005)
    for _ in range(5):  # let the finished/returned slots run
        QApplication.processEvents()


def open_workflow(viewer, tabify: bool = True) -> dict:
    """Add the plugin's docks through its manifest; returns ``{name: widget}``."""
    widgets, docks = {}, {}
    for name in WORKFLOW_DOCKS:
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify)
    docks["Inspector"], widgets["Inspector"] = viewer.window.add_plugin_dock_widget(PLUGIN, "Inspector")
    widgets["_docks"] = docks
    return widgets


def balance_docks(widgets: dict, inspector_fraction: float = 0.5) -> None:
    """Give the Inspector about ``inspector_fraction`` of the right-hand column (QMainWindow.resizeDocks;
    call it once the window is laid out)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    docks = widgets["_docks"]
    main = widgets["Inspector"].window()
    if hasattr(main, "resizeDocks"):
        h = main.height()
        main.resizeDocks([docks["rrVAE"], docks["Inspector"]],
                         [int(h * (1 - inspector_fraction)), int(h * inspector_fraction)], Qt.Orientation.Vertical)
    QApplication.processEvents()


def show_dock(widgets: dict, name: str) -> None:
    """Bring a tabified dock to the front."""
    widgets["_docks"][name].raise_()


def run_demo(screenshot: str | None = None, epochs: int | None = 0, fast: bool = True):
    """Open napari with the sample (graphene with a vacancy) and the plugin's docks.

    Parameters
    ----------
    screenshot
        If given, preprocess, compute COM (and train), render the whole window to this PNG and return
        instead of entering the event loop (works headless under ``xvfb-run``).
    epochs
        Train the rrVAE this many epochs (0 or None: do not train).
    fast
        Use the rrVAE's fast mode for the demo training.
    """
    import napari

    epochs = int(epochs or 0)  # the CLI passes None when --epochs is not given
    viewer = napari.Viewer(title="napari-4dstem demo")
    viewer.window.resize(1500, 950)
    viewer.open_sample(PLUGIN, "graphene_vacancy")
    w = open_workflow(viewer)
    w["Data"].refresh()
    wait_for(w["Preprocess"].run())
    wait_for(w["COM / DPC"].run())
    if epochs > 0:
        worker = w["rrVAE"].train(epochs=int(epochs), mode="fast" if fast else "faithful")
        wait_for(worker)
        for _ in range(200):  # the maps are encoded in a second worker after training
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
            if w["rrVAE"].session.encoded is not None:
                break
            time.sleep(0.02)
    show_dock(w, "rrVAE" if epochs > 0 else "COM / DPC")
    balance_docks(w, 0.45)
    ds = w["Data"].session.dataset
    if ds is not None:  # the vacancy sits at the scan centre
        w["Data"].session.select(ds.scan_shape[0] // 2, ds.scan_shape[1] // 2)
    viewer.reset_view()
    if screenshot:
        from qtpy.QtWidgets import QApplication

        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.02)
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()
        return screenshot
    napari.run()
    return None
