"""Benchmark: COM and a virtual ADF image, napari-4dstem vs py4DSTEM vs a plain numpy sum.

Cases: (a) the shared abTEM graphene (clean), (b) a synthetic 1 GiB float32 array in memory,
(c) a 4 GiB uint16 .npy read through a memory map (temporary file, deleted afterwards), (d) on the same
memmap, the whole maps pass of ``analyze --no-rrvae`` (and ``analyze`` itself) against the read limit (a uint64
view of the same bytes summed), interleaved rounds, medians, with 1 and 2 kernel threads.
Every measurement runs in a fresh subprocess that reports its best wall time (repeated for a few seconds: on a shared machine
every contender gets the same chance at a quiet moment) and its peak RSS
(``resource.getrusage``). py4DSTEM runs from its own virtual environment
(``benchmarks/.envs/py4dstem``, created on first use with numpy pinned to ours) on the same .npy file.

    python benchmarks/bench_com.py            # full run (about 10 GB of temporary disk traffic)
    python benchmarks/bench_com.py --quick    # small arrays, a minute or so
    python benchmarks/bench_com.py --maps-pass-only   # only (d), on the 4 GiB memmap

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

# The whole maps pass (what `analyze --no-rrvae` reads the raw file for: navigator, BF/ADF, COM sums with the
# automatic rotation's atom signal, in one executor run) against the read limit, a plain sum of a uint64 view of
# the same bytes read the same way (blocks of scan rows, pages dropped). Rounds interleave in one process (the
# machine is shared); medians are reported, of wall time and of the process's CPU time (under load the CPU
# share decides the wall time; the CPU-time ratio is the work per byte against the read limit's). Then the
# same for analyze(..., run_rrvae=False) end to end.
PASS_WORKER = PEAK_RSS + r'''
import json, os, sys, time
import numpy as np
from napari_4dstem.blocks import release_pages
from napari_4dstem.io import load
from napari_4dstem.pipeline import analyze
path, rounds = sys.argv[1], int(sys.argv[2])
arr = np.load(path, mmap_mode="r")
def read_limit():
    n = max(1, (16 << 20) // arr[0].nbytes)
    for y in range(0, arr.shape[0], n):
        arr[y:y + n].reshape(-1).view(np.uint64).sum()
        release_pages(arr, slice(y, y + n))
def maps_pass():
    from napari_4dstem.com import com_reducer
    from napari_4dstem.executor import iter_run
    from napari_4dstem.progress import run_steps
    from napari_4dstem.virtual import virtual_reducer
    ds = load(path)
    reds = [virtual_reducer(ds, {"bf": {"kind": "bf"}, "adf": {"kind": "adf"},
                                 "nav": {"kind": "mask", "mask": np.ones(ds.detector_shape, bool)}}),
            com_reducer(ds)]
    reds[1].defer = True
    run_steps(iter_run(ds, reds))
def whole():
    analyze(path, {"run_rrvae": False})
maps_pass()  # compile / load the kernels once
times = {"read_limit": [], "maps_pass": [], "analyze_no_rrvae": []}
cpu = {k: [] for k in times}  # CPU seconds of the process (all threads): the cost under load
for r in range(rounds):
    for k, f in (("read_limit", read_limit), ("maps_pass", maps_pass), ("analyze_no_rrvae", whole)):
        t, c = time.perf_counter(), time.process_time(); f()
        times[k].append(time.perf_counter() - t); cpu[k].append(time.process_time() - c)
print(json.dumps({"times": times, "cpu": cpu, "maxrss_mib": peak_rss_mib(), "load": os.getloadavg()[0],
                  "threads": os.environ.get("NAPARI_4DSTEM_THREADS", "default")}))
'''


def bench_maps_pass(path: Path, rounds: int) -> dict:
    """The whole maps pass and analyze(--no-rrvae) vs the read limit, with 1 and 2 kernel threads."""
    nbytes = np.load(path, mmap_mode="r").nbytes
    out = {}
    print(f"== (d) whole maps pass on the memmap of (c) ({nbytes / 2**30:.2f} GiB), {rounds} interleaved rounds, medians")
    for threads in ("1", "2"):
        res = run_worker(sys.executable, PASS_WORKER, [path, rounds], {"NAPARI_4DSTEM_THREADS": threads})
        med = {k: float(np.median(v)) for k, v in res["times"].items()}
        for k, v in med.items():
            print(f"   threads={threads} {k:18s} {v:7.3f} s  {nbytes / v / 1e9:6.2f} GB/s"
                  f"  ratio to read limit {med['read_limit'] / v:5.2f}x")
        cpu = {k: float(np.median(v)) for k, v in res["cpu"].items()}
        out[threads] = {"median_s": med, "ratio_maps_pass": med["read_limit"] / med["maps_pass"],
                        "ratio_analyze": med["read_limit"] / med["analyze_no_rrvae"],
                        "median_cpu_s": cpu, "cpu_ratio_maps_pass": cpu["read_limit"] / cpu["maps_pass"],
                        "load_average": res["load"], "peak_rss_mib": res["maxrss_mib"]}
        print(f"   threads={threads} target maps pass >= 0.8x read limit: {out[threads]['ratio_maps_pass']:.2f}x "
              f"(CPU time {out[threads]['cpu_ratio_maps_pass']:.2f}x, load average {res['load']:.1f}, "
              f"peak RSS {res['maxrss_mib']:.0f} MiB)", flush=True)
    print()
    return out


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


def counts_frames(n: int, rng) -> np.ndarray:
    """``n`` 128 x 128 uint16 frames of a counting detector: Poisson counts, a bright disc of radius 20 px."""
    ii, jj = np.indices((128, 128))
    lam = np.where(np.hypot(ii - 63.5, jj - 63.5) < 20, 30.0, 0.5)
    return rng.poisson(lam, (n, 128, 128)).astype(np.uint16)


def make_cases(tmp: Path, quick: bool, only_memmap: bool = False) -> list[tuple[str, Path, str]]:
    cases = []
    if only_memmap:
        return _memmap_case(tmp, quick, np.random.default_rng(0), cases)
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
    return _memmap_case(tmp, quick, rng, cases)


def _memmap_case(tmp: Path, quick: bool, rng, cases: list) -> list:
    scan = (64, 128) if quick else (256, 512)  # x 128 x 128 uint16 = 256 MiB / 4 GiB
    p = tmp / "synthetic_u16.npy"
    a = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint16, shape=(*scan, 128, 128))
    pool = counts_frames(4 * scan[1], rng)  # counting-detector frames, reused in shuffled order (fast to write)
    for y in range(scan[0]):
        a[y] = pool[rng.permutation(len(pool))[:scan[1]]]
    a.flush()
    del a
    cases.append((f"(c) synthetic {scan[0]}x{scan[1]}x128x128 u16 counts memmap "
                  f"({p.stat().st_size / 2**30:.2f} GiB)", p, "memmap"))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small arrays")
    ap.add_argument("--reps", type=int, default=30,
                    help="most repetitions in memory (at least 3, then until 4 s have passed; best is kept)")
    ap.add_argument("--no-py4dstem", action="store_true", help="skip py4DSTEM (per-pattern numpy loop instead)")
    ap.add_argument("--maps-pass-only", action="store_true",
                    help="only (d): the whole maps pass against the read limit on the uint16 memmap")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of (d) (median reported)")
    args = ap.parse_args(argv)
    ref_py = None if (args.no_py4dstem or args.maps_pass_only) else ensure_py4dstem()
    ref_name = "py4DSTEM" if ref_py else "numpy-loop"
    ref_code = PY4DSTEM_WORKER if ref_py else PER_PATTERN_WORKER
    ref_py = ref_py or sys.executable
    ours = sys.executable
    rows = []
    summary = {}
    with tempfile.TemporaryDirectory(prefix="bench_com_") as tmpd:
        tmp = Path(tmpd)
        t0 = time.perf_counter()
        cases = make_cases(tmp, args.quick, args.maps_pass_only)
        print(f"test data written in {time.perf_counter() - t0:.1f} s\n", flush=True)
        if args.maps_pass_only:
            summary["maps_pass"] = bench_maps_pass(cases[-1][1], args.rounds)
            print("JSON " + json.dumps(summary))
            return 0
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
            if mode == "memmap":
                summary["maps_pass"] = bench_maps_pass(path, args.rounds)
    print(f"reference: {ref_name} {res['ref_com'].get('version', '')}; numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs")
    print("JSON " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
