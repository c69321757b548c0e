"""rrVAE speed and quality, side by side with the peers: atomai's rVAE (the paper's reference implementation),
pyroved's rotation-invariant iVAE and (when it installs) auto4dstem.

Every peer lives in its own virtual environment under benchmarks/.envs/NAME, installed on first use with the
CPU torch 2.13.0 first and then the package under a constraints file pinning that torch (so pip does not pull
a multi-GB CUDA build), and runs as a subprocess script (a peer that fails to install or run gives a
'skipped: why' row, never a crash). Data: ../shared/data/sim/graphene_pristine.npz, clean (64 x 64 scan of
64 x 64 patterns), mean-subtracted and min-max scaled to [0, 1] (the paper's notebooks), latent_dim=2, no
translation, batch 20 for atomai, pyroved and our faithful mode (our fast mode uses its own defaults).

Quality run, for each engine until the best latent reaches |r| >= 0.9 against |COM|
(napari_4dstem.com.center_of_mass of the raw patterns) or the time budget (--quality-minutes) runs out:
train, encode all patterns with the engine's encoder, take the best |Pearson r| of a content-latent map with
|COM|; our modes check after every epoch, the peers after every --round patterns (a quarter epoch by default,
so that the budget holds for engines that take many minutes per epoch on a loaded CPU). Seconds per epoch is the
training time of the first epoch (or round, extrapolated); time to quality is the wall time from the start
of training (model set-up, every check's encoding and our modes' preprocessing included).
With --quick: 400 patterns of one epoch per engine (extrapolated, labelled as such), no quality runs.
Select engines with --peers atomai,pyroved,auto4dstem (or none) and --ours faithful,fast (or none).

The machine's load average is printed: other processes on a shared CPU slow every engine, so compare ratios
from the same run only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENVS = HERE / ".envs"
ENV = ENVS / "atomai"
DATA = Path(os.environ.get("NAPARI_4DSTEM_SHARED_DATA", HERE.parents[1] / "shared" / "data")) / "sim"
TORCH = "torch==2.13.0"
TARGET_R = 0.9
BATCH = 20  # atomai, pyroved and our faithful mode

# Shared by every peer runner: argument parsing, the torchvision work-around, the epoch loop and the r check.
# A runner defines build(), train_on(model, x) (one pass over x) and encode(model, x) -> (n, k) content latents, then calls run().
RUNNER_PRELUDE = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import torch
    # PyPI's torchvision is a CUDA build whose compiled ops do not load beside the CPU torch; atomai and pyroved
    # import torchvision, which registers fake kernels for these ops. Defining the schemas first is enough:
    # the models never call them.
    for op in ("nms", "qnms"):
        try:
            torch.library.define("torchvision::" + op, "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except Exception:
            pass
    A = json.loads(sys.argv[1])
    torch.set_num_threads(A["threads"])
    X = np.load(A["x"])                       # (n, h, w) float32
    MAG = np.load(A["mag"]).ravel().astype(np.float64)

    def emit(tag, d):
        print(tag + " " + json.dumps(d), flush=True)

    def pearson(a, b):
        a = np.asarray(a, np.float64).ravel(); a = a - a.mean(); b = b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / den) if den > 0 else float("nan")

    def run(build, train_on, encode, version):
        n, rnd = A["n"], min(A["round"], len(X))
        t0 = time.perf_counter()
        model = build()
        if not A["quality"]:                  # timing only: one epoch of the first n patterns
            t = time.perf_counter()
            train_on(model, X[:n])
            emit("RESULT", {"seconds": time.perf_counter() - t, "patterns": n, "version": version})
            return
        # rounds of rnd patterns drawn from one shuffled epoch after the other; the r check after each round
        rng = np.random.default_rng(0)
        order = np.empty(0, np.int64)
        first, best, seen, hit, k = None, None, 0, None, 0
        while True:
            k += 1
            while len(order) < rnd:
                order = np.concatenate([order, rng.permutation(len(X))])
            idx, order = order[:rnd], order[rnd:]
            t = time.perf_counter()
            train_on(model, X[idx])
            sec = time.perf_counter() - t
            seen += rnd
            first = sec if first is None else first
            lat = np.asarray(encode(model, X), np.float64)
            rs = [pearson(lat[:, j], MAG) for j in range(lat.shape[1])]
            rs = [r for r in rs if np.isfinite(r)]
            r = max(rs, key=abs) if rs else float("nan")
            if rs and (best is None or abs(r) > abs(best)):
                best = r
            el = time.perf_counter() - t0
            emit("EPOCH", {"epoch": seen / len(X), "seconds": sec, "elapsed": el, "r": r, "r_all": rs,
                           "latent_std": [float(s) for s in lat.std(0)]})
            if rs and abs(r) >= A["target"]:
                hit = el
                break
            if el >= A["budget"]:
                break
        emit("RESULT", {"seconds": first, "patterns": rnd, "version": version, "epochs": seen / len(X),
                        "best_r": best, "hit": hit, "elapsed": el})
''')

ATOMAI_RUNNER = RUNNER_PRELUDE + textwrap.dedent('''
    import atomai

    def build():
        return atomai.models.rVAE(X.shape[1:], latent_dim=2, translation=False, seed=0)

    def train_on(m, x):
        # fit() keeps the weights and the Adam state between calls: one call = one pass over x
        m.fit(x, training_cycles=1, batch_size=A["batch"])

    def encode(m, x):
        z_mean, _ = m.encode(x)
        return np.asarray(z_mean)[:, 1:]      # [angle, content...]: the content latents

    run(build, train_on, encode, "atomai " + atomai.__version__)
''')

PYROVED_RUNNER = RUNNER_PRELUDE + textwrap.dedent('''
    import pyroved as pv

    def build():
        # defaults: encoder and spatial decoder 2 x 128 tanh, Bernoulli likelihood (data in [0, 1]),
        # unit-normal prior on every latent (the angle too), SVI with Adam lr 1e-3
        m = pv.models.iVAE(X.shape[1:], latent_dim=2, invariances=["r"], seed=0, device="cpu")
        return m, pv.trainers.SVItrainer(m, device="cpu")

    def train_on(mt, x):
        loader = pv.utils.init_dataloader(torch.from_numpy(x), batch_size=A["batch"])
        mt[1].step(loader)

    def encode(mt, x):
        z_loc, _ = mt[0].encode(torch.from_numpy(x), batch_size=512)
        return z_loc.numpy()[:, 1:]           # [angle, content...]

    run(build, train_on, encode, "pyroved " + pv.__version__)
''')

# name -> (runner, pip requirements beside the pinned torch, module that must import)
PEERS = {
    "atomai": (ATOMAI_RUNNER, ["atomai==0.8.1", "torchvision==0.28.*", "six"], "atomai"),
    "pyroved": (PYROVED_RUNNER, ["pyroved==0.3.0", "pyro-ppl", "torchvision==0.28.*"], "pyroved"),
    # auto4dstem 0.2.8 pins exact old versions: torch==2.2.0 (against the CPU torch 2.13), cupy-cuda12x==13.0.0
    # (CUDA), numpy==1.25.2, scipy==1.9.3 and scikit-image==0.19.3 (no wheel for Python 3.11: a source build).
    # It does not install beside the CPU torch, so it has no runner; the install attempt gives the skip reason.
    "auto4dstem": (None, ["auto4dstem==0.2.8"], "auto4dstem"),
}
PIN_NOTES = {"auto4dstem": "auto4dstem 0.2.8 pins torch==2.2.0, cupy-cuda12x==13.0.0, numpy==1.25.2, scipy==1.9.3, "
                           "scikit-image==0.19.3 (no Python 3.11 wheel)"}


def _tail(text: str, n: int = 6) -> str:
    lines = [s for s in text.splitlines() if s.strip() and "WARNING: Location" not in s]
    return " | ".join(lines[-n:])


def ensure_env(name: str, log) -> tuple[Path | None, str | None]:
    """The python of peer NAME's venv, installing it when missing: (python, None), or (None, why not).

    A failed install leaves ENV/.install-failed with the reason, so later runs skip at once (delete the file,
    or the folder, to try again)."""
    _, reqs, module = PEERS[name]
    env = ENVS / name
    py = env / "bin" / "python"
    failed = env / ".install-failed"
    if failed.exists():
        return None, failed.read_text().strip() + f" (delete {failed} to retry)"
    probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
    if py.exists() and subprocess.call([str(py), "-c", probe], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) == 0:
        return py, None
    log(f"installing {name} into {env} (once; a few minutes)")
    try:
        if not py.exists():
            subprocess.check_call([sys.executable, "-m", "venv", str(env)])
        # wheels only: a peer that needs a source build does not install cleanly (and would load the CPU)
        pip = [str(py), "-m", "pip", "install", "-q", "--only-binary=:all:"]
        # CPU torch first (the pinned local CPU wheel; an unpinned torch would pull GBs of CUDA packages)
        out = subprocess.run(pip + [TORCH], capture_output=True, text=True)
        if out.returncode:
            return None, f"CPU {TORCH} did not install: {_tail(out.stderr)}"
        ver = subprocess.check_output([str(py), "-c", "import torch; print(torch.__version__)"], text=True,
                                      stderr=subprocess.DEVNULL).strip()
        cons = env / "constraints.txt"
        cons.write_text(f"torch=={ver}\n")
        out = subprocess.run(pip + ["-c", str(cons), *reqs], capture_output=True, text=True)
        if out.returncode:
            why = f"pip install {' '.join(reqs)} with torch=={ver} pinned failed: {_tail(out.stderr, 1)}"
            if name in PIN_NOTES:
                why = f"{PIN_NOTES[name]}; {why}"
            failed.write_text(why + "\n")
            return None, why
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"install failed: {e}"
    return py, None


def ensure_atomai(log) -> Path | None:
    """The atomai venv's python, installing it when missing (None if that fails)."""
    py, why = ensure_env("atomai", log)
    if py is None:
        log(f"atomai unavailable: {why}")
    return py


