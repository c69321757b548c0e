"""Scale: how the maps pass and the rrVAE grow with the scan, and one large scan end to end (docs/analysis.md).

    python benchmarks/bench_scale.py maps --gib 1 2 4 8          # maps pass (analyze --no-rrvae) per size
    python benchmarks/bench_scale.py rrvae --patterns 1024 4096 16384   # fast-mode seconds per epoch
    python benchmarks/bench_scale.py full --scan 256 256 --det 256 256  # analyze --fast end to end (8 GiB)
    python benchmarks/bench_scale.py            # (or --quick; what run_all.py runs) both series, small sizes

Synthetic counting-detector data (Poisson counts, a bright disc) are written to a temporary .npy, read through
a memory map, and deleted afterwards. Each measurement runs the CLI in a fresh process; peak RSS is the
process's VmHWM. The machine this ran on is shared: numbers are single runs under load, see the docs.
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

REPO = Path(__file__).resolve().parents[1]


def write_scan(path: Path, scan, det, seed: int = 0) -> None:
    """A uint16 scan of counting-detector frames (a pool of Poisson frames reused in shuffled order)."""
    rng = np.random.default_rng(seed)
    h, w = det
    ii, jj = np.indices((h, w))
    lam = np.where(np.hypot(ii - (h - 1) / 2, jj - (w - 1) / 2) < min(h, w) / 6, 30.0, 0.5)
    pool = rng.poisson(lam, (min(4 * scan[1], 2048), h, w)).astype(np.uint16)
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(*scan, h, w))
    for y in range(scan[0]):
        idx = rng.integers(0, len(pool), scan[1])
        a[y] = pool[idx]
        if y % 16 == 15:
            a.flush()
    a.flush()
    del a


def run_cli(args: list[str]) -> dict:
    """Run ``napari-4dstem ARGS`` in a fresh process: wall time and peak RSS (from /proc, polled)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys, json, atexit\n"
            "def _peak():\n"
            "    for ln in open('/proc/self/status'):\n"
            "        if ln.startswith('VmHWM:'): print('PEAK_RSS_MIB', int(ln.split()[1]) / 1024, file=sys.stderr)\n"
            "atexit.register(_peak)\n"
            "from napari_4dstem.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "_peak(); atexit.unregister(_peak)\n"
            "sys.exit(rc)\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    peak = [float(ln.split()[1]) for ln in out.stderr.splitlines() if ln.startswith("PEAK_RSS_MIB")]
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return {"wall_s": wall, "peak_rss_mib": peak[-1] if peak else None, "stdout": out.stdout.strip()}


def timings(results_path: Path) -> dict:
    from napari_4dstem.results import load_results

    r = load_results(results_path)
    return {"timings_s": r.info.get("timings_s"), "rrvae_epochs": r.info.get("rrvae_epochs")}


def cmd_maps(args, tmp: Path) -> list[dict]:
    rows = []
    for gib in args.gib:
        frames = int(gib * 2**30 // (128 * 128 * 2))
        sx = 256 if frames >= 256 * 256 else 128
        scan = (frames // sx, sx)
        path = tmp / f"scan_{gib}g.npy"
        t0 = time.perf_counter()
        write_scan(path, scan, (128, 128))
        wrote = time.perf_counter() - t0
        out = tmp / f"r_{gib}g.h5"
        res = run_cli(["analyze", str(path), "-o", str(out), "--no-rrvae", "-q", "--overwrite"])
        row = {"gib": gib, "scan": scan, "write_s": round(wrote, 1), **res, **timings(out)}
        # the plain read of the same bytes right after (the file is as cached for both)
        arr = np.load(path, mmap_mode="r")
        t0 = time.perf_counter()
        u = arr.reshape(-1).view(np.uint64)
        for i in range(0, u.size, 2**22):
            u[i:i + 2**22].sum()
        row["read_uint64_s"] = round(time.perf_counter() - t0, 3)
        del arr, u
        print(json.dumps(row), flush=True)
        rows.append(row)
        path.unlink()
        out.unlink()
    return rows


def cmd_rrvae(args, tmp: Path) -> list[dict]:
    """Seconds per epoch of the fast-mode rrVAE against the number of patterns (64 x 64 preprocessed)."""
    from napari_4dstem.dataset import as_dataset
    from napari_4dstem.rrvae import RRVAE, RRVAEConfig

    rows = []
    rng = np.random.default_rng(0)
    ii, jj = np.indices((64, 64))
    base = np.exp(-((ii - 31.5) ** 2 + (jj - 31.5) ** 2) / 200.0).astype(np.float32)
    for n in args.patterns:
        side = int(np.sqrt(n))
        x = base[None, None] + 0.1 * rng.random((side, n // side, 64, 64), dtype=np.float32)
        model = RRVAE(RRVAEConfig(mode="fast", epochs=args.epochs, seed=0))
        t0 = time.perf_counter()
        model.fit(as_dataset(x))
        fit = time.perf_counter() - t0
        secs = [h["seconds"] for h in model.history]
        t0 = time.perf_counter()
        model.encode(as_dataset(x))
        enc = time.perf_counter() - t0
        row = {"patterns": side * (n // side), "epochs": len(secs), "s_per_epoch": float(np.median(secs)),
               "fit_s": round(fit, 1), "encode_s": round(enc, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def cmd_full(args, tmp: Path) -> dict:
    path = Path(args.path) if args.path else tmp / "scan_full.npy"
    t0 = time.perf_counter()
    if not args.path:
        write_scan(path, tuple(args.scan), tuple(args.det))
    wrote = time.perf_counter() - t0
    gib = path.stat().st_size / 2**30
    out = tmp / "full.h5"
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    try:
        res = run_cli(["analyze", str(path), "-o", str(out), "--fast", "-q", "--overwrite", *extra])
        row = {"gib": round(gib, 2), "scan": args.scan, "det": args.det, "write_s": round(wrote, 1), **res,
               **timings(out)}
    finally:
        path.unlink()
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv == ["--quick"]:  # `make bench` (run_all.py): a short run of both growth series
        rc = main(["maps", "--gib", "0.25", "0.5"])
        return rc or main(["rrvae", "--patterns", "256", "1024", "--epochs", "1"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("maps")
    m.add_argument("--gib", type=float, nargs="+", default=[1, 2, 4, 8])
    r = sub.add_parser("rrvae")
    r.add_argument("--patterns", type=int, nargs="+", default=[1024, 4096, 16384])
    r.add_argument("--epochs", type=int, default=2)
    f = sub.add_parser("full")
    f.add_argument("--scan", type=int, nargs=2, default=[256, 256])
    f.add_argument("--det", type=int, nargs=2, default=[256, 256])
    f.add_argument("--epochs", type=int, default=None)
    f.add_argument("--path", help="an existing scan written by this script (deleted afterwards)")
    ap.add_argument("--tmp", default=None, help="folder for the temporary scan (default: the system's)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=args.tmp) as d:
        res = {"maps": cmd_maps, "rrvae": cmd_rrvae, "full": cmd_full}[args.cmd](args, Path(d))
    print("JSON " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
