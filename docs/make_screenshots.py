"""Render screenshots of the GUI's main states into docs/images/ (run: ``make docs`` or
``xvfb-run -a .venv/bin/python docs/make_screenshots.py [--epochs N]``)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def _settle(n: int = 20):
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()
        time.sleep(0.02)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=8, help="rrVAE epochs (fast mode) for the trained state")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_4dstem.gui.demo import open_workflow, show_dock, wait_for

    viewer = napari.Viewer(title="napari-4dstem")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-4dstem", "graphene_vacancy")
    w = open_workflow(viewer)
    s = w["Data"].session
    ny, nx = s.dataset.scan_shape
    s.select(ny // 2, nx // 2)  # the vacancy sits at the scan centre
    viewer.reset_view()

    def shot(name, dock):
        show_dock(w, dock)
        _settle()
        s.fit()
        _settle(5)
        p = args.out / f"{name}.png"
        viewer.screenshot(str(p), canvas_only=False)
        print("wrote", p)

    # the two spaces: an annular detector in detector space, its image in scan space
    wait_for(w["Detector"].add_detector("annulus", "ring", center=s.dataset.detector_center, inner=12, outer=24))
    viewer.layers.selection.active = viewer.layers["virtual ring"]
    shot("00_spaces", "Data")
    shot("01_data", "Data")
    # a detector being dragged: the scan image follows from the reduced copy (live), exact after release
    s.ensure_live(wait=True)
    layer = s.detector_model.layers["detector ring"]
    layer.data = [np.asarray(d) + np.array([6.0, 4.0]) for d in layer.data]  # detector pixels
    layer.selected_data = {0, 1}
    shot("07_virtual_drag", "Data")
    # a region drawn in scan space: the detector view shows its mean pattern
    region = w["Detector"].draw_region()
    region.add_rectangles(np.array([[ny // 2 - 6, nx // 2 - 6], [ny // 2 + 6, nx // 2 + 6]]))  # scan pixels
    t0 = time.perf_counter()
    while s.region_pattern is None and time.perf_counter() - t0 < 60:
        _settle(1)
    region.mode = "pan_zoom"
    shot("08_region", "Data")
    s.set_display(source="selection")
    region.data = []
    viewer.layers["virtual ring"].visible = False
    w["Preprocess"].pca.setValue(12)
    wait_for(w["Preprocess"].run())
    shot("02_preprocess", "Preprocess")
    wait_for(w["COM / DPC"].run())
    for name in ("COM icom", "COM angle"):
        viewer.layers[name].visible = False
    viewer.layers.selection.active = viewer.layers["COM magnitude"]
    shot("03_com", "COM / DPC")
    # retrain on patterns without PCA: the rrVAE sees the full signal
    w["Preprocess"].pca.setValue(0)
    wait_for(w["Preprocess"].run())
    wait_for(w["rrVAE"].train(epochs=args.epochs, mode="fast"))
    t0 = time.perf_counter()
    while s.encoded is None and time.perf_counter() - t0 < 120:
        _settle(1)
    for layer in viewer.layers:
        if layer.name.startswith("COM") or layer.name.startswith("rrVAE sd"):
            layer.visible = False
    viewer.layers["rrVAE angle"].visible = False
    viewer.layers["rrVAE reconstruction error"].visible = False
    viewer.layers["rrVAE outlier"].visible = False
    s.select(ny // 2, nx // 2)
    shot("04_rrvae", "rrVAE")
    for name in ("rrVAE z1", "rrVAE z2"):
        viewer.layers[name].visible = False
    viewer.layers["rrVAE angle"].visible = True
    viewer.layers.selection.active = viewer.layers["rrVAE angle"]
    s.select(ny // 2 - 3, nx // 2 + 2)
    shot("05_inspector_angle", "Inspector")
    # the outlier map (neighbourhoods of latents unlike the rest of the scan), the vacancy selected
    viewer.layers["rrVAE angle"].visible = False
    viewer.layers["rrVAE outlier"].visible = True
    viewer.layers.selection.active = viewer.layers["rrVAE outlier"]
    s.select(ny // 2, nx // 2)
    shot("06_outlier", "Inspector")
    from napari_4dstem.gui.demo import close_cleanly

    close_cleanly(viewer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
