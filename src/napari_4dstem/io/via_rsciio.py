"""Formats read through rosettasciio: Merlin, Gatan DM, NanoMegas blockfile, EMPAD, Velox/Prismatic EMD,
HyperSpy hspy/zspy. rosettasciio is imported on first use (it is slow to import)."""
from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

import numpy as np

from ..dataset import Calibration
from ..errors import ReaderError
from . import units
from .checks import Raw


class _StderrHandler(logging.StreamHandler):
    """rosettasciio's log lines on the *current* stderr (never stdout: ``info --json`` stays parseable)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _quiet_rsciio() -> None:
    """rosettasciio adds a stdout handler to its logger at import; move its output to stderr, and drop the
    import-time note about numba (a speed hint, not about the file)."""
    import rsciio  # noqa: F401  (creates the logger)

    log = logging.getLogger("rsciio")
    if getattr(log, "_napari_4dstem", False):
        return
    for h in list(log.handlers):
        log.removeHandler(h)
    h = _StderrHandler()
    h.setFormatter(logging.Formatter("rosettasciio %(levelname)s: %(message)s"))
    h.addFilter(lambda r: "numba" not in r.getMessage())
    log.addHandler(h)
    log.propagate = False
    log._napari_4dstem = True


def call_reader(plugin: str, path: Path, **kwargs) -> list[dict]:
    """``rsciio.<plugin>.file_reader(path, lazy=True)``, or eager where the plugin cannot be lazy."""
    _quiet_rsciio()
    mod = importlib.import_module(f"rsciio.{plugin}")
    try:
        return mod.file_reader(str(path), lazy=True, **kwargs)
    except NotImplementedError as e:
        if "lazy" not in str(e).lower():
            raise
        return mod.file_reader(str(path), lazy=False, **kwargs)


# -- axes and metadata -> Calibration -----------------------------------------------------------
def _sorted_axes(d: dict) -> list[dict]:
    axes = list(d.get("axes") or [])
    if axes and all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: int(a["index_in_array"]))
    return axes


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        tree = tree.setdefault(p, {})
    tree[parts[-1]] = value


def full_metadata(d: dict) -> dict:
    """rosettasciio's ``metadata`` completed with its ``mapping`` from ``original_metadata``.

    (HyperSpy applies the mapping when it builds a signal; we have no signal, so we apply it here.)
    """
    md = dict(d.get("metadata") or {})
    om = d.get("original_metadata") or {}
    for src, target in (d.get("mapping") or {}).items():
        value = _get(om, src)
        if value is None or not target:
            continue
        dest, func = (target if isinstance(target, (tuple, list)) else (target, None))[:2]
        try:
            value = func(value) if func is not None else value
        except Exception:  # noqa: BLE001 - a mapping that does not apply is just unknown
            continue
        if _get(md, dest) is None:
            _set(md, dest, value)
    return md


def _positive(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def calibration_from(d: dict) -> Calibration:
    """Scan step from the two last navigation axes, detector pixel from the signal axes,
    energy and convergence angle from the metadata. Unknown stays None. A 3-D stack (frames, det_y, det_x)
    keeps its detector pixel and its beam energy; its scan step is unknown."""
    axes = _sorted_axes(d)
    cal = Calibration()
    if len(axes) >= 4:
        ay, ax = axes[-4:-2]
        (sy, sx), su = units.pair(units.length(ay.get("scale"), ay.get("units")),
                                  units.length(ax.get("scale"), ax.get("units")))
        cal.scan_step, cal.scan_unit = (sy, sx), su
    if len(axes) >= 3:
        qy, qx = axes[-2:]
        (py, px), pu = units.pair(units.reciprocal(qy.get("scale"), qy.get("units")),
                                  units.reciprocal(qx.get("scale"), qx.get("units")))
        cal.detector_pixel, cal.detector_unit = (py, px), pu
        # a non-zero signal offset places q = 0: that is the beam centre in pixels
        if pu is not None and py and px:
            cy, cx = (-float(qy.get("offset") or 0.0) / float(qy["scale"]),
                      -float(qx.get("offset") or 0.0) / float(qx["scale"]))
            if (cy or cx) and 0 <= cy <= int(qy.get("size", 0)) - 1 and 0 <= cx <= int(qx.get("size", 0)) - 1:
                cal.detector_center = (cy, cx)
    md = full_metadata(d)
    tem = _get(md, "Acquisition_instrument.TEM") or {}
    kev = _positive(tem.get("beam_energy"))
    if kev:
        cal.beam_energy_ev = kev * 1000.0
    alpha = _positive(tem.get("convergence_angle"))
    if alpha:
        cal.convergence_semiangle_mrad = alpha
    return cal


def check_axes(d: dict, path: Path, opts: dict | None = None) -> None:
    """Refuse a cube whose last four axes are not (scan, scan, detector, detector): a depth or probe-angle axis
    taken as the scan, or real-space axes taken as the detector, would give a plausible but wrong dataset.
    A 3-D array must be (frames, detector, detector) by its axes' navigate flags. ``force_axes=True`` skips this."""
    if (opts or {}).get("force_axes"):
        return
    axes = _sorted_axes(d)
    hint = ("napari-4dstem reads 4D-STEM cubes (scan_y, scan_x, det_y, det_x); save the data in that axis order, "
            "or pass force_axes=True to read the axes as if they were")
    if len(axes) == 3:
        nav = [a.get("navigate") for a in axes]
        if nav[0] is False or nav[1] is True or nav[2] is True:
            desc = ", ".join(f"{a.get('name') or '?'} [{'navigation' if a.get('navigate') else 'signal'}]"
                             for a in axes)
            raise ReaderError(f"the 3-D array's axes are ({desc}), not (frames, detector, detector)", path=path,
                              hint=hint)
        return
    if len(axes) < 4:
        return
    last = axes[-4:]

    def unit(a):
        return units.length(1.0, a.get("units"))[1], units.reciprocal(1.0, a.get("units"))[1]

    problems = []
    for i, a in enumerate(last):
        length, recip = unit(a)
        nav = a.get("navigate")
        if i < 2 and (recip is not None or nav is False):
            problems.append(f"axis {len(axes) - 4 + i} ({a.get('name')}) is a detector axis")
        if i >= 2 and (length is not None or nav is True):
            problems.append(f"axis {len(axes) - 4 + i} ({a.get('name')}) is not a detector axis")
    if len(axes) == 5 and axes[0].get("navigate") is False:
        problems.append(f"axis 0 ({axes[0].get('name')}) is a detector axis")
    if problems:
        desc = ", ".join(f"{a.get('name') or '?'} [{a.get('units') or '-'}]" for a in axes)
        raise ReaderError(f"the axes are ({desc}), not (scan, scan, detector, detector): {'; '.join(problems)}",
                          path=path, hint=hint)


