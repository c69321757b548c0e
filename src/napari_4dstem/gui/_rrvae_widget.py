"""rrVAE dock: every RRVAEConfig field (paper defaults, fast mode), Train/Stop, progress with ETA,
live loss and Pearson-r plots, and an epoch picker over the stored checkpoints."""
from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSpinBox, QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_4dstem.errors import FourDSTEMError
from napari_4dstem.params import TABLE
from napari_4dstem.progress import Progress
from napari_4dstem.rrvae import RRVAE, RRVAEConfig
from napari_4dstem.rrvae.config import MODE_DEFAULTS
from napari_4dstem.rrvae.train import physical_cores

from ._common import notify_error, progress_bar, set_progress
from ._dock import DockBase

# the choice lists of the parameter table (params.py), so the form offers exactly what the config accepts
CHOICES = {name: tuple(v for v in p.values if v is not None)
           for name, p in TABLE["rrvae"].items() if p.values and name != "scaling"}
CHOICES["scaling"] = ("none", "std")   # "signal" stays reachable from Python and params.toml only
CHOICES["device"] = ("auto", "cpu", "cuda")  # any torch device string is accepted; these are the usual ones
MODE_FIELDS = set(MODE_DEFAULTS["faithful"])
#: Scan map of each pattern's reconstruction error (``RRVAE.reconstruction_error``); saved as ``rrvae/reconstruction_error``.
RESIDUAL_NAME = "rrVAE reconstruction error"
#: Scan map of how unlike the rest of the scan each neighbourhood of latents is (``RRVAE.outlier_map``).
OUTLIER_NAME = "rrVAE outlier"
#: The same from the rotation map alone (``outlier_map(channels="rotation")``): rotated bonds, broken symmetry.
ROTATION_OUTLIER_NAME = "rrVAE rotation outlier"
#: Fields shown first; every other RRVAEConfig field sits under "Advanced".
MAIN_FIELDS = ("mode", "epochs", "latent_dim", "seed")
_LABELS = {"latent_dim": "latents", "epochs": "epochs (blank: mode default)"}


def gui_default_mode() -> str:
    """fast on a CPU (the faithful mode trains 100 epochs on the full detector: hours there), else faithful."""
    try:
        import torch

        return "faithful" if torch.cuda.is_available() else "fast"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "fast"


class ConfigForm(QWidget):
    """A form over every RRVAEConfig field; blank/"mode default" leaves the mode's value."""

    def __init__(self):
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        main = QFormLayout()
        outer.addLayout(main)
        self.advanced = QCollapsible("Advanced")
        adv_widget = QWidget()
        adv = QFormLayout(adv_widget)
        self.advanced.addWidget(adv_widget)
        outer.addWidget(self.advanced)
        self.fields: dict = {}
        defaults = RRVAEConfig()
        for f in dataclasses.fields(RRVAEConfig):
            default = f.default if f.name not in MODE_FIELDS else None
            w = self._make(f.name, f.type, default, getattr(defaults, f.name))
            self.fields[f.name] = w
        for name in MAIN_FIELDS:
            main.addRow(_LABELS.get(name, name.replace("_", " ")), self.fields[name])
        for f in dataclasses.fields(RRVAEConfig):
            if f.name not in MAIN_FIELDS:
                adv.addRow(f.name.replace("_", " "), self.fields[f.name])
        self.fields["mode"].setCurrentText(gui_default_mode())

    def _make(self, name, typ, default, example):
        typ = str(typ)
        if name in CHOICES:
            w = QComboBox()
            if name in MODE_FIELDS:
                w.addItem("mode default")
            w.addItems(list(CHOICES[name]))
            if default is not None:
                w.setCurrentText(str(default))
            return w
        if typ.startswith("bool"):
            w = QCheckBox()
            w.setChecked(bool(default))
            return w
        w = QLineEdit("" if default is None else str(default))
        w.setPlaceholderText("mode default" if name in MODE_FIELDS else "none")
        w.setToolTip(f"example: {example}")
        return w

    def values(self) -> dict:
        out = {}
        for f in dataclasses.fields(RRVAEConfig):
            w = self.fields[f.name]
            if isinstance(w, QComboBox):
                t = w.currentText()
                out[f.name] = None if t == "mode default" else t
            elif isinstance(w, QCheckBox):
                out[f.name] = w.isChecked()
            else:
                t = w.text().strip()
                if not t or t.lower() == "none":
                    out[f.name] = None
                else:
                    typ = str(f.type)
                    try:
                        if typ.startswith("str"):
                            out[f.name] = t
                        elif typ.startswith("int"):
                            out[f.name] = int(t)
                        else:
                            out[f.name] = float(t)
                    except ValueError:
                        raise FourDSTEMError(f"rrVAE parameter {f.name}: {t!r} is not a number") from None
        return out

    def config(self, **override) -> RRVAEConfig:
        v = self.values()
        v.update(override)
        return RRVAEConfig(**v)

    def set(self, **values):
        for k, val in values.items():
            w = self.fields[k]
            if isinstance(w, QComboBox):
                w.setCurrentText(str(val))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(val))
            else:
                w.setText("" if val is None else str(val))


