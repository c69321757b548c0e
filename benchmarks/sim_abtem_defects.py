"""Simulate held-out test data like ../shared/data/sim/graphene_pristine, but with a defect (abTEM multislice).

Graphene with a vacancy, a Si or N dopant at the atom nearest the centre of the scan, or a Stone-Wales defect
(the C-C bond nearest the centre rotated by 90 degrees about its midpoint: the 55-77 defect, unrelaxed: the two
atoms keep the 1.42 A bond and every other atom stays on the lattice), simulated with abTEM 1.0.11 the
way the shared pristine file was made (its JSON lists the settings): 60 kV, 31 mrad aberration-free probe, Lobato
potential, 16 x 9 orthogonal cells, 64 x 64 scan at 0.12 A, 64 x 64 detector at 2.5 mrad/px. Keys: ``clean``,
``noisy`` (0.75 A FWHM source blur + Poisson at 1e4 e/pattern) and ``noisy_1e5``. Ground truth in NAME.json.

abTEM is not a dependency: ``make bench`` / ``benchmarks/acceptance_rrvae.py`` install it into
``benchmarks/.envs/abtem`` and run this script there. Usage::

    python sim_abtem_defects.py OUTDIR [--kinds vacancy si n stone_wales pristine] [--noise-seed 20210401]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

STEP, N, MARGIN = 0.12, 64, 8          # scan step (A), scan size, extra positions for the source blur
ORIGIN = (19.62, 19.823943270890712)   # scan origin (x, y) of the shared pristine file (A)
DET_N, DET_MRAD = 64, 2.5
FWHM_A = 0.75


def structure(kind: str):
    from abtem import orthogonalize_cell
    from ase.build import graphene

    atoms = orthogonalize_cell(graphene(a=2.46, vacuum=2.0)) * (16, 9, 1)
    atoms.cell[2, 2] = 4.0
    atoms.positions[:, 2] = 2.0
    centre = np.array(ORIGIN) + STEP * (N - 1) / 2
    site = int(np.argmin(np.hypot(*(atoms.positions[:, :2] - centre).T)))
    xy = atoms.positions[site, :2].copy()
    if kind == "vacancy":
        del atoms[site]
        defect = {"kind": "vacancy", "element": "C"}
    elif kind == "si":
        atoms.numbers[site] = 14
        defect = {"kind": "Si substitution", "element": "Si"}
    elif kind == "n":
        atoms.numbers[site] = 7
        defect = {"kind": "N substitution", "element": "N"}
    elif kind == "stone_wales":
        # the neighbour of the central atom whose bond midpoint is nearest the centre; rotate that bond by 90 deg
        d = np.hypot(*(atoms.positions[:, :2] - xy).T)
        nbrs = np.flatnonzero((d > 0.1) & (d < 1.6))
        mids = (atoms.positions[nbrs, :2] + xy) / 2
        other = int(nbrs[np.argmin(np.hypot(*(mids - centre).T))])
        mid = (atoms.positions[site, :2] + atoms.positions[other, :2]) / 2
        for i in (site, other):
            v = atoms.positions[i, :2] - mid
            atoms.positions[i, :2] = mid + np.array([-v[1], v[0]])
        xy = mid
        defect = {"kind": "Stone-Wales 55-77 (bond rotated 90 deg, unrelaxed)", "element": "C",
                  "atoms_px": [[float((atoms.positions[i, 0] - ORIGIN[0]) / STEP),
                                float((atoms.positions[i, 1] - ORIGIN[1]) / STEP)] for i in (site, other)]}
    else:
        defect = {"kind": "none"}
    if kind != "pristine":
        defect.update(x_px=float((xy[0] - ORIGIN[0]) / STEP), y_px=float((xy[1] - ORIGIN[1]) / STEP))
    return atoms, defect


def rebin(patterns: np.ndarray, sampling_mrad) -> np.ndarray:
    """abTEM's fft-shifted patterns -> DET_N x DET_N pixels of DET_MRAD centred on the axis (sums kept)."""
    ny, nx = patterns.shape[-2:]
    ky = (np.arange(ny) - ny // 2) * sampling_mrad[1]
    kx = (np.arange(nx) - nx // 2) * sampling_mrad[0]
    edges = (np.arange(DET_N + 1) - DET_N / 2) * DET_MRAD
    iy = np.digitize(ky, edges) - 1
    ix = np.digitize(kx, edges) - 1
    oky, okx = (iy >= 0) & (iy < DET_N), (ix >= 0) & (ix < DET_N)
    p = patterns[..., oky, :][..., okx]
    # sum native pixels into detector pixels: one matrix product per axis
    my = np.zeros((DET_N, oky.sum()), np.float32)
    my[iy[oky], np.arange(oky.sum())] = 1
    mx = np.zeros((DET_N, okx.sum()), np.float32)
    mx[ix[okx], np.arange(okx.sum())] = 1
    return np.einsum("ij,...jk,lk->...il", my, p, mx, optimize=True).astype(np.float32)


def simulate(kind: str, noise_seed: int):
    import abtem

    abtem.config.set({"device": "cpu"})
    atoms, defect = structure(kind)
    t0 = time.perf_counter()
    pot = abtem.Potential(atoms, sampling=0.1, projection="infinite", slice_thickness=4.0, parametrization="lobato")
    probe = abtem.Probe(energy=60e3, semiangle_cutoff=31.0)
    probe.grid.match(pot)
    start = (ORIGIN[0] - MARGIN * STEP, ORIGIN[1] - MARGIN * STEP)
    end = (start[0] + (N + 2 * MARGIN) * STEP, start[1] + (N + 2 * MARGIN) * STEP)
    scan = abtem.GridScan(start=start, end=end, sampling=STEP)
    meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle=None)).compute()
    arr = np.asarray(meas.array, np.float32)  # (scan_x, scan_y, kx, ky) in abTEM
    arr = np.transpose(arr, (1, 0, 3, 2))      # -> (scan_y, scan_x, det_y, det_x)
    clean_full = rebin(arr, meas.angular_sampling)
    sim_s = time.perf_counter() - t0
    sl = (slice(MARGIN, MARGIN + N), slice(MARGIN, MARGIN + N))
    clean = clean_full[sl]
    sigma = FWHM_A / STEP / (2 * np.sqrt(2 * np.log(2)))
    blurred = ndimage.gaussian_filter(clean_full, (sigma, sigma, 0, 0), mode="nearest")[sl]
    rng = np.random.default_rng(noise_seed)
    out = {"clean": clean}
    for key, dose in (("noisy", 1e4), ("noisy_1e5", 1e5)):
        out[key] = rng.poisson(np.maximum(blurred, 0) * dose).astype(np.float32)
    pos = atoms.positions[:, :2]
    gt_atoms = [{"element": str(s), "x_px": float((x - ORIGIN[0]) / STEP), "y_px": float((y - ORIGIN[1]) / STEP)}
                for s, (x, y) in zip(atoms.get_chemical_symbols(), pos)
                if -5 <= (x - ORIGIN[0]) / STEP <= N + 5 and -5 <= (y - ORIGIN[1]) / STEP <= N + 5]
    meta = {"name": f"graphene_{kind}", "simulator": f"abTEM {abtem.__version__} multislice (Lobato, infinite "
            "projection, no frozen phonons)", "structure": "graphene a=2.46 A, 16x9 orthogonal cells",
            "energy_eV": 60e3, "semiangle_mrad": 31.0, "scan_shape": [N, N], "scan_step_A": STEP,
            "scan_origin_A": list(ORIGIN), "detector_shape": [DET_N, DET_N], "detector_pixel_mrad": DET_MRAD,
            "detector_center_px": [(DET_N - 1) / 2] * 2, "source_size_fwhm_A": FWHM_A,
            "dose_e_per_pattern": {"noisy": 1e4, "noisy_1e5": 1e5}, "noise_seed": noise_seed,
            "sim_time_s": round(sim_s, 1), "defect": defect, "atoms": gt_atoms,
            "array_axes": "(scan_y, scan_x, det_y, det_x); det_x parallel to scan_x, no rotation"}
    return out, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--kinds", nargs="+", default=["vacancy", "si"],
                    choices=["vacancy", "si", "n", "stone_wales", "pristine"])
    ap.add_argument("--noise-seed", type=int, default=20210401)
    a = ap.parse_args(argv)
    a.outdir.mkdir(parents=True, exist_ok=True)
    for kind in a.kinds:
        arrays, meta = simulate(kind, a.noise_seed)
        stem = a.outdir / f"graphene_{kind}"
        np.savez(stem.with_suffix(".npz"), **arrays)
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        print(f"{stem}.npz: {meta['defect']} sim {meta['sim_time_s']} s", flush=True)


if __name__ == "__main__":
    main()
