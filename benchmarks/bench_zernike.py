"""Zernike moments: speed against the COM pass, and the defect maps on abTEM graphene.

Default (``make bench``): the moments pass (``napari_4dstem.zernike_moments``, default order and disc) and the
COM pass (``center_of_mass(rotation=0, flip=False)``) on the same in-memory data, alternated, best of N each,
printed side by side with their ratio (COM time / moments time: >= 0.5 is the target).

``--defects``: the Zernike motifs' outlier map on abTEM graphene with a vacancy and with a Si dopant (made by
``sim_abtem_defects.py`` into ``.data/abtem_defects``, as ``acceptance_rrvae.py`` does), clean and at 1e5 and
1e4 e/pattern, beside |COM|, iCOM and a virtual ADF image of the same data: the defect's robust z-score
(``napari_4dstem.rrvae.zscore_at``, largest within 4 px), the largest z over the intact atom sites of the same
scan (atoms more than 2 A from the defect and 4 px inside the scan), and the seconds each map took.
A defect-free scan (``pristine``) gives the false-alarm level. Usage::

    python benchmarks/bench_zernike.py [--quick] [--defects] [--clustering] [--data DIR] [--kinds vacancy si pristine]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "abtem_defects"
SHARED = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "sim" / "graphene_pristine.npz"
EXCLUDE_A = 2.0  # intact atom sites: farther than this from the defect


def speed(quick: bool) -> None:
    import napari_4dstem
    from napari_4dstem.zernike import DEFAULT_ORDER

    src = SHARED if SHARED.exists() else None
    if src is not None:
        with np.load(src) as z:
            data = np.ascontiguousarray(z["noisy"])
        what = f"{src.name} 'noisy'"
    else:
        data = np.asarray(napari_4dstem.make_sample("graphene_pristine", scan_shape=(64, 64), dose=1e4).data)
        what = "make_sample graphene_pristine 64 x 64, 1e4 e"
    if quick:
        data = data[:32]
    reps = 5 if quick else 15
    napari_4dstem.zernike_moments(data[:2])  # warm the basis cache and imports
    napari_4dstem.center_of_mass(data[:2], rotation=0, flip=False)
    tz, tc = [], []
    for _ in range(reps):
        t = time.perf_counter()
        napari_4dstem.center_of_mass(data, rotation=0, flip=False)
        tc.append(time.perf_counter() - t)
        t = time.perf_counter()
        z = napari_4dstem.zernike_moments(data)
        tz.append(time.perf_counter() - t)
    mb = data.nbytes / 2**20
    print(f"data: {what}, {data.shape} {data.dtype}, {mb:.0f} MiB; order {DEFAULT_ORDER} "
          f"({len(z.indices)} moments, disc radius {z.radius:.1f} px); best of {reps}, machine shared (see load)")
    import os

    print(f"load average: {os.getloadavg()[0]:.1f}")
    print(f"{'pass':16s} {'seconds':>8s} {'MiB/s':>8s}")
    print(f"{'COM':16s} {min(tc):8.3f} {mb / min(tc):8.0f}")
    print(f"{'Zernike moments':16s} {min(tz):8.3f} {mb / min(tz):8.0f}")
    paired = sorted(c / z_ for c, z_ in zip(tc, tz))
    print(f"speed ratio (moments / COM): {min(tc) / min(tz):.2f}x best against best, median of the paired runs "
          f"{paired[len(paired) // 2]:.2f}x  (target >= 0.5x)")


def intact_sites(meta, shape, margin=4):
    step = meta["scan_step_A"]
    d = meta.get("defect", {})
    out = []
    for a in meta["atoms"]:
        y, x = a["y_px"], a["x_px"]
        if not (margin <= y <= shape[0] - 1 - margin and margin <= x <= shape[1] - 1 - margin):
            continue
        if "y_px" in d and np.hypot(y - d["y_px"], x - d["x_px"]) * step < EXCLUDE_A:
            continue
        out.append((y, x))
    return out


def site_scores(m, meta):
    from napari_4dstem.rrvae import robust_zscore, zscore_at

    d = meta.get("defect", {})
    zi = max(zscore_at(m, s, 4) for s in intact_sites(meta, m.shape))
    zd = zscore_at(m, (d["y_px"], d["x_px"]), 4) if "y_px" in d else float("nan")
    zp = zscore_at(m, (d["y_px"], d["x_px"]), 4, robust=False) if "y_px" in d else float("nan")
    return zd, zp, zi, float(np.abs(robust_zscore(m)).max())


def defects(data_dir: Path, kinds, keys) -> list[dict]:
    import napari_4dstem
    from napari_4dstem.motifs import zernike_motifs

    rows = []
    for kind in kinds:
        npz = data_dir / f"graphene_{kind}.npz"
        if not npz.exists():
            print(f"{npz} missing: run sim_abtem_defects.py (see acceptance_rrvae.py)")
            continue
        meta = json.loads(npz.with_suffix(".json").read_text())
        for key in keys:
            with np.load(npz) as z:
                x = np.ascontiguousarray(z[key])
            t = time.perf_counter()
            r = zernike_motifs(x)
            tz = time.perf_counter() - t
            t = time.perf_counter()
            com = napari_4dstem.center_of_mass(x)
            tc = time.perf_counter() - t
            t = time.perf_counter()
            adf = napari_4dstem.virtual_image(x, kind="adf").image
            ta = time.perf_counter() - t
            maps = {"zernike outlier": (r.outlier, tz), "zernike class distance": (r.class_distance, tz),
                    "|COM|": (com.magnitude, tc), "iCOM": (com.icom, tc), "virtual ADF": (adf, ta)}
            for name, (m, secs) in maps.items():
                zd, zp, zi, zany = site_scores(m, meta)
                peak = np.unravel_index(int(np.argmax(m)), m.shape)
                d = meta.get("defect", {})
                dist = float(np.hypot(peak[0] - d["y_px"], peak[1] - d["x_px"])) if "y_px" in d else float("nan")
                rows.append({"kind": kind, "key": key, "map": name, "z": zd, "z_plain": zp, "intact_max": zi, "max_anywhere": zany,
                             "peak_px": dist, "seconds": secs, "n_classes": r.n_classes,
                             "smooth": r.parameters["smooth_used"]})
                print(f"{kind:8s} {key:9s} {name:22s} z {zd:6.1f} (plain {zp:4.1f})  intact max {zi:5.1f}  "
                      f"max {zany:5.1f}  peak {dist:5.1f} px  {secs:5.1f} s", flush=True)
    return rows


def clustering(data_dir: Path) -> None:
    """GMM (BIC) vs k-means (silhouette) vs HDBSCAN on the same moments: classes, sizes, periodicity, seconds."""
    from napari_4dstem import zernike_moments
    from napari_4dstem.motifs import zernike_motifs

    for kind, key in (("pristine", "clean"), ("pristine", "noisy"), ("vacancy", "noisy")):
        npz = data_dir / f"graphene_{kind}.npz"
        if not npz.exists():
            continue
        with np.load(npz) as z:
            x = np.ascontiguousarray(z[key])
        mom = zernike_moments(x)
        for method in ("gmm", "kmeans", "hdbscan"):
            t = time.perf_counter()
            r = zernike_motifs(mom, method=method, smooth=0 if key == "clean" else 2.5)
            secs = time.perf_counter() - t
            # two lattice periods along x (2 x 2.46 A at 0.12 A = 41.0 px): labels of a lattice repeat
            per = float((r.labels[:, 41:] == r.labels[:, :-41]).mean())
            print(f"{kind:8s} {key:6s} {method:8s} {r.n_classes:2d} classes, smallest {sorted(r.counts.tolist())[:2]}, "
                  f"periodic {per:.2f}, {secs:.1f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--defects", action="store_true")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--kinds", nargs="+", default=["vacancy", "si", "pristine"])
    ap.add_argument("--keys", nargs="+", default=["clean", "noisy_1e5", "noisy"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--clustering", action="store_true", help="compare the clustering methods")
    a, _ = ap.parse_known_args(argv)
    speed(a.quick)
    if a.clustering:
        clustering(a.data)
    if a.defects:
        rows = defects(a.data, a.kinds, a.keys)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