def pick_signal(dicts: list[dict], path: Path, key=None) -> tuple[dict, list[str]]:
    """The 4-D (or 5-D) signal among those a file holds; ``key`` = index or title."""
    def title(d):
        return str(_get(d.get("metadata") or {}, "General.title") or "")

    desc = ", ".join(f"[{i}] {title(d)!r} {tuple(d['data'].shape)}" for i, d in enumerate(dicts))
    if key is not None:
        for i, d in enumerate(dicts):
            if title(d) == str(key):
                return d, [f"signal [{i}] {title(d)!r}"]
        index = int(key) if (isinstance(key, (int, np.integer)) or str(key).isdigit()) else None
        if index is not None and 0 <= index < len(dicts):  # no title matches: a string of digits is an index
            return dicts[index], [f"signal [{index}] {title(dicts[index])!r}"]
        raise ReaderError(f"no signal {key!r} in the file; signals: {desc}", path=path,
                          hint="pass key= with an index or a title from this list")
    big = [i for i, d in enumerate(dicts) if np.ndim(d["data"]) in (4, 5)]
    if len(big) == 1:
        i = big[0]
    elif len(big) > 1:
        raise ReaderError(f"the file holds {len(big)} 4-D/5-D signals: {desc}", path=path,
                          hint="choose one with key=<index or title>")
    elif len(dicts) == 1:
        i = 0
    else:
        raise ReaderError(f"no 4-D signal in the file; signals: {desc}", path=path,
                          hint="pass key=<index> (and nav_shape= for a 3-D frame stack)")
    return dicts[i], ([f"signal [{i}] {title(dicts[i])!r}"] if len(dicts) > 1 else [])