def run_peer(name: str, x: np.ndarray, mag: np.ndarray, n: int, quality: bool, budget: float, threads: int,
             log, rnd: int = 1024) -> dict:
    """One peer in its own venv, as a subprocess: its row for the table (``skipped`` set when it could not run)."""
    runner = PEERS[name][0]
    py, why = ensure_env(name, log)
    if py is None:
        return {"name": name, "skipped": why}
    if runner is None:
        return {"name": name, "skipped": "installed, but this benchmark has no runner for it yet"}
    args = {"n": n, "batch": BATCH, "threads": threads, "quality": quality, "budget": budget, "target": TARGET_R,
            "round": rnd}
    # a hard limit: the budget plus room for the last epoch (atomai: minutes per epoch under load)
    limit = (2 * budget + 900) if quality else 900
    res, err_tail = None, ""
    with tempfile.TemporaryDirectory() as td:
        tdp = Path(td)
        np.save(tdp / "x.npy", x.reshape(-1, *x.shape[-2:]))
        np.save(tdp / "mag.npy", mag)
        (tdp / "run.py").write_text(runner)
        args.update(x=str(tdp / "x.npy"), mag=str(tdp / "mag.npy"))
        with open(tdp / "stderr.txt", "w") as errf:
            # cwd: atomai's trainer saves ./model.tar wherever it runs
            proc = subprocess.Popen([str(py), str(tdp / "run.py"), json.dumps(args)], stdout=subprocess.PIPE,
                                    stderr=errf, text=True, cwd=td)
            timer = threading.Timer(limit, proc.kill)
            timer.start()
            try:
                for line in proc.stdout:
                    if line.startswith("EPOCH "):
                        r = json.loads(line[6:])
                        log(f"  {name:10s} epoch {r['epoch']:5.2f}  {r['seconds']:6.1f} s  elapsed {r['elapsed']:6.1f} s  "
                            f"best r {r['r']:+.3f}  latent std {', '.join(f'{s:.2g}' for s in r['latent_std'])}")
                    elif line.startswith("RESULT "):
                        res = json.loads(line[7:])
                proc.wait()
            finally:
                timer.cancel()
        err_tail = _tail((tdp / "stderr.txt").read_text(errors="replace"), 3)
    if res is None:
        killed = proc.returncode is not None and proc.returncode < 0
        return {"name": name, "skipped": (f"killed after {limit:.0f} s" if killed else
                                          f"run failed (exit {proc.returncode}): {err_tail}")}
    return {"name": res["version"], **res}


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


