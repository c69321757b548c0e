"""Every analysis parameter's type and range, checked before any data are read.

A parameter is described by a :class:`Param` (what is allowed, in words, and a test). :data:`TABLE` holds one
dict per section of a params.toml; ``"virtual.*"`` applies to every detector table ``[virtual.NAME]`` and
``""`` to the top-level keys. A new section registers itself with :func:`register_section`::

    register_section("zernike", {"order": integer(1, 20), "basis": choice("noll", "osa")})

:func:`check_params` raises one :class:`~napari_4dstem.errors.DataError` whose message names the parameter
and what is allowed (``[rrvae] epochs = 2.5: must be a whole number >= 1``). :func:`check_run` is called once
at the very top of the analysis: parameters, then the source path and the output (see
:func:`napari_4dstem.results.preflight_output`), then, for a dataset, the memory the preprocessed stack needs.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, FourDSTEMError, ReaderError

#: Largest seed accepted (numpy, torch and scikit-learn all take it).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """``allowed``: what the message says is allowed; ``ok(value) -> bool``; ``values``: a choice's values."""

    allowed: str
    ok: Callable[[Any], bool]
    values: tuple = ()


# -- building blocks ---------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def _or_none(p: Param, none: bool) -> Param:
    if not none:
        return p
    return Param(p.allowed + " (or None)", lambda v: v is None or p.ok(v))


def integer(lo: int | None = None, hi: int | None = None, none: bool = False) -> Param:
    if lo is not None and hi is not None:
        text = f"a whole number {lo} ... {hi}"
    elif lo is not None:
        text = f"a whole number >= {lo}"
    else:
        text = "a whole number"
    return _or_none(Param(text, lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)), none)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           none: bool = False) -> Param:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    text = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def ok(v):
        if not _is_num(v):
            return False
        f = float(v)
        if lo is not None and (f <= lo if lo_open else f < lo):
            return False
        return not (hi is not None and (f >= hi if hi_open else f > hi))

    return _or_none(Param(text, ok), none)


def boolean() -> Param:
    return Param("true or false", lambda v: isinstance(v, (bool, np.bool_)))


def choice(*values) -> Param:
    shown = ", ".join("None" if v is None else repr(v) for v in values)
    return Param(f"one of {shown}" if len(values) > 1 else shown,
                 lambda v: isinstance(v, (str, type(None))) and v in values, values)


def either(*params: Param) -> Param:
    return Param(" or ".join(p.allowed for p in params), lambda v: any(p.ok(v) for p in params))


def _seq(v) -> bool:
    """A list, tuple or 1-D numpy array (TOML gives lists, Python callers tuples and arrays)."""
    return isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim == 1)


def pair(item: Param, none: bool = False) -> Param:
    def ok(v):
        return _seq(v) and len(v) == 2 and all(item.ok(x) for x in v)

    return _or_none(Param(f"two values (y, x), each {item.allowed}", ok), none)


def ints(n: int, lo: int = 0, none: bool = False) -> Param:
    def ok(v):
        return _seq(v) and len(v) == n and all(_is_int(x) and x >= lo for x in v)

    return _or_none(Param(f"{n} whole numbers >= {lo}", ok), none)


def int_list(lo: int = 0) -> Param:
    def ok(v):
        return _seq(v) and all(_is_int(x) and x >= lo for x in v)

    return Param(f"a list of whole numbers >= {lo}", ok)


def _mask_ok(v) -> bool:
    if v is None:
        return True
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], str):
        if v[0] == "disc":
            return len(v) == 2 and _is_num(v[1]) and v[1] > 0
        if v[0] == "annulus":
            return len(v) == 3 and _is_num(v[1]) and _is_num(v[2]) and 0 <= v[1] < v[2]
        return False
    try:
        a = np.asarray(v)
    except (ValueError, TypeError):
        return False
    return a.ndim == 2 and a.size > 0 and a.dtype.kind in "biuf"


MASK = Param("None, ['disc', r], ['annulus', r0, r1] (0 <= r0 < r1) or a 2-D array of weights", _mask_ok)


def _key_ok(v) -> bool:
    return (isinstance(v, str) and v != "") or _is_int(v)


def _device_ok(v) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "mps") or v == "cuda"
                                   or (v.startswith("cuda:") and v[5:].isdigit()))


