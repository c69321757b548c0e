"""The core must run on a headless node: importing it loads no napari and no Qt."""
import subprocess
import sys

GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy")

CORE = [
    "napari_4dstem", "napari_4dstem.dataset", "napari_4dstem.io", "napari_4dstem.sample",
    "napari_4dstem.preprocess", "napari_4dstem.com", "napari_4dstem.virtual", "napari_4dstem.rrvae",
    "napari_4dstem.results", "napari_4dstem.cli",
    "napari_4dstem.export", "napari_4dstem.pipeline",
]


def test_core_imports_no_gui():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout.strip()}"


def test_gui_guard_detects_napari():
    # the check above must be able to fail: importing the GUI subpackage does pull napari in
    code = "import sys, napari_4dstem.gui._reader; print('napari' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
