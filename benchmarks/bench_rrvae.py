"""rrVAE speed and quality, side by side with atomai's rVAE (the paper's reference implementation).

Installs atomai 0.8.1 into benchmarks/.envs/atomai on first use (CPU torch 2.13.0 pinned first, so pip does
not pull a CUDA build), then times on ../shared/data/sim/graphene_pristine.npz (64 x 64 scan of 64 x 64
patterns), same preprocessing (mean-subtracted, min-max to [0, 1]), same architecture (2 x 128 tanh),
latent_dim=2, no translation, batch 20:

- atomai: one epoch, or with --quick the first N patterns of one (extrapolated, labelled as such);
- ours, faithful mode: one epoch (or N patterns with --quick);
- ours, fast mode: one epoch, and (without --quick) training until the best latent reaches |r| >= 0.9
  against |COM| (the paper's stopping rule), which gives the time to quality.

Prints seconds per epoch, patterns per second and the ratios. The machine's load average is printed: other
processes on a shared CPU slow every engine, so compare ratios from the same run only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENV = HERE / ".envs" / "atomai"
DATA = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", HERE.parents[1] / "shared" / "data")) / "sim"
TORCH = "torch==2.13.0"

ATOMAI_RUNNER = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import torch
    # PyPI's torchvision is a CUDA build whose compiled ops do not load beside the CPU torch; atomai imports
    # torchvision, which registers fake kernels for these ops. Defining the schemas first is enough: the
    # rVAE never calls them.
    for op in ("nms", "qnms"):
        try:
            torch.library.define("torchvision::" + op, "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except Exception:
            pass
    import atomai
    x = np.load(sys.argv[1])
    n = int(sys.argv[2]); bs = int(sys.argv[3])
    torch.set_num_threads(int(sys.argv[4]))
    m = atomai.models.rVAE(x.shape[1:], latent_dim=2, translation=False, seed=0)
    t = time.perf_counter()
    m.fit(x[:n], training_cycles=1, batch_size=bs)
    dt = time.perf_counter() - t
    print("RESULT " + json.dumps({"seconds": dt, "patterns": n, "version": atomai.__version__}))
''')


def ensure_atomai(log) -> Path | None:
    """The atomai venv's python, installing it when missing (None if that fails)."""
    py = ENV / "bin" / "python"
    has_atomai = "import importlib.util as u, sys; sys.exit(u.find_spec('atomai') is None)"
    if py.exists() and subprocess.call([str(py), "-c", has_atomai], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) == 0:
        return py
    log(f"installing atomai into {ENV} (once; a few minutes)")
    pip = [str(py), "-m", "pip", "install", "-q"]
    try:
        subprocess.check_call([sys.executable, "-m", "venv", str(ENV)])
        # CPU torch first (the pinned local CPU wheel; an unpinned torch would pull GBs of CUDA packages)
        rc = subprocess.call(pip + [TORCH])
        if rc:
            return None
        ver = subprocess.check_output([str(py), "-c", "import torch; print(torch.__version__)"], text=True).strip()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(f"torch=={ver}\n")
        subprocess.check_call(pip + ["-c", f.name, "atomai", "torchvision==0.28.*", "six"])
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"atomai install failed: {e}")
        return None
    return py


def load_graphene():
    path = DATA / "graphene_pristine.npz"
    if not path.exists():
        sys.exit(f"{path} not found (set NAPARI_4DSTEM_SHARED_DATA)")
    with np.load(path) as z:
        raw = z["clean"].astype(np.float32)
    x = raw - raw.mean((0, 1))
    x = (x - x.min()) / (x.max() - x.min())
    return raw, x.astype(np.float32)


def com_maps(d):
    try:
        from napari_4dstem.com import center_of_mass
        res = center_of_mass(d, rotation=0, flip=False)
        return np.asarray(res.magnitude), np.asarray(res.angle)
    except ImportError:
        h, w = d.shape[2:]
        ky, kx = np.mgrid[:h, :w]
        s = d.sum((2, 3))
        cy = (d * (ky - (h - 1) / 2)).sum((2, 3)) / s
        cx = (d * (kx - (w - 1) / 2)).sum((2, 3)) / s
        return np.hypot(cx, cy), np.arctan2(cy, cx)


