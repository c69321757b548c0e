"""The rrVAE estimator: training with progress/cancel, the paper's stopping rule, maps, reconstructions."""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ..errors import DataError, ModelError
from ..params import check_arguments
from ..progress import Progress, run_steps, watch_steps
from . import io as _io
from .config import RRVAEConfig
from .data import View, as_patterns
from .maps import LatentMaps, circular_r, defect_map, pearson_r, wrap_angle
from .model import RVAENet, coord_grid, kl_terms, recon_term

#: Keep every epoch's weights while they take less than this; beyond, keep the best and the last.
CHECKPOINT_BYTES = 256 * 2**20
_ENCODE_BATCH = 1024
_DECODE_BATCH = 16
#: Seconds between progress reports inside an epoch (each report is a point where a GUI can cancel).
PROGRESS_SECONDS = 0.2


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def physical_cores() -> int:
    """Physical CPU cores usable by this process (SMT siblings counted once)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


class RRVAE:
    """Rotationally invariant VAE (Oxley, Ziatdinov et al. 2021; atomai ``rVAE``) for 4D-STEM patterns.

    Parameters
    ----------
    config
        :class:`RRVAEConfig` (keywords are accepted instead: ``RRVAE(mode="fast")``).

    Attributes
    ----------
    history : list of dict
        One report per epoch: loss terms, validation loss, time, correlations with the COM maps.
    best_epoch : int or None
        The recorded epoch with the highest :func:`stop_score` under ``config.stop_rule``: ``"latent"``, the
        highest |Pearson r| between a latent map and |COM| (the paper's stopping rule); ``"latent+rotation"``,
        the highest ``min(|r|, |circular r|)`` of the latents and the rotation map. Without COM maps, the
        epoch with the lowest (validation) loss.
    """

    def __init__(self, config: RRVAEConfig | None = None, **kwargs):
        check_arguments("RRVAE", {"config": config})  # an RRVAEConfig (keywords are checked by RRVAEConfig)
        self.config = config if config is not None else RRVAEConfig(**kwargs)
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.checkpoints: dict[int, dict] = {}
        self.net: RVAENet | None = None
        self.view: View | None = None
        self.preprocessing: dict | None = None
        self.epoch: int | None = None  # epoch whose weights are loaded
        self._train_state: dict | None = None  # Adam and RNG state after the last completed epoch (resume)

    # -- set-up --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        d = self.config.device
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(d)

    @property
    def trained(self) -> bool:
        return self.net is not None and bool(self.history)

    def _new_net(self, n_pixels: int) -> RVAENet:
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            net = RVAENet(n_pixels, c.latent_dim, c.hidden, c.layers, c.activation, c.translation, c.angle)
        return net.to(self.device)

    # -- training ------------------------------------------------------------------------------
    def fit(self, patterns, com_magnitude=None, com_angle=None, callback: Callable | None = None,
            cancel: threading.Event | None = None, resume: bool = False) -> list[dict]:
        """Train; returns :attr:`history`. With ``cancel`` set, raises Cancelled and keeps the last epoch.

        ``resume=True`` continues a trained (or loaded) model up to ``config.epochs`` epochs in all
        (see :meth:`iter_fit`).
        """
        return run_steps(self.iter_fit(patterns, com_magnitude, com_angle, resume=resume), callback, cancel,
                         "rrVAE training")

    def iter_fit(self, patterns, com_magnitude=None, com_angle=None, callback=None, cancel=None,
                 resume: bool = False):
        """Generator form of :meth:`fit`: yields :class:`Progress` every few batches and after each epoch.

        The epoch report is ``Progress.info`` at the end of each epoch (``info["epoch_done"]`` is True).
        Closing the generator (napari ``worker.quit()``) keeps the model of the last completed epoch.
        ``callback``/``cancel`` are accepted for symmetry with :meth:`fit` and used the same way.

        ``resume=True`` continues after the last completed epoch instead of starting afresh: its weights,
        Adam state, random-number state, history, checkpoints and best epoch, and the binning/scaling learnt
        at the start, are kept (they are also stored by :meth:`save`, so ``RRVAE.load(path).fit(x,
        resume=True)`` continues). ``config.epochs`` counts all epochs (2 done and ``epochs=4``: 2 more); a
        model already at ``config.epochs`` returns at once. With the same data, seed and thread count, 2 + 2
        resumed epochs give the weights of 4 straight ones. An untrained model trains from scratch.
        """
        if callback is not None or cancel is not None:
            return (yield from watch_steps(self.iter_fit(patterns, com_magnitude, com_angle, resume=resume),
                                           callback, cancel, "rrVAE training"))
        cfg = self.config
        arr = as_patterns(patterns)
        sy, sx, h, w = arr.shape
        com_magnitude = _check_map(com_magnitude, (sy, sx), "com_magnitude")
        com_angle = _check_map(com_angle, (sy, sx), "com_angle")
        resume = bool(resume) and self.trained
        if resume and tuple(self.view.det_shape) != (h, w):
            raise DataError(f"cannot resume: the model was trained on {self.view.det_shape[0]} x "
                            f"{self.view.det_shape[1]} patterns, these are {h} x {w}",
                            hint="preprocess the data exactly as for the first training")
        torch.set_num_threads(int(cfg.threads or physical_cores()))
        dev = self.device
        flat = arr.reshape(-1, h, w)
        n = flat.shape[0]
        if resume:
            view = self.view
        else:
            view = View((h, w), cfg.detector_size, cfg.scaling, cfg.pca_components, cfg.transform)
            view.fit(flat, (sy, sx))
        x = view.forward(torch.from_numpy(flat)).to(dev).contiguous()
        del flat
        grid = coord_grid(h, w, view.size, view.size).to(dev)
        net = self._new_net(view.n_pixels)
        gen = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(n, generator=gen)
        n_val = int(round(cfg.val_fraction * n))
        if n - n_val < 1:
            raise DataError(f"val_fraction={cfg.val_fraction} leaves no pattern to train on")
        val_idx, train_idx = order[:n_val], order[n_val:]
        try:  # one fused kernel for all parameters (same maths as the default Adam)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        start = 0
        if resume:
            start = self._resume_state(net, opt, gen)
            if start >= cfg.epochs:
                return self.history
        bs = min(cfg.batch_size, len(train_idx))
        n_batches = math.ceil(len(train_idx) / bs)
        total = cfg.epochs * n_batches
        self._amp = cfg.precision == "bfloat16" or (cfg.precision == "auto" and native_bf16(dev))
        step = torch.compile(self._step) if cfg.compile else self._step

        if not resume:  # fresh state: the model counts as trained once its first epoch completes
            self.net, self.view, self.history, self.checkpoints, self.best_epoch = None, None, [], {}, None
            self._train_state = None
        self._scan_shape = (sy, sx)
        t0 = time.perf_counter()
        elapsed0 = float(self.history[-1].get("elapsed") or 0.0) if resume else 0.0
        last_yield = t0
        epoch = start
        try:
            for epoch in range(start + 1, cfg.epochs + 1):
                net.train()
                te = time.perf_counter()
                perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
                parts = []  # loss terms stay on the device: no host sync per step (GPU)
                for b in range(n_batches):
                    idx = perm[b * bs:(b + 1) * bs].to(dev, non_blocking=True)
                    loss, terms = self._loss(net, grid, x[idx], gen, cfg.pixel_fraction, step)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    parts.append(terms.detach() * len(idx))
                    now = time.perf_counter()
                    if now - last_yield >= PROGRESS_SECONDS and b + 1 < n_batches:
                        last_yield = now
                        yield Progress((epoch - 1) * n_batches + b + 1, total,
                                       f"epoch {epoch}/{cfg.epochs}, batch {b + 1}/{n_batches}",
                                       {"epoch": epoch, "batch": b + 1, "epoch_done": False})
                rec, klr, klz = torch.stack(parts).cpu().double().sum(0).numpy() / len(train_idx)
                report = {"precision": "bfloat16" if self._amp else "float32", "epoch": epoch,
                          "loss": float(rec + klr + klz), "recon": float(rec), "kl_rot": float(klr),
                          "kl_content": float(klz),
                          "val_loss": None, "seconds": time.perf_counter() - te}
                net.eval()
                if n_val:
                    report["val_loss"] = self._eval_loss(net, grid, x[val_idx.to(dev)])
                # publish this epoch's model (the stopping rule and the maps use it)
                self.net, self.view = net, view
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    report.update(self._stopping_stats(x, (sy, sx), com_magnitude, com_angle))
                run = time.perf_counter() - t0  # this call's time (time_limit counts per call)
                report["elapsed"] = elapsed0 + run
                report["eta"] = run / (epoch - start) * (cfg.epochs - epoch)
                self.history.append(report)
                self._checkpoint(epoch, net, opt, gen)
                last_yield = time.perf_counter()
                stop = cfg.time_limit is not None and run >= cfg.time_limit
                yield Progress(epoch * n_batches, total, _describe(report), {**report, "epoch_done": True})
                if stop:
                    break
        except GeneratorExit:
            self._rollback(net)
            raise
        self._rollback(net)  # weights of the last completed epoch (no-op here) and a consistent state
        return self.history

    def _loss(self, net, grid, xb, gen, pixel_fraction, step=None):
        """Loss of one batch and its terms (recon, kl_rot, kl_content) as a tensor on the device."""
        eps_shape = (xb.shape[0], net.n_pose + net.latent_dim)
        eps = torch.randn(eps_shape, generator=gen).to(xb.device)
        p = grid.shape[0]
        scale, target = 1.0, xb
        if pixel_fraction < 1.0:  # the encoder sees the whole pattern, the decoder a random subset
            k = max(1, int(round(pixel_fraction * p)))
            pix = torch.randperm(p, generator=gen)[:k].to(xb.device)
            grid, target, scale = grid[pix], xb[:, pix], p / k
        return (step or self._step)(net, grid, xb, target, eps, scale)

    def _step(self, net, grid, xb, target, eps, scale: float):
        """The differentiable part (no Python-side randomness, so torch.compile sees one graph)."""
        cfg = self.config
        mean, logsd = net.encoder(xb)
        z = mean + torch.exp(logsd) * eps
        angle, shift, content = net.split(z)
        if shift is not None:
            shift = shift * cfg.translation_prior
        if getattr(self, "_amp", False):
            # bf16 decoder matmuls (fp32 accumulation); the loss and the encoder stay in fp32
            with torch.autocast(xb.device.type, dtype=torch.bfloat16):
                out = net.decoder(grid, content, angle, shift)
            out = out.float()
        else:
            out = net.decoder(grid, content, angle, shift)
        rec = recon_term(out, target, scale)
        kr, kz = kl_terms(mean, logsd, net.n_pose, cfg.rotation_prior)
        loss = (rec + kr + kz).mean()
        return loss, torch.stack([rec.mean(), kr.mean(), kz.mean()])

    @torch.no_grad()
    def _eval_loss(self, net, grid, xv) -> float:
        g = torch.Generator().manual_seed(12345)
        tot = 0.0
        for i in range(0, xv.shape[0], _DECODE_BATCH * 8):
            loss, _ = self._loss(net, grid, xv[i:i + _DECODE_BATCH * 8], g, 1.0)
            tot += loss.item() * min(_DECODE_BATCH * 8, xv.shape[0] - i)
        return tot / xv.shape[0]

    @torch.no_grad()
    def _encode_x(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        ms, ls = [], []
        for i in range(0, x.shape[0], _ENCODE_BATCH):
            m, s = self.net.encoder(x[i:i + _ENCODE_BATCH])
            ms.append(m.cpu())
            ls.append(s.cpu())
        return torch.cat(ms).double().numpy(), torch.cat(ls).double().numpy()

    def _stopping_stats(self, x, scan_shape, com_magnitude, com_angle) -> dict:
        mean, _ = self._encode_x(x)
        out = {"r": None, "r_best": None, "circ_r": None}
        k0 = self.net.n_pose
        if com_magnitude is not None:
            rs = [pearson_r(mean[:, k0 + k], com_magnitude) for k in range(self.config.latent_dim)]
            out["r"] = rs
            finite = [r for r in rs if np.isfinite(r)]
            out["r_best"] = max(finite, key=abs) if finite else float("nan")
        if com_angle is not None:
            out["circ_r"] = circular_r(mean[:, 0], com_angle)  # Fisher-Lee (see circular_r)
        return out

    def _resume_state(self, net, opt, gen) -> int:
        """Load the last completed epoch's weights, Adam and RNG state into ``net``, ``opt``, ``gen``."""
        last = max(self.checkpoints)
        net.load_state_dict(self.checkpoints[last])
        st = getattr(self, "_train_state", None)
        if st is not None and st.get("epoch") == last:
            opt.load_state_dict(st["optimizer"])
            gen.set_state(st["rng"])
        else:  # a model file without training state: fresh Adam moments, RNG stream derived from the epoch
            gen.manual_seed(self.config.seed + 7919 * last)
        for g in opt.param_groups:  # a changed config.lr applies from here on
            g["lr"] = self.config.lr
        return last

    def _checkpoint(self, epoch: int, net, opt, gen=None) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        self.checkpoints[epoch] = state
        # what resume needs to continue exactly after this epoch (also written by save())
        self._train_state = {"epoch": epoch, "optimizer": _cpu_copy(opt.state_dict()),
                             "rng": gen.get_state() if gen is not None else None}
        scored = [r for r in self.history if "r" in r or r["epoch"] == epoch]
        self.best_epoch = choose_epoch(scored, self.config.stop_rule)
        size = sum(v.numel() * v.element_size() for v in state.values())
        while len(self.checkpoints) > 2 and size * len(self.checkpoints) > CHECKPOINT_BYTES:
            drop = next(e for e in sorted(self.checkpoints) if e not in (self.best_epoch, epoch))
            del self.checkpoints[drop]

    def _rollback(self, net) -> None:
        if not self.checkpoints:
            self.net, self.view = None, None
            return
        last = max(self.checkpoints)
        net.load_state_dict(self.checkpoints[last])
        net.eval()
        self.net, self.epoch = net, last

    def restore(self, epoch: int) -> None:
        """Load the weights recorded at ``epoch`` (see :attr:`checkpoints`; the best and last are always kept)."""
        self._require_trained()
        if epoch not in self.checkpoints:
            raise ModelError(f"no checkpoint for epoch {epoch}",
                             hint=f"recorded epochs: {sorted(self.checkpoints)}")
        self.net.load_state_dict(self.checkpoints[epoch])
        self.net.eval()
        self.epoch = epoch

    # -- outputs -------------------------------------------------------------------------------
    def _require_trained(self) -> None:
        if self.net is None or self.view is None:
            raise ModelError("the rrVAE model is not trained", hint="call fit() first or load a saved model")

    def _prepare(self, patterns, min_patterns: int = 1) -> tuple[np.ndarray, torch.Tensor]:
        self._require_trained()
        arr = np.asarray(patterns, np.float32) if not hasattr(patterns, "provenance") else as_patterns(patterns)
        if arr.ndim == 2:
            arr = arr[None, None]
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[2:]) != self.view.det_shape:
            raise DataError(f"patterns shaped {arr.shape} do not match the model's detector {self.view.det_shape}",
                            hint="preprocess them exactly as the training data")
        if not np.isfinite(arr).all():
            raise DataError("the patterns contain NaN or infinite values", hint="mask or fix those pixels first")
        flat = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1, *self.view.det_shape)))
        x = self.view.forward(flat).to(self.device)
        return arr, x

    def encode(self, patterns) -> LatentMaps:
        """Encoder means and sds as scan maps (the rotation map, content latents, translations)."""
        arr, x = self._prepare(patterns)
        sy, sx = arr.shape[:2]
        mean, logsd = self._encode_x(x)
        sd = np.exp(logsd)
        k0 = self.net.n_pose

        def m(a):
            return a.T.reshape(-1, sy, sx).astype(np.float32)

        angle = mean[:, 0].reshape(sy, sx)
        return LatentMaps(
            angle=wrap_angle(angle).astype(np.float32), angle_unwrapped=angle.astype(np.float32),
            angle_sd=sd[:, 0].reshape(sy, sx).astype(np.float32),
            latents=m(mean[:, k0:]), latent_sd=m(sd[:, k0:]),
            translations=m(mean[:, 1:3] * self.config.translation_prior) if k0 == 3 else None,
            translation_sd=m(sd[:, 1:3] * self.config.translation_prior) if k0 == 3 else None,
            parameters={"config": self.config.to_dict(), "epoch": getattr(self, "epoch", None)},
        )

    @torch.no_grad()
    def _decode(self, content: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor | None) -> np.ndarray:
        h, w = self.view.det_shape
        grid = coord_grid(h, w).to(self.device)
        outs = []
        for i in range(0, content.shape[0], _DECODE_BATCH):
            sl = slice(i, i + _DECODE_BATCH)
            y = self.net.decoder(grid, content[sl], angle[sl], None if shift is None else shift[sl])
            outs.append(self.view.inverse_full(y.cpu()))  # the view's mean pattern lives on the CPU
        return torch.cat(outs).reshape(-1, h, w).numpy()

    @torch.no_grad()
    def reconstruct(self, patterns, indices=None, as_measured: bool = True) -> np.ndarray:
        """Decoder output for patterns, in the units of the input.

        ``as_measured=True``: on the grid rotated (and shifted) by each pattern's own encoded pose;
        ``False``: in the canonical orientation (angle 0, no shift). ``indices``: flat scan indices or an
        ``(n, 2)`` array of ``(iy, ix)``; None = all (returns ``(scan_y, scan_x, h, w)``), else ``(n, h, w)``.
        """
        arr, x = self._prepare(patterns)
        sy, sx = arr.shape[:2]
        if indices is not None:
            ind = np.asarray(indices, dtype=np.int64)
            if ind.ndim == 2 and ind.shape[1] == 2:
                ind = np.ravel_multi_index((ind[:, 0], ind[:, 1]), (sy, sx))
            ind = np.atleast_1d(ind)
            if ind.size and (ind.min() < 0 or ind.max() >= sy * sx):
                raise DataError(f"indices outside the scan of {sy * sx} patterns")
            x = x[torch.from_numpy(ind).to(x.device)]
        self.net.eval()
        mean, _ = self.net.encoder(x)
        angle, shift, content = self.net.split(mean)
        if as_measured:
            shift = None if shift is None else shift * self.config.translation_prior
        else:
            angle, shift = torch.zeros_like(angle), None
        out = self._decode(content, angle, shift)
        return out.reshape(sy, sx, *out.shape[1:]) if indices is None else out

    @torch.no_grad()
    def reconstruction_error(self, patterns) -> np.ndarray:
        """Mean squared error of each pattern's as-measured reconstruction, as a scan map.

        Computed where the model was trained (binned, scaled); atypical patterns (defects) stand out.
        """
        arr, x = self._prepare(patterns)
        sy, sx = arr.shape[:2]
        grid = coord_grid(*self.view.det_shape, self.view.size, self.view.size).to(self.device)
        self.net.eval()
        err = []
        for i in range(0, x.shape[0], _DECODE_BATCH * 4):
            xb = x[i:i + _DECODE_BATCH * 4]
            mean, _ = self.net.encoder(xb)
            angle, shift, content = self.net.split(mean)
            shift = None if shift is None else shift * self.config.translation_prior
            err.append(((self.net.decoder(grid, content, angle, shift) - xb) ** 2).mean(1).cpu())
        return torch.cat(err).reshape(sy, sx).numpy()

    def outlier_map(self, patterns=None, maps: LatentMaps | None = None, radius: int = 3, step: int = 1,
                    smooth: float = 1.0, spread: float = 3.0, channels: str = "all") -> np.ndarray:
        """A map in which defects stand out: how unlike the rest of the scan each neighbourhood of the maps is.

        The encoded maps (content latents and their log posterior sds, the rotation as cos and sin, and its
        log sd; from ``maps``, or ``encode(patterns)``) are compared window by window (``(2 radius + 1)^2``
        scan pixels, every ``step``-th, after a Gaussian smoothing of ``smooth`` pixels) with every
        non-overlapping window of the scan (:func:`~napari_4dstem.rrvae.maps.neighbourhood_outlier`). A
        lattice repeats its neighbourhoods, a vacancy or dopant has no match elsewhere. The squared distance
        to the best match is spread by a Gaussian of ``spread`` pixels, so that the ring of mismatched
        windows around a defect adds up at its centre. Returns a ``(scan_y, scan_x)`` float32 map in units of
        the median (1 = as unusual as a typical position). ``channels="rotation"``: the rotation map alone
        (cos and sin; the ``rotation_outlier`` map), which singles out a rotated bond that the content
        latents, rotation-invariant by design, do not see. See docs/rrvae.md ("Defect maps").
        """
        if maps is None:
            if patterns is None:
                raise DataError("outlier_map needs the patterns or their encoded maps")
            maps = self.encode(patterns)
        return defect_map(maps, radius=radius, step=step, smooth=smooth, spread=spread, seed=self.config.seed,
                          channels=channels)

    @torch.no_grad()
    def decode(self, latents, angle=0.0) -> np.ndarray:
        """Decode content latent values (latent traversal): ``(K,)`` -> ``(h, w)``, ``(n, K)`` -> ``(n, h, w)``."""
        self._require_trained()
        z = np.asarray(latents, np.float32)
        single = z.ndim == 1
        z = np.atleast_2d(z)
        if z.shape[1] != self.config.latent_dim:
            raise DataError(f"decode needs {self.config.latent_dim} latent values per pattern, got {z.shape[1]}")
        a = np.broadcast_to(np.asarray(angle, np.float32), (z.shape[0],)).copy()
        out = self._decode(torch.from_numpy(z).to(self.device), torch.from_numpy(a).to(self.device), None)
        return out[0] if single else out

    # -- files ---------------------------------------------------------------------------------
    def save(self, path, preprocessing=None) -> None:
        """Write config, weights, checkpoints, history and ``preprocessing`` params to one file."""
        self._require_trained()
        if preprocessing is not None and hasattr(preprocessing, "get_params"):
            preprocessing = preprocessing.get_params()
        _io.save(self, path, preprocessing if preprocessing is not None else self.preprocessing)

    @classmethod
    def load(cls, path) -> RRVAE:
        """Read a model written by :meth:`save` (ModelError if corrupt or from another format version)."""
        return _io.load(cls, path)


