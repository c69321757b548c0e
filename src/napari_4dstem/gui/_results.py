"""Results files in napari: save the session (button or writer contribution) and reopen one as linked layers."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
from napari.utils.notifications import show_error, show_warning

from napari_4dstem.dataset import Calibration
from napari_4dstem.errors import FourDSTEMError
from napari_4dstem.results import Results, load_results, save_results

from ._common import toast_text
from ._layers import META_KEY, scan_layer_kwargs

# results key -> (layer name, colormap)
_NAMES = {"navigator": ("navigator", "gray"), "rrvae/angle": ("rrVAE angle", "twilight"),
          "rrvae/reconstruction_error": ("rrVAE reconstruction error", "inferno"),
          "rrvae/outlier": ("rrVAE outlier", "magma"), "rrvae/rotation_outlier": ("rrVAE rotation outlier", "magma")}
_COM_CMAPS = {"angle": "twilight", "x": "PiYG", "y": "PiYG", "divergence": "PiYG", "curl": "PiYG"}


def session_results(session) -> Results:
    """Everything the session computed, as a :class:`~napari_4dstem.results.Results`."""
    ds = session.dataset
    if ds is None:
        raise FourDSTEMError("nothing to save: no dataset is open", hint="open a file or the sample first")
    nav = session.maps.get("navigator")
    if nav is None:
        from ._layers import cached_navigator

        nav = cached_navigator(ds)
    virtual = {k.split(" ", 1)[1]: v for k, v in session.maps.items() if k.startswith("virtual ")}
    detectors = {name: _json_spec(spec) for name, spec in (getattr(session, "detectors", None) or {}).items()
                 if spec.get("kind") != "mask"}
    com = session.com if hasattr(session.com, "curl_curves") else None
    maps = session.encoded if hasattr(session.encoded, "angle_unwrapped") else None
    info = {}
    src = getattr(session, "source", None)
    if src is not None and tuple(src.detector_shape) == tuple(ds.detector_shape):
        # a scan window of a file: record it against the file's shape, as the pipeline does, so that
        # reopening reattaches the file and maps clicks back to it
        (oy, ox), (ny, nx) = session.scan_offset, ds.scan_shape
        info["scan_window"] = [oy, oy + ny, ox, ox + nx]
        ds = src
    params = {"virtual_detectors": detectors} if detectors else None
    r = Results.from_analysis(ds, com=com, navigator=nav, virtual=virtual, rrvae_model=session.model, maps=maps,
                              preprocessing=session.preprocessing, info=info, parameters=params)
    # the calibration as the user has it now (typed in the Data dock), also when saving against the file
    r.calibration = session.dataset.calibration.to_dict()
    if maps is not None and maps.parameters.get("epoch") is not None:
        r.info["rrvae_maps_epoch"] = int(maps.parameters["epoch"])
    for key, (name, _cmap) in _NAMES.items():
        if key.startswith("rrvae/") and key != "rrvae/angle" and session.maps.get(name) is not None:
            r.maps[key] = np.asarray(session.maps[name])
    if "rrvae/reconstruction_error" in r.maps:
        r.units["rrvae/reconstruction_error"] = "squared error per pattern (model units)"
    if maps is None and session.encoded is not None:  # reopened results: keep their rrVAE maps
        r.maps.update({f"rrvae/{k}": np.asarray(getattr(session.encoded, k))
                       for k in ("angle", "latents", "latent_sd")})
    return r


def _json_spec(spec: dict) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, (tuple, list, np.ndarray)) else v)
            for k, v in spec.items() if v is not None}


def save_session(session, path, overwrite: bool = False):
    """Write everything the session computed to a results file (``save_results``); returns the path."""
    return save_results(path, session_results(session), overwrite=overwrite)


def write_results(path: str, layer_data: list) -> list[str]:
    """npe2 writer: save the current viewer's session as a results file."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        show_error("no viewer to save from")
        return []
    from ._session import get_session

    try:
        return [str(save_session(get_session(viewer), path, overwrite=True))]
    except FourDSTEMError as e:
        show_error(toast_text(e))
        return []


def _scan_maps(key: str, a: np.ndarray, scan_shape) -> list[tuple[str, np.ndarray, str]]:
    """Split a results map into 2-D scan maps with layer names and colormaps."""
    a = np.asarray(a)
    group, _, name = key.partition("/")
    if a.ndim == 2:
        if key in _NAMES:
            return [(_NAMES[key][0], a, _NAMES[key][1])]
        if group == "com":
            return [(f"COM {name}", a, _COM_CMAPS.get(name, "inferno"))]
        if group == "rrvae":
            return [(f"rrVAE {name}", a, "gray")]
        return [(f"{group} {name}" if name else group, a, "gray")]
    if a.ndim == 3 and group == "rrvae":
        stack = a if tuple(a.shape[1:]) == tuple(scan_shape) else np.moveaxis(a, -1, 0)
        label = "z" if name == "latents" else ("sd" if name == "latent_sd" else f"{name} ")
        cmap = "viridis" if name == "latents" else "gray"
        return [(f"rrVAE {label}{k + 1}", stack[k], cmap) for k in range(stack.shape[0])]
    return []


