"""The GUI's structure (issue 10, Deliver 5 and 7): state apart from layers, no import cycle, one worker registry,
a usable rrVAE dock, readable tab titles."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

GUI = Path(__file__).resolve().parents[1] / "src" / "napari_4dstem" / "gui"
PLUGIN = "napari-4dstem"
pytestmark = pytest.mark.gui


def _gui_imports(path: Path) -> set[str]:
    """Sibling modules of gui/ that a file imports anywhere (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_cycle_in_the_gui():
    graph = {p.stem: _gui_imports(p) for p in GUI.glob("*.py")}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for mod in ("_reader", "_results", "_session", "_state", "_layers"):
        assert mod not in reach(mod), f"{mod} imports itself through {sorted(reach(mod))}"
    assert not graph["_state"] - {"_layers"}  # the state knows no layers, docks or workers
    assert not [n for n in ast.walk(ast.parse((GUI / "_state.py").read_text()))
                if isinstance(n, (ast.Import, ast.ImportFrom)) and "napari." in f"{getattr(n, 'module', '')}."
                and not str(getattr(n, "module", "")).startswith("napari_4dstem")]


def test_state_works_without_a_viewer():
    from napari_4dstem import as_dataset
    from napari_4dstem.gui._state import SessionState

    st = SessionState()
    seen = []
    st.dataset_changed.connect(lambda ds: seen.append(ds))
    data = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)
    st.dataset = as_dataset(data)
    st.dataset_changed.emit(st.dataset)
    st.selected = st.clamp(9, -1)
    assert seen and st.selection == (2, 0)
    np.testing.assert_array_equal(st.pattern(), data[2, 0])
    assert st.scan_index((1.2, 2.6)) == (1, 3) and st.scan_index((5.0, 0.0)) is None


def test_one_worker_registry_per_session(make_napari_viewer, qtbot):
    from napari_4dstem.gui import session

    viewer = make_napari_viewer()
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, n)[1] for n in ("Data", "Preprocess", "Inspector")]
    assert len({id(d.session.workers) for d in docks}) == 1 and docks[0].session is session(viewer)
    for p in GUI.glob("*.py"):
        if p.stem != "_workers":
            assert "create_worker(" not in p.read_text(), f"{p.name} starts workers outside the registry"


def test_rrvae_dock_is_short_and_fast_by_default_and_tabs_are_readable(make_napari_viewer, qtbot):
    import torch

    from napari_4dstem.gui.demo import open_workflow

    viewer = make_napari_viewer()
    w = open_workflow(viewer)
    qtbot.wait(20)
    rr = w["rrVAE"]
    form = rr.form.layout().itemAt(0).layout()  # the main rows, before "Advanced"
    labels = [form.itemAt(i, form.ItemRole.LabelRole).widget().text() for i in range(form.rowCount())]
    assert labels[0] == "mode" and labels[1].startswith("epochs") and labels[2:] == ["latents", "seed"]
    assert rr.form.advanced.isExpanded() is False
    if not torch.cuda.is_available():
        assert rr.form.values()["mode"] == "fast" and "fast" in rr.mode_note.text()
    docks = w["_docks"]
    assert all(" (" not in d.windowTitle() for d in docks.values())  # "Data", not "Data (napari-4dstem)"
    from qtpy.QtWidgets import QTabBar

    bars = [b for b in docks["Data"].window().findChildren(QTabBar)
            if "Data" in [b.tabText(i) for i in range(b.count())]]
    assert bars and bars[0].tabText(bars[0].currentIndex()) == "Data"  # Data in front of its tab group


def test_rrvae_form_builds_a_config_from_its_defaults():
    # every string field of RRVAEConfig without a choice list once came back as None ("none" typed) and the
    # config refused it: Train did nothing
    import dataclasses

    from napari_4dstem.gui import _rrvae_widget as w
    from napari_4dstem.rrvae import RRVAEConfig

    for f in dataclasses.fields(RRVAEConfig):
        if str(f.type).startswith("str") and f.name not in w.MODE_FIELDS:
            assert f.name in w.CHOICES, f"rrVAE field {f.name} has no choice list in the GUI form"
            assert f.default in w.CHOICES[f.name]