def stop_score(report: dict, rule: str = "latent") -> float:
    """The number the stopping rule maximises over the epochs of :attr:`RRVAE.history`.

    ``"latent"`` (the paper): ``|r_best|``, the largest |Pearson r| of a content latent map with |COM|.
    ``"latent+rotation"``: ``min(|r_best|, |circ_r|)``, so that the chosen epoch has both latents that follow
    |COM| and a rotation map that follows the COM angle (circular r's sign only says which way the angle
    turns, see docs/rrvae.md); ``|r_best|`` where no COM angle was given. Without COM maps: minus the
    (validation) loss.
    """
    r, c = report.get("r_best"), report.get("circ_r")
    if r is not None and np.isfinite(r):
        if rule == "latent+rotation" and c is not None and np.isfinite(c):
            return min(abs(r), abs(c))
        return abs(r)
    loss = report["val_loss"] if report.get("val_loss") is not None else report["loss"]
    return -loss


def choose_epoch(history: list[dict], rule: str = "latent") -> int | None:
    """The epoch of ``history`` with the highest :func:`stop_score` (the first of equals); None if empty."""
    if not history:
        return None
    return max(history, key=lambda r: stop_score(r, rule))["epoch"]


def _cpu_copy(obj):
    """Deep copy of a (nested) state dict with tensors cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _check_map(m, shape, name):
    if m is None:
        return None
    a = np.asarray(m, np.float64)
    if a.shape != tuple(shape):
        raise DataError(f"{name} has shape {a.shape}, the scan is {tuple(shape)}",
                        hint="compute it on the same (cropped) scan as the patterns")
    return a


def _describe(r: dict) -> str:
    s = f"epoch {r['epoch']}: loss {r['loss']:.4g} (recon {r['recon']:.4g}, KL {r['kl_content']:.3g}+{r['kl_rot']:.3g})"
    if r.get("r_best") is not None:
        s += f", r(|COM|) {r['r_best']:+.3f}"
    if r.get("circ_r") is not None:
        s += f", circ r {r['circ_r']:+.3f}"
    return s
