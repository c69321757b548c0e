"""The npe2 manifest: valid, importable, found through the installed package, and in step with the core."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "napari.yaml"


def _npe2() -> list[str]:
    exe = Path(sys.executable).with_name("npe2")
    return [str(exe)] if exe.exists() else [shutil.which("npe2") or "npe2"]


def test_manifest_file_is_valid_and_its_commands_import():
    out = subprocess.run([*_npe2(), "validate", "--imports", str(MANIFEST)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_is_found_by_package_name():
    # what `npe2 validate napari-4dstem` and napari itself do: resolve the napari.manifest entry point
    out = subprocess.run([*_npe2(), "validate", "napari-4dstem"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_matches_the_core_and_the_gui():
    npe2 = pytest.importorskip("npe2")
    from napari_4dstem.io import SUPPORTED

    m = npe2.PluginManifest.from_file(MANIFEST)
    patterns = set(m.contributions.readers[0].filename_patterns)
    assert patterns == {f"*{ext}" for ext in SUPPORTED}, "reader patterns and io.SUPPORTED disagree"
    docks = [w.display_name for w in m.contributions.widgets]
    assert docks == ["Data", "Detector", "Preprocess", "COM / DPC", "rrVAE", "Inspector", "Motifs"]  # workflow order
    assert [s.key for s in m.contributions.sample_data] == ["graphene_vacancy"]
    assert m.contributions.writers[0].filename_extensions == [".h5"]