def _cfg(mode, threads, **kw):
    from napari_4dstem.rrvae import RRVAEConfig

    if mode == "faithful":
        kw.setdefault("batch_size", BATCH)
    return RRVAEConfig(mode=mode, threads=threads, **kw)


def time_ours(x, mode, n, bs, threads, **kw):
    from napari_4dstem.rrvae import RRVAE

    cfg = _cfg(mode, threads, epochs=1, batch_size=bs, eval_every=10**6, **kw)
    sub = x.reshape(-1, *x.shape[2:])[:n].reshape(1, n, *x.shape[2:])
    m = RRVAE(cfg)
    t = time.perf_counter()
    m.fit(sub)
    return time.perf_counter() - t, m.history[-1].get("precision")


def ours_settings(cfg) -> str:
    s = (f"{cfg.layers} x {cfg.hidden} {cfg.activation}, MSE, angle prior {cfg.rotation_prior}, Adam {cfg.lr:g}, "
         f"batch {cfg.batch_size}")
    if cfg.detector_size:
        s += f", {cfg.detector_size}^2 detector"
    if cfg.scaling != "none":
        s += f", {cfg.scaling} scaling"
    if cfg.pca_components:
        s += f", PCA {cfg.pca_components}"
    if cfg.pixel_fraction < 1:
        s += f", {cfg.pixel_fraction:.0%} pixels/step"
    return s