def read_plugin(plugin: str, path: Path, opts: dict, reader: str | None = None, **kwargs) -> Raw:
    dicts = call_reader(plugin, path, **kwargs)
    d, notes = pick_signal(dicts, path, opts.get("key"))
    check_axes(d, path, opts)
    return Raw(d["data"], reader or plugin, calibration=calibration_from(d), notes=notes,
               metadata={"original_metadata": d.get("original_metadata") or {}})


# -- Prismatic / Velox EMD ----------------------------------------------------------------------
def read_emd(path: Path, opts: dict, flavour: str) -> Raw:
    raw = read_plugin("emd", path, opts, reader=f"emd-{flavour}")
    if flavour == "prismatic":
        # energy and probe angle live in the simulation parameters
        sp = _get(raw.metadata["original_metadata"], "simulation_parameters") or {}
        e0 = _positive(sp.get("E0"))
        if e0 and raw.calibration.beam_energy_ev is None:
            raw.calibration.beam_energy_ev = e0 * 1000.0  # keV
        alpha = _positive(sp.get("probeSemiangle"))
        if alpha and raw.calibration.convergence_semiangle_mrad is None:
            raw.calibration.convergence_semiangle_mrad = alpha
        raw.notes.append("Prismatic labels its lengths '[n_m]'; compare the scan step with its probeStepX="
                         f"{sp.get('probeStepX')} (Prismatic parameters are in Å)")
    return raw


# -- Merlin ------------------------------------------------------------------------------------
_MIB_DTYPES = {"U08": 1, "U16": 2, "U32": 4, "U64": 8}  # 1/6-bit in U08, 12-bit U16, 24-bit U32


def _mib_frame(path: Path) -> tuple[int, int, int, str]:
    """(bytes per frame incl. header, height, width, dtype code) from the first frame header."""
    with open(path, "rb") as fh:
        head = fh.read(384)
    fields = head.decode("ascii", "replace").split(",")
    if len(fields) < 7 or fields[0] != "MQ1":
        raise ReaderError("not a Merlin .mib file (no 'MQ1' frame header)", path=path,
                          hint="check the file; raw-mode (R64) acquisitions are not supported")
    head_size, width, height, code = int(fields[2]), int(fields[4]), int(fields[5]), fields[6].strip()
    if code not in _MIB_DTYPES:
        raise ReaderError(f"unsupported Merlin pixel type {code!r}", path=path,
                          hint="save the acquisition in counting (not raw) mode")
    return head_size + width * height * _MIB_DTYPES[code], height, width, code


def _parse_hdr(path: Path) -> dict:
    out = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _int(v) -> int | None:
    try:
        return int(str(v).split()[0])
    except (TypeError, ValueError, IndexError):
        return None


def nav_from_name(name: str, n_frames: int) -> tuple[int, int] | None:
    """``..._nav4x2_...`` or ``..._4x2_...`` (x by y, as Merlin users write it) -> (scan_y, scan_x)."""
    for pattern in (r"nav(\d+)x(\d+)", r"(?<![A-Za-z\d])(\d+)x(\d+)(?![\d])"):
        for m in re.finditer(pattern, name):
            x, y = int(m.group(1)), int(m.group(2))
            if x * y == n_frames:
                return (y, x)
    return None


