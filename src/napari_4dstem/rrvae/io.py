"""One-file model storage: config, weights, checkpoints, history, preprocessing params, format version."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelError

FORMAT = "napari-4dstem-rrvae"
VERSION = 1


def save(model, path, preprocessing=None) -> None:
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(model.config.to_dict()),
        "history": json.dumps(model.history, default=float),
        "preprocessing": json.dumps(preprocessing, default=str),
        "best_epoch": -1 if model.best_epoch is None else int(model.best_epoch),
        "epoch": -1 if model.epoch is None else int(model.epoch),
        "weights": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "checkpoints": {int(e): s for e, s in model.checkpoints.items()},
        "view": _view_state(model.view),
    }
    ts = getattr(model, "_train_state", None)
    if ts is not None and ts.get("rng") is not None:  # Adam + RNG state after the last epoch (for resume)
        payload["train_state"] = {"epoch": int(ts["epoch"]), "optimizer": ts["optimizer"], "rng": ts["rng"]}
    tmp = path.with_name(path.name + ".part")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"could not write the model file ({e})", path=path,
                         hint="choose a writable folder with free space") from e


def load(cls, path):
    from .config import RRVAEConfig
    from .data import View

    path = Path(path)
    if not path.is_file():
        raise ModelError("model file not found", path=path)
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise ModelError(f"not a readable rrVAE model file ({type(e).__name__})", path=path,
                         hint="the file is corrupt or not written by RRVAE.save") from e
    if not isinstance(p, dict) or p.get("format") != FORMAT:
        raise ModelError("not an rrVAE model file", path=path, hint="load a file written by RRVAE.save")
    if p.get("version") != VERSION:
        raise ModelError(f"model file format version {p.get('version')} is not supported (this version reads "
                         f"{VERSION})", path=path, hint="retrain, or use the napari-4dstem version that wrote it")
    try:
        model = cls(RRVAEConfig.from_dict(json.loads(p["config"])))
        model.history = json.loads(p["history"])
        model.preprocessing = json.loads(p["preprocessing"])
        model.best_epoch = None if p["best_epoch"] < 0 else int(p["best_epoch"])
        model.epoch = None if p["epoch"] < 0 else int(p["epoch"])
        v = p["view"]
        model.view = View.from_state({
            "det_shape": v["det_shape"].tolist(), "size": int(v["size"]),
            "scaling": ("none", "std", "signal")[int(v["scaling"])], "std": float(v["std"]),
            "mean": v.get("mean"), "mean_full": v.get("mean_full"),
            "components": int(v["components"]) if "components" in v else None,
            "pca_mean": v.get("pca_mean"), "basis": v.get("basis"),
            "transform": getattr(model.config, "transform", "none")})
        model.net = model._new_net(model.view.n_pixels)
        model.net.load_state_dict(p["weights"])
        model.net.eval()
        model.checkpoints = {int(e): s for e, s in p["checkpoints"].items()}
        ts = p.get("train_state")  # absent in files written before resume existed: resume then starts Adam afresh
        model._train_state = None if ts is None else {"epoch": int(ts["epoch"]), "optimizer": ts["optimizer"],
                                                        "rng": ts["rng"]}
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"the model file is incomplete or inconsistent ({type(e).__name__}: {e})", path=path,
                         hint="the file is corrupt; retrain and save again") from e
    return model


def _view_state(view) -> dict:
    s = {"det_shape": torch.tensor(view.det_shape), "size": view.size,
         "scaling": ("none", "std", "signal").index(view.scaling), "std": float(view.std)}
    if view.mean is not None:
        s["mean"] = view.mean.detach().cpu()
        s["mean_full"] = view.mean_full.detach().cpu()
    if view.basis is not None:
        s["components"] = int(view.components)
        s["pca_mean"] = view.pca_mean.detach().cpu()
        s["basis"] = view.basis.detach().cpu()
    return s
