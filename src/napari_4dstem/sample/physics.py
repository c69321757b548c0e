"""Phase-object simulation: electron optics constants, projected potentials, 4D-STEM scan.

One projected potential (single slice) is built from the Lobato & Van Dyck (2014) electron
scattering factors as a band-limited Fourier series of a periodic supercell, evaluated on a
real-space grid around the scan. For each probe position the exit wave is
``probe(r - r0) * exp(i sigma V_proj(r))`` on a window whose size makes the FFT pixel exactly one
detector pixel, so no resampling is needed. See docs/sample.md.
"""
from __future__ import annotations

import math
import os

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import DataError

#: Electron scattering factor parameters, Lobato & Van Dyck, Acta Cryst. A70, 636-649 (2014),
#: table of (a_1..a_5) in Å and (b_1..b_5) in Å^2 for
#: f_e(g) = sum_i a_i (2 + b_i g^2) / (1 + b_i g^2)^2, g = |k| in 1/Å (no 2 pi).
#: The same table ships with abTEM (abtem/parametrizations/data/lobato.json).
LOBATO_2014 = {
    "C": ((124.466088621343, -220.352857078963, 195.235352280479, -98.1079361269799, 0.0142023041213623),
          (2.42120849256005, 2.30537943752425, 2.04851932106564, 1.93352552917547, 0.0768976818478339)),
    "N": ((58.1327150702556, -147.542409087812, 130.143065649639, -39.6195674084154, 0.010595776333148),
          (1.70044856413471, 1.5590385260174, 1.41576827473146, 1.27841818205455, 0.0565587798474805)),
    "Si": ((2.87189142611612, -2.06173501195173, 2.17114024204478, -0.0663073633058801, 0.00301070709670513),
           (5.08487103642989, 0.429178185305126, 0.366485434192162, 0.119710611296903, 0.0143994536128397)),
}

ELECTRON_REST_ENERGY_EV = 510998.95
HC_EV_A = 12398.419843  # h c in eV Å


def wavelength_A(energy_ev: float) -> float:
    """Relativistic electron wavelength (Å) at beam energy ``energy_ev`` (eV)."""
    return HC_EV_A / math.sqrt(energy_ev * (2 * ELECTRON_REST_ENERGY_EV + energy_ev))


def interaction_constant(energy_ev: float) -> float:
    """Relativistic interaction constant sigma (rad / (V Å)), phase = sigma x projected potential."""
    lam = wavelength_A(energy_ev)
    m = ELECTRON_REST_ENERGY_EV
    return 2 * math.pi / (lam * energy_ev) * (m + energy_ev) / (2 * m + energy_ev)


# h^2 / (2 pi m0 e) = 2 pi a0 e in V Å^2 (a0 = 0.529177 Å, e^2/(4 pi eps0) = 14.399645 eV Å):
# the 2-D Fourier transform of the projected potential is this times f_e.
_POTENTIAL_PER_FE = 2 * math.pi * 0.529177211 * 14.399645


def scattering_factor(element: str, k) -> np.ndarray:
    """Electron scattering factor f_e (Å) of ``element`` at spatial frequency ``k`` (1/Å)."""
    if element not in LOBATO_2014:
        raise DataError(f"no scattering factor for element {element!r}",
                        hint=f"use one of {sorted(LOBATO_2014)}")
    a, b = (np.asarray(p)[:, None] for p in LOBATO_2014[element])
    g2 = np.asarray(k, dtype=np.float64).reshape(1, -1) ** 2
    f = (a * (2 + b * g2) / (1 + b * g2) ** 2).sum(0)
    return f.reshape(np.shape(k))


def projected_phase(positions_A, elements, cell_A, xs_A, ys_A, energy_ev: float,
                    max_k_inv_A: float) -> np.ndarray:
    """Phase shift sigma V_proj (rad) of a periodic supercell on the grid ``ys_A x xs_A``.

    The potential is the supercell's Fourier series truncated at ``|k| <= max_k_inv_A`` (an
    anti-aliasing band limit); the grid points need not be commensurate with the cell, since
    the series is evaluated directly (separable in x and y, so two matrix products).
    """
    pos = np.asarray(positions_A, dtype=np.float64).reshape(-1, 2)
    elements = list(elements)
    lx, ly = float(cell_A[0]), float(cell_A[1])
    mx, my = int(max_k_inv_A * lx), int(max_k_inv_A * ly)
    gx, gy = np.arange(-mx, mx + 1) / lx, np.arange(-my, my + 1) / ly
    g = np.hypot(gy[:, None], gx[None, :])
    coef = np.zeros(g.shape, dtype=np.complex128)
    for el in sorted(set(elements)):
        p = pos[[e == el for e in elements]]
        s = np.exp(-2j * np.pi * np.outer(gy, p[:, 1])) @ np.exp(-2j * np.pi * np.outer(p[:, 0], gx))
        coef += scattering_factor(el, g) * s
    # sigma * h^2/(2 pi m0 e) = gamma * lambda, so phase(G) = gamma lambda f_e(G) S(G) / area.
    scale = interaction_constant(energy_ev) * _POTENTIAL_PER_FE / (lx * ly)
    coef *= scale * (g <= max_k_inv_A)
    ey = np.exp(2j * np.pi * np.outer(np.asarray(ys_A, dtype=np.float64), gy))
    ex = np.exp(2j * np.pi * np.outer(gx, np.asarray(xs_A, dtype=np.float64)))
    return (ey @ coef @ ex).real


