"""Benchmark: COM and a virtual ADF image, napari-4dstem vs py4DSTEM vs a plain numpy sum.

Cases: (a) the shared abTEM graphene (clean), (b) a synthetic 1 GiB float32 array in memory,
(c) a 4 GiB uint16 .npy read through a memory map (temporary file, deleted afterwards).
Every measurement runs in a fresh subprocess that reports its best wall time (repeated for a few seconds: on a shared machine
every contender gets the same chance at a quiet moment) and its peak RSS
(``resource.getrusage``). py4DSTEM runs from its own virtual environment
(``benchmarks/.envs/py4dstem``, created on first use with numpy pinned to ours) on the same .npy file.

    python benchmarks/bench_com.py            # full run (about 10 GB of temporary disk traffic)
    python benchmarks/bench_com.py --quick    # small arrays, a minute or so

GB/s = bytes of the source array / seconds. The memmap case reads a file that was just written,
i.e. mostly from the page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = HERE / ".envs" / "py4dstem"
GRAPHENE = REPO.parent / "shared" / "data" / "sim" / "graphene_pristine.npz"

# ---------------------------------------------------------------------------------------------
# workers: each runs in its own process and prints one JSON line
# ---------------------------------------------------------------------------------------------
# Peak resident memory of the worker: VmHWM from /proc (reset by exec, unlike getrusage's
# ru_maxrss, which a child inherits from the benchmark process that forked it); ru_maxrss elsewhere.
PEAK_RSS = r'''
BUDGET_S = 4.0  # repeat (up to reps, at least 3) for this long: the best time is kept
def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
'''
OURS_WORKER = PEAK_RSS + r'''
import json, resource, sys, time
import numpy as np
path, mode, task, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
arr = np.load(path, mmap_mode="r") if mode == "memmap" else np.load(path)
h, w = arr.shape[2:]
ri, ro = 0.4 * min(h, w) / 2, min(h, w) / 2
best = float("inf")
t_start = time.perf_counter()
for rep in range(reps):
    if rep >= 3 and time.perf_counter() - t_start > BUDGET_S:
        break
    t = time.perf_counter()
    if task == "numpy_sum":
        if mode == "memmap":  # the same read pattern as ours: blocks of scan rows, pages dropped
            from napari_4dstem.blocks import release_pages
            n = max(1, (16 << 20) // (arr[0].nbytes))
            for y in range(0, arr.shape[0], n):
                arr[y:y + n].sum()
                release_pages(arr, slice(y, y + n))
        else:
            arr.sum()
    elif task == "com":
        from napari_4dstem import center_of_mass
        res = center_of_mass(arr, rotation=0, flip=False)
    elif task == "com_auto":
        from napari_4dstem import center_of_mass
        res = center_of_mass(arr)
    elif task == "adf":
        from napari_4dstem.virtual import virtual_image
        res = virtual_image(arr, "annulus", inner=ri, outer=ro, center=((h - 1) / 2, (w - 1) / 2))
    best = min(best, time.perf_counter() - t)
out = {"seconds": best, "maxrss_mib": peak_rss_mib()}
if task == "com" and len(sys.argv) > 5:
    np.savez(sys.argv[5], x=res.x, y=res.y)
print(json.dumps(out))
'''

PY4DSTEM_WORKER = PEAK_RSS + r'''
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import py4DSTEM
path, mode, task, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
arr = np.load(path, mmap_mode="r") if mode == "memmap" else np.load(path)
dc = py4DSTEM.DataCube(data=arr)
h, w = arr.shape[2:]
ri, ro = 0.4 * min(h, w) / 2, min(h, w) / 2
best = float("inf")
t_start = time.perf_counter()
for rep in range(reps):
    if rep >= 3 and time.perf_counter() - t_start > BUDGET_S:
        break
    t = time.perf_counter()
    if task == "com":
        # the centre-of-mass step of py4DSTEM's DPC (vectorised on arrays in memory; its
        # per-pattern loop on a memmap, since the vectorised form casts the whole array)
        dpc = py4DSTEM.process.phase.DPC(datacube=dc, energy=60e3, verbose=False)
        dpc._reciprocal_sampling = (1.0, 1.0)
        inten = arr if mode == "memmap" else np.asarray(arr, dtype=np.float32)
        com = dpc._calculate_intensities_center_of_mass(inten, dp_mask=None, fit_function=None,
                                                       vectorized_calculation=(mode != "memmap"))
    elif task == "adf":
        img = dc.get_virtual_image(mode="annulus", geometry=(((h - 1) / 2, (w - 1) / 2), (ri, ro)),
                                   verbose=False, returncalc=True)
    best = min(best, time.perf_counter() - t)
out = {"seconds": best, "maxrss_mib": peak_rss_mib(), "version": py4DSTEM.__version__}
if task == "com" and len(sys.argv) > 5:
    np.savez(sys.argv[5], com_x=np.asarray(com[0]), com_y=np.asarray(com[1]))
print(json.dumps(out))
'''

PER_PATTERN_WORKER = PEAK_RSS + r'''
import json, resource, sys, time
import numpy as np
path, mode, task, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
arr = np.load(path, mmap_mode="r") if mode == "memmap" else np.load(path)
h, w = arr.shape[2:]
ii, jj = np.indices((h, w))
r = np.hypot(ii - (h - 1) / 2, jj - (w - 1) / 2)
mask = (r >= 0.4 * min(h, w) / 2) & (r <= min(h, w) / 2)
t = time.perf_counter()
for a in range(arr.shape[0]):
    for b in range(arr.shape[1]):
        p = arr[a, b]
        if task == "com":
            s = p.sum(dtype=np.float64); (p * ii).sum() / s; (p * jj).sum() / s
        else:
            (p * mask).sum()
out = {"seconds": time.perf_counter() - t, "maxrss_mib": peak_rss_mib(), "version": "numpy loop"}
print(json.dumps(out))
'''


def run_worker(python: str, code: str, args: list[str], env_extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    out = subprocess.run([python, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(map(str, args))}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_py4dstem() -> str | None:
    """Python of the py4DSTEM environment (created when missing), or None if it cannot be installed."""
    py = ENV / "bin" / "python"
    check = [str(py), "-c", "import py4DSTEM"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(py)
    print(f"creating {ENV} and installing py4DSTEM (numpy pinned to {np.__version__}) ...", flush=True)
    ENV.parent.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"numpy=={np.__version__}\n")
    pip = [str(py), "-m", "pip", "install", "-q", "py4DSTEM"]
    ok = subprocess.run(pip + ["-c", f.name]).returncode == 0 or subprocess.run(pip).returncode == 0
    os.unlink(f.name)
    if ok and subprocess.run(check, capture_output=True).returncode == 0:
        return str(py)
    print("!! py4DSTEM could not be installed: falling back to a per-pattern numpy loop (NOT py4DSTEM)")
    return None


def make_cases(tmp: Path, quick: bool) -> list[tuple[str, Path, str]]:
    cases = []
    if GRAPHENE.exists():
        p = tmp / "graphene.npy"
        with np.load(GRAPHENE) as z:
            np.save(p, z["clean"])
        cases.append(("(a) graphene clean 64x64x64x64 f32", p, "memory"))
    else:
        print(f"(a) skipped: {GRAPHENE} not found")
    rng = np.random.default_rng(0)
    scan = (64, 64) if quick else (128, 128)  # x 128 x 128 float32 = 256 MiB / 1 GiB
    p = tmp / "synthetic_f32.npy"
    a = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(*scan, 128, 128))
    for y in range(scan[0]):
        a[y] = rng.random((scan[1], 128, 128), dtype=np.float32)
    a.flush()
    del a
    cases.append((f"(b) synthetic {scan[0]}x{scan[1]}x128x128 f32 in memory "
                  f"({p.stat().st_size / 2**30:.2f} GiB)", p, "memory"))
    scan = (64, 128) if quick else (256, 512)  # x 128 x 128 uint16 = 256 MiB / 4 GiB
    p = tmp / "synthetic_u16.npy"
    a = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint16, shape=(*scan, 128, 128))
    for y in range(scan[0]):
        a[y] = rng.integers(0, 1000, size=(scan[1], 128, 128), dtype=np.uint16)
    a.flush()
    del a
    cases.append((f"(c) synthetic {scan[0]}x{scan[1]}x128x128 u16 memmap "
                  f"({p.stat().st_size / 2**30:.2f} GiB)", p, "memmap"))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small arrays")
    ap.add_argument("--reps", type=int, default=30,
                    help="most repetitions in memory (at least 3, then until 4 s have passed; best is kept)")
    ap.add_argument("--no-py4dstem", action="store_true", help="skip py4DSTEM (per-pattern numpy loop instead)")
    args = ap.parse_args(argv)
    ref_py = None if args.no_py4dstem else ensure_py4dstem()
    ref_name = "py4DSTEM" if ref_py else "numpy-loop"
    ref_code = PY4DSTEM_WORKER if ref_py else PER_PATTERN_WORKER
    ref_py = ref_py or sys.executable
    ours = sys.executable
    rows = []
    summary = {}
    with tempfile.TemporaryDirectory(prefix="bench_com_") as tmpd:
        tmp = Path(tmpd)
        t0 = time.perf_counter()
        cases = make_cases(tmp, args.quick)
        print(f"test data written in {time.perf_counter() - t0:.1f} s\n", flush=True)
        for label, path, mode in cases:
            nbytes = np.load(path, mmap_mode="r").nbytes
            reps = args.reps if mode == "memory" else 1
            res = {}
            res["numpy_sum"] = run_worker(ours, OURS_WORKER, [path, mode, "numpy_sum", reps])
            res["com"] = run_worker(ours, OURS_WORKER, [path, mode, "com", reps, tmp / "ours_com.npz"])
            res["com_auto"] = run_worker(ours, OURS_WORKER, [path, mode, "com_auto", reps])
            res["adf"] = run_worker(ours, OURS_WORKER, [path, mode, "adf", reps])
            ref_reps = 1 if (mode == "memmap" or ref_name != "py4DSTEM") else reps
            res["ref_com"] = run_worker(ref_py, ref_code, [path, mode, "com", ref_reps, tmp / "ref_com.npz"])
            res["ref_adf"] = run_worker(ref_py, ref_code, [path, mode, "adf", 1])
            gbs = {k: nbytes / v["seconds"] / 1e9 for k, v in res.items()}
            print(f"== {label}")
            print(f"   {'':34s} {'seconds':>8s} {'GB/s':>7s} {'peak RSS MiB':>12s}")
            names = {"numpy_sum": "numpy sum (read bandwidth)", "com": "ours: COM (rotation=0)",
                     "com_auto": "ours: COM (rotation='auto')", "adf": "ours: virtual ADF",
                     "ref_com": f"{ref_name}: COM", "ref_adf": f"{ref_name}: virtual ADF"}
            for k, v in res.items():
                print(f"   {names[k]:34s} {v['seconds']:8.3f} {gbs[k]:7.2f} {v['maxrss_mib']:12.0f}")
            ratios = {
                f"COM vs {ref_name}": gbs["com"] / gbs["ref_com"],
                f"ADF vs {ref_name}": gbs["adf"] / gbs["ref_adf"],
                "COM vs numpy sum": gbs["com"] / gbs["numpy_sum"],
                "ADF vs numpy sum": gbs["adf"] / gbs["numpy_sum"],
            }
            for k, v in ratios.items():
                print(f"   ratio {k:28s} {v:7.2f}x")
            if ref_name == "py4DSTEM" and (tmp / "ref_com.npz").exists():
                with np.load(tmp / "ours_com.npz") as o, np.load(tmp / "ref_com.npz") as r:
                    h, w = np.load(path, mmap_mode="r").shape[2:]
                    # py4DSTEM's com_x is along rows (our y), measured from pixel 0
                    dy = np.abs(o["y"] - (r["com_x"] - (h - 1) / 2))
                    dx = np.abs(o["x"] - (r["com_y"] - (w - 1) / 2))
                    ok = np.isfinite(dx) & np.isfinite(dy)
                    print(f"   max |ours - py4DSTEM| COM: {max(dx[ok].max(), dy[ok].max()):.2e} px")
            if mode == "memmap":
                print(f"   target peak RSS < 1536 MiB: COM {res['com']['maxrss_mib']:.0f} MiB, "
                      f"ADF {res['adf']['maxrss_mib']:.0f} MiB")
            else:
                print(f"   targets: COM >= 5x {ref_name}: {ratios[f'COM vs {ref_name}']:.1f}x; "
                      f">= 50 % of numpy sum: {100 * ratios['COM vs numpy sum']:.0f} %")
            print(flush=True)
            summary[label] = {"gb_per_s": gbs, "ratios": ratios,
                              "peak_rss_mib": {k: v["maxrss_mib"] for k, v in res.items()}}
            rows.append(label)
    print(f"reference: {ref_name} {res['ref_com'].get('version', '')}; numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs")
    print("JSON " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