def read_merlin(path: Path, opts: dict) -> Raw:
    if path.suffix.lower() == ".hdr":
        mib = path.with_suffix(".mib")
        if not mib.is_file():
            raise ReaderError(f"no {mib.name} beside the header", path=path, hint="open the .mib file")
        path = mib
    from .checks import check_path

    check_path(path)
    frame_bytes, height, width, code = _mib_frame(path)
    size = path.stat().st_size
    n_frames, rest = divmod(size, frame_bytes)
    if path.with_suffix(".hdr").exists():
        check_path(path.with_suffix(".hdr"))  # rosettasciio reads it too: never a FIFO
    hdr = _parse_hdr(path.with_suffix(".hdr"))
    n_hdr = _int(hdr.get("Frames in Acquisition (Number)"))
    nav_opt = opts.get("nav_shape")
    notes = []
    if rest or (n_hdr and n_frames < n_hdr):
        said = f"the header says {n_hdr} frames" if n_hdr else f"{rest} bytes of a frame are left over"
        if nav_opt is None or nav_opt[0] * nav_opt[1] != n_frames:
            raise ReaderError(f"the file is truncated: it holds {n_frames} complete frames and {said}",
                              path=path, hint="copy the file again, or read the complete frames with "
                                              f"nav_shape=(scan_y, scan_x) whose product is {n_frames}")
        notes.append(f"truncated file: read {n_frames} complete frames ({said})")
    if nav_opt is not None:
        if nav_opt[0] * nav_opt[1] != n_frames:
            raise ReaderError(f"nav_shape {tuple(nav_opt)} holds {nav_opt[0] * nav_opt[1]} probe positions but "
                              f"the file has {n_frames} frames", path=path,
                              hint=f"pass a nav_shape whose product is {n_frames}")
        nav, how = tuple(nav_opt), "nav_shape option"
    else:
        sx, sy = _int(hdr.get("ScanX")), _int(hdr.get("ScanY"))
        if sx and sy and sx * sy == n_frames:
            nav, how = (sy, sx), "header ScanX/ScanY"
        else:
            nav, how = nav_from_name(path.stem, n_frames), "file name"
            if nav is None:
                how = "rosettasciio (header triggers / frame time stamps)"
    kwargs = {"navigation_shape": (nav[1], nav[0])} if nav else {}  # rosettasciio wants (x, y)
    d = call_reader("quantumdetector", path, **kwargs)[0]
    data = d["data"]
    # rosettasciio flips detector rows; undo it so pixels keep the file's (and the ROI's) row numbers
    data = data[..., ::-1, :]
    notes.append(f"scan shape from the {how}; {code} frames of {height} x {width} in file order")
    hdr_path = path.with_suffix(".hdr")
    return Raw(data, "merlin", calibration=calibration_from(d), notes=notes,
               metadata={"dwell_time_s": _get(d.get("metadata") or {}, "Acquisition_instrument.dwell_time")},
               files=[path] + ([hdr_path] if hdr_path.is_file() else []), data_file=path)


# -- NanoMegas blockfile ------------------------------------------------------------------------
def read_blockfile(path: Path, opts: dict) -> Raw:
    from rsciio.blockfile._api import get_header_dtype_list

    header = np.fromfile(path, dtype=get_header_dtype_list("<"), count=1)
    if header.size == 0 or bytes(header["ID"][0])[:6] != b"IMGBLO":
        raise ReaderError("not a NanoMegas blockfile (no 'IMGBLO' signature)", path=path,
                          hint="check the file's real format")
    nx, ny, dp = (int(header[k][0]) for k in ("NX", "NY", "DP_SZ"))
    need = int(header["Data_offset_2"][0]) + nx * ny * (dp * dp + 6)
    size = path.stat().st_size
    if size < need:
        raise ReaderError(f"the file is truncated: its header says {ny} x {nx} patterns of {dp} x {dp} "
                          f"({need} bytes) but it has {size} bytes", path=path, hint="copy the file again")
    return read_plugin("blockfile", path, opts, reader="blo")


# -- EMPAD --------------------------------------------------------------------------------------
def read_empad(path: Path, opts: dict) -> Raw:
    if path.suffix.lower() == ".raw":
        xmls = [p for p in path.parent.glob("*.xml")
                if p.is_file() and p.stat().st_size < 2**20 and path.name in p.read_text(errors="replace")]
        if len(xmls) != 1:
            raise ReaderError("an EMPAD .raw file is read through its .xml description, which was not found "
                              "beside it", path=path, hint="open the .xml file of the acquisition")
        path = xmls[0]
    raw_file = _empad_raw(path)
    if raw_file is not None:
        from .checks import check_path

        check_path(raw_file)  # the frames' file: a regular file, readable (not a FIFO)
    raw = read_plugin("empad", path, opts, reader="empad")
    raw.calibration.detector_center = None  # rosettasciio's -64 px offset is its assumption, not the file's
    raw.files = [path] + ([raw_file] if raw_file is not None else [])
    raw.data_file = raw_file or path
    return raw


def _empad_raw(xml: Path) -> Path | None:
    """The .raw file an EMPAD .xml names (``<raw_file filename="...">``)."""
    import xml.etree.ElementTree as ET

    try:
        node = ET.parse(xml).getroot().find(".//raw_file")
    except (ET.ParseError, OSError):
        return None
    name = node.get("filename") if node is not None else None
    if not name or Path(name).name != name:  # a bare name beside the .xml, nothing else
        return None
    return xml.parent / name


