"""Results files in napari: save the session (button or writer contribution) and reopen one as linked layers."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
from napari.utils.notifications import show_error, show_warning

from napari_4dstem.errors import FourDSTEMError
from napari_4dstem.results import Results, load_results, save_results

from ._session import META_KEY, SCAN_LABELS, get_session, napari_units

# results key -> (layer name, colormap)
_NAMES = {"navigator": ("navigator", "gray"), "rrvae/angle": ("rrVAE angle", "twilight")}
_COM_CMAPS = {"angle": "twilight", "x": "PiYG", "y": "PiYG", "divergence": "PiYG", "curl": "PiYG"}


def session_results(session) -> Results:
    """Everything the session computed, as a :class:`~napari_4dstem.results.Results`."""
    ds = session.dataset
    if ds is None:
        raise FourDSTEMError("nothing to save: no dataset is open", hint="open a file or the sample first")
    nav = session.maps.get("navigator")
    if nav is None:
        from ._reader import cached_navigator

        nav = cached_navigator(ds)
    virtual = {k.split(" ", 1)[1]: v for k, v in session.maps.items() if k.startswith("virtual ")}
    com = session.com if hasattr(session.com, "curl_curves") else None
    maps = session.encoded if hasattr(session.encoded, "angle_unwrapped") else None
    r = Results.from_analysis(ds, com=com, navigator=nav, virtual=virtual, rrvae_model=session.model, maps=maps,
                              preprocessing=session.preprocessing)
    if maps is None and session.encoded is not None:  # reopened results: keep their rrVAE maps
        r.maps.update({f"rrvae/{k}": np.asarray(getattr(session.encoded, k))
                       for k in ("angle", "latents", "latent_sd")})
    return r


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
    try:
        return [str(save_session(get_session(viewer), path, overwrite=True))]
    except FourDSTEMError as e:
        show_error(str(e))
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


def _reattach(r: Results):
    """The source dataset when its file is still there and matches; else None (with a warning)."""
    from napari_4dstem.io import load

    src = r.provenance.get("path") or r.provenance.get("source_path")
    if not src or not os.path.exists(src):
        show_warning(f"source data {src!r} not found: maps only, clicking shows no patterns")
        return None
    try:
        ds = load(src, **(r.provenance.get("options") or {}))
    except FourDSTEMError as e:
        show_warning(f"could not reattach the source: {e}")
        return None
    if tuple(ds.shape) != tuple(r.shape):
        show_warning(f"{src} now has shape {ds.shape}, the results were made from {tuple(r.shape)}: not reattached")
        return None
    return ds


def results_layers(path) -> list:
    """Layer data for a results file: the saved maps as linked scan-space layers (dataset reattached if found)."""
    r = load_results(path)
    ds = _reattach(r)
    scan_shape = tuple(r.shape[:2]) if len(r.shape) >= 2 else None
    common = {"scale": r.scan_scale, "axis_labels": SCAN_LABELS}
    units = napari_units(r.calibration.get("scan_unit")) if r.scan_unit != "px" else None
    if units:
        common["units"] = (units, units)
    maps = [m for k, a in r.maps.items() for m in _scan_maps(k, a, scan_shape)]
    maps.sort(key=lambda m: m[0] != "navigator")  # navigator first: the session adopts the dataset from it
    state = _state_from_results(r)
    out = []
    for name, a, cmap in maps:
        role = "navigator" if name == "navigator" and ds is not None else "map"
        meta = {META_KEY: {"role": role, "dataset": ds, "results": state}}
        kw = dict(common, name=name, colormap=cmap, metadata=meta)
        if cmap == "twilight":
            kw["contrast_limits"] = (-np.pi, np.pi)
        out.append((a, kw, "image"))
    if ds is not None:
        from ._reader import PATTERN_NAME, pattern_placement

        iy, ix = ds.scan_shape[0] // 2, ds.scan_shape[1] // 2
        out.append((ds.frame(iy, ix), dict(common, name=PATTERN_NAME, colormap="magma", gamma=0.5,
                                           metadata={META_KEY: {"role": "pattern", "dataset": ds}},
                                           **pattern_placement(ds)), "image"))
    return out or [(None,)]


def _state_from_results(r: Results) -> dict:
    """What the session restores from a results file (COM vectors and rrVAE maps for the Inspector)."""
    com = r.group("com")
    rr = r.group("rrvae")
    state: dict = {"results": r}
    if "x" in com and "y" in com:
        state["com"] = SimpleNamespace(units=r.units.get("com/x", "px"), **com)
    if {"angle", "latents", "latent_sd"} <= set(rr):
        lat, sd = np.asarray(rr["latents"]), np.asarray(rr["latent_sd"])
        if lat.ndim == 3 and tuple(lat.shape[:2]) == tuple(r.shape[:2]):
            lat, sd = np.moveaxis(lat, -1, 0), np.moveaxis(sd, -1, 0)
        state["encoded"] = SimpleNamespace(angle=rr["angle"], latents=lat, latent_sd=sd)
    return state