class RRVAEWidget(DockBase):
    """Train the rrVAE on the preprocessed patterns and show its angle, latent and sd maps."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        lay = QVBoxLayout(self)
        self.form = ConfigForm()
        mode = gui_default_mode()
        self.mode_note = QLabel(f"mode <b>{mode}</b> by default here ("
                                + ("a GPU is available" if mode == "faithful" else
                                   "CPU: 32 x 32 patterns, 30 epochs, minutes; faithful = the paper's 100 epochs "
                                   "on the full detector, hours") + ")")
        self.mode_note.setWordWrap(True)
        lay.addWidget(self.mode_note)
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(160)
        lay.addWidget(scroll, stretch=1)
        row = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        row.addWidget(self.train_btn)
        lay.addLayout(row)
        self.bar = progress_bar()
        lay.addWidget(self.bar)
        self.status = QLabel("preprocess the data, then train")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        from ._live_plot import HistoryPlot

        self.plot = HistoryPlot(height_px=180)
        lay.addWidget(self.plot)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("checkpoint"))
        self.epoch = QComboBox()
        pick.addWidget(self.epoch, stretch=1)
        self.restore_btn = QPushButton("Use")
        pick.addWidget(self.restore_btn)
        lay.addLayout(pick)
        avg = QHBoxLayout()
        self.average_btn = QPushButton("Average defect maps")
        self.average_btn.setToolTip("train more models (seeds + 1, + 2, ...) and show the mean of their outlier "
                                    "maps: chance peaks of one model fade, defects stay (noisy scans)")
        avg.addWidget(self.average_btn, stretch=1)
        avg.addWidget(QLabel("models"))
        self.n_models = QSpinBox()
        self.n_models.setRange(2, 8)
        self.n_models.setValue(3)
        avg.addWidget(self.n_models)
        lay.addLayout(avg)
        self.average_worker = None
        self.worker = None
        self._showing = None  # token of the maps being shown (show_maps, over three turns)
        self.reports: list[dict] = []
        self.train_btn.clicked.connect(self.toggle)
        self.restore_btn.clicked.connect(lambda: self.use_checkpoint())
        self.average_btn.clicked.connect(self.toggle_average)
        self.session.model_changed.connect(self._on_model_changed)
        self.session.dataset_changed.connect(lambda *_: self._on_model_changed(self.session.model))
        _warm_up()

    def _on_model_changed(self, model):
        """The session's model went (new data or patterns): say so, forget its checkpoints."""
        if model is None and self.session.model is None:
            self.epoch.clear()
            if self.worker is None:
                self.status.setText("patterns changed: the model and its maps were cleared; train again")

    # -- training --------------------------------------------------------------------------------
    def toggle(self):
        if self.worker is not None:
            self.stop()
        else:
            self.train()

    def stop(self):
        if self.worker is not None:
            self.status.setText("stopping at the next step; the last good model is kept")
            self.worker.quit()

    def train(self, **override):
        s = self.session
        patterns = s.preprocessed if s.preprocessed is not None else None
        if patterns is None:
            show_error("rrVAE: no preprocessed patterns; run Preprocess first")
            return None
        try:
            cfg = self.form.config(**override)
        except FourDSTEMError as e:
            notify_error(e)
            return None
        if cfg.threads is None:
            cfg = dataclasses.replace(cfg, threads=gui_threads())
        model = RRVAE(cfg)
        com_mag = None if s.com is None else np.asarray(s.com.magnitude)
        com_ang = None if s.com is None else np.asarray(s.com.angle)
        self.reports = []
        self.training_model = model  # the model being (or last) trained
        self.train_btn.setText("Stop")
        self.status.setText(f"training ({cfg.mode} mode, {cfg.epochs} epochs)…")
        t0 = time.perf_counter()

        def progress(p):
            info = dict(getattr(p, "info", {}) or {})
            if info.get("epoch_done"):
                self.status.setText(p.message)
                self.reports.append(info)
                self.plot_history()
            set_progress(self.bar, p.done, p.total, time.perf_counter() - t0, p.message,
                         force=bool(info.get("epoch_done")))

        def finished():
            # the session's model changes only here, in the GUI thread, once training has ended: the
            # Inspector never runs a model that a worker is still updating. A stopped run has rolled back
            # to its last completed epoch (the last good model); with none, the previous model stays.
            self.worker = None
            self.train_btn.setText("Train")
            try:
                if self.session.preprocessed is not patterns:
                    self.status.setText("the patterns changed during training: this model was dropped")
                elif model.trained:
                    self.adopt_model(model)
                else:
                    s.remove_placeholders("rrVAE")
                    self.status.setText("stopped before the first epoch finished: the previous model is kept")
            finally:
                s.training = None
                s.training_changed.emit(False)  # the Inspector's reconstructions resume

        # the maps' layers first, hidden, one per event-loop turn, while the worker waits (asleep, so that
        # the GUI thread has the interpreter to itself): their arrival after training then only fills them
        # in place. Adding a layer costs napari ~0.2 s of GUI thread under a software renderer; all 7 at
        # once froze the GUI for 1.4-1.6 s when Train was pressed, and next to the training thread (which
        # holds the GIL between torch calls) one insert took up to 0.7 s.
        ready = threading.Event()

        def steps():
            while not ready.wait(0.02):
                yield Progress(0, 1, "making the map layers…")
            return (yield from model.iter_fit(patterns, com_magnitude=com_mag, com_angle=com_ang))

        self.worker = self.start(steps, on_return=lambda _hist: None, on_progress=progress, on_finish=finished)
        s.training = model
        s.training_changed.emit(True)
        self._prepare_gradually(cfg.latent_dim, self.worker, ready)
        return self.worker

    def _prepare_gradually(self, latent_dim: int, worker, ready, gap_ms: int = 30):
        """Make the missing map layers one per event-loop turn, then set ``ready``."""
        from qtpy.QtCore import QTimer

        from ._common import alive

        s = self.session
        self._drop_extra_latents(latent_dim)
        todo = [spec for spec in map_specs(latent_dim) if s.needs_map_layer(spec[0])]
        patterns = s.preprocessed

        def step():
            # stop when this training is over (stopped: finished() removed the placeholders) or its patterns
            # are gone (their model will be dropped)
            if alive(self) and self.worker is worker and s.preprocessed is patterns and todo:
                s.prepare_maps([todo.pop(0)])
                if todo:
                    QTimer.singleShot(gap_ms, step)  # a gap, so that each insert is painted in a turn of its own
                    return
            ready.set()

        if todo:
            QTimer.singleShot(0, step)
        else:
            ready.set()

    def adopt_model(self, model):
        """Make a trained model the session's, at its best epoch, and encode its maps.

        The best epoch (the paper's stopping rule) is what the command line saves too: both call
        :func:`napari_4dstem.rrvae.maps.iter_rrvae_maps`.
        """
        if model.best_epoch is not None and model.best_epoch in model.checkpoints:
            model.restore(model.best_epoch)
        self.session.model = model
        self.session.history = model.history
        self.session.encoded = None
        self._fill_epochs(model)
        self.status.setText(f"trained {len(model.history)} epoch(s); encoding all patterns at epoch {model.epoch}…")
        return self.encode()

    def encode(self):
        """The maps of the session's model at its loaded epoch, in a worker with progress; Stop cancels."""
        from napari_4dstem.rrvae.maps import iter_rrvae_maps

        s = self.session
        model, patterns = s.model, s.preprocessed
        if model is None or patterns is None:
            return None
        self.prepare_map_layers(model.config.latent_dim)
        t0 = time.perf_counter()

        def progress(p):
            set_progress(self.bar, p.done, p.total, time.perf_counter() - t0, p.message)

        def shown(out):
            if s.model is model and s.preprocessed is patterns:
                self.show_maps(out["encoded"], out["reconstruction_error"], out["outlier"],
                               out.get("rotation_outlier"))

        def finished():
            self.worker = None
            self.train_btn.setText("Train")
            if s.encoded is None and s.model is model and self._showing is None:  # (not still being shown)
                s.remove_placeholders("rrVAE")
                self.status.setText("encoding stopped: no maps shown (Use a checkpoint to encode again)")

        self.train_btn.setText("Stop")
        threads = gui_threads()
        self.worker = self.start(lambda: iter_rrvae_maps(model, patterns, epoch=None, threads=threads),
                                 on_return=shown, on_progress=progress, on_finish=finished)
        return self.worker

    def prepare_map_layers(self, latent_dim: int) -> list:
        """The layers of a model's maps, made before the maps exist (hidden zeros of the scan's shape; see
        ``Session.prepare_maps``), so that their arrival only updates them in place. Latent layers beyond
        ``latent_dim`` (a previous model with more latents) go."""
        self._drop_extra_latents(latent_dim)
        return self.session.prepare_maps(map_specs(latent_dim))

    def _drop_extra_latents(self, latent_dim: int) -> None:
        s = self.session
        keep = {name for name, _, _ in map_specs(latent_dim)}
        for layer in list(s.viewer.layers):
            if layer.name.startswith(("rrVAE z", "rrVAE sd")) and layer.name not in keep:
                s.viewer.layers.remove(layer)
                s.maps.pop(layer.name, None)

    def show_maps(self, enc, residual=None, outlier=None, rotation_outlier=None, gap_ms: int = 15):
        """Show the encoded maps (angle, latents, sds) and, if given, the reconstruction-error and the two
        defect maps (all channels, rotation alone).

        The layers exist already (:meth:`prepare_map_layers`, when training or encoding started), so every map
        is copied into its layer in place. Three turns of the event loop, each painted before the next: the
        hidden layers (they repaint nothing), then the one shown (the last latent map, the top one, which is
        all an opaque stack shows anyway; a newly shown layer is sliced and drawn), then ``session.encoded``
        and the signals (the Inspector's reconstructions). In one turn the three made a 100-150 ms stall under
        a software renderer. ``session.encoded`` is set when all are shown.
        """
        from qtpy.QtCore import QTimer

        from ._common import alive

        s = self.session
        if not alive(self):
            return
        lat, sd = np.asarray(enc.latents), np.asarray(enc.latent_sd)
        self.prepare_map_layers(lat.shape[0])  # normally a no-op; a model loaded by a script
        data = {RESIDUAL_NAME: residual, OUTLIER_NAME: outlier, ROTATION_OUTLIER_NAME: rotation_outlier,
                "rrVAE angle": np.asarray(enc.angle)}
        for k in range(lat.shape[0]):
            data[f"rrVAE z{k + 1}"], data[f"rrVAE sd{k + 1}"] = lat[k], sd[k]
        on_top = f"rrVAE z{lat.shape[0]}"
        items = [(name, colormap, kw) for name, colormap, kw in map_specs(lat.shape[0]) if data.get(name) is not None]
        model, patterns = s.model, s.preprocessed
        self._showing = token = object()

        def fill(names):
            for name, colormap, kw in items:
                if name in names:
                    s.show_map(name, np.asarray(data[name], dtype=np.float32), colormap=colormap,
                               visible=name == on_top, **kw)

        def done():
            self._showing = None
            s.encoded = enc
            epoch = getattr(enc, "parameters", {}).get("epoch")
            self.status.setText(f"rrVAE maps shown ({lat.shape[0]} latents, epoch {epoch})")
            s.model_changed.emit(s.model)
            s.maps_changed.emit(enc)

        stages = [lambda: fill({n for n, _, _ in items if n != on_top}), lambda: fill({on_top}), done]

        def run(i):
            if not (alive(self) and self._showing is token and s.model is model and s.preprocessed is patterns):
                if self._showing is token:  # the model or patterns changed meanwhile: these maps are void
                    self._showing = None
                return
            stages[i]()
            if i + 1 < len(stages):
                QTimer.singleShot(gap_ms, lambda: run(i + 1))

        run(0)

    # -- defect map from several models -------------------------------------------------------
    def toggle_average(self):
        if self.average_worker is not None:
            self.average_worker.quit()
        else:
            self.average_defects()

    def average_defects(self, n_models: int | None = None):
        """Train ``n_models - 1`` more models like the current one and show the mean of all their outlier maps."""
        from napari_4dstem.pipeline import iter_defect_maps, mean_defect_maps
        from napari_4dstem.rrvae.maps import defect_maps

        s = self.session
        model, patterns = s.model, s.preprocessed
        if model is None or patterns is None or self.worker is not None:
            show_error("rrVAE: train a model first (and let it finish)")
            return None
        n = int(n_models or self.n_models.value())
        com_mag = None if s.com is None else np.asarray(s.com.magnitude)
        com_ang = None if s.com is None else np.asarray(s.com.angle)

        def steps():
            first = defect_maps(model, model.encode(patterns))
            extra = yield from iter_defect_maps(model, patterns, n - 1, com_mag, com_ang)
            return mean_defect_maps([first, *extra])

        def shown(mean):
            s.show_map(OUTLIER_NAME, mean["outlier"], colormap="magma")
            s.show_map(ROTATION_OUTLIER_NAME, mean["rotation_outlier"], colormap="magma", visible=False)
            self.status.setText(f"rrVAE outlier: mean of {n} models (seeds {model.config.seed}-"
                                f"{model.config.seed + n - 1})")

        def finished():
            self.average_worker = None
            self.average_btn.setText("Average defect maps")
            self.train_btn.setEnabled(True)

        self.average_btn.setText("Stop averaging")
        self.train_btn.setEnabled(False)
        self.status.setText(f"training {n - 1} more model(s) for the defect map…")
        self.average_worker = self.start(steps, on_return=shown, on_finish=finished, progress_bar=self.bar)
        return self.average_worker

    # -- history and checkpoints ----------------------------------------------------------------
    def plot_history(self):
        self.plot.show_history([dict(r) for r in self.reports])

    def _fill_epochs(self, model):
        best = getattr(model, "best_epoch", None)
        loaded = getattr(model, "epoch", None)
        self.epoch.blockSignals(True)
        self.epoch.clear()
        for e in sorted(checkpoint_epochs(model)):
            tags = [t for t, hit in (("best", e == best), ("loaded", e == loaded)) if hit]
            self.epoch.addItem(f"epoch {e}" + (f" ({', '.join(tags)})" if tags else ""), e)
            if e == loaded:
                self.epoch.setCurrentIndex(self.epoch.count() - 1)
        self.epoch.blockSignals(False)

    def use_checkpoint(self, epoch=None):
        """Load the weights of a stored epoch (the picker's choice) and re-encode the maps."""
        s = self.session
        epoch = self.epoch.currentData() if epoch is None else epoch
        if s.model is None or s.preprocessed is None:
            notify_error(FourDSTEMError("no trained model for these patterns", hint="train the rrVAE first"))
            return None
        if epoch is None:
            notify_error(FourDSTEMError("no checkpoint chosen", hint="pick an epoch in the list"))
            return None
        if self.worker is not None:
            notify_error(FourDSTEMError("the model is busy (training or encoding)", hint="wait or press Stop"))
            return None
        try:
            s.model.restore(epoch)
        except FourDSTEMError as e:
            notify_error(e)
            return None
        show_info(f"rrVAE: using the weights of epoch {epoch}")
        self._fill_epochs(s.model)
        return self.encode()