def time_ours(x, mode, n, bs, threads, **kw):
    from napari_4dstem.rrvae import RRVAE, RRVAEConfig

    cfg = RRVAEConfig(mode=mode, epochs=1, batch_size=bs, threads=threads, eval_every=10**6, **kw)
    sub = x.reshape(-1, *x.shape[2:])[:n].reshape(1, n, *x.shape[2:])
    m = RRVAE(cfg)
    t = time.perf_counter()
    m.fit(sub)
    return time.perf_counter() - t, m.history[-1].get("precision")


def worker_vs_main(x, n, threads, repeats=2):
    """Seconds for the same training run in napari's thread_worker and in the main thread (alternating)."""
    from napari.qt import get_qapp
    from napari.qt.threading import thread_worker

    from napari_4dstem.rrvae import RRVAE, RRVAEConfig

    sub = x.reshape(-1, *x.shape[2:])[:n].reshape(1, n, *x.shape[2:])
    cfg = RRVAEConfig(epochs=1, threads=threads, eval_every=10**6)
    app = get_qapp()

    def train():
        t = time.perf_counter()
        yield from RRVAE(cfg).iter_fit(sub)
        return time.perf_counter() - t

    out = {"worker": [], "main": []}
    for _ in range(repeats):
        w = thread_worker(train)()
        w.returned.connect(out["worker"].append)
        w.finished.connect(app.quit)
        w.start()
        app.exec_() if hasattr(app, "exec_") else app.exec()
        g = train()
        try:
            while True:
                next(g)
        except StopIteration as stop:
            out["main"].append(stop.value)
    return out


