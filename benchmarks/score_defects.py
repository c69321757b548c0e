"""Score every map the project makes by how well it singles out a defect against the intact atom sites.

For each abTEM graphene file (``sim_abtem_defects.py``: vacancy, si, n, stone_wales, pristine) and key (clean,
noisy_1e5, noisy = 1e4 e/pattern, and extra Poisson realisations ``noisy@SEED``), the command line is run with
its defaults in the fast mode, plus the Zernike motifs::

    napari-4dstem analyze graphene_KIND.npz --key KEY --fast --zernike -o RESULTS/KIND_KEY.h5

(once: an existing results file is scored again without re-running), and every map in the file is scored.

The site score (docs/rrvae.md, "Defects without atomic-number contrast"): for a map ``m`` and a point ``p``,
``s(p) = napari_4dstem.rrvae.zscore_at(m, p, 4)``: the largest robust ``|m - median| / (1.4826 MAD)`` over
the scan pixels within 4 px (0.48 A) of ``p``. Angle maps are first turned into their wrapped deviation from
their circular mean. Intact sites: the atoms of NAME.json at least 4 px inside the scan and more than 2 A from
every defect point. The defect's score ``s_d`` is the largest ``s`` over its points (the removed or substituted
atom; for Stone-Wales the bond midpoint and both rotated atoms). Reported: ``s_d``, the largest intact
``s`` (``intact max``), and the site z ``(s_d - mean_intact s) / std_intact s``; a map "singles out" the defect
when ``s_d > intact max``. A defect-free scan (pristine) reports the largest ``s`` over all its sites.

Extra noise seeds: ``noisy@SEED`` is a fresh Poisson draw at 1e4 e/pattern from the ``clean`` key blurred by the
0.75 A source (Gaussian, ``mode="nearest"`` at the scan edge: the simulation blurred a larger scan, so the
outermost ~8 px differ slightly from the simulated ``noisy``); written once to ``RESULTS/seeds/``.

Usage::

    python benchmarks/score_defects.py [--data DIR] [--results DIR] [--kinds ...] [--keys clean noisy noisy@1 ...]
        [--json OUT.json] [--no-run] [--maps all|main]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path("/work/wt/data/abtem_defects") if Path("/work/wt/data/abtem_defects").exists() else \
    HERE / ".data" / "abtem_defects"
EXCLUDE_A, MARGIN_PX, RADIUS_PX = 2.0, 4, 4.0
CIRCULAR = {"com/angle", "rrvae/angle", "zernike/angle"}
MAIN = ("rrvae/outlier", "rrvae/angle", "rrvae/latents[0]", "rrvae/latents[1]", "rrvae/reconstruction_error",
        "com/magnitude", "com/icom", "virtual/bf", "virtual/adf", "zernike/outlier", "zernike/class_distance")


def defect_points(meta) -> list:
    d = meta.get("defect", {})
    if "y_px" not in d:
        return []
    pts = [(d["y_px"], d["x_px"])]
    pts += [(y, x) for x, y in d.get("atoms_px", [])]
    return pts


def intact_sites(meta, shape, margin=MARGIN_PX) -> list:
    step = meta["scan_step_A"]
    dps = defect_points(meta)
    out = []
    for a in meta["atoms"]:
        y, x = a["y_px"], a["x_px"]
        if not (margin <= y <= shape[0] - 1 - margin and margin <= x <= shape[1] - 1 - margin):
            continue
        if any(np.hypot(y - py, x - px) * step <= EXCLUDE_A for py, px in dps):
            continue
        out.append((y, x))
    return out


def site_scores(m: np.ndarray, meta, circular: bool = False) -> dict:
    """The defect's and the intact sites' scores of one map (see the module docstring)."""
    from napari_4dstem.rrvae import site_scores as score

    return score(m, defect_points(meta), intact_sites(meta, np.shape(m)), RADIUS_PX, circular)


def read_maps(h5) -> dict:
    out = {}

    def visit(name, obj):
        if not hasattr(obj, "shape") or name in ("navigator",) or name.startswith("zernike/features"):
            return
        a = obj[()]
        if a.ndim == 2 and a.dtype.kind == "f":
            out[name] = a
        elif a.ndim == 3 and a.dtype.kind == "f" and a.shape[0] <= 8:
            for k, ch in enumerate(a):
                out[f"{name}[{k}]"] = ch

    h5.visititems(visit)
    return out


def seed_file(npz: Path, seed: int, folder: Path) -> Path:
    """A fresh 1e4 e/pattern Poisson draw from the blurred clean data (see the module docstring)."""
    from scipy import ndimage

    out = folder / f"{npz.stem}_s{seed}.npz"
    if out.exists():
        return out
    meta = json.loads(npz.with_suffix(".json").read_text())
    sigma = meta["source_size_fwhm_A"] / meta["scan_step_A"] / (2 * np.sqrt(2 * np.log(2)))
    with np.load(npz) as z:
        clean = z["clean"]
    blurred = ndimage.gaussian_filter(clean, (sigma, sigma, 0, 0), mode="nearest")
    noisy = np.random.default_rng(seed).poisson(np.maximum(blurred, 0) * 1e4).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(out, noisy=noisy)
    out.with_suffix(".json").write_text(npz.with_suffix(".json").read_text())
    return out


def analyze(npz: Path, key: str, out: Path, extra=()) -> float:
    exe = Path(sys.executable).parent / "napari-4dstem"
    cmd = ["nice", str(exe), "analyze", str(npz), "--key", key, "--fast", "--zernike", "-o", str(out), "--quiet",
           "--overwrite", *extra]
    t0 = time.perf_counter()
    subprocess.check_call(cmd)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--results", type=Path, default=HERE / ".data" / "score_defects")
    ap.add_argument("--kinds", nargs="+", default=["vacancy", "si", "n", "stone_wales", "pristine"])
    ap.add_argument("--keys", nargs="+", default=["clean", "noisy_1e5", "noisy"])
    ap.add_argument("--maps", choices=("main", "all"), default="main")
    ap.add_argument("--tag", default="", help="suffix of the results files (e.g. for another set of defaults)")
    ap.add_argument("--no-run", action="store_true", help="score existing results files only")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import h5py

    from napari_4dstem.rrvae.maps import defect_alarm

    rows = []
    for kind in a.kinds:
        npz = a.data / f"graphene_{kind}.npz"
        if not npz.exists():
            print(f"{npz} missing: simulate it with sim_abtem_defects.py --kinds {kind}")
            continue
        meta = json.loads(npz.with_suffix(".json").read_text())
        for key in a.keys:
            src, k = npz, key
            if "@" in key:
                src, k = seed_file(npz, int(key.split("@")[1]), a.results / "seeds"), "noisy"
            out = a.results / f"{kind}_{key.replace('@', '_s')}{a.tag}.h5"
            secs = None
            if not out.exists():
                if a.no_run:
                    continue
                a.results.mkdir(parents=True, exist_ok=True)
                secs = analyze(src, k, out)
            with h5py.File(out) as h:
                maps = read_maps(h)
            names = [n for n in (MAIN if a.maps == "main" else sorted(maps)) if n in maps]
            alarm = defect_alarm(maps["rrvae/outlier"]) if "rrvae/outlier" in maps else None
            print(f"\n{kind} {key}{' (' + format(secs, '.0f') + ' s)' if secs else ''}: defect alarm "
                  f"{alarm['score']:.2f} (threshold {alarm['threshold']:g}) at {alarm['where']}" if alarm else "")
            for n in names:
                sc = site_scores(maps[n], meta, n in CIRCULAR)
                rows.append({"kind": kind, "key": key, "map": n, **sc,
                             **({"alarm": alarm["score"]} if n == "rrvae/outlier" and alarm else {})})
                flag = {True: "YES", False: "-", None: ""}[sc["singled_out"]]
                print(f"  {n:28s} s_d {sc['s_defect']:7.2f}  intact max {sc['intact_max']:6.2f} "
                      f"(n {sc['n_intact']:2d})  site z {sc['site_z']:6.2f}  {flag}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