# -- Direct Electron MRC (4-D scans with their *_info.txt) --------------------------------------
def read_de_mrc(path: Path, opts: dict) -> Raw:
    """A DE movie ``YYYYMMDD_N[_suffix]_movie.mrc``: rosettasciio reads the scan shape and axes from the
    ``YYYYMMDD_N_info.txt`` beside it (4-D, lazy). Any other MRC is a 3-D stack of frames (needs ``nav_shape``)."""
    _quiet_rsciio()
    from rsciio.mrc._api import find_related_de_files

    info = find_related_de_files(str(path)) if "movie" in path.name else {}
    info_file = info.get("info_file")
    if info_file is not None:
        from .checks import check_path

        check_path(Path(info_file))
    raw = read_plugin("mrc", path, opts, reader="de-mrc" if info_file else "mrc",
                      metadata_file=info_file if info_file else None, virtual_images=[], external_images=[],
                      scan_file=info.get("scan_csv"))
    raw.files = [path] + ([Path(info_file)] if info_file else []) + (
        [Path(info["scan_csv"])] if info.get("scan_csv") else [])
    raw.data_file = path
    raw.notes.append(f"scan shape and axes from {Path(info_file).name}" if info_file else
                     "no DE *_info.txt beside the file: read as a stack of frames")
    de = (raw.metadata.get("original_metadata") or {}).get("de_metadata") or {}
    said = {k: de.get(k) for k in ("Specimen Pixel Size X (nanometers)", "Diffraction Pixel Size X") if k in de}
    if said:  # rosettasciio 0.15 sets every DE axis scale to 1; show what the file says
        raw.notes.append("calibration as rosettasciio reports it; the info file says "
                         + ", ".join(f"{k} = {v}" for k, v in said.items()))
    return raw


# -- NanoMegas TopSpin .app5 -------------------------------------------------------------------
def _topspin_groups(f) -> list:
    """The 4D-STEM groups of a TopSpin file, where rosettasciio's reader looks for them: GUID-named groups at
    the root (single experiment) or one level down (sessions), holding one numbered group per probe position."""
    import h5py

    def guid(name):
        return [len(x) for x in name.split("-")] == [8, 4, 4, 4, 12]

    parents = [f] if "Metadata" in f else [f[k] for k in f if guid(k) and isinstance(f[k], h5py.Group)]
    out = []
    for parent in parents:
        for k in parent:
            g = parent[k]
            if guid(k) and isinstance(g, h5py.Group) and "0" in g and isinstance(g["0"].get("Data"), h5py.Dataset):
                out.append(g)
    return out


def _topspin_lazy(path: Path, opts: dict) -> Raw | None:
    """One 4D-STEM group whose frames lie at a constant stride in the file: a lazy strided memmap, with the
    axes from rosettasciio's own topspin axis parser. None when that does not apply (rosettasciio reads it)."""
    import h5py
    from rsciio.topspin._api import _get_4D_axes

    with h5py.File(path, "r") as f:
        groups = _topspin_groups(f)
        if len(groups) != 1 or opts.get("key") is not None:
            return None
        g = groups[0]
        n = len(g)
        first = g["0"]["Data"]
        if first.chunks is not None or first.compression is not None:
            return None
        offsets = [g[str(i)]["Data"].id.get_offset() if str(i) in g else None for i in range(n)]
        if any(o is None for o in offsets):
            return None  # a frame never written, or numbered otherwise: rosettasciio's reader says what it finds
        offsets = np.asarray(offsets, dtype=np.int64)
        dtype, frame_shape = first.dtype, tuple(first.shape)
        axes = _get_4D_axes(g)
    sy, sx = int(axes[0]["size"]), int(axes[1]["size"])
    if sy * sx != n or len(frame_shape) != 2:
        return None
    frame_bytes = int(np.prod(frame_shape)) * dtype.itemsize
    if int(offsets.max()) + frame_bytes > path.stat().st_size:
        raise ReaderError("the file is truncated: a frame lies beyond its end", path=path, hint="copy the file again")
    data = OffsetFrames(path, offsets.reshape(sy, sx), frame_shape, dtype)
    d = {"axes": axes, "metadata": {}}
    return Raw(data, "topspin", calibration=calibration_from(d),
               notes=["frames memory-mapped at their offsets (one dataset per probe position)"])