def scan_window(r: Results) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the scan the maps cover, when the analysis cropped the scan (``[preprocess]
    crop_scan``; the pipeline records it in ``info["scan_window"]``); None when the maps cover the whole scan."""
    win = r.info.get("scan_window")
    if win is None:
        return None
    y0, y1, x0, x1 = (int(v) for v in win)
    if len(r.shape) >= 2 and (y0, y1, x0, x1) == (0, int(r.shape[0]), 0, int(r.shape[1])):
        return None
    return y0, y1, x0, x1


_SOURCES: dict = {}  # id(window dataset) -> whole-file dataset, handed to the layer metadata below


def _reattach(r: Results):
    """The source dataset when its file is still there and is the same file; else None (with a warning).

    "The same file" means the same SHA-256 of its first MiB (``header_sha256``, as
    :func:`napari_4dstem.results.source_provenance` computes it) and the same shape. When the analysis used a
    scan window, the dataset returned is that window of the file (lazy), so a click on a map pixel shows the
    pattern the map was computed from.
    """
    from napari_4dstem.io import load
    from napari_4dstem.results import source_provenance

    src = r.provenance.get("path") or r.provenance.get("source_path")
    if not src:
        show_warning("these results were made from data in memory (no file): maps only, clicking shows no patterns")
        return None
    if not os.path.exists(src):
        show_warning(f"source data {src} not found: maps only, clicking shows no patterns")
        return None
    saved = r.provenance.get("header_sha256")
    if saved:
        now = source_provenance(src, data_file=r.provenance.get("data_file")).get("header_sha256")
        if now and now != saved:
            show_warning(f"{src} is not the file these results were made from (its contents differ): maps only, "
                         "not reattached")
            return None
    try:
        ds = load(src, **(r.provenance.get("options") or {}))
    except FourDSTEMError as e:
        show_warning(f"could not reattach the source: {e}")
        return None
    if r.calibration:
        # the calibration the results were made (and saved) with, typed in the GUI or not: maps and
        # patterns keep the scale the maps were saved with, so clicks land on the right pixel
        ds.calibration = Calibration.from_dict(r.calibration)
    if tuple(ds.shape) != tuple(r.shape):
        show_warning(f"{src} now has shape {ds.shape}, the results were made from {tuple(r.shape)}: not reattached")
        return None
    full = ds
    win = scan_window(r)
    if win is not None:
        y0, y1, x0, x1 = win
        if not (0 <= y0 < y1 <= ds.scan_shape[0] and 0 <= x0 < x1 <= ds.scan_shape[1]):
            show_warning(f"scan window {list(win)} of the results lies outside {src}: not reattached")
            return None
        ds = ds.with_data(ds.to_dask()[y0:y1, x0:x1], note=f"scan window {[y0, y1, x0, x1]}")
        _SOURCES[id(ds)] = full
    return ds


def results_layers(path) -> list:
    """Layer data for a results file: the saved maps as linked scan-space layers (dataset reattached if found)."""
    r = load_results(path)
    ds = _reattach(r)
    source = _SOURCES.pop(id(ds), None) if ds is not None else None
    win = scan_window(r)
    scan_shape = (win[1] - win[0], win[3] - win[2]) if win else (tuple(r.shape[:2]) if len(r.shape) >= 2 else None)
    common = scan_layer_kwargs(Calibration.from_dict(r.calibration))
    maps = [m for k, a in r.maps.items() for m in _scan_maps(k, a, scan_shape)]
    maps.sort(key=lambda m: m[0] != "navigator")  # navigator first: the session adopts the dataset from it
    state = _state_from_results(r)
    out = []
    for name, a, cmap in maps:
        role = "navigator" if name == "navigator" and ds is not None else "map"
        meta = {META_KEY: {"role": role, "dataset": ds, "results": state,
                           "scan_offset": (win[0], win[2]) if win else (0, 0), "source_dataset": source}}
        kw = dict(common, name=name, colormap=cmap, metadata=meta)
        if cmap == "twilight":
            kw["contrast_limits"] = (-np.pi, np.pi)
        out.append((a, kw, "image"))
    return out or [(None,)]


def _state_from_results(r: Results) -> dict:
    """What the session restores from a results file (COM vectors and rrVAE maps for the Inspector)."""
    com = r.group("com")
    rr = r.group("rrvae")
    state: dict = {"results": r, "detectors": dict((r.parameters.get("virtual_detectors") or {}))}
    if "x" in com and "y" in com:
        state["com"] = SimpleNamespace(units=r.units.get("com/x", "px"), **com)
    if {"angle", "latents", "latent_sd"} <= set(rr):
        lat, sd = np.asarray(rr["latents"]), np.asarray(rr["latent_sd"])
        if lat.ndim == 3 and tuple(lat.shape[:2]) == tuple(np.shape(rr["angle"])):
            lat, sd = np.moveaxis(lat, -1, 0), np.moveaxis(sd, -1, 0)
        state["encoded"] = SimpleNamespace(angle=rr["angle"], latents=lat, latent_sd=sd, parameters={})
    return state