def defect_table(seed: int = 0, log=print) -> None:
    """The acceptance check of issue 4 on the built-in simulator: for vacancy and Si, clean and noisy
    (10^4 e/pattern, 0.75 Å source blur), 64 x 64 scan at 0.12 Å, the pipeline of `napari-4dstem analyze
    --fast` (default settings): epochs, seconds, best |r| against the noiseless |COM|, and the z-score of every
    rrVAE map at the defect (docs/rrvae.md, "Defect maps")."""
    from napari_4dstem.com import center_of_mass
    from napari_4dstem.pipeline import analyze
    from napari_4dstem.rrvae import pearson_r, zscore_at
    from napari_4dstem.sample import make_sample

    for kind in ("graphene_vacancy", "graphene_si"):
        for noisy in (False, True):
            kw = {"dose": 1e4, "source_size_A": 0.75} if noisy else {}
            ds = make_sample(kind, scan_shape=(64, 64), scan_step_A=0.12, seed=seed, **kw)
            ref = make_sample(kind, scan_shape=(64, 64), scan_step_A=0.12, source_size_A=kw.get("source_size_A", 0))
            mag = center_of_mass(ref).magnitude
            site = (round(ds.metadata["defect"]["y_px"]), round(ds.metadata["defect"]["x_px"]))
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = analyze(ds, {"rrvae": {"mode": "fast", "seed": seed}})
            wall = time.perf_counter() - t0
            h = res.history
            best = res.info.get("rrvae_best_epoch")
            log(f"\n{kind} {'noisy 1e4 e, 0.75 A blur' if noisy else 'clean'}: {len(h)} epochs, {wall:.0f} s "
                f"(load {load0:.1f} -> {os.getloadavg()[0]:.1f}), best epoch {best}")
            for key in sorted(k for k in res.maps if k.startswith("rrvae/")):
                m = res.maps[key]
                for i, mm in enumerate(m if m.ndim == 3 else [m]):
                    name = f"{key}[{i}]" if m.ndim == 3 else key
                    g = np.unravel_index(np.argmax(np.abs(mm - np.median(mm))), mm.shape)
                    log(f"  {name:28s} z {zscore_at(mm, site):6.2f} (plain {zscore_at(mm, site, robust=False):5.2f})"
                        f"  extreme {np.hypot(g[0] - site[0], g[1] - site[1]):4.1f} px from the defect"
                        f"  r(|COM| noiseless) {pearson_r(mm, mag):+.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time 400 patterns per engine, no quality run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every engine (default: cores)")
    ap.add_argument("--quality-minutes", type=float, default=6.0, help="time limit of the fast-mode quality run")
    ap.add_argument("--no-atomai", action="store_true")
    ap.add_argument("--worker", action="store_true", help="also time training inside a napari thread_worker")
    ap.add_argument("--only-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--defects", action="store_true",
                    help="only the defect check: analyze --fast on simulated vacancy / Si, clean and noisy")
    args = ap.parse_args(argv)
    if args.defects:
        defect_table()
        return 0

    from napari_4dstem.rrvae.train import physical_cores

    threads = args.threads or physical_cores()
    log = lambda s: print(s, flush=True)  # noqa: E731
    raw, x = load_graphene()
    n_all = x.shape[0] * x.shape[1]
    n = 400 if args.quick else n_all
    label = f"{n} of {n_all} patterns, extrapolated to one epoch" if n < n_all else "one full epoch"
    log(f"graphene_pristine clean {x.shape}, batch 20, {threads} threads, load average {os.getloadavg()[0]:.1f}; "
        f"timing {label}")
    rows = []
    if args.worker or args.only_worker:
        nw = 400
        res = worker_vs_main(x, nw, threads)
        w, mth = min(res["worker"]), min(res["main"])
        log(f"faithful, {nw} patterns: napari thread_worker {w:.2f} s, main thread {mth:.2f} s "
            f"(worker/main = {w / mth:.2f}; best of {len(res['main'])}: {res})")
        if args.only_worker:
            return 0

    if not args.no_atomai:
        py = ensure_atomai(log)
        if py is None:
            log("atomai unavailable: ratios are not computed")
        else:
            with tempfile.TemporaryDirectory() as td:
                np.save(Path(td) / "x.npy", x.reshape(-1, *x.shape[2:]))
                (Path(td) / "run.py").write_text(ATOMAI_RUNNER)
                # cwd: atomai's trainer saves ./model.tar wherever it runs
                out = subprocess.run([str(py), str(Path(td) / "run.py"), str(Path(td) / "x.npy"), str(n), "20",
                                      str(threads)], capture_output=True, text=True, cwd=td)
            res = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if not res:
                log("atomai run failed:\n" + out.stderr[-2000:])
            else:
                rows.append((f"atomai {res[0]['version']} rVAE", res[0]["seconds"] * n_all / n, "float32"))

    dt, prec = time_ours(x, "faithful", n, 20, threads, precision="float32")
    rows.append(("ours, faithful (float32)", dt * n_all / n, prec))
    dt, prec = time_ours(x, "faithful", n, 20, threads)
    rows.append(("ours, faithful (default precision)", dt * n_all / n, prec))
    dt, prec = time_ours(x, "fast", n_all if not args.quick else n * 4, 128, threads)
    rows.append(("ours, fast (default)", dt * n_all / (n_all if not args.quick else n * 4), prec))

    base = rows[0][1] if rows and rows[0][0].startswith("atomai") else None
    log(f"\n{'engine':38s} {'s/epoch':>9s} {'patterns/s':>11s} {'precision':>10s} {'x atomai':>9s}")
    for name, sec, prec in rows:
        ratio = f"{base / sec:8.1f}x" if base else "      n/a"
        log(f"{name:38s} {sec:9.1f} {n_all / sec:11.0f} {str(prec):>10s} {ratio}")

    if not args.quick:
        from napari_4dstem.rrvae import RRVAE, RRVAEConfig

        mag, ang = com_maps(raw)
        m = RRVAE(RRVAEConfig(mode="fast", threads=threads, epochs=100, time_limit=args.quality_minutes * 60))
        t0 = time.perf_counter()
        hit = None
        for p in m.iter_fit(x, mag, ang):
            if p.info.get("epoch_done"):
                r = p.info
                log(f"  fast epoch {r['epoch']:3d}  {r['elapsed']:6.1f} s  best r {r['r_best']:+.3f}  "
                    f"circ r {r['circ_r']:+.3f}")
                if hit is None and abs(r["r_best"]) >= 0.9:
                    hit = (r["epoch"], time.perf_counter() - t0)
                    break
        if hit:
            log(f"fast mode reached |r| >= 0.9 against |COM| after {hit[0]} epochs, {hit[1]:.0f} s")
            if base:
                log(f"atomai in the same time would run {hit[1] / base:.2f} epochs (the notes measured |r| < 0.05 "
                    f"after 8 atomai epochs), so time-to-quality ratio >= {8 * base / hit[1]:.0f}x")
        else:
            log(f"fast mode did not reach |r| >= 0.9 within {args.quality_minutes} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
