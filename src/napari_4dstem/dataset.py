"""The 4D-STEM data model: a lazy 4-D array with calibration and provenance.

Axes are always ``(scan_y, scan_x, det_y, det_x)`` (docs/conventions.md). The array stays where it
is (numpy memmap, h5py dataset, zarr or dask array); only the blocks an operation asks for are read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError, FourDSTEMError

#: Default size of one block read from the source (bytes of the source dtype).
DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass
class Calibration:
    """What is known about the geometry. ``None`` means unknown: never invented.

    Pairs are ``(y, x)``. ``detector_center`` is in detector pixels, pixel-centre convention
    (the centre of an N-pixel axis with nothing known is ``(N - 1) / 2``).
    """

    scan_step: tuple[float | None, float | None] = (None, None)
    scan_unit: str | None = None  # e.g. "Å", "nm"
    detector_pixel: tuple[float | None, float | None] = (None, None)
    detector_unit: str | None = None  # "mrad" or "1/Å"
    beam_energy_ev: float | None = None
    convergence_semiangle_mrad: float | None = None
    detector_center: tuple[float, float] | None = None
    scan_rotation_deg: float | None = None  # scan-detector rotation, when a file records it
    flip: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    def replace(self, **changes) -> Calibration:
        return dataclasses.replace(self, **changes)

    def scan_scale(self) -> tuple[float, float]:
        """Scan step for display (1 where unknown)."""
        return tuple(float(s) if s else 1.0 for s in self.scan_step)  # type: ignore[return-value]

    def detector_scale(self) -> tuple[float, float]:
        return tuple(float(s) if s else 1.0 for s in self.detector_pixel)  # type: ignore[return-value]


@dataclass
class Provenance:
    """Where the data came from, as read (before any preprocessing)."""

    source_path: str | None = None
    reader: str = "array"
    original_dtype: str = ""
    original_shape: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # -- harden: every file the reader read, and the one that holds the frames (hashed in results) --
    files: list[str] = field(default_factory=list)
    data_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["original_shape"] = list(self.original_shape)
        return d


class Dataset4D:
    """A lazy 4D-STEM dataset.

    Parameters
    ----------
    data
        Any array-like with ``shape``, ``dtype`` and numpy-style slicing: numpy array or memmap,
        h5py dataset, zarr array, dask array. It is never copied or cast as a whole.
    calibration, provenance, name
        Metadata; see :class:`Calibration` and :class:`Provenance`.
    """

    def __init__(self, data, calibration: Calibration | None = None, provenance: Provenance | None = None,
                 name: str | None = None, metadata: dict | None = None, _keepalive: Any = None):
        shape = tuple(int(s) for s in getattr(data, "shape", ()))
        if len(shape) != 4:
            raise DataError(
                f"a 4D-STEM dataset needs 4 axes (scan_y, scan_x, det_y, det_x), got shape {shape}",
                path=provenance.source_path if provenance else None,
                hint="reshape the array, or pass nav_shape=(scan_y, scan_x) to load()",
            )
        if min(shape) < 1:
            raise DataError(f"the dataset is empty (shape {shape})",
                            path=provenance.source_path if provenance else None)
        self.data = data
        self.calibration = calibration or Calibration()
        self.provenance = provenance or Provenance(original_dtype=str(np.dtype(data.dtype)), original_shape=shape)
        self.name = name or "dataset"
        self.metadata = metadata or {}
        self._keepalive = _keepalive  # open file handles that must live as long as the array

    # -- shape -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.shape[:2]  # type: ignore[return-value]

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.shape[2:]  # type: ignore[return-value]

    @property
    def n_frames(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def detector_center(self) -> tuple[float, float]:
        """The calibrated centre, or the geometric one ((N - 1) / 2) when unknown."""
        if self.calibration.detector_center is not None:
            return tuple(float(c) for c in self.calibration.detector_center)  # type: ignore[return-value]
        return ((self.shape[2] - 1) / 2.0, (self.shape[3] - 1) / 2.0)

    def __repr__(self) -> str:
        gib = self.nbytes / 2**30
        return (f"Dataset4D({self.name!r}, shape={self.shape}, dtype={self.dtype}, {gib:.3g} GiB, "
                f"reader={self.provenance.reader!r})")

    # -- reading -------------------------------------------------------------------------------
    def frame(self, iy: int, ix: int) -> np.ndarray:
        """One diffraction pattern as a numpy array (source dtype)."""
        sy, sx = self.scan_shape
        if not (0 <= iy < sy and 0 <= ix < sx):
            raise DataError(f"scan position ({iy}, {ix}) is outside the scan {self.scan_shape}",
                            path=self.provenance.source_path)
        with _read_errors(self, iy, iy + 1):
            return _to_numpy(self.data[iy, ix])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Scan rows ``start:stop`` as a numpy array (source dtype)."""
        with _read_errors(self, start, stop):
            return _to_numpy(self.data[start:stop])

    def rows_per_block(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        row_bytes = self.shape[1] * self.shape[2] * self.shape[3] * self.dtype.itemsize
        return max(1, min(self.shape[0], block_bytes // max(row_bytes, 1)))

    def iter_blocks(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(row_slice, block)`` over scan rows; each block is at most ~``block_bytes``."""
        n = self.rows_per_block(block_bytes)
        for y0 in range(0, self.shape[0], n):
            y1 = min(self.shape[0], y0 + n)
            yield slice(y0, y1), self.rows(y0, y1)

    def n_blocks(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        return math.ceil(self.shape[0] / self.rows_per_block(block_bytes))

    def to_dask(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        """The data as a dask array chunked by scan rows (for dask.distributed or out-of-core maths)."""
        import dask.array as da

        if isinstance(self.data, da.Array):
            return self.data
        rows = self.rows_per_block(block_bytes)
        return da.from_array(self.data, chunks=(rows, -1, -1, -1), lock=_needs_lock(self.data), asarray=True)

    def fits_in_memory(self, itemsize: int = 4, fraction: float = 0.5) -> bool:
        """Whether a copy with ``itemsize`` bytes per value fits in ``fraction`` of available RAM."""
        return self.n_frames * self.shape[2] * self.shape[3] * itemsize <= fraction * available_memory()

    def with_data(self, data, name: str | None = None, note: str | None = None, **cal_changes) -> Dataset4D:
        """A new dataset over other data (a crop, a binned copy) keeping the provenance."""
        prov = dataclasses.replace(self.provenance, notes=list(self.provenance.notes) + ([note] if note else []))
        cal = self.calibration.replace(**cal_changes) if cal_changes else self.calibration
        return Dataset4D(data, cal, prov, name or self.name, dict(self.metadata), _keepalive=self._keepalive)

    def close(self) -> None:
        for h in _as_list(self._keepalive):
            close = getattr(h, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass


def as_dataset(data, name: str | None = None) -> Dataset4D:
    """Wrap a plain 4-D array (or return a Dataset4D unchanged)."""
    if isinstance(data, Dataset4D):
        return data
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    return Dataset4D(data, name=name or "array")


def available_memory() -> int:
    """Bytes of RAM available now (Linux /proc/meminfo; 8 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


# -- harden: a damaged block becomes an error naming the file and the scan rows ----------------------
@contextlib.contextmanager
def _read_errors(ds: Dataset4D, start: int, stop: int):
    try:
        yield
    except (FourDSTEMError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - h5py/zarr/numcodecs/dask errors on a damaged block
        from .errors import ReaderError

        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        rows = f"scan row {start}" if stop - start <= 1 else f"scan rows {start}-{stop - 1}"
        raise ReaderError(f"could not read {rows} ({type(e).__name__}: {msg[:200]})",
                          path=ds.provenance.data_file or ds.provenance.source_path,
                          hint="this part of the file is damaged or missing: copy the file again") from e


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "compute"):
        a = a.compute()
    return np.asarray(a)


def _needs_lock(data) -> bool:
    # h5py is not thread safe; numpy/zarr reads are.
    return type(data).__module__.startswith("h5py")


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
