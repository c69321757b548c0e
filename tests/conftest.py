"""Shared fixtures. Shared data lives beside the checkout (../shared/data); tests that need it skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# napari's viewer fixture checks that closed viewers are collected: the GUI's gc.freeze() (gui/_gc.py) would keep
# a closed test viewer frozen; the test of the freeze turns it on for itself
os.environ.setdefault("NAPARI_4DSTEM_GC_FREEZE", "0")
SHARED_DATA = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set NAPARI_4DSTEM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def graphene_npz(shared_data) -> Path:
    p = shared_data / "sim" / "graphene_pristine.npz"
    if not p.exists():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="session")
def graphene_clean(graphene_npz):
    """The abTEM graphene scan (64, 64, 64, 64) float32, noiseless."""
    import numpy as np

    with np.load(graphene_npz) as z:
        return z["clean"]