class OffsetFrames:
    """Frames stored one by one at known byte offsets of a file (TopSpin: one HDF5 dataset per probe position),
    as a lazy 4-D array: indexing reads only the frames asked for, from a read-only memory map."""

    def __init__(self, path: Path, offsets: np.ndarray, frame_shape: tuple, dtype):
        self._mm = np.memmap(path, dtype=np.uint8, mode="r")
        self._off = np.asarray(offsets, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(self._off.shape) + tuple(int(v) for v in frame_shape)
        self.ndim = 4

    def _frame(self, offset) -> np.ndarray:
        return np.ndarray(self.shape[2:], dtype=self.dtype, buffer=self._mm, offset=int(offset))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (4 - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (4 - len(key))
        offs = self._off[key[0], key[1]]
        if np.ndim(offs) == 0:
            return np.array(self._frame(offs)[key[2], key[3]])
        out = np.empty(offs.shape + self.shape[2:], dtype=self.dtype)
        for idx in np.ndindex(offs.shape):
            out[idx] = self._frame(offs[idx])
        return out[(Ellipsis, key[2], key[3])]

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def read_topspin(path: Path, opts: dict) -> Raw:
    """TopSpin 4D-STEM data lazily (frames memory-mapped at their constant stride, axes from rosettasciio's
    topspin parser); otherwise rosettasciio's topspin reader, which is not lazy (it reads the frames into memory;
    refused beyond half the free memory). ``key`` picks a signal (index or title) when the file holds several."""
    from ..dataset import available_memory

    _quiet_rsciio()
    raw = _topspin_lazy(path, opts)
    if raw is not None:
        return raw

    size = path.stat().st_size
    if size > 0.5 * available_memory():
        raise ReaderError(f"rosettasciio reads TopSpin files into memory, and this one ({size / 2**30:.1f} GiB) is "
                          "larger than half the free memory", path=path,
                          hint="export the 4D-STEM dataset from TopSpin to HDF5 (or read it on a larger machine)")
    _quiet_rsciio()
    mod = importlib.import_module("rsciio.topspin")
    dicts = mod.file_reader(str(path), lazy=False, show_progressbar=False)
    if not dicts:
        raise ReaderError("no dataset in the TopSpin file", path=path, hint="check the export from TopSpin")
    d, notes = pick_signal(dicts, path, opts.get("key"))
    check_axes(d, path, opts)
    return Raw(d["data"], "topspin", calibration=calibration_from(d), notes=notes + ["read into memory"],
               metadata={"original_metadata": d.get("original_metadata") or {}})


# -- TVIPS -------------------------------------------------------------------------------------
def read_tvips(path: Path, opts: dict) -> Raw:
    """TVIPS stream files ``NAME_000.tvips`` (+ ``_001`` ...), lazily. The file does not store the scan shape:
    ``nav_shape=(scan_y, scan_x)`` gives it (else rosettasciio's guess from the frames' scan indices is tried)."""
    if not path.name.lower().endswith("_000.tvips"):
        raise ReaderError("a TVIPS recording is opened by its first file, NAME_000.tvips", path=path,
                          hint="open the file ending in _000.tvips")
    nav = opts.get("nav_shape")
    notes = []
    parts = sorted(path.parent.glob(path.name[:-9] + "[0-9][0-9][0-9]" + path.suffix))
    from .checks import check_path

    for part in parts:
        check_path(part)  # every file rosettasciio will open: regular files only
    if nav is not None:
        dicts = call_reader("tvips", path, scan_shape=tuple(int(n) for n in nav))
        notes.append("scan shape from the nav_shape option")
    else:
        try:
            dicts = call_reader("tvips", path, scan_shape="auto")
            notes.append("scan shape reconstructed by rosettasciio from the frames' scan indices")
        except Exception:  # noqa: BLE001 - no scan indices: a stack that needs nav_shape
            dicts = call_reader("tvips", path)
    d, more = pick_signal(dicts, path, opts.get("key"))
    check_axes(d, path, opts)
    return Raw(d["data"], "tvips", calibration=calibration_from(d), notes=notes + more,
               metadata={"original_metadata": d.get("original_metadata") or {}}, files=parts or [path],
               data_file=path)