def gui_threads() -> int:
    """torch threads for training and encoding in the GUI: a core is left to the event loop (and the software
    renderer under Xvfb); a worker that takes every core makes the event loop stall for hundreds of ms."""
    return max(1, physical_cores() - 1)


def map_specs(latent_dim: int) -> list:
    """``(layer name, colormap, layer keywords)`` of a model's scan maps, bottom to top."""
    specs = [(RESIDUAL_NAME, "inferno", {}), (OUTLIER_NAME, "magma", {}), (ROTATION_OUTLIER_NAME, "magma", {}),
             ("rrVAE angle", "twilight", {"contrast_limits": (-math.pi, math.pi)})]
    for k in range(int(latent_dim)):
        specs += [(f"rrVAE z{k + 1}", "viridis", {}), (f"rrVAE sd{k + 1}", "gray", {})]
    return specs


def checkpoint_epochs(model) -> list:
    """Epochs (or names) of the checkpoints a model keeps."""
    for attr in ("checkpoint_epochs", "checkpoints"):
        v = getattr(model, attr, None)
        if callable(v):
            v = v()
        if v is not None:
            return list(v.keys()) if hasattr(v, "keys") else list(v)
    return []


_WARMED = []


def _warm_up():
    """Import what torch's Adam imports on first use (torch._dynamo, sympy: ~1 s of Python) in a worker
    when the dock opens, not when Train is clicked: that import held the event loop for ~250 ms at the start
    of the first training."""
    if _WARMED:
        return
    _WARMED.append(True)

    def job():
        import torch._dynamo  # noqa: F401

    def imported():
        from ._gc import refreeze

        refreeze()  # torch's and sympy's modules: long-lived (see _gc.py)

    from ._workers import start_worker

    start_worker(job, connect={"returned": imported})
