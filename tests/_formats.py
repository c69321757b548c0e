"""Writers of small files in the layouts of the formats read through rosettasciio (for tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_de_mrc(folder: Path, data: np.ndarray, step_nm=0.25, pixel=0.1, name="20240102_00042") -> Path:
    """A Direct Electron 4-D movie: ``NAME_movie.mrc`` (MRC 2014 header, frames in scan order) and
    ``NAME_info.txt`` (DE's ``key = value`` metadata with the scan size), as rosettasciio's mrc reader expects."""
    from rsciio.mrc._api import get_std_dtype_list

    sy, sx, ky, kx = data.shape
    h = np.zeros(1, dtype=get_std_dtype_list("<"))
    h["NX"], h["NY"], h["NZ"] = kx, ky, sy * sx
    h["MX"], h["MY"], h["MZ"] = kx, ky, sy * sx
    h["MODE"] = {np.dtype("uint16"): 6, np.dtype("float32"): 2, np.dtype("int16"): 1}[data.dtype]
    p = folder / f"{name}_movie.mrc"
    with open(p, "wb") as f:
        f.write(h.tobytes())
        f.write(np.ascontiguousarray(data).tobytes())
    (folder / f"{name}_info.txt").write_text(
        "Scan - Enable = Enable\nScan - Type = Raster\n"
        f"Scan - Size X = {sx}\nScan - Size Y = {sy}\nInstrument Project TEMorSTEM Mode = 1\n"
        f"Image Size X (pixels) = {kx}\nImage Size Y (pixels) = {ky}\n"
        f"Specimen Pixel Size X (nanometers) = {step_nm}\nSpecimen Pixel Size Y (nanometers) = {step_nm}\n"
        f"Diffraction Pixel Size X = {pixel}\nDiffraction Pixel Size Y = {pixel}\n")
    return p


def write_topspin(path: Path, data: np.ndarray, step_m=(2e-9, 3e-9), k_scale=(0.5, 0.25), k_unit="mrad",
                  guid="a0dba950-15bf-4a74-a81c-9cea8560c2c8") -> Path:
    """A TopSpin .app5 (HDF5): ``Metadata`` (experiment XML) and one GUID group holding a ``0..n-1`` group per
    scan position, each with its ``Data`` frame and ``Metadata`` XML (k-space axes, probe position in m), the
    layout rosettasciio's topspin reader (and its test-file generator) uses."""
    import h5py

    sy, sx, ky, kx = data.shape
    with h5py.File(path, "w") as f:
        f["Metadata"] = np.bytes_(b"<Experiment><Id>test-4dstem</Id><Title>4D test</Title></Experiment>")
        g = f.create_group(guid)
        for iy in range(sy):
            for ix in range(sx):
                i = iy * sx + ix
                fr = g.create_group(str(i))
                fr.create_dataset("Data", data=data[iy, ix])
                axes = "".join(f"<A{a}><Offset>0</Offset><Scale>{k_scale[a]}</Scale>"
                               f"<Unit><S>x</S><N>{k_unit}</N></Unit></A{a}>" for a in (0, 1))
                pos = f"<P><T>x</T><XY><X>{ix * step_m[1]:.6e}</X><Y>{iy * step_m[0]:.6e}</Y></XY></P>"
                fr["Metadata"] = np.bytes_(f"<Frame><K>{axes}</K><Pos>{pos}</Pos></Frame>".encode())
    return path


def write_tvips(folder: Path, frames: np.ndarray, pixel=1.0, name="rec") -> Path:
    """A TVIPS recording ``NAME_000.tvips`` written by rosettasciio's own tvips writer (diffraction mode)."""
    import rsciio.tvips as tvips

    n, ky, kx = frames.shape
    axes = [dict(name="frames", size=n, scale=1, offset=0, units="", navigate=True),
            dict(name="ky", size=ky, scale=pixel, offset=0, units="1/nm", navigate=False),
            dict(name="kx", size=kx, scale=pixel, offset=0, units="1/nm", navigate=False)]
    sig = dict(data=frames, axes=axes, metadata={"General": {"title": name},
                                                 "Signal": {"signal_type": "electron_diffraction"}},
               original_metadata={}, attributes={"_lazy": False})
    p = folder / f"{name}_000.tvips"
    tvips.file_writer(str(p), sig, show_progressbar=False)
    return p
