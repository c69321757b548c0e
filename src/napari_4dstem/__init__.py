"""napari-4dstem: explore 4D-STEM data, COM/DPC maps and a rotationally invariant VAE.

The core (this package minus ``napari_4dstem.gui``) imports no napari and no Qt, so it runs on a
headless cluster node. Heavy modules (torch, rosettasciio) load on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .dataset import Calibration, Dataset4D, Provenance, as_dataset  # noqa: E402
from .errors import Cancelled, DataError, FourDSTEMError, ModelError, ReaderError, WriteError  # noqa: E402
from .progress import Progress, run_steps  # noqa: E402

# name -> module that defines it; imported on first access.
_LAZY = {
    "load": "napari_4dstem.io",
    "make_sample": "napari_4dstem.sample",
    "center_of_mass": "napari_4dstem.com",
    "COMResult": "napari_4dstem.com",
    "virtual_image": "napari_4dstem.virtual",
    "virtual_images": "napari_4dstem.virtual",
    "navigator_image": "napari_4dstem.virtual",
    "Preprocessing": "napari_4dstem.preprocess",
    "RRVAE": "napari_4dstem.rrvae",
    "RRVAEConfig": "napari_4dstem.rrvae",
    "Results": "napari_4dstem.results",
    "save_results": "napari_4dstem.results",
    "load_results": "napari_4dstem.results",
    "analyze": "napari_4dstem.pipeline",
    "export_map": "napari_4dstem.export",
    "export_results": "napari_4dstem.export",
    "zernike_moments": "napari_4dstem.zernike",
    "ZernikeResult": "napari_4dstem.zernike",
    "zernike_motifs": "napari_4dstem.motifs",
    "MotifResult": "napari_4dstem.motifs",
}

__all__ = [
    "__version__", "Calibration", "Dataset4D", "Provenance", "as_dataset", "Progress", "run_steps",
    "FourDSTEMError", "ReaderError", "DataError", "ModelError", "WriteError", "Cancelled", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_4dstem' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
