"""`napari-4dstem demo`: napari with the plugin's docks and the built-in sample, optionally trained."""
from __future__ import annotations

import time

PLUGIN = "napari-4dstem"
#: Tabbed together in the right-hand column, in this order (the Inspector too: a tab of its own gives its
#: canvas the column's height, four readable panels, in the default window size).
WORKFLOW_DOCKS = ("Data", "Preprocess", "COM / DPC", "rrVAE", "Inspector")


def wait_for(worker, timeout: float = 600.0) -> None:
    """Process Qt events until ``worker`` (a napari thread worker, or None) has finished."""
    from ._workers import wait_for as _wait

    if worker is not None:
        _wait([worker], timeout)


def open_workflow(viewer, tabify: bool = True) -> dict:
    """Add the plugin's docks through its manifest; returns ``{name: widget}``."""
    widgets, docks = {}, {}
    for name in WORKFLOW_DOCKS:
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify)
    docks["Detector"], widgets["Detector"] = viewer.window.add_plugin_dock_widget(PLUGIN, "Detector")
    from qtpy.QtCore import Qt

    main = widgets["Detector"].window()
    if hasattr(main, "addDockWidget"):  # detector space on the left of the scan canvas
        main.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, docks["Detector"])
    docks["Data"].raise_()  # Data in front at start: the first step
    widgets["_docks"] = docks
    return widgets


def balance_docks(widgets: dict, inspector_fraction: float = 0.5) -> None:
    """Give the Inspector about ``inspector_fraction`` of the right-hand column when it is not tabbed with the
    other docks (``open_workflow(tabify=False)``; QMainWindow.resizeDocks, once the window is laid out)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    docks = widgets["_docks"]
    main = widgets["Inspector"].window()
    if hasattr(main, "resizeDocks") and docks["Inspector"] not in main.tabifiedDockWidgets(docks["rrVAE"]):
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
    try:
        return _run(viewer, screenshot, epochs, fast)
    except BaseException:
        close_cleanly(viewer)  # no worker may outlive the window, even on an error
        raise


def _run(viewer, screenshot, epochs, fast):
    import napari

    viewer.window.resize(1500, 950)
    viewer.open_sample(PLUGIN, "graphene_vacancy")
    w = open_workflow(viewer)
    w["Data"].refresh()
    wait_for(w["Preprocess"].run())
    wait_for(w["COM / DPC"].run())
    wait_for(w["Detector"].add_preset("adf"))  # a virtual detector drawn in detector space, its image in scan space
    if epochs > 0:
        worker = w["rrVAE"].train(epochs=int(epochs), mode="fast" if fast else "faithful")
        wait_for(worker)
        wait_for(w["rrVAE"].worker)  # the maps are encoded in a second worker after training
    show_dock(w, "Inspector" if epochs > 0 else "COM / DPC")  # after training: the model's view of a pixel
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
        close_cleanly(viewer)
        return screenshot
    napari.run()
    return None


def close_cleanly(viewer, timeout: float = 60.0) -> None:
    """Stop and wait for every worker, then close the viewer (no worker outlives its Qt objects)."""
    from ._session import get_session
    from ._workers import stop_all

    get_session(viewer).stop_workers(timeout)
    stop_all(timeout)
    viewer.close()
    stop_all(timeout)
