"""Parameters of the rrVAE (Oxley, Ziatdinov et al., npj Comput Mater 7, 65 (2021); atomai ``rVAE``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import DataError

MODES = ("faithful", "fast")

# Values that depend on the mode; a field left at None takes the mode's value in __post_init__.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    # atomai rVAE / the paper's notebooks: full detector, min-max data as given, Adam 1e-4, small batches.
    "faithful": {"lr": 1e-4, "batch_size": 20, "epochs": 100, "detector_size": None, "scaling": "none",
                 "pixel_fraction": 1.0, "pca_components": 0, "angle": "linear", "stop_rule": "latent"},
    # Measured on a 2-core CPU (docs/rrvae.md): a 32 x 32 detector, data scaled by its global std, larger
    # batches and lr, and a random subset of detector pixels per step (a coordinate decoder can be trained on
    # any subset of its grid; the loss is rescaled so that it stays an unbiased estimate of the full one).
    # PCA denoising to 8 components: at 10^4 e/pattern the signal lives in ~3 principal axes and the rest
    # is Poisson noise, under which the content latents collapse; clean data lose nothing measurable.
    "fast": {"lr": 1e-3, "batch_size": 64, "epochs": 30, "detector_size": 32, "scaling": "std",
             "pixel_fraction": 0.25, "pca_components": 8, "angle": "linear", "stop_rule": "latent+rotation"},
}
# The stopping rule: "latent+rotation" reports the epoch where both the latents and the rotation map follow
# COM; faithful mode keeps the paper's latent-only rule. angle="vector" (no wrap-around) is an option, not a
# default: on abTEM graphene it follows the COM angle from the first epoch but slows the content latents
# (docs/rrvae.md, "Rotation map and the stopping rule").

#: Values that fields added later had before they existed (model files written earlier lack them).
LEGACY_DEFAULTS: dict[str, Any] = {"angle": "linear", "stop_rule": "latent"}
STOP_RULES = ("latent", "latent+rotation")


@dataclass
class RRVAEConfig:
    """Every parameter of the model and its training; see docs/rrvae.md for defaults and references.

    Fields left at ``None`` (lr, batch_size, epochs, detector_size, scaling, pixel_fraction, pca_components, angle,
    stop_rule) take the value of ``mode`` ("faithful": atomai's defaults; "fast": the interactive CPU set-up).
    """

    latent_dim: int = 2                # content latents (the angle, and translations, come on top)
    hidden: int = 128                  # width of encoder and decoder layers
    layers: int = 2                    # hidden layers in encoder and decoder
    activation: str = "tanh"           # "tanh" (paper), "relu", "lrelu", "softplus"
    rotation_prior: float = 0.1        # sigma (rad) of the rotation prior: constrains only the spread
    translation: bool = False          # two translation latents
    translation_prior: float = 0.1     # scale of the translation latents (grid units, [-1, 1] = detector)
    loss: str = "mse"                  # "mse": 0.5 x squared error summed per pattern (unit Gaussian)
    transform: str = "none"            # "anscombe": 2 sqrt(x + 3/8) of counts before binning (Poisson -> var ~1)
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    seed: int = 0
    val_fraction: float = 0.0          # share of patterns held out for the validation loss
    mode: str = "faithful"
    device: str = "auto"               # "auto" = CUDA if available, else CPU
    threads: int | None = None         # torch CPU threads; None = physical cores
    eval_every: int = 1                # epochs between encodings of all patterns for the stopping rule
    detector_size: int | None = None   # bin patterns to this size before training (None = as given)
    scaling: str | None = None         # "none" (as given), "std" (global std) or "signal" (signal std)
    pixel_fraction: float | None = None  # share of detector pixels decoded per training step
    pca_components: int | None = None  # PCA-denoise the binned patterns to this many components (0 = off)
    time_limit: float | None = None    # stop after this many seconds (None = no limit)
    precision: str = "auto"            # decoder matmuls in training: "float32", "bfloat16", "auto" (see docs)
    compile: bool = False              # torch.compile the training step (~20 s once; ~1.2x faster steps on CPU)
    angle: str | None = None           # rotation mean: "linear" (atomai: one real output) or "vector" (atan2 of 2)
    stop_rule: str | None = None       # best epoch by "latent" (the paper: |r| with |COM|) or "latent+rotation"

    def __post_init__(self):
        if self.mode not in MODES:
            raise DataError(f"unknown rrVAE mode {self.mode!r}", hint=f"use one of {MODES}")
        for k, v in MODE_DEFAULTS[self.mode].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.validate()

    def validate(self) -> None:
        def bad(msg, hint=None):
            raise DataError(f"rrVAE parameter: {msg}", hint=hint)

        from ..params import check_arguments  # types and ranges first (harden): one line naming the parameter

        check_arguments("RRVAEConfig", {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

        if int(self.latent_dim) < 1:
            bad(f"latent_dim={self.latent_dim}", "the model needs at least one content latent (latent_dim >= 1)")
        if self.hidden < 1 or self.layers < 1:
            bad(f"hidden={self.hidden}, layers={self.layers}", "both must be >= 1")
        if self.activation not in ("tanh", "relu", "lrelu", "softplus"):
            bad(f"activation={self.activation!r}", "use tanh, relu, lrelu or softplus")
        if self.loss != "mse":
            bad(f"loss={self.loss!r}", "only 'mse' is implemented")
        if not self.rotation_prior > 0 or not self.translation_prior > 0:
            bad("priors must be > 0")
        if not self.lr > 0 or self.batch_size < 1 or self.epochs < 1 or self.eval_every < 1:
            bad(f"lr={self.lr}, batch_size={self.batch_size}, epochs={self.epochs}, eval_every={self.eval_every}",
                "lr > 0, batch_size, epochs and eval_every >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            bad(f"val_fraction={self.val_fraction}", "use a value in [0, 1)")
        if self.transform not in ("none", "anscombe"):
            bad(f"transform={self.transform!r}", "use 'none' or 'anscombe' (for counts)")
        if self.scaling not in ("none", "std", "signal"):
            bad(f"scaling={self.scaling!r}", "use 'none', 'std' or 'signal'")
        if not 0.0 < self.pixel_fraction <= 1.0:
            bad(f"pixel_fraction={self.pixel_fraction}", "use a value in (0, 1]")
        if self.precision not in ("auto", "float32", "bfloat16"):
            bad(f"precision={self.precision!r}", "use 'auto', 'float32' or 'bfloat16'")
        if int(self.pca_components) != self.pca_components or self.pca_components < 0:
            bad(f"pca_components={self.pca_components}", "use 0 (off) or a positive number of components")
        if self.angle not in ("linear", "vector"):
            bad(f"angle={self.angle!r}", "use 'linear' (atomai) or 'vector' (atan2 of a 2-vector)")
        if self.stop_rule not in STOP_RULES:
            bad(f"stop_rule={self.stop_rule!r}", f"use one of {STOP_RULES}")
        if self.detector_size is not None and self.detector_size < 4:
            bad(f"detector_size={self.detector_size}", "use None or >= 4")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RRVAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "mode" in d and "lr" in d:  # a resolved dict (a saved model): fields it lacks are from a later version
            kw = {**LEGACY_DEFAULTS, **kw}
        return cls(**kw)
