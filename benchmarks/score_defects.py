"""Score every map the project makes by how well it singles out a defect against the intact atom sites.

For each abTEM graphene file (``sim_abtem_defects.py``: vacancy, si, n, stone_wales, pristine) and key (clean,
noisy_1e5, noisy = 1e4 e/pattern, and extra Poisson realisations ``noisy@SEED``), the command line is run with
its defaults in the fast mode, plus the Zernike motifs::

    napari-4dstem analyze graphene_KIND.npz --key KEY --fast --zernike -o RESULTS/KIND_KEY.h5

(once: an existing results file is scored again without re-running), and every map in the file is scored.

The site z (docs/rrvae.md, "Defects without atomic-number contrast"; ``napari_4dstem.rrvae.site_scores``):
each atom site's value is the map's mean within 1.5 px; intact sites are the atoms of NAME.json at least
4 px inside the scan and more than 1.6 A (the first-neighbour shell) from every defect point (the removed or
substituted atom; for Stone-Wales both rotated atoms). ``z = (v_defect - mean v_intact) / std v_intact``
(the defect point with the largest |z|); each intact site gets the same z against the other intact sites, and
a map "singles out" the defect when ``|z_defect| >`` every intact site's ``|z|`` (``intact max``). Angle maps
are scored as their wrapped deviation from the circular mean. Also printed: the robust peak score of
acceptance_rrvae.py / bench_zernike.py (``zscore_at``, largest robust |z| within 4 px) at the defect and its
largest value over the intact sites. ``--offline``: the classical and Zernike maps computed here (cached in
RESULTS/offline_*.npz), no rrVAE.

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
DATA = HERE / ".data" / "abtem_defects"
EXCLUDE_A, MARGIN_PX, RADIUS_PX, SITE_RADIUS_PX = 1.6, 4, 4.0, 1.5  # 1.6 A: beyond the first neighbours
CIRCULAR = {"com/angle", "rrvae/angle", "zernike/angle"}
ALARMS = ("rrvae/outlier", "rrvae/rotation_outlier", "baseline/com_adf_outlier", "baseline/com_angle_outlier")
MAIN = ("rrvae/outlier", "rrvae/rotation_outlier", "rrvae/angle", "rrvae/latents[0]", "rrvae/latents[1]",
        "rrvae/reconstruction_error", "com/magnitude", "com/icom", "virtual/bf", "virtual/adf", "zernike/outlier", "zernike/class_distance",
        "virtual/adf_fixed", "baseline/com_adf_outlier", "baseline/com_angle_outlier")


def classical_outlier(maps: dict, channels=("com/x", "com/y", "virtual/adf")) -> np.ndarray:
    """The rrVAE's defect-map recipe on classical maps (COM x, COM y, virtual ADF; or the COM angle's cos and
    sin, ``"com/angle"``) instead of the encoded maps: does the rrVAE add anything beyond the neighbourhood
    comparison?"""
    from scipy import ndimage

    from napari_4dstem.rrvae import neighbourhood_outlier

    ch = []
    for c in channels:
        ch += [np.cos(maps[c]), np.sin(maps[c])] if c == "com/angle" else [maps[c]]
    d = neighbourhood_outlier(np.stack(ch), radius=3, smooth=1.0)
    e = ndimage.gaussian_filter(d.astype(np.float64) ** 2, 3.0, mode="nearest")
    return e / np.median(e)


def defect_points(meta) -> list:
    d = meta.get("defect", {})
    if "y_px" not in d:
        return []
    if d.get("atoms_px"):  # Stone-Wales: the rotated atoms (atom sites; the bond midpoint is not one)
        return [(y, x) for x, y in d["atoms_px"]]
    return [(d["y_px"], d["x_px"])]


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
    """The defect's site z against the intact sites (primary), and the robust peak score within 4 px."""
    from napari_4dstem.rrvae import site_scores as score
    from napari_4dstem.rrvae import zscore_at

    dps, ints = defect_points(meta), intact_sites(meta, np.shape(m))
    out = score(m, dps, ints, SITE_RADIUS_PX, circular)
    mm = np.asarray(m, np.float64)
    if circular:
        mm = np.angle(np.exp(1j * (mm - np.angle(np.exp(1j * mm).mean()))))
    pk = [zscore_at(mm, q, RADIUS_PX) for q in ints]
    out["peak_z"] = max(zscore_at(mm, q, RADIUS_PX) for q in dps) if dps else float("nan")
    out["peak_intact_max"] = float(max(pk))
    return out


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


def fixed_adf(x: np.ndarray) -> np.ndarray:
    """A virtual ADF with a fixed annulus, 40-80 mrad (16 px to the edge of the 2.5 mrad/px detector, beyond
    the 31 mrad disc): ``analyze``'s ADF takes its inner radius from the data, which moves with the noise."""
    import napari_4dstem

    return napari_4dstem.virtual_image(x, kind="annulus", inner=16.0, outer=32.0).image


def classical_maps(x: np.ndarray) -> dict:
    """The maps ``analyze --no-rrvae --zernike`` makes, computed here (same library calls, defaults)."""
    import napari_4dstem
    from napari_4dstem.motifs import zernike_motifs

    com = napari_4dstem.center_of_mass(x)
    out = {"com/x": com.x, "com/y": com.y, "com/magnitude": com.magnitude, "com/icom": com.icom,
           "com/angle": com.angle, "virtual/bf": napari_4dstem.virtual_image(x, kind="bf").image,
           "virtual/adf": napari_4dstem.virtual_image(x, kind="adf").image}
    out["virtual/adf_fixed"] = fixed_adf(x)
    z = zernike_motifs(x)
    out["zernike/outlier"], out["zernike/class_distance"] = z.outlier, z.class_distance
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
    cmd = [str(exe), "analyze", str(npz), "--key", key, "--fast", "--zernike", "-o", str(out), "--quiet",
           "--overwrite", *extra]
    t0 = time.perf_counter()
    subprocess.check_call(cmd)
    return time.perf_counter() - t0


