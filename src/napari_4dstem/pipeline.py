"""The headless analysis: load -> navigator and virtual images -> COM -> preprocess -> rrVAE -> Results.

Shared by the CLI (``napari-4dstem analyze``) and usable from scripts or a cluster job. It only calls
the core functions, which read the data block by block, so a file larger than memory works as long
as the preprocessed patterns (binned to ~64 x 64 by default) fit. Defaults are the GUI's: every
step's parameters default to the defaults of the function it calls.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .dataset import Dataset4D
from .errors import DataError
from .progress import Progress, Steps, run_steps
from .rrvae.maps import ENCODE_CHUNK_PATTERNS, iter_encode  # noqa: F401 - re-exported (chunked encoding)

_NAV = "__navigator__"

# Parameter defaults, config files and checks live in params.py (harden branch); re-exported here.
from .params import DEFAULTS, check_arguments, check_params, check_run, default_params, load_config, merge_params  # noqa: E402,F401
from .params import sections as _sections  # noqa: E402

#: Sections of a params.toml and of :func:`analyze`'s ``params``.
SECTIONS = _sections()

#: ``defect_models="auto"`` trains this many models in all for noisy scans in the fast mode ...
AUTO_DEFECT_MODELS = 3
#: ... when the scan has at most this many positions (each model is one more training).
AUTO_DEFECT_MODELS_MAX_PATTERNS = 128 * 128


def _tuples(d: dict) -> dict:
    # TOML has no tuples; the core functions take (y, x) pairs and ("disc", r) masks as tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def iter_analyze(source, params: dict | None = None, out=None, overwrite: bool = False, client=None) -> Steps:
    """Generator form of :func:`analyze`; yields :class:`Progress` whose ``info["stage"]`` names the step."""
    from .results import Results, save_results

    check_arguments("analyze", {"client": client})  # a distributed.Client (an address goes to --scheduler)
    p = check_run(params, source, out, overwrite)  # every parameter, the source path and the output: before any read
    run_rrvae = bool(p.get("run_rrvae", True))
    run_zernike = bool(p.get("run_zernike", False))
    # maps: the one pass over the raw data (navigator, virtual images, COM sums, binning for the rrVAE)
    stages = ["load", "maps", "com"]
    if run_zernike:
        stages.append("zernike")
    if run_rrvae:
        stages += ["preprocess", "rrvae", "encode", "defects"]
    if out is not None:
        stages.append("save")
    n = len(stages)
    timings: dict[str, float] = {}

    def stage(name: str, steps):
        i = stages.index(name)
        t0 = time.perf_counter()
        yield Progress(0, 1, name, {"stage": name, "stage_index": i, "n_stages": n})
        try:
            while True:
                pr = next(steps)
                yield Progress(pr.done, pr.total, pr.message, {**pr.info, "stage": name, "stage_index": i,
                                                                 "n_stages": n})
        except StopIteration as stop:
            timings[name] = round(time.perf_counter() - t0, 3)
            yield Progress(1, 1, f"{name} done", {"stage": name, "stage_index": i, "n_stages": n, "stage_done": True})
            return stop.value

    ds = yield from stage("load", _just(lambda: _open(source, p["load"])))
    from .com import com_reducer
    from .executor import Source, iter_run
    from .preprocess import Preprocessing
    from .virtual import detector_mask, virtual_reducer

    pp = Preprocessing(**_tuples(p["preprocess"]))
    window = pp._scan_window(ds)  # validates crop_scan; the maps share the rrVAE's (cropped) scan grid
    work = _scan_window(ds, pp)  # the same window as a lazy dataset, for the geometry (small sample reads)
    specs = {k: _tuples(v) for k, v in p["virtual"].items()}
    warnings: list[str] = []
    if "virtual" not in (params or {}):
        # The default detectors guess radii from the data; on odd data (empty frames, tiny detectors)
        # skip the ones that cannot be built instead of failing the whole batch run.
        for name in list(specs):
            try:
                detector_mask(work, **specs[name])
            except DataError as e:
                del specs[name]
                warnings.append(f"virtual image {name!r} skipped: {e.problem}")
                yield Progress(0, 1, warnings[-1], {"stage": "maps", "stage_index": 1, "n_stages": n,
                                                    "warning": warnings[-1]})
    navigator = p.get("navigator", "sum")
    if navigator not in ("sum", "bf"):
        raise DataError(f"unknown navigator kind {navigator!r}", hint="use 'sum' or 'bf'")
    nav_spec = {"kind": "mask", "mask": np.ones(work.detector_shape, bool)} if navigator == "sum" else {"kind": "bf"}
    maps_red = virtual_reducer(work, {**specs, _NAV: nav_spec})
    com_red = com_reducer(work, **_tuples(p["com"]))
    com_red.defer = True  # its maps are finished in the "com" stage
    reducers = [maps_red, com_red]
    if run_rrvae:
        # the geometry the binning needs (hot pixels, centre) from a sample of frames, so that the raw
        # file is read once; the stack is binned in the same pass
        from .blocks import sample_mean_pattern

        pp.prepare(ds, True, sample_mean_pattern(work) if pp.needs_raw_mean() else None)
        reducers.append(pp.binning_reducer(ds))
    zp = _tuples(p["zernike"]) if run_zernike else {}
    if run_zernike:  # the moments are linear in the frame: they ride along in the same pass
        from .zernike import DEFAULT_ORDER, OVERSAMPLE, zernike_reducer

        reducers.append(zernike_reducer(work, zp.get("order", DEFAULT_ORDER), zp.get("radius"), zp.get("center"),
                                        OVERSAMPLE))
    src = None
    if client is not None:
        src = (Source(str(source), dict(p["load"]), tuple(ds.shape), str(ds.dtype))
               if not isinstance(source, Dataset4D) else Source.from_dataset(ds))
    run_stats: dict = {}
    res = yield from stage("maps", iter_run(ds, reducers, client=client, source=src, window=window,
                                            message="one pass: maps, COM sums" + (", binning" if run_rrvae else ""),
                                            stats=run_stats))
    virtual, com_sums = res[0], res[1]
    nav = virtual.pop(_NAV).image
    com = yield from stage("com", _just(lambda: com_red.complete(com_sums)))
    zernike_maps_, zernike_params = {}, None
    if run_zernike:  # a second pass over the raw patterns only for the class averages (they need the labels)
        from .motifs import iter_motifs
        from .zernike_io import zernike_maps, zernike_parameters

        motif = yield from stage("zernike", iter_motifs(work, **zp, moments=res[-1]))
        zernike_maps_, zernike_params = zernike_maps(motif), zernike_parameters(motif)
    model = latent = pre = None
    if run_rrvae:
        pre = yield from stage("preprocess", pp.iter_finish(ds, res[2], True))
        from .rrvae import RRVAE, RRVAEConfig

        model = RRVAE(RRVAEConfig(**p["rrvae"]))
        res = res[:2]  # drop the executor's reference to the stack (pre holds it)
        pre = _lean_stack(pre, model.config.detector_size)
        patterns = _patterns(pre)  # the array itself: no second copy of the stack
        yield from stage("rrvae", model.iter_fit(patterns, com_magnitude=com.magnitude, com_angle=com.angle))
        latent = yield from stage("encode", _just(lambda: rrvae_maps(model, patterns, client)))
        n_models = defect_models(p.get("defect_models", "auto"), model.config, pp, pre.shape[:2])
        if n_models > 1:
            extra = yield from stage("defects", iter_defect_maps(model, patterns, n_models - 1, com.magnitude,
                                                                 com.angle))
            latent.update(mean_defect_maps([latent, *extra]))
    info: dict[str, Any] = {"timings_s": timings}
    if client is not None:
        info["scheduler"] = str(getattr(getattr(client, "scheduler", None), "address", "client"))
        info["dask_workers"] = run_stats.get("workers", {})  # worker address -> tasks it ran
    if model is not None:
        info["defect_models"] = n_models
    if warnings:
        info["warnings"] = warnings
    if pp.crop_scan is not None:
        info["scan_window"] = [int(v) for v in pp.crop_scan]
    results = Results.from_analysis(
        ds, com=com, virtual={k: v.image for k, v in virtual.items()}, navigator=nav, rrvae_model=model,
        maps={**(latent or {}), **zernike_maps_} or None, preprocessing=pp, info=info,
        parameters={"virtual": {k: v.parameters for k, v in virtual.items()}, "navigator": {"kind": navigator},
                    "pipeline": {"run_rrvae": run_rrvae,
                                 "defect_models": p.get("defect_models", "auto"),
                                 "run_zernike": run_zernike},
                    **({"zernike": zernike_params} if zernike_params is not None else {})})
    if out is not None:
        yield from stage("save", _just(lambda: save_results(out, results, overwrite=overwrite)))
    return results


def analyze(source, params: dict | None = None, out=None, overwrite: bool = False, callback=None,
            cancel=None, client=None):
    """Run the whole analysis on a file or dataset and return (and optionally save) :class:`Results`.

    The raw data are read once (docs/analysis.md, "Passes over the data"): navigator, virtual images, COM
    sums and, with the rrVAE, the binned patterns come from one pass; preprocessing is skipped without the
    rrVAE.

    Parameters
    ----------
    source
        A path (opened with :func:`napari_4dstem.io.load` and the ``[load]`` options) or a Dataset4D.
    params
        ``{"load": {...}, "preprocess": {...}, "com": {...}, "virtual": {name: {...}}, "rrvae": {...},
        "run_rrvae": bool, "navigator": "sum" | "bf"}``; missing entries take :data:`DEFAULTS`.
    out
        Results file to write (atomically); None = do not write.
    overwrite
        Replace an existing ``out``.
    callback, cancel
        As in :func:`napari_4dstem.run_steps`.
    client
        A ``distributed.Client``: the pass runs on its workers, each opening the file itself by path (it
        must be the same path on every worker); the maps merge here. See docs/analysis.md, "On a cluster".
    """
    return run_steps(iter_analyze(source, params, out, overwrite, client=client), callback, cancel, "analysis")


def defect_models(setting, config, preprocessing, scan_shape) -> int:
    """How many rrVAE models the outlier map averages (``params["defect_models"]``).

    A number is taken as given. ``"auto"``: :data:`AUTO_DEFECT_MODELS` for a noisy scan (the preprocessing
    chose a scan smoothing, i.e. Poisson noise outweighs the signal) in the fast mode with at most
    :data:`AUTO_DEFECT_MODELS_MAX_PATTERNS` positions, else 1. Why: under noise each model's outlier map
    has a few chance peaks of its own (they follow the model's random initialisation, not the data), while a
    defect peaks in every model; the mean of models trained from different seeds keeps the defect and
    flattens the rest (docs/rrvae.md, "Defect maps").
    """
    if setting == "auto":
        noisy = getattr(preprocessing, "scan_sigma_", 0.0) > 0 and preprocessing.scan_sigma == "auto"
        small = int(scan_shape[0]) * int(scan_shape[1]) <= AUTO_DEFECT_MODELS_MAX_PATTERNS
        return AUTO_DEFECT_MODELS if (noisy and small and config.mode == "fast") else 1
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise DataError(f"defect_models must be 'auto' or a whole number >= 1, got {setting!r}")
    return setting


def mean_defect_maps(parts: list) -> dict:
    """The mean of several models' defect maps (dicts holding the keys of
    :data:`napari_4dstem.rrvae.maps.DEFECT_KEYS`, as ``defect_maps`` gives), key by key, float32."""
    from .rrvae.maps import DEFECT_KEYS

    return {k: np.mean([p[k] for p in parts], axis=0).astype(np.float32) for k in DEFECT_KEYS}


def iter_defect_maps(model, patterns, n: int, com_magnitude=None, com_angle=None) -> Steps:
    """Train ``n`` more models like ``model`` (its config, seeds ``seed + 1 ...``) on ``patterns`` and return
    their defect maps (:func:`napari_4dstem.rrvae.maps.defect_maps`), each at its best epoch (a list of dicts; used by :func:`analyze`
    and the GUI's rrVAE dock)."""
    from .rrvae import RRVAE
    from .rrvae.maps import defect_maps

    maps = []
    for k in range(1, n + 1):
        m = RRVAE(dataclasses.replace(model.config, seed=model.config.seed + k))
        for pr in m.iter_fit(patterns, com_magnitude=com_magnitude, com_angle=com_angle):
            yield Progress((k - 1) * pr.total + pr.done, n * pr.total, f"model {k + 1}/{n + 1}: {pr.message}",
                           {"model": k + 1})
        if m.best_epoch is not None and m.best_epoch in m.checkpoints:
            m.restore(m.best_epoch)
        maps.append(defect_maps(m, m.encode(patterns)))
    return maps


def rrvae_maps(model, patterns, client=None) -> dict:
    """The rrVAE maps of the results file, from the best epoch: :func:`napari_4dstem.rrvae.maps.rrvae_maps`
    (the GUI's rrVAE dock uses the same function); encoded in chunks, on ``client``'s workers when given."""
    from .rrvae.maps import rrvae_maps as _maps

    return _maps(model, patterns, client=client)


#: Above this size the preprocessed stack is binned to the rrVAE's ``detector_size`` before training (see
#: :func:`_lean_stack`).
LEAN_STACK_BYTES = 256 * 2**20


def _lean_stack(pre, size):
    """A large stack binned (area mean) to the size the rrVAE trains at, the full-size stack released.

    The networks see exactly what they would have seen (the rrVAE's own view takes the same area mean),
    but its view would hold the full-size stack and several binned copies at once: on 256 x 256 positions
    of 64 x 64 pixels that is 1 GiB plus ~1.5 GiB of temporaries. Only the model's full-size drawing
    (``reconstruct``) is then at the binned size. Small stacks are left as they are.
    """
    arr = _patterns(pre)
    if not (isinstance(arr, np.ndarray) and size and arr.nbytes > LEAN_STACK_BYTES):
        return pre
    sy, sx, h, w = arr.shape
    if h != w or size >= h or h % size:
        return pre
    f = h // size
    small = np.empty((sy, sx, size, size), np.float32)
    for y in range(0, sy, 16):  # a band of scan rows at a time: no full-size temporary
        small[y:y + 16] = arr[y:y + 16].reshape(-1, sx, size, f, size, f).mean(axis=(3, 5), dtype=np.float32)
    dp = pre.calibration.detector_pixel
    out = pre.with_data(small, note=f"binned to {size} x {size} for the rrVAE (area mean)",
                        detector_pixel=None if dp is None else tuple(None if v is None else v * f for v in dp),
                        detector_center=tuple((c - (f - 1) / 2) / f for c in pre.detector_center))
    out.metadata = dict(pre.metadata, rrvae_prebinned=f)
    return out


def _patterns(pre):
    """The preprocessed stack as the rrVAE takes it without a copy (its float32 array), else as given."""
    if isinstance(pre, Dataset4D) and isinstance(pre.data, np.ndarray) and pre.data.dtype == np.float32:
        return pre.data
    return pre


def _just(fn):
    """A one-step generator around a plain call (so every stage reports start and end)."""
    return fn()
    yield  # pragma: no cover - makes this a generator


def _open(source, load_opts: dict) -> Dataset4D:
    if isinstance(source, Dataset4D):
        return source
    from .io import load

    return load(source, **_tuples(load_opts))


def _scan_window(ds: Dataset4D, pp) -> Dataset4D:
    if pp.crop_scan is None:
        return ds
    y0, y1, x0, x1 = pp._scan_window(ds)  # validates the window against the scan
    # dask slicing keeps the crop lazy for h5py / memmap sources
    return ds.with_data(ds.to_dask()[y0:y1, x0:x1], note=f"scan window {[y0, y1, x0, x1]}")