def _axis_k(n_window: int, n_det: int, dk: float) -> np.ndarray:
    # Frequencies of the window FFT, in FFT order. For an even detector they are offset by half
    # a pixel so that they fall on the detector pixel centres ((N - 1) / 2 is between pixels).
    shift = 0.5 if n_det % 2 == 0 else 0.0
    return (sfft.fftfreq(n_window, 1.0 / n_window) + shift) * dk


def simulate_4dstem(positions_A, elements, cell_A, scan_origin_A, scan_step_A, scan_shape,
                    detector_shape=(64, 64), detector_pixel_mrad: float = 2.5, energy_ev: float = 60e3,
                    semiangle_mrad: float = 31.0, max_angle_mrad: float | None = None,
                    batch: int = 128, workers: int | None = None) -> np.ndarray:
    """Noiseless phase-object 4D-STEM scan of a periodic supercell.

    Parameters
    ----------
    positions_A, elements
        Atom positions ``(n, 2)`` as ``(x, y)`` in Å inside the supercell, and their element symbols.
    cell_A
        Orthogonal supercell ``(Lx, Ly)`` in Å (the structure repeats with this period).
    scan_origin_A, scan_step_A, scan_shape
        Probe position of scan pixel ``(iy, ix)`` is ``origin + step * (ix, iy)`` as ``(x, y)``.
    detector_shape, detector_pixel_mrad
        Detector grid; its centre ``(N - 1) / 2`` is the optical axis; det_x is parallel to x.
    energy_ev, semiangle_mrad
        Beam energy and probe-forming aperture (aberration-free probe focused on the specimen).
    max_angle_mrad
        Band limit of the potential (default: twice the detector's half extent, at least 160).

    Returns
    -------
    numpy.ndarray
        float32 ``(scan_y, scan_x, det_y, det_x)``: fraction of the incident electrons per pixel.
    """
    sy, sx = (int(n) for n in scan_shape)
    ny, nx = (int(n) for n in detector_shape)
    lam = wavelength_A(energy_ev)
    dk = detector_pixel_mrad * 1e-3 / lam  # 1/Å per detector pixel
    if max_angle_mrad is None:
        max_angle_mrad = max(160.0, detector_pixel_mrad * max(ny, nx))
    # Window of n samples: its FFT pixel is dk, its Nyquist 1.5 x the band limit (no aliasing of
    # the band-limited phase convolved with the aperture onto the detector).
    n = max(ny, nx, int(math.ceil(3 * max_angle_mrad / detector_pixel_mrad)))
    n += n % 2
    width = 1.0 / dk
    dx = width / n
    kmax = max_angle_mrad * 1e-3 / lam

    # Region of the transmission function that covers every probe window.
    ox, oy = float(scan_origin_A[0]), float(scan_origin_A[1])
    x0 = ox - (n // 2 + 1) * dx
    y0 = oy - (n // 2 + 1) * dx
    nrx = int(math.ceil((sx - 1) * scan_step_A / dx)) + n + 3
    nry = int(math.ceil((sy - 1) * scan_step_A / dx)) + n + 3
    phase = projected_phase(positions_A, elements, cell_A, x0 + dx * np.arange(nrx),
                            y0 + dx * np.arange(nry), energy_ev, kmax)
    trans = np.exp(1j * phase).astype(np.complex64)
    windows = sliding_window_view(trans, (n, n))

    # Probe: aperture with a soft edge, amplitude linear over one pixel and 1/2 at the semiangle
    # (as abTEM's default aperture; it matched abTEM's COM best), normalised so sum |psi|^2 = 1.
    kx, ky = _axis_k(n, nx, dk), _axis_k(n, ny, dk)
    k_px = np.hypot(ky[:, None], kx[None, :]) / dk
    aperture = np.clip(semiangle_mrad / detector_pixel_mrad - k_px + 0.5, 0.0, 1.0)
    aperture /= np.sqrt((aperture ** 2).sum())
    aperture = aperture.astype(np.complex64)
    # Detector pixel d <-> FFT index d - N//2 (mod n).
    iy_det = (np.arange(ny) - ny // 2) % n
    ix_det = (np.arange(nx) - nx // 2) % n

    py, px = np.meshgrid(oy + scan_step_A * np.arange(sy), ox + scan_step_A * np.arange(sx), indexing="ij")
    cy, cx = (py.ravel() - y0) / dx, (px.ravel() - x0) / dx  # probe centre, region pixels
    iy0 = np.floor(cy).astype(np.int64) - n // 2
    ix0 = np.floor(cx).astype(np.int64) - n // 2
    out = np.empty((sy * sx, ny, nx), dtype=np.float32)
    workers = workers or min(8, _cpu_count())
    for b0 in range(0, sy * sx, batch):
        sl = slice(b0, min(b0 + batch, sy * sx))
        # Sub-pixel probe shift as a Fourier phase ramp; window origin is at iy0, ix0.
        ry = np.exp(-2j * np.pi * np.outer((cy[sl] - iy0[sl]) * dx, ky)).astype(np.complex64)
        rx = np.exp(-2j * np.pi * np.outer((cx[sl] - ix0[sl]) * dx, kx)).astype(np.complex64)
        probe = sfft.ifft2(aperture[None] * ry[:, :, None] * rx[:, None, :], norm="ortho",
                           workers=workers, overwrite_x=True)
        probe *= windows[iy0[sl], ix0[sl]]
        psi = sfft.fft2(probe, norm="ortho", workers=workers, overwrite_x=True)
        psi = psi[:, iy_det][:, :, ix_det]
        out[sl] = psi.real ** 2 + psi.imag ** 2
    return out.reshape(sy, sx, ny, nx)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
