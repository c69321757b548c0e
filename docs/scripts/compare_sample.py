"""Compare the built-in phase-object simulator with the shared abTEM graphene simulation.

Simulates exactly the abTEM field of view (supercell, scan origin, step, detector from its JSON),
then prints the numbers quoted in docs/sample.md: mean |COM| of both, their ratio, Pearson r of
the COM maps and of the patterns, pattern sums, and run times of ``make_sample``.

    .venv/bin/python docs/scripts/compare_sample.py [path/to/graphene_pristine.npz] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from napari_4dstem.sample import graphene_supercell, make_sample, sample_kinds, simulate_4dstem

REPO = Path(__file__).resolve().parents[2]
DEFAULT = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", REPO.parent / "shared" / "data")) / "sim" / \
    "graphene_pristine.npz"


def com(data):
    """Plain first moment about (N - 1) / 2 in detector pixels: (com_y, com_x)."""
    ny, nx = data.shape[-2:]
    ky, kx = np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2
    s = data.sum((-2, -1))
    return (data.sum(-1) * ky).sum(-1) / s, (data.sum(-2) * kx).sum(-1) / s


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("npz", nargs="?", default=str(DEFAULT))
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    npz = Path(args.npz)
    meta = json.loads(npz.with_suffix(".json").read_text())
    with np.load(npz) as z:
        ab = z["clean"]

    pos, cell = graphene_supercell(16, 9)  # abTEM: a = 2.46 Å, 16 x 9 orthogonal cells
    t0 = time.perf_counter()
    ours = simulate_4dstem(pos, ["C"] * len(pos), cell, meta["scan_origin_A"], meta["scan_step_A"],
                           tuple(meta["scan_shape"]), tuple(meta["detector_shape"]), meta["detector_pixel_mrad"],
                           meta["energy_eV"], meta["semiangle_mrad"])
    t_fov = time.perf_counter() - t0

    (ay, ax), (oy, ox) = com(ab), com(ours)
    am, om = np.hypot(ay, ax), np.hypot(oy, ox)
    out = {
        "scan_shape": list(ab.shape[:2]), "scan_step_A": meta["scan_step_A"],
        "mean_com_px_abtem": float(am.mean()), "mean_com_px_ours": float(om.mean()),
        "mean_com_ratio_ours_over_abtem": float(om.mean() / am.mean()),
        "pearson_com_magnitude": pearson(am, om),
        "pearson_com_x": pearson(ax, ox), "pearson_com_y": pearson(ay, oy),
        "rms_com_difference_px": float(np.sqrt(((ay - oy) ** 2 + (ax - ox) ** 2).mean())),
        "pearson_patterns": pearson(ab, ours),
        "max_abs_pattern_difference": float(np.abs(ab - ours).max()), "max_pattern_value_abtem": float(ab.max()),
        "mean_pattern_sum_abtem": float(ab.sum((2, 3)).mean()),
        "mean_pattern_sum_ours": float(ours.sum((2, 3)).mean()),
        "time_abtem_fov_s": round(t_fov, 2),
    }
    for kind in sample_kinds():
        t0 = time.perf_counter()
        make_sample(kind, scan_shape=(48, 48))  # first call in this process: not cached
        out[f"time_make_sample_{kind}_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    make_sample("graphene_vacancy", dose=1e4, source_size_A=0.75, seed=7)
    out["time_make_sample_vacancy_blur_dose_s"] = round(time.perf_counter() - t0, 2)

    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v:.5g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