# -- the table ---------------------------------------------------------------------------------
#: section -> {key: Param}. "" = top-level keys, "virtual.*" = every [virtual.NAME] table.
TABLE: dict[str, dict[str, Param]] = {
    "": {
        "navigator": choice("sum", "bf"),
        "run_rrvae": boolean(),
        "defect_models": either(choice("auto"), integer(1, 100)),
    },
    "load": {
        "key": Param("a non-empty name or a signal index", _key_ok),
        "nav_shape": Param("two positive integers (scan_y, scan_x), or None", pair(integer(1), none=True).ok),
        "cube": integer(none=True),
        "nan_policy": choice("raise", "ignore"),
        "lazy": boolean(),
        "fill_missing": boolean(),
        "allow_outside": boolean(),
        "force_axes": boolean(),
    },
    "preprocess": {
        "bin_factor": integer(1, none=True),
        "target_size": integer(1, none=True),
        "center": either(choice(None, "auto"), pair(number())),
        "crop_scan": ints(4, 0, none=True),
        "mask": MASK,
        "remove_hot_pixels": boolean(),
        "subtract_mean": boolean(),
        "normalize": choice(None, "minmax", "total", "zscore", "std"),
        "pca_components": integer(1, none=True),
        "pca_drop": int_list(0),
        "pca_method": choice("auto", "full", "randomized", "incremental"),
        "hot_pixel_threshold": number(0, lo_open=True),
        "block_bytes": integer(1, none=True),
        "random_state": integer(0, MAX_SEED),
        "square": boolean(),
        "scan_sigma": either(choice("auto"), number(0)),
    },
    "com": {
        "rotation": either(choice("auto"), number()),
        "flip": either(choice("auto"), boolean()),
        "mask": MASK,
        "center": either(choice(None, "mean"), pair(number())),
        "descan": choice(None, "mean", "plane"),
        "units": choice("px", "mrad"),
        "block_bytes": integer(1, none=True),
        "icom_highpass": number(0),
    },
    "virtual.*": {
        "kind": choice("bf", "abf", "adf", "annulus", "mask"),
        "inner": number(0, none=True),
        "outer": number(0, lo_open=True, none=True),
        "units": choice("px", "mrad"),
        "mask": MASK,
        "center": either(choice(None, "auto"), pair(number())),
    },
    "rrvae": {
        "latent_dim": integer(1, 64),
        "hidden": integer(1, 65536),
        "layers": integer(1, 64),
        "activation": choice("tanh", "relu", "lrelu", "softplus"),
        "rotation_prior": number(0, lo_open=True),
        "translation": boolean(),
        "translation_prior": number(0, lo_open=True),
        "loss": choice("mse"),
        "transform": choice("none", "anscombe"),
        "lr": number(0, 10, lo_open=True, none=True),
        "batch_size": integer(1, none=True),
        "epochs": integer(1, 1_000_000, none=True),
        "seed": integer(0, MAX_SEED),
        "val_fraction": number(0, 1, hi_open=True),
        "mode": choice("faithful", "fast"),
        "device": Param("'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", _device_ok),
        "threads": integer(1, 4096, none=True),
        "eval_every": integer(1),
        "detector_size": integer(4, 4096, none=True),
        "scaling": choice(None, "none", "std", "signal"),
        "pixel_fraction": number(0, 1, lo_open=True, none=True),
        "pca_components": integer(0, none=True),
        "time_limit": number(0, lo_open=True, none=True),
        "precision": choice("auto", "float32", "bfloat16"),
        "compile": boolean(),
        "angle": choice(None, "linear", "vector"),
        "stop_rule": choice(None, "latent", "latent+rotation"),
    },
}


def register_section(name: str, params: dict[str, Param]) -> None:
    """Add (or extend) a section of the table; its keys are then checked like the others."""
    TABLE.setdefault(name, {}).update(params)


def sections() -> tuple[str, ...]:
    """Names of the params.toml sections (tables)."""
    return tuple(s for s in TABLE if s and "." not in s) + ("virtual",)