def table(rows: list, kinds=("vacancy", "si", "n", "stone_wales", "pristine")) -> str:
    """Markdown: per map and kind, ``site z / intact max |z|`` (bold where singled out) for clean and 1e5, and
    for 1e4 e/pattern over all its noise seeds ``k/n`` singled out with the means (pristine: intact max)."""
    groups = (("clean", lambda k: k == "clean"), ("1e5", lambda k: k == "noisy_1e5"),
              ("1e4", lambda k: k == "noisy" or k.startswith("noisy@")))
    maps = list(dict.fromkeys(r["map"] for r in rows))
    kinds = [k for k in kinds if any(r["kind"] == k for r in rows)]
    out = []
    for gname, sel in groups:
        sub = [r for r in rows if sel(r["key"])]
        if not sub:
            continue
        n_seeds = {k: len({r["key"] for r in sub if r["kind"] == k}) for k in kinds}
        out.append(f"\n**{gname}** ({', '.join(f'{k}: {n_seeds[k]}' for k in kinds)} noise realisations)\n")
        out.append("| map | " + " | ".join(kinds) + " |")
        out.append("|---" * (len(kinds) + 1) + "|")
        for m in maps:
            cells = []
            for k in kinds:
                rs = [r for r in sub if r["kind"] == k and r["map"] == m]
                if not rs:
                    cells.append("")
                elif k == "pristine":
                    cells.append(f"{np.mean([r['intact_max'] for r in rs]):.1f}")
                else:
                    hit = sum(bool(r["singled_out"]) for r in rs)
                    c = (f"{np.mean([r['site_z'] for r in rs]):+.1f} / "
                         f"{np.mean([r['intact_max'] for r in rs]):.1f}")
                    c = f"{hit}/{len(rs)}: {c}" if len(rs) > 1 else c
                    cells.append(f"**{c}**" if hit == len(rs) else c)
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--results", type=Path, default=HERE / ".data" / "score_defects")
    ap.add_argument("--kinds", nargs="+", default=["vacancy", "si", "n", "stone_wales", "pristine"])
    ap.add_argument("--keys", nargs="+", default=["clean", "noisy_1e5", "noisy"])
    ap.add_argument("--maps", choices=("main", "all"), default="main")
    ap.add_argument("--tag", default="", help="suffix of the results files (e.g. for another set of defaults)")
    ap.add_argument("--config", type=Path, help="params.toml passed to analyze (e.g. the Anscombe transform; give "
                                                "it its own --tag)")
    ap.add_argument("--no-run", action="store_true", help="score existing results files only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print the markdown table of these files")
    ap.add_argument("--offline", action="store_true",
                    help="no rrVAE: compute the classical and Zernike maps here (no results files)")
    a = ap.parse_args(argv)
    if a.table:
        print(table([r for f in a.table for r in json.loads(f.read_text())]))
        return 0
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
            if a.offline:
                cache = a.results / f"offline_{kind}_{key.replace('@', '_s')}.npz"
                if cache.exists():
                    with np.load(cache) as c:
                        maps = {n.replace("__", "/"): c[n] for n in c.files}
                else:
                    with np.load(src) as z:
                        maps = classical_maps(np.ascontiguousarray(z[k]))
                    a.results.mkdir(parents=True, exist_ok=True)
                    np.savez(cache, **{n.replace("/", "__"): v for n, v in maps.items()})
            elif not out.exists():
                if a.no_run:
                    continue
                a.results.mkdir(parents=True, exist_ok=True)
                secs = analyze(src, k, out, (["--config", str(a.config)] if a.config else []))
            if not a.offline:
                with h5py.File(out) as h:
                    maps = read_maps(h)
            if "virtual/adf_fixed" not in maps:
                with np.load(src) as z:
                    maps["virtual/adf_fixed"] = fixed_adf(np.ascontiguousarray(z[k]))
            maps["baseline/com_adf_outlier"] = classical_outlier(maps)
            maps["baseline/com_angle_outlier"] = classical_outlier(maps, ("com/angle",))
            names = [n for n in (MAIN if a.maps == "main" else sorted(maps)) if n in maps]
            alarms = {n: defect_alarm(maps[n]) for n in ALARMS if n in maps}
            print(f"\n{kind} {key}{' (' + format(secs, '.0f') + ' s)' if secs else ''}: alarms (threshold "
                  f"{next(iter(alarms.values()))['threshold']:g}): "
                  + "; ".join(f"{n} {al['score']:.2f} at {al['where']}" for n, al in alarms.items()), flush=True)
            for n in names:
                sc = site_scores(maps[n], meta, n in CIRCULAR)
                rows.append({"kind": kind, "key": key, "map": n, **sc,
                             **({"alarm": alarms[n]["score"]} if n in alarms else {})})
                flag = {True: "YES", False: "-", None: ""}[sc["singled_out"]]
                print(f"  {n:28s} site z {sc['site_z']:7.2f}  intact max |z| {sc['intact_max']:6.2f} "
                      f"(n {sc['n_intact']:2d})  {flag:3s}  peak z {sc['peak_z']:6.2f} / intact "
                      f"{sc['peak_intact_max']:5.2f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
