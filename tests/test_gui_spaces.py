"""Scan and detector space through the public scripting surface ``napari_4dstem.gui.session``.

Patterns for every selection, one unit per canvas, calibrated and uncalibrated data, non-square scans and
detectors, reopened results, virtual detectors (exact, live while dragging, saved and reopened) and region
averages; references come from the core (``napari_4dstem.virtual_image``) or plain numpy.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_4dstem import Calibration, virtual_image  # noqa: E402
from napari_4dstem.gui import session  # noqa: E402
from _gui_helpers import PLUGIN, npy_scan  # noqa: E402

pytestmark = pytest.mark.gui
_npy = npy_scan


def one_unit(model) -> set:
    """The units of every layer of a canvas (a set of one when nothing is mixed)."""
    return {tuple(str(u) for u in layer.units) for layer in model.layers}


def test_session_api_on_a_non_square_uncalibrated_scan(make_napari_viewer, tmp_path):
    p, data = _npy(tmp_path, (5, 9, 20, 14))  # non-square scan and detector
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    assert s is session(viewer) and s.dataset.shape == data.shape
    for y, x in [(0, 0), (4, 8), (2, 7), (3, 1)]:
        s.select(y, x)
        assert s.selection == (y, x)
        np.testing.assert_array_equal(s.pattern(), data[y, x])
    s.select(99, -3)  # clamped to the scan
    assert s.selection == (4, 0)
    # an annulus through the session is the core's virtual image with the same radii
    s.add_virtual_detector("ring", kind="annulus", inner=3, outer=6)
    np.testing.assert_allclose(s.virtual_image("ring"), virtual_image(s.dataset, kind="annulus", inner=3,
                                                                      outer=6).image)
    # and it is the plain sum over the pixels at 3 <= r <= 6 from the detector centre
    yy, xx = np.indices((20, 14))
    r = np.hypot(yy - 9.5, xx - 6.5)
    np.testing.assert_allclose(s.virtual_image("ring"), data[..., (r >= 3) & (r <= 6)].sum(-1))
    # one unit per canvas: pixels in both
    assert one_unit(viewer) == {("pixel", "pixel")}
    assert one_unit(s.detector_model) == {("pixel", "pixel")}
    assert "detector ring" in s.detector_model.layers and "virtual ring" in viewer.layers


def test_typed_calibration_rescales_both_spaces_and_survives_reopening(make_napari_viewer, qtbot, tmp_path):
    """Issue items 1 and 4: the typed calibration reaches every layer of both canvases (one unit each, views
    refitted) and a reopened results file keeps it, so that a click on map pixel (32, 16) selects (32, 16)."""
    p, data = _npy(tmp_path, (40, 20, 8, 12))
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Data")
    s.add_virtual_detector("disc", kind="circle", center=(3.5, 5.5), outer=2)
    dock.step_y.setText("0.12")
    dock.step_x.setText("0.12")
    dock.scan_unit.setText("Å")
    dock.pix_y.setText("1.5")
    dock.pix_x.setText("1.5")
    dock.det_unit.setCurrentText("mrad")
    dock.apply_calibration()
    assert one_unit(viewer) == {("angstrom", "angstrom")}
    assert one_unit(s.detector_model) == {("milliradian", "milliradian")}
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, (0.12, 0.12))
    np.testing.assert_allclose(s.pattern_layer.scale, (1.5, 1.5))
    # refitted: each camera looks at the middle of its space
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (39 * 0.12 / 2, 19 * 0.12 / 2), atol=0.2)
    np.testing.assert_allclose(s.detector_model.scene.camera.center[-2:], (7 * 1.5 / 2, 11 * 1.5 / 2), atol=1.0)
    # the drawn detector kept its place on the detector (pixels), drawn in mrad now
    shapes = s.detector_model.layers["detector disc"]
    np.testing.assert_allclose(np.asarray(shapes.data[0]).mean(axis=0), (3.5, 5.5))  # detector pixels
    np.testing.assert_allclose(shapes.scale, (1.5, 1.5))  # drawn in mrad like the pattern
    out = tmp_path / "res.h5"
    dock.save(str(out))

    viewer2 = make_napari_viewer()
    viewer2.open(str(out), plugin=PLUGIN)
    s2 = session(viewer2)
    assert s2.dataset.calibration.scan_step == (0.12, 0.12)
    assert one_unit(viewer2) == {("angstrom", "angstrom")}
    from test_gui import click

    click(viewer2, (32 * 0.12, 16 * 0.12))
    assert s2.selection == (32, 16)
    np.testing.assert_array_equal(s2.pattern(), data[32, 16])
    # the detector came back as a layer and its map as a linked scan map
    assert "disc" in s2.detectors and "detector disc" in s2.detector_model.layers
    np.testing.assert_allclose(s2.virtual_image("disc"), s.virtual_image("disc"))


def test_dragging_a_detector_is_live_then_exact(make_napari_viewer, qtbot, tmp_path):

    p, data = _npy(tmp_path, (6, 8, 32, 32))
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    s.ensure_live(wait=True)
    assert s.live.bin == 1  # 32 x 32 needs no binning
    s.add_virtual_detector("box", kind="rectangle", corners=((4, 4), (11, 11)))
    layer = s.detector_model.layers["detector box"]
    # drag: move the rectangle by (8, 12) px; napari refreshes the layer while dragging (set_data)
    moved = np.asarray(layer.data[0]) + np.array([8.0, 12.0])
    layer.data = [moved]
    live = s.virtual_image("box")
    np.testing.assert_allclose(live, data[:, :, 12:20, 16:24].sum(axis=(2, 3)), rtol=1e-5)
    assert not viewer.layers["virtual box"].metadata["napari_4dstem"]["exact"]
    # release: the exact pass runs in a worker
    from napari.layers.base._base_constants import ActionType

    layer.events.data(value=layer.data, action=ActionType.CHANGED, data_indices=(0,), vertex_indices=((),))
    qtbot.waitUntil(lambda: viewer.layers["virtual box"].metadata["napari_4dstem"]["exact"], timeout=30_000)
    mask = np.zeros((32, 32), bool)
    mask[12:20, 16:24] = True
    np.testing.assert_allclose(s.virtual_image("box"), virtual_image(s.dataset, kind="mask", mask=mask).image)


def test_a_dragged_shape_keeps_its_shader_linked(make_napari_viewer):
    """vispy's Mesh built a new colour-transform function on every data change, so each mouse move of a drag
    re-generated and re-linked both meshes of a Shapes layer (most of a frame in software OpenGL)."""
    from vispy.visuals.mesh import MeshVisual

    session(make_napari_viewer())  # the first session patches vispy's Mesh (gui/_vispy_mesh.py)
    mesh = MeshVisual()
    tri, faces, colours = np.array([[0.0, 0], [1, 0], [0, 1]]), np.array([[0, 1, 2]]), np.ones((1, 4))
    mesh.set_data(vertices=tri, faces=faces, face_colors=colours)
    mesh._update_data()
    mesh._program._need_build = False  # as after the first draw
    mesh.set_data(vertices=tri + 0.5, faces=faces, face_colors=0.5 * colours)  # one mouse move
    mesh._update_data()
    assert not mesh._program._need_build
    np.testing.assert_allclose(mesh.mesh_data.get_vertices()[:, :2], tri + 0.5)  # the move itself is kept
    # values through a colormap still get vispy's transform, which carries the colour limits
    mesh.set_data(vertices=tri, faces=faces, vertex_values=np.array([0.0, 1.0, 2.0]))
    mesh._update_data()
    assert mesh._program._need_build


def test_live_copy_of_a_binned_detector_is_close_to_exact(tmp_path):
    from napari_4dstem import as_dataset
    from napari_4dstem.detector_rois import iter_reduced_copy, roi_mask
    from napari_4dstem.progress import run_steps

    yy, xx = np.indices((128, 128))
    disc = np.exp(-((yy - 64.0) ** 2 + (xx - 60.0) ** 2) / 800.0)  # smooth: the block approximation holds
    data = (np.random.default_rng(0).uniform(0.5, 1.5, (8, 8, 1, 1)) * disc).astype(np.float32)
    ds = as_dataset(data)
    rc = run_steps(iter_reduced_copy(ds))
    assert rc.bin == 4 and rc.frames.shape == (8, 8, 32, 32)
    m = roi_mask((128, 128), "annulus", center=(64, 60), inner=10, outer=30)
    exact = virtual_image(ds, kind="mask", mask=m).image
    np.testing.assert_allclose(rc.image(m), exact, rtol=0.03)
    # block-aligned masks are exact
    box = roi_mask((128, 128), "rectangle", corners=((32, 40), (63.5, 79.5)))
    np.testing.assert_allclose(rc.image(box), virtual_image(ds, kind="mask", mask=box).image, rtol=1e-5)


def test_region_average_drawn_in_scan_space(make_napari_viewer, qtbot, tmp_path):
    p, data = _npy(tmp_path, (7, 9, 10, 6))
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    got = s.region_mean(vertices=[(1, 2), (1, 6), (4, 6), (4, 2)])
    np.testing.assert_allclose(got, data[1:5, 2:7].reshape(-1, 10, 6).mean(axis=0))
    assert s.display["source"] == "region"
    # drawn as a rectangle in the scan region layer: the mean comes from a worker
    layer = s.ensure_region_layer()
    s.region_pattern = None
    layer.add_rectangles(np.array([[0.0, 0.0], [2.0, 3.0]]))
    qtbot.waitUntil(lambda: s.region_pattern is not None, timeout=30_000)
    np.testing.assert_allclose(s.region_pattern, data[0:3, 0:4].reshape(-1, 10, 6).mean(axis=0))
    s.set_display(scaling="linear", contrast="min-max")
    np.testing.assert_allclose(s.pattern_layer.data, s.region_pattern.astype(np.float32), rtol=1e-6)
    s.set_display(source="mean")
    qtbot.waitUntil(lambda: s.mean is not None, timeout=30_000)
    np.testing.assert_allclose(s.mean, data.reshape(-1, 10, 6).mean(axis=0))


def test_presets_follow_the_convergence_angle(make_napari_viewer, tmp_path):
    p, data = _npy(tmp_path, (3, 4, 33, 33))
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    cal = Calibration(detector_pixel=(2.0, 2.0), detector_unit="mrad", convergence_semiangle_mrad=20.0,
                      beam_energy_ev=200e3)
    s.update_calibration(cal)
    s.preset("bf", wait=True)
    s.preset("abf", wait=True)
    s.preset("adf", wait=True)
    assert s.detectors["BF"]["outer"] == pytest.approx(10.0)  # 20 mrad / 2 mrad per pixel
    assert s.detectors["ABF"]["inner"] == pytest.approx(5.0)
    for kind in ("bf", "abf", "adf"):
        np.testing.assert_allclose(s.virtual_image(kind.upper()), virtual_image(s.dataset, kind=kind).image)


def test_hot_pixel_does_not_blacken_the_pattern(make_napari_viewer, tmp_path):
    data = np.zeros((2, 2, 32, 32), np.uint16)
    data[..., 10:20, 10:20] = 5
    data[..., 3, 3] = 60000  # hot pixel
    p = tmp_path / "hot.npy"
    np.save(p, data)
    viewer = make_napari_viewer()
    viewer.open(str(p), plugin=PLUGIN)
    s = session(viewer)
    for scaling in ("linear", "log", "power"):
        s.set_display(scaling=scaling, contrast="percentile", percentile=99.0)
        lo, hi = s.pattern_layer.contrast_limits
        shown = s.pattern_layer.data
        assert hi < shown[3, 3] and hi >= shown[15, 15] > lo  # the disc is visible, the hot pixel clipped
    assert s.pattern_layer.colorbar.visible