def quality_ours(x, mag, ang, mode, budget, threads, log, name) -> dict:
    """Our mode epoch by epoch until best |r| >= TARGET_R or the budget: the same row as run_peer's."""
    from napari_4dstem.rrvae import RRVAE

    cfg = _cfg(mode, threads, epochs=1000, time_limit=budget)
    m = RRVAE(cfg)
    t0 = time.perf_counter()
    first, best, hit, epoch, el = None, None, None, 0, 0.0
    for p in m.iter_fit(x, mag, ang):
        r = p.info
        if not r.get("epoch_done"):
            continue
        epoch, el = r["epoch"], time.perf_counter() - t0
        first = r["seconds"] if first is None else first
        rb = r["r_best"]
        if rb is not None and np.isfinite(rb) and (best is None or abs(rb) > abs(best)):
            best = rb
        log(f"  {name:10s} epoch {epoch:5.2f}  {r['seconds']:6.1f} s  elapsed {el:6.1f} s  best r {rb:+.3f}  "
            f"circ r {r['circ_r']:+.3f}")
        if rb is not None and abs(rb) >= TARGET_R:
            hit = el
            break
        if el >= budget:
            break
    return {"seconds": first, "patterns": x.shape[0] * x.shape[1], "epochs": epoch, "best_r": best, "hit": hit,
            "elapsed": el, "precision": m.history[-1].get("precision"), "settings": ours_settings(cfg)}


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


PEER_SETTINGS = {
    "atomai": "2 x 128 tanh (default), MSE, angle prior 0.1, Adam 1e-4 (default), batch 20",
    "pyroved": "2 x 128 tanh (default), Bernoulli likelihood (default), N(0, 1) angle prior, Adam 1e-3 "
               "(default), batch 20",
    "auto4dstem": "",
}


def quality_text(row, budget) -> str:
    if row.get("skipped"):
        return "skipped: " + row["skipped"]
    if row.get("epochs") is None:
        return "(timing only)"
    if row.get("hit") is not None:
        return f"{row['hit']:.0f} s ({row['epochs']:.3g} epochs, r {row['best_r']:+.2f})"
    best = row.get("best_r")
    best = f"{best:+.3f}" if best is not None else "n/a"
    return f"not reached in {row['elapsed']:.0f} s (budget {budget:.0f} s): best r {best} after {row['epochs']:.3g} epochs"