# -- defaults, config files, merging -----------------------------------------------------------
#: Defaults beyond those of the functions called (empty section = the function's defaults).
DEFAULTS: dict[str, Any] = {
    "load": {},
    "preprocess": {},  # Preprocessing(): bin to ~64 px, mean subtraction, min-max to [0, 1] (the paper)
    "com": {},  # center_of_mass(): rotation and flip "auto", detector pixels
    "virtual": {"bf": {"kind": "bf"}, "adf": {"kind": "adf"}},
    "rrvae": {},  # RRVAEConfig(): faithful mode (the paper's settings)
    "navigator": "sum",
    "run_rrvae": True,
    "defect_models": "auto",  # rrVAE models averaged in the outlier map (see pipeline.defect_models())
}


def default_params() -> dict[str, Any]:
    """A fresh copy of :data:`DEFAULTS`."""
    return copy.deepcopy(DEFAULTS)


def load_config(path) -> dict[str, Any]:
    """Read a params.toml; unknown sections, unknown keys and bad values raise :class:`DataError` naming the
    file, the parameter and what is allowed, so a typo never silently falls back to a default."""
    import tomllib

    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise DataError("the config is not a regular file", path=path, hint="give a params.toml file")
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise DataError("config file not found", path=path, hint="check the --config path") from None
    except OSError as e:
        raise DataError(f"cannot read the config file ({e.strerror or e})", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"not valid TOML: {e}", path=path, hint="see docs/cli.md for an example") from None
    except UnicodeDecodeError:
        raise DataError("not a text (UTF-8) file", path=path, hint="give a params.toml, see docs/cli.md") from None
    except (RecursionError, ValueError):
        raise DataError("not a readable TOML file (nested too deeply)", path=path,
                        hint="give a params.toml, see docs/cli.md") from None
    _toml_none(cfg)
    check_params(cfg, path=path)
    return cfg


def _toml_none(cfg: dict) -> None:
    """TOML has no null: ``"none"`` (any case) means None for a key that accepts None (e.g. ``[preprocess]
    normalize = "none"``), in place. Keys whose own choices include the string ``"none"`` keep it."""
    def fix(table: dict, params: dict) -> None:
        for k, v in table.items():
            p = params.get(k)
            if (p is not None and isinstance(v, str) and v.strip().lower() == "none" and p.ok(None)
                    and not p.ok(v)):
                table[k] = None

    fix(cfg, TABLE[""])
    for section, given in cfg.items():
        if not isinstance(given, dict):
            continue
        if section == "virtual":
            for det in given.values():
                if isinstance(det, dict):
                    fix(det, TABLE["virtual.*"])
        elif section in TABLE:
            fix(given, TABLE[section])


def merge_params(*layers: dict | None) -> dict[str, Any]:
    """Merge parameter dicts section by section (later wins); starts from :data:`DEFAULTS`."""
    out = default_params()
    for layer in layers:
        for k, v in (layer or {}).items():
            if k in TABLE and k and isinstance(v, dict):
                out[k] = {**out.get(k, {}), **v}
            else:
                out[k] = copy.deepcopy(v)
    return out


