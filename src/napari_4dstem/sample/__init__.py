"""Built-in sample data: a small 4D-STEM simulator of graphene in the phase-object approximation.

Numpy and scipy only: single slice (no multislice propagation), no thermal diffuse scattering, no
partial coherence other than an optional source-size blur. :func:`make_sample` is the entry point;
the physics is in :mod:`napari_4dstem.sample.physics`. See docs/sample.md.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..dataset import Calibration, Dataset4D, Provenance
from ..errors import DataError
from .physics import (LOBATO_2014, interaction_constant, projected_phase, scattering_factor, simulate_4dstem,
                      wavelength_A)

__all__ = ["make_sample", "sample_kinds", "simulate_4dstem", "projected_phase", "graphene_supercell",
           "scattering_factor", "wavelength_A", "interaction_constant", "LOBATO_2014"]


GRAPHENE_A = 2.46  # lattice constant, Å (as in the shared abTEM simulation)
#: Basis of the orthogonal graphene cell (a, a sqrt 3), fractional (x, y); 4 atoms.
GRAPHENE_BASIS = ((0.0, 0.0), (0.5, 1 / 6), (0.5, 0.5), (0.0, 2 / 3))

_KINDS = {
    "graphene_vacancy": "graphene with one carbon atom removed (single vacancy)",
    "graphene_pristine": "defect-free single-layer graphene",
    "graphene_si": "graphene with one carbon replaced by silicon (substitutional dopant, flat)",
}
DEFAULT_STEP_A = 0.15


def sample_kinds() -> dict[str, str]:
    """The structures :func:`make_sample` can simulate, with a one-line description each."""
    return dict(_KINDS)


# -- structures ---------------------------------------------------------------------------------
def graphene_supercell(nx: int, ny: int, a: float = GRAPHENE_A):
    """Orthogonal graphene supercell of ``nx x ny`` cells ``(a, a sqrt 3)``.

    Returns ``(positions (n, 2) as (x, y) in Å, cell (Lx, Ly) in Å)``.
    """
    cell = np.array([a, a * math.sqrt(3)])
    basis = np.asarray(GRAPHENE_BASIS) * cell
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    shifts = np.stack([ix.ravel(), iy.ravel()], 1) * cell
    pos = (shifts[:, None, :] + basis[None]).reshape(-1, 2)
    return pos, (nx * cell[0], ny * cell[1])


def _structure(kind: str):
    """Positions, elements, cell, defect site (x, y) Å and the defect description."""
    pos, cell = graphene_supercell(12, 7)  # 29.5 x 29.8 Å: defects 30 Å apart
    elements = ["C"] * len(pos)
    site = int(np.argmin(np.hypot(*(pos - np.asarray(cell) / 2).T)))
    centre = pos[site].copy()
    if kind == "graphene_vacancy":
        pos = np.delete(pos, site, axis=0)
        del elements[site]
        defect = "vacancy"
    elif kind == "graphene_si":
        elements[site] = "Si"
        defect = "Si substitution"
    else:
        defect = "none"
    return pos, elements, cell, centre, defect


# -- public entry point ---------------------------------------------------------------------------
def make_sample(kind: str = "graphene_vacancy", scan_shape=(48, 48), detector_shape=(64, 64),
                scan_step_A: float = DEFAULT_STEP_A, energy_ev: float = 60e3, semiangle_mrad: float = 31.0,
                detector_pixel_mrad: float = 2.5, dose: float | None = None, source_size_A: float = 0.0,
                seed: int = 0) -> Dataset4D:
    """A simulated 4D-STEM scan of graphene (phase-object approximation), in memory.

    Parameters
    ----------
    kind
        One of :func:`sample_kinds`: ``"graphene_vacancy"`` (default), ``"graphene_pristine"``,
        ``"graphene_si"``. The defect sits at scan pixel ``(scan_y // 2, scan_x // 2)``.
    scan_shape, scan_step_A
        Scan positions ``(scan_y, scan_x)`` and their spacing (Å).
    detector_shape, detector_pixel_mrad
        Detector pixels and their angular size; the optical axis is at ``(N - 1) / 2``.
    energy_ev, semiangle_mrad
        Beam energy (eV) and convergence semiangle (mrad) of the aberration-free probe.
    dose
        Electrons per pattern for Poisson noise (``None``: noiseless fractions of the beam).
    source_size_A
        FWHM (Å) of a Gaussian source: the patterns are blurred over scan positions.
    seed
        Seed of the noise generator (same seed, same data).

    Returns
    -------
    Dataset4D
        float32 ``(scan_y, scan_x, det_y, det_x)``; intensities are fractions of the incident
        beam (noiseless) or counts (with ``dose``). ``metadata["atoms"]`` lists atoms in scan-pixel
        coordinates and ``metadata["defect"]`` the defect site (``kind="none"`` for pristine).
    """
    params = _check(kind, scan_shape, detector_shape, scan_step_A, energy_ev, semiangle_mrad,
                    detector_pixel_mrad, dose, source_size_A, seed)
    data, meta = _make_cached(*params.values())
    ny, nx = params["detector_shape"]
    cal = Calibration(scan_step=(params["scan_step_A"],) * 2, scan_unit="Å",
                      detector_pixel=(params["detector_pixel_mrad"],) * 2, detector_unit="mrad",
                      beam_energy_ev=params["energy_ev"], convergence_semiangle_mrad=params["semiangle_mrad"],
                      detector_center=((ny - 1) / 2, (nx - 1) / 2), scan_rotation_deg=0.0, flip=False)
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    prov = Provenance(source_path=None, reader="sample", original_dtype="float32",
                      original_shape=data.shape, options=options,
                      notes=["phase-object simulation (napari_4dstem.sample); see docs/sample.md"])
    meta = {"atoms": [dict(a) for a in meta["atoms"]], "defect": dict(meta["defect"]),
            **{k: v for k, v in meta.items() if k not in ("atoms", "defect")}}
    return Dataset4D(data.copy(), cal, prov, name=f"sample {kind}", metadata=meta)


def _check(kind, scan_shape, detector_shape, step, energy, semiangle, pixel, dose, source, seed) -> dict:
    if kind not in _KINDS:
        raise DataError(f"unknown sample kind {kind!r}", hint=f"use one of {', '.join(_KINDS)}")
    try:
        scan = tuple(int(s) for s in scan_shape)
        det = tuple(int(s) for s in detector_shape)
    except (TypeError, ValueError):
        raise DataError(f"scan_shape {scan_shape!r} and detector_shape {detector_shape!r} must be pairs "
                        "of integers") from None
    if len(scan) != 2 or len(det) != 2 or min(scan) < 1 or min(det) < 2:
        raise DataError(f"bad shapes scan_shape={scan_shape!r}, detector_shape={detector_shape!r}",
                        hint="give (rows, columns) with at least 1 scan position and 2 detector pixels")
    for name, v in (("scan_step_A", step), ("energy_ev", energy), ("semiangle_mrad", semiangle),
                    ("detector_pixel_mrad", pixel)):
        if not (np.isfinite(v) and v > 0):
            raise DataError(f"{name} must be a positive number, got {v!r}")
    if dose is not None and not (np.isfinite(dose) and dose > 0):
        raise DataError(f"dose must be a positive number of electrons per pattern or None, got {dose!r}")
    if not (np.isfinite(source) and source >= 0):
        raise DataError(f"source_size_A must be >= 0, got {source!r}")
    return {"kind": kind, "scan_shape": scan, "detector_shape": det, "scan_step_A": float(step),
            "energy_ev": float(energy), "semiangle_mrad": float(semiangle),
            "detector_pixel_mrad": float(pixel), "dose": None if dose is None else float(dose),
            "source_size_A": float(source), "seed": int(seed)}


@functools.lru_cache(maxsize=4)
def _clean_cached(kind, scan_shape, detector_shape, step, energy, semiangle, pixel, pad):
    """Noiseless scan with ``pad`` extra positions on every side (read-only), and its ground truth."""
    pos, elements, cell, centre, defect = _structure(kind)
    sy, sx = scan_shape[0] + 2 * pad, scan_shape[1] + 2 * pad
    # The defect at pixel (scan // 2) of the unpadded scan.
    origin = (centre[0] - step * (scan_shape[1] // 2 + pad), centre[1] - step * (scan_shape[0] // 2 + pad))
    data = simulate_4dstem(pos, elements, cell, origin, step, (sy, sx), detector_shape, pixel, energy, semiangle)
    data.flags.writeable = False
    # Ground truth in unpadded scan-pixel coordinates: atoms (with periodic images) inside the scan.
    o = np.asarray(origin) + pad * step
    atoms = []
    for dxc in (-1, 0, 1):
        for dyc in (-1, 0, 1):
            p = (pos + np.array([dxc * cell[0], dyc * cell[1]]) - o) / step
            inside = ((p[:, 0] >= -0.5) & (p[:, 0] <= scan_shape[1] - 0.5)
                      & (p[:, 1] >= -0.5) & (p[:, 1] <= scan_shape[0] - 0.5))
            atoms += [{"element": elements[i], "x_px": round(float(p[i, 0]), 4), "y_px": round(float(p[i, 1]), 4)}
                      for i in np.flatnonzero(inside)]
    atoms.sort(key=lambda a: (a["y_px"], a["x_px"]))
    d = (centre - o) / step
    meta = {"atoms": atoms,
            "defect": {"kind": defect, "element": {"vacancy": "C", "none": "C"}.get(defect, "Si"),
                       "x_px": round(float(d[0]), 4), "y_px": round(float(d[1]), 4)},
            "scan_origin_A": [float(o[0]), float(o[1])], "supercell_A": [float(cell[0]), float(cell[1])],
            "simulator": "napari_4dstem.sample phase object, Lobato & Van Dyck (2014) potentials"}
    return data, meta


@functools.lru_cache(maxsize=2)
def _make_cached(kind, scan_shape, detector_shape, step, energy, semiangle, pixel, dose, source, seed):
    from scipy.ndimage import gaussian_filter

    sigma_px = source / (2 * math.sqrt(2 * math.log(2))) / step
    pad = int(math.ceil(3 * sigma_px)) if sigma_px > 0 else 0
    data, meta = _clean_cached(kind, scan_shape, detector_shape, step, energy, semiangle, pixel, pad)
    if pad:
        # Blur over scan positions with the truncated kernel (radius <= pad), then drop the margin.
        data = gaussian_filter(data, (sigma_px, sigma_px, 0, 0), mode="nearest", truncate=3.0)
        data = data[pad:-pad, pad:-pad]
    if dose is not None:
        rng = np.random.default_rng(seed)
        data = rng.poisson(np.asarray(data, dtype=np.float64) * dose).astype(np.float32)
    data = np.ascontiguousarray(data, dtype=np.float32)
    data.flags.writeable = False
    return data, meta