def print_table(rows, n_all, budget, log) -> None:
    def per_epoch(r):
        return r["seconds"] * n_all / r["patterns"] if r.get("seconds") and not r.get("skipped") else None

    base = next((per_epoch(r) for r in rows if r["key"] == "atomai" and per_epoch(r)), None)
    ref = next((per_epoch(r) for r in rows if r["key"] == "faithful" and per_epoch(r)), None)
    log(f"\n{'engine':30s} {'load':>5s} {'s/epoch':>8s} {'patt/s':>7s} {'x atomai':>8s} {'faithful x':>10s}  "
        f"time to |r| >= {TARGET_R}")
    for r in rows:
        sec = per_epoch(r)
        load = f"{r['load']:5.1f}" if r.get("load") is not None else "    -"
        if sec is None:
            log(f"{r['name']:30s} {load} {'-':>8s} {'-':>7s} {'-':>8s} {'-':>10s}  {quality_text(r, budget)}")
            continue
        xa = f"{base / sec:7.2f}x" if base else "     n/a"
        fx = f"{sec / ref:9.2f}x" if ref else "      n/a"
        log(f"{r['name']:30s} {load} {sec:8.1f} {n_all / sec:7.0f} {xa} {fx}  {quality_text(r, budget)}")
    log("\nload: 1-minute load average when the engine started (2 cores). x atomai: atomai's seconds per epoch / "
        "this engine's (higher = faster); faithful x: this engine's / ours faithful (how many times slower than "
        "ours at the same settings). Seconds per epoch from a part of an epoch are extrapolated.")
    for r in rows:
        if r.get("settings"):
            log(f"  {r['name']}: {r['settings']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time 400 patterns per engine, no quality run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every engine (default: cores)")
    ap.add_argument("--quality-minutes", type=float, default=5.0,
                    help="time budget of each engine's quality run (default 5)")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated peers to run, from {','.join(PEERS)} (or 'none'; default: all)")
    ap.add_argument("--round", type=int, default=1024,
                    help="peers' quality runs: patterns trained between two r checks (default 1024, a quarter "
                         "epoch, so that the budget holds for engines that take minutes per epoch)")
    ap.add_argument("--ours", default="faithful,fast", help="our modes to run (faithful, fast, or 'none')")
    ap.add_argument("--no-atomai", action="store_true", help="same as leaving atomai out of --peers")
    ap.add_argument("--worker", action="store_true", help="also time training inside a napari thread_worker")
    ap.add_argument("--only-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--defects", action="store_true",
                    help="only the defect check: analyze --fast on simulated vacancy / Si, clean and noisy")
    args = ap.parse_args(argv)
    if args.defects:
        defect_table()
        return 0
    sel = [] if args.peers.strip() == "none" else [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in sel if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {unknown}: use {', '.join(PEERS)} or none")
    if args.no_atomai and "atomai" in sel:
        sel.remove("atomai")
    ours = [] if args.ours.strip() == "none" else [m.strip() for m in args.ours.split(",") if m.strip()]
    if any(m not in ("faithful", "fast") for m in ours):
        ap.error("--ours takes faithful, fast or none")

    from napari_4dstem.rrvae.train import physical_cores

    threads = args.threads or physical_cores()
    log = lambda s: print(s, flush=True)  # noqa: E731
    raw, x = load_graphene()
    n_all = x.shape[0] * x.shape[1]
    n = 400 if args.quick else n_all
    budget = args.quality_minutes * 60
    quality = not args.quick
    label = (f"{n} of {n_all} patterns, extrapolated to one epoch" if n < n_all else
             f"one full epoch; quality runs to |r| >= {TARGET_R} or {budget:.0f} s each")
    log(f"graphene_pristine clean {x.shape}, batch {BATCH} (ours fast: its own), {threads} threads, load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; timing {label}")
    if args.worker or args.only_worker:
        nw = 400
        res = worker_vs_main(x, nw, threads)
        w, mth = min(res["worker"]), min(res["main"])
        log(f"faithful, {nw} patterns: napari thread_worker {w:.2f} s, main thread {mth:.2f} s "
            f"(worker/main = {w / mth:.2f}; best of {len(res['main'])}: {res})")
        if args.only_worker:
            return 0

    mag, ang = com_maps(raw)
    rows = []

    def peer(name):
        t = time.perf_counter()
        load = os.getloadavg()[0]
        log(f"{name}: load average {load:.1f}")
        row = run_peer(name, x, mag, n, quality, budget, threads, log, args.round)
        row.update(key=name, load=load, settings=row.get("settings") or PEER_SETTINGS.get(name), wall=time.perf_counter() - t)
        if row.get("skipped"):
            log(f"{name}: skipped: {row['skipped']}")
        rows.append(row)

    if "atomai" in sel:
        peer("atomai")
    if "faithful" in ours:
        load = os.getloadavg()[0]
        log(f"ours faithful: load average {load:.1f}")
        if not quality:  # the full run's faithful row names its precision (float32 on CPUs without bf16)
            dt, prec = time_ours(x, "faithful", n, BATCH, threads, precision="float32")
            rows.append({"key": "faithful-f32", "name": "ours, faithful (float32)", "seconds": dt, "patterns": n,
                         "settings": None, "load": load})
            load = os.getloadavg()[0]
        if quality:
            row = quality_ours(x, mag, ang, "faithful", budget, threads, log, "faithful")
        else:
            dt, prec = time_ours(x, "faithful", n, BATCH, threads)
            row = {"seconds": dt, "patterns": n, "precision": f"default: {prec}",
                   "settings": ours_settings(_cfg("faithful", 1))}
        rows.append({"key": "faithful", "name": f"ours, faithful ({row['precision']})", "load": load, **row})
    if "fast" in ours:
        load = os.getloadavg()[0]
        log(f"ours fast: load average {load:.1f}")
        if quality:
            row = quality_ours(x, mag, ang, "fast", budget, threads, log, "fast")
        else:
            cfg = _cfg("fast", 1)
            dt, prec = time_ours(x, "fast", n * 4, cfg.batch_size, threads)
            row = {"seconds": dt, "patterns": n * 4, "precision": prec, "settings": ours_settings(cfg)}
        rows.append({"key": "fast", "name": f"ours, fast ({row['precision']})", "load": load, **row})
    for name in sel:
        if name != "atomai":
            peer(name)

    log(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print_table(rows, n_all, budget, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