def _shown(value) -> str:
    """A value as one short line (an array by its type and shape, not its numbers)."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 1:
        return f"<{type(value).__name__} of shape {tuple(value.shape)}, {value.dtype}>"
    shown = " ".join(repr(value).split())
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _bad(section: str, key: str, value, allowed: str, path) -> DataError:
    where = f"[{section}] {key}" if section else key
    return DataError(f"{where} = {_shown(value)}: must be {allowed}", path=path)


def signature_names(section: str) -> set[str]:
    """Keyword arguments of the function a section feeds (a parameter added there and not yet in :data:`TABLE`
    is accepted unchecked; tests/test_params.py makes sure the table covers them all)."""
    import dataclasses
    import inspect

    if section == "preprocess":
        from .preprocess import Preprocessing

        return set(inspect.signature(Preprocessing).parameters)
    if section == "com":
        from .com import center_of_mass

        return set(inspect.signature(center_of_mass).parameters) - {"data", "callback", "cancel"}
    if section == "rrvae":
        from .rrvae.config import RRVAEConfig

        return {f.name for f in dataclasses.fields(RRVAEConfig)}
    if section == "load":
        from .io.checks import OPTIONS

        return set(OPTIONS)
    return set()


def _check_table(section: str, given, spec: dict[str, Param], path) -> None:
    if not isinstance(given, dict):
        raise DataError(f"[{section}] must be a table of parameters, got {given!r:.60}", path=path)
    extra = set(given) - set(spec)
    if extra and section in ("preprocess", "com", "rrvae", "load"):
        spec = {**spec, **{k: Param("any value", lambda v: True) for k in extra & signature_names(section)}}
    unknown = sorted(str(k) for k in set(given) - set(spec))
    if unknown:
        raise DataError(f"unknown [{section}] parameter(s) {unknown}", path=path,
                        hint=f"allowed: {', '.join(sorted(spec))}")
    for k, v in given.items():
        p = spec[k]
        try:
            good = p.ok(v)
        except Exception:  # noqa: BLE001 - a value a test cannot even look at is not allowed
            good = False
        if not good:
            raise _bad(section, k, v, p.allowed, path)


def check_params(params: dict, path=None) -> None:
    """Raise :class:`DataError` for an unknown section or key, or a value of the wrong type or range."""
    if not isinstance(params, dict):
        raise DataError(f"parameters must be a dict of sections, got {type(params).__name__}", path=path)
    top = TABLE[""]
    names = sections()
    unknown = sorted(str(k) for k in params if k not in names and k not in top)
    if unknown:
        raise DataError(f"unknown section(s) or key(s) {unknown}", path=path,
                        hint=f"use {', '.join(f'[{s}]' for s in names)} and {', '.join(top)}")
    _check_table("", {k: v for k, v in params.items() if k in top}, top, path)
    for section in names:
        given = params.get(section)
        if given is None:
            continue
        if section == "virtual":
            if not isinstance(given, dict):
                raise DataError(f"[virtual] must hold detector tables like [virtual.adf], got {given!r:.60}",
                                path=path)
            for name, det in given.items():
                if not isinstance(det, dict):
                    raise DataError(f"[virtual.{name}] must be a table like {{kind = \"adf\"}}, got {det!r:.60}",
                                    path=path)
                _check_table(f"virtual.{name}", det, TABLE["virtual.*"], path)
            continue
        _check_table(section, given, TABLE[section], path)
    _check_combinations(params, path)


def _device_problem(dev) -> tuple[str, str | None] | None:
    """(problem, hint) when ``device`` names an accelerator this machine lacks."""
    if isinstance(dev, str) and dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return f"device = {dev!r}: CUDA is not available on this machine", "use device = 'auto' or 'cpu'"
        n = torch.cuda.device_count()
        if ":" in dev and int(dev.split(":")[1]) >= n:
            return f"device = {dev!r}: this machine has {n} CUDA device(s)", None
    if dev == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return "device = 'mps': MPS is not available on this machine", "use device = 'auto' or 'cpu'"
    return None


def _detector_problem(det: dict) -> str | None:
    inner, outer = det.get("inner"), det.get("outer")
    if _is_num(inner) and _is_num(outer) and not inner < outer:
        return f"inner = {inner!r} must be smaller than outer = {outer!r}"
    if det.get("kind") == "mask" and det.get("mask") is None:
        return "kind = 'mask' needs mask = (a 2-D array of weights)"
    return None


def _crop_problem(crop) -> str | None:
    if _seq(crop) and len(crop) == 4 and all(_is_int(v) for v in crop):
        y0, y1, x0, x1 = crop
        if not (y0 < y1 and x0 < x1):
            return (f"crop_scan = {[int(v) for v in crop]}: must be [y0, y1, x0, x1] with y0 < y1 and "
                    "x0 < x1")
    return None


def _check_combinations(params: dict, path) -> None:
    rr = params.get("rrvae") or {}
    dev = _device_problem(rr.get("device", "auto"))
    if dev:
        raise DataError(f"[rrvae] {dev[0]}", path=path, hint=dev[1])
    for name, det in (params.get("virtual") or {}).items():
        bad = _detector_problem(det) if isinstance(det, dict) else None
        if bad:
            raise DataError(f"[virtual.{name}] {bad}", path=path)
    bad = _crop_problem((params.get("preprocess") or {}).get("crop_scan"))
    if bad:
        raise DataError(f"[preprocess] {bad}", path=path)


# -- Python arguments --------------------------------------------------------------------------
# The public functions check their arguments through the same table, with one line at the top of their body
# (``check_arguments("center_of_mass", locals())``), before any data are read.
def _path_ok(v) -> bool:
    return isinstance(v, (str, os.PathLike)) and os.fspath(v) != ""


def _source_ok(v) -> bool:
    from .dataset import Dataset4D

    return isinstance(v, Dataset4D) or _path_ok(v)


def _config_ok(v) -> bool:
    from .rrvae.config import RRVAEConfig

    return v is None or isinstance(v, RRVAEConfig)


PATH = Param("a file path (str or pathlib.Path)", _path_ok)
_BLOCK = integer(1, none=True)

#: function -> (section of :data:`TABLE` or None, arguments beyond the section, error class).
#: Arguments in neither (the data, ``self``, callback, cancel) are not checked here.
CALLS: dict[str, tuple[str | None, dict[str, Param], type[FourDSTEMError]]] = {
    "load": ("load", {"path": PATH}, ReaderError),
    "center_of_mass": ("com", {}, DataError),
    "iter_center_of_mass": ("com", {}, DataError),
    "virtual_image": ("virtual.*", {"block_bytes": _BLOCK}, DataError),
    "iter_virtual_image": ("virtual.*", {"block_bytes": _BLOCK}, DataError),
    "virtual_images": (None, {"block_bytes": _BLOCK}, DataError),
    "iter_virtual_images": (None, {"block_bytes": _BLOCK}, DataError),
    "Preprocessing": ("preprocess", {}, DataError),
    "RRVAEConfig": ("rrvae", {}, DataError),
    "RRVAE": (None, {"config": Param("an RRVAEConfig or None", _config_ok)}, DataError),
    "analyze": (None, {"source": Param("a file path or a Dataset4D (wrap an array with "
                                       "napari_4dstem.as_dataset)", _source_ok),
                       "params": Param("a dict of parameter sections or None",
                                       lambda v: v is None or isinstance(v, dict)),
                       "out": _or_none(PATH, True), "overwrite": boolean(),
                       "client": Param("a distributed.Client or None",
                                       lambda v: v is None or callable(getattr(v, "submit", None)))}, DataError),
}


def _check_values(label: str, given: dict, spec: dict[str, Param], error, path=None) -> None:
    for k, v in given.items():
        p = spec.get(k)
        if p is None:
            continue
        try:
            good = p.ok(v)
        except Exception:  # noqa: BLE001 - a value a test cannot even look at is not allowed
            good = False
        if not good:
            unknown = " (unknown)" if isinstance(v, str) and p.allowed.startswith("one of") and " or " not in \
                p.allowed else ""
            raise error(f"{label}{k} = {_shown(v)}{unknown}: must be {p.allowed}", path=path)


def check_arguments(function: str, args: dict) -> None:
    """Check a public function's arguments (``locals()`` at the top of its body) against :data:`TABLE`.

    Raises the function's error class (:class:`DataError`; :class:`ReaderError` for ``load``) with one line
    naming the function, the argument and what is allowed. Arguments the table does not list pass.
    """
    section, extra, error = CALLS[function]
    spec = {**(TABLE[section] if section else {}), **extra}
    label = f"{function}() argument "
    path = args.get("path") if _path_ok(args.get("path")) else None  # load(): the message names the file
    _check_values(label, args, spec, error, path)
    if section == "virtual.*":
        bad = _detector_problem(args)
        if bad:
            raise error(label + bad)
    elif section == "preprocess":
        bad = _crop_problem(args.get("crop_scan"))
        if bad:
            raise error(label + bad)
    elif section == "rrvae":
        dev = _device_problem(args.get("device", "auto"))
        if dev:
            raise error(label + dev[0], hint=dev[1])
    if "detectors" in args and function.endswith("virtual_images"):
        _check_detectors(function, args["detectors"], error)


def _check_detectors(function: str, detectors, error) -> None:
    if not isinstance(detectors, dict) or not all(isinstance(d, dict) for d in detectors.values()):
        raise error(f"{function}() argument detectors = {_shown(detectors)}: must be a dict "
                    "{name: {'kind': ..., 'inner': ..., ...}}")
    spec = TABLE["virtual.*"]
    for name, det in detectors.items():
        label = f"{function}() detector {name!r}: "
        unknown = sorted(str(k) for k in det if k not in spec)
        if unknown:
            raise error(f"{label}unknown parameter(s) {unknown}", hint=f"allowed: {', '.join(sorted(spec))}")
        _check_values(label, det, spec, error)
        bad = _detector_problem(det)
        if bad:
            raise error(label + bad)


# -- before the first pass ---------------------------------------------------------------------
#: The rrVAE needs at least this many scan positions to train (and a validation split to mean anything).
MIN_PATTERNS = 4
#: Smallest preprocessed detector side the rrVAE trains on.
MIN_DETECTOR = 4
#: Throughput assumed for the time estimate (bytes read per second per pass), measured-order figure.
ASSUMED_READ_BYTES_PER_S = 300 * 2**20


def check_run(params: dict | None, source=None, out=None, overwrite: bool = False) -> dict[str, Any]:
    """Everything that can be checked before any work; returns the merged parameters.

    Parameters (type and range), the source path (a regular file or a zarr folder), the output (as at the
    final write, see :func:`napari_4dstem.results.preflight_output`), and for a :class:`Dataset4D` source the
    memory the preprocessed stack needs and whether the rrVAE can train on the scan.
    """
    check_arguments("analyze", {"source": source, "params": params, "out": out, "overwrite": overwrite})
    p = merge_params(params)
    check_params(p)
    from .dataset import Dataset4D

    sources: list[str] = []
    if isinstance(source, Dataset4D):
        sources = list(getattr(source.provenance, "files", None) or []) or (
            [source.provenance.source_path] if source.provenance.source_path else [])
    elif isinstance(source, (str, Path)):
        from .io.checks import check_path

        check_path(Path(source).expanduser())
        sources = [str(source)]
    if out is not None:  # the CLI also reserves the temporary file (results.preflight_output)
        from .results import check_output

        est = estimate(source, p)["results_bytes"] if isinstance(source, Dataset4D) else 0
        check_output(out, overwrite, "results file", sources, est)
    if isinstance(source, Dataset4D):
        check_fits(source, p)
    return p


def _preprocessed_shape(ds, pre: dict) -> tuple[int, int, int]:
    """(positions, det_y, det_x) of the preprocessed stack, from the parameters only (no data read)."""
    sy, sx = ds.scan_shape
    crop = pre.get("crop_scan")
    if crop:
        y0, y1, x0, x1 = (int(v) for v in crop)
        sy, sx = max(0, min(y1, sy) - y0), max(0, min(x1, sx) - x0)
    h, w = ds.detector_shape
    bf = pre.get("bin_factor")
    if bf is None:
        ts = pre.get("target_size", 64)
        bf = max(1, round(min(h, w) / ts)) if ts else 1
    h, w = h // int(bf) or 1, w // int(bf) or 1
    if pre.get("square", True):
        h = w = min(h, w)
    return sy * sx, h, w


def estimate(ds, params: dict) -> dict[str, Any]:
    """Memory, time and output size an analysis of ``ds`` needs (rough upper figures, before any read)."""
    p = merge_params(params)
    n, h, w = _preprocessed_shape(ds, p.get("preprocess") or {})
    stack = n * h * w * 4
    passes = 1 + bool(p.get("run_zernike", False))  # one pass for every map (docs/analysis.md); Zernike class means: one more
    read_s = passes * ds.nbytes / ASSUMED_READ_BYTES_PER_S
    rr = p.get("rrvae") or {}
    latent = int(rr.get("latent_dim", 2))
    hidden, layers = int(rr.get("hidden", 128)), int(rr.get("layers", 2))
    n_maps = 12 + (2 * latent + 8 if p.get("run_rrvae", True) else 0) + len(p.get("virtual") or {})
    model_bytes = 4 * (2 * h * w * hidden + 2 * layers * hidden * hidden) if p.get("run_rrvae", True) else 0
    results = n_maps * n * 8 + 2 * model_bytes + 2**20
    return {"positions": n, "preprocessed_detector": (h, w), "preprocessed_bytes": stack,
            "source_bytes": ds.nbytes, "passes": passes, "read_seconds": read_s, "results_bytes": results}


def _check_centres(ds, p: dict, path) -> None:
    """A detector centre given as (y, x) must lie on the detector (else the patterns are shifted off it)."""
    h, w = ds.detector_shape
    given = [("preprocess", (p.get("preprocess") or {}).get("center")), ("com", (p.get("com") or {}).get("center"))]
    given += [(f"virtual.{k}", v.get("center")) for k, v in (p.get("virtual") or {}).items() if isinstance(v, dict)]
    for section, c in given:
        if isinstance(c, (list, tuple)) and len(c) == 2 and all(_is_num(v) for v in c):
            if not (-0.5 <= float(c[0]) <= h - 0.5 and -0.5 <= float(c[1]) <= w - 0.5):
                raise DataError(f"[{section}] center = {list(c)} is outside the {h} x {w} detector", path=path,
                                hint=f"give (y, x) in detector pixels, 0 ... {h - 1} and 0 ... {w - 1}")


def check_fits(ds, params: dict) -> None:
    """Refuse, before the first pass, what cannot finish: a preprocessed stack larger than half the free
    memory, or a scan too small for the rrVAE."""
    from .dataset import available_memory

    p = merge_params(params)
    path = ds.provenance.source_path
    _check_centres(ds, p, path)
    e = estimate(ds, p)
    free = available_memory()
    if e["preprocessed_bytes"] > 0.5 * free:
        h, w = e["preprocessed_detector"]
        raise DataError(
            f"the preprocessed stack ({e['positions']} patterns of {h} x {w} float32 = "
            f"{e['preprocessed_bytes'] / 2**30:.3g} GiB) does not fit in half the free memory "
            f"({free / 2**30:.3g} GiB)", path=path,
            hint="bin more ([preprocess] target_size or bin_factor) or crop the scan ([preprocess] crop_scan)")
    if not p.get("run_rrvae", True):
        return
    skip = "skip the rrVAE (--no-rrvae, run_rrvae = false) to get the maps and COM"
    if e["positions"] < MIN_PATTERNS:
        raise DataError(f"the scan has {e['positions']} position(s); the rrVAE needs at least {MIN_PATTERNS}",
                        path=path, hint=f"analyze a larger scan, or {skip}")
    h, w = e["preprocessed_detector"]
    if min(h, w) < MIN_DETECTOR:
        dy, dx = ds.detector_shape
        raise DataError(f"the detector is {dy} x {dx} pixels, {h} x {w} after preprocessing (binning, square crop); "
                        f"the rrVAE needs at least {MIN_DETECTOR} x {MIN_DETECTOR}", path=path,
                        hint=f"use less binning ([preprocess] target_size / bin_factor, square = false), or {skip}")
    from .io.checks import sample_rows

    lo = hi = None
    for rows in sample_rows(ds.data):  # the first, middle and last scan rows: a cheap read
        if rows.size:
            a, b = rows.min(), rows.max()
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is not None and lo == hi:
        raise DataError(f"the sampled scan rows are constant (every value is {lo:g}): the rrVAE cannot learn from "
                        "constant data", path=path, hint=f"check the file, or {skip}")


__all__ = ["Param", "TABLE", "DEFAULTS", "register_section", "sections", "default_params", "load_config",
           "merge_params", "check_params", "check_run", "estimate", "check_fits", "integer", "number", "boolean",
           "choice", "either", "pair", "ints", "int_list", "MASK", "PATH", "CALLS", "check_arguments"]



# -- [zernike]: the keywords of motifs.zernike_motifs (METHODS / FEATURES there must match) -------------
register_section("zernike", {
    "order": integer(0, 40), "radius": number(0, lo_open=True, none=True), "center": pair(number(), none=True),
    "n_classes": either(choice("auto"), integer(1, 64)), "method": choice("gmm", "kmeans", "hdbscan"),
    "features": choice("moments", "invariant"), "n_components": integer(1, 64),
    "smooth": either(choice("auto"), number(0)), "window": integer(0, 32), "spread": number(0),
    "class_means": boolean(), "seed": integer(0, 2**32 - 1), "block_bytes": integer(1, none=True)})
TABLE[""]["run_zernike"] = boolean()
DEFAULTS.setdefault("zernike", {})  # zernike_motifs() defaults
DEFAULTS.setdefault("run_zernike", False)  # --zernike
_MOMENTS = {k: TABLE["zernike"][k] for k in ("order", "radius", "center", "block_bytes")}
CALLS.update({
    "zernike_motifs": ("zernike", {}, DataError),
    "iter_motifs": ("zernike", {"moments": Param("a ZernikeResult of the same data, or None",
                                                 lambda v: v is None or hasattr(v, "moments"))}, DataError),
    "zernike_moments": (None, {**_MOMENTS, "oversample": integer(1, 64)}, DataError),
    "iter_zernike_moments": (None, {**_MOMENTS, "oversample": integer(1, 64)}, DataError)})
