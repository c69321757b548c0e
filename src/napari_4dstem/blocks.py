"""Block kernels: the per-frame linear maps of every reduction, computed from one read of a block.

Every linear per-frame map (navigator, virtual detectors, COM sums, Zernike moments...) is a weighted
sum ``sum_ij I[i, j] w_k[i, j]``. :class:`LinearPlan` splits the stacked weight maps into the parts
that cost least to evaluate:

* additive-separable maps ``w = a(i) + b(j)`` (the frame total, COM's ``i - cy`` and ``j - cx``, dark-field
  row bands, the second moment) come from the per-frame detector row sums and column sums;
* two-valued maps (virtual detector masks) from the row sums plus one masked sum of the mask or of its
  complement, whichever spans fewer rows (an ADF ring to the edge is the total minus a disc);
* anything else from a matrix product ``(frames, H*W) @ (H*W, k)``.

For unsigned 8/16-bit data (counting detectors) the row, column and masked sums are integer sums made by
one compiled sweep over each frame (numba, :mod:`._kernels`), exact by construction, and combined in
float64 in the same kernel. A mask made of few column runs (discs, rings) costs no extra pass: its sum is
read off the running column sums at the rows where its runs start and end (:func:`mask_events`); other
masks are summed over their band of rows (docs/analysis.md, "Bandwidth"). Other types are cast piece by piece
(float32 data stay float32, integers go to float64 so that sums stay exact). The executor
(:mod:`napari_4dstem.executor`) drives these kernels over the data.
"""
from __future__ import annotations

import functools
import math
import os
import queue
import threading

import numpy as np

from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D
from .errors import DataError
from .progress import Steps

#: Bytes of source data read per block by the reductions (one progress step each).
MATMUL_BLOCK_BYTES = 16 * 2**20
#: Bytes of one piece of a block cast and multiplied at a time on the generic path (fits in L2 cache).
PIECE_BYTES = 512 * 2**10
#: Threads sharing the frames in the compiled kernel (it releases the GIL): one core's kernel takes
#: about 1.3x the CPU time of a plain sum over page-cached bytes (docs/analysis.md, "Bandwidth");
#: ``NAPARI_4DSTEM_THREADS`` overrides.
KERNEL_THREADS = max(1, min(2, os.cpu_count() or 1))
#: Bytes of frames one kernel call takes: big enough that the ~6 us call costs little, small enough that
#: a thread slowed by another process holds back little work.
CHUNK_BYTES = 2 * 2**20


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type a block is multiplied in on the generic path.

    float32 data stay float32 (fast; per-frame sums in float32 have ~1e-7 relative error). Integer
    and float64 data use float64 so that integer sums are exact (no overflow of uint8/uint16).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32 or dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise DataError(f"cannot compute with data of type {dtype}", hint="convert the data to a real number type")


def fast_dtype(dtype) -> bool:
    """Whether the compiled integer kernel handles this data type (unsigned, at most 16 bits)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "bu" and dtype.itemsize <= 2 and _kernels() is not None


# -- compiled kernels -------------------------------------------------------------------------------
_KERNELS: dict = {}


def _kernels():
    """The numba kernels of :mod:`._kernels` (compiled on first use, cached on disk), or None without numba."""
    if "k" not in _KERNELS:
        try:
            from . import _kernels as k
        except ImportError:  # pragma: no cover - numba is a dependency
            k = None
        _KERNELS["k"] = None if k is None else {"frame_maps": k.frame_maps, "sum_frames": k.sum_frames,
                                                "bin_frames": k.bin_frames}
    return _KERNELS["k"]


def threads() -> int:
    """Threads for the compiled kernel: ``NAPARI_4DSTEM_THREADS``, else :data:`KERNEL_THREADS`, or one
    while other work keeps every core busy (1-minute load average above the cores + 1): there a second
    thread adds no CPU share and the maps pass ran 12-17 % slower with it (docs/analysis.md, "Bandwidth")."""
    env = os.environ.get("NAPARI_4DSTEM_THREADS")
    if env is not None:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1) + 1
    except (OSError, AttributeError):  # not on every platform
        busy = False
    return 1 if busy else KERNEL_THREADS


class Batch:
    """The chunks of one block's kernel work: ``done()``, ``wait()`` (re-raises a chunk's error)."""

    def __init__(self, n_jobs: int):
        self._left = n_jobs
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None
        if n_jobs == 0:
            self._done.set()

    def run(self, fn, a: int, b: int) -> None:
        try:
            fn(a, b)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self._error = e
        finally:
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, check: bool = True) -> None:
        _help()  # run queued chunks (of this block or another) rather than sleep
        self._done.wait()
        if check and self._error is not None:
            raise self._error


_DONE = Batch(0)  # work done in the calling thread

# Kernel chunks wait in one queue; threads() - 1 daemon workers and the thread that queued them take
# them in turn (the kernel releases the GIL).
_QUEUE: queue.SimpleQueue = queue.SimpleQueue()
_WORKERS: list = []
_START = threading.Lock()


def _worker() -> None:
    while True:
        _QUEUE.get()()


def _help() -> None:
    while True:
        try:
            job = _QUEUE.get_nowait()
        except queue.Empty:
            return
        job()


def in_chunks(fn, n: int, frame_bytes: int) -> Batch:
    """``fn(a, b)`` over frames ``0:n`` in chunks of about :data:`CHUNK_BYTES`, on :func:`threads` threads.

    The calling thread takes chunks too until none is left, then returns without waiting for those
    still running elsewhere: it can read the next block meanwhile (no barrier per block, so a thread
    slowed by another process costs at most the chunk it holds). ``Batch.wait()`` before using results.
    """
    t = threads()
    step = max(1, CHUNK_BYTES // max(frame_bytes, 1))
    n_chunks = -(-n // step)
    if t == 1 or n_chunks < 2:
        fn(0, n)
        return _DONE
    with _START:
        while len(_WORKERS) < t - 1:
            th = threading.Thread(target=_worker, name="napari-4dstem-kernel", daemon=True)
            th.start()
            _WORKERS.append(th)
    batch = Batch(n_chunks)
    for c in range(n_chunks):
        _QUEUE.put(functools.partial(batch.run, fn, c * step, min(n, (c + 1) * step)))
    _help()
    return batch


# -- the linear plan --------------------------------------------------------------------------------
def _bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    ii = np.nonzero(m.any(axis=1))[0]
    jj = np.nonzero(m.any(axis=0))[0]
    if not len(ii):
        return 0, 0, 0, 0
    return int(ii[0]), int(ii[-1]) + 1, int(jj[0]), int(jj[-1]) + 1


def _cost(box, fast: bool) -> int:
    """Pixels a masked sum over ``box`` reads: the kernel reads whole rows (one contiguous loop)."""
    return (box[1] - box[0]) * (1 if fast else box[3] - box[2])


def _distinct(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (L, k) as ``u.T @ m``: u (r, L) its distinct non-zero columns up to a factor (COM's
    ``j - cx`` has the row part ``-cx``, a multiple of the total's ones), m (r, k) the factors."""
    cols: list[np.ndarray] = []
    where = []
    for o in range(w.shape[1]):
        v = w[:, o]
        nz = np.flatnonzero(v)
        if not len(nz):
            continue
        for r, u in enumerate(cols):
            c = v[nz[0]] / u[nz[0]] if u[nz[0]] else 0.0
            if c and np.array_equal(v, c * u):
                where.append((r, o, c))
                break
        else:
            where.append((len(cols), o, 1.0))
            cols.append(v)
    m = np.zeros((len(cols), w.shape[1]))
    for r, o, c in where:
        m[r, o] = c
    return np.array(cols, dtype=np.float64).reshape(len(cols), w.shape[0]), m


#: A mask goes through the column-sum events when it has at most one event per this many pixels of its
#: band (an event costs about as much as 10-20 masked pixels; discs and rings have a few per column).
EVENT_PIXELS = 16


def _n_events(m: np.ndarray) -> int:
    """Events of a mask's column runs: a start below row 0 and an end per run."""
    d = np.diff(m.astype(np.int8), axis=0, prepend=0, append=0)
    return int((d[1:] == 1).sum() + (d == -1).sum())


def mask_events(masks: np.ndarray) -> tuple:
    """The column-run events of boolean masks (nm, H, W) for ``_kernels.frame_maps``.

    A run of rows a:b in column j of mask m adds ``C_b(j) - C_a(j)`` (C_i: sums of rows < i; C_0 = 0
    needs no event). Returns ``(est, ej, epos, ranges)``: events in the kernel's order of steps (a
    four-row group for b below the last multiple of 4, then one step per row, then the end) and of q,
    the rows of the group to add to the column sums: est[4 s + q]:est[4 s + q + 1] those of step s with
    q; ej their column; epos where the kernel stores the value; ``ranges[m]`` = (start, mid, end): mask
    m's sum is ``vals[mid:end].sum() - vals[start:mid].sum()`` (independent stores, no chain of
    additions).
    """
    nm, h = masks.shape[0], masks.shape[1]
    bs, js = [], []
    ranges = np.zeros((nm, 3), np.int64)
    n = 0
    for m in range(nm):
        d = np.diff(masks[m].astype(np.int8), axis=0, prepend=0, append=0)  # (h + 1, w)
        ia, ja = np.nonzero(d == 1)  # a run starts at row ia
        ib, jb = np.nonzero(d == -1)  # ... and ends before row ib
        keep = ia > 0
        bs += [ia[keep], ib]
        js += [ja[keep], jb]
        ranges[m] = n, n + int(keep.sum()), n + int(keep.sum()) + len(ib)
        n = int(ranges[m, 2])
    b = np.concatenate(bs).astype(np.int64) if bs else np.zeros(0, np.int64)
    j = np.concatenate(js).astype(np.int64) if js else np.zeros(0, np.int64)
    h4 = h // 4 * 4
    step = np.where(b < h4, b // 4, h4 // 4 + (b - h4))
    q = np.where(b < h4, b % 4, 0)
    key = 4 * step + q
    o = np.lexsort((j, key))
    n_steps = h4 // 4 + (h - h4) + 1
    est = np.searchsorted(key[o], np.arange(4 * n_steps + 1)).astype(np.int64)
    return est, j[o], o.astype(np.int64), ranges


class LinearPlan:
    """``(frames, H, W) -> (frames, k)`` float64 weighted sums for ``k`` stacked weight maps.

    Built once (on the client) from the weights and the data type, applied to every block (on any worker).
    ``kinds`` says how each map is evaluated: ``"separable"``, ``"mask"`` or ``"dense"``.
    """

    def __init__(self, weights: np.ndarray, dtype):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 2:
            w = w[None]
        k, h, wd = w.shape
        self.k, self.shape = k, (h, wd)
        self.dtype = np.dtype(dtype)
        self.fast = fast_dtype(self.dtype) and max(h, wd) <= 65536  # uint32 row / column sums
        self.ct = np.float64 if self.fast else compute_dtype(self.dtype)
        self.row_w = np.zeros((h, k))  # map k gets row_w[:, k] . row sums
        self.col_w = np.zeros((wd, k))  # ... + col_w[:, k] . column sums
        masks, boxes, mask_coef = [], [], []
        dense = []
        self.kinds = []
        for o in range(k):
            wo = w[o]
            a, b = wo[:, 0].copy(), wo[0, :] - wo[0, 0]
            tol = 1e-12 * max(float(np.abs(wo).max()), 1e-300)
            if np.allclose(wo, a[:, None] + b[None, :], rtol=0, atol=tol):
                self.row_w[:, o] = a
                self.col_w[:, o] = b
                self.kinds.append("separable")
                continue
            vals = np.unique(wo)
            if len(vals) == 2:
                v0, v1 = float(vals[0]), float(vals[1])
                m1 = wo == v1
                b1, b0 = _bbox(m1), _bbox(~m1)
                # the cheaper one: v0 + (v1 - v0) m1  or  v1 - (v1 - v0) m0 (exact sums only: a
                # float total minus a disc would lose the digits of a faint ring)
                if _cost(b1, self.fast) <= _cost(b0, self.fast) or not self.fast:
                    base, coef, m, box = v0, v1 - v0, m1, b1
                else:
                    base, coef, m, box = v1, v0 - v1, ~m1, b0
                self.row_w[:, o] = base
                masks.append(m)
                boxes.append(box)
                mask_coef.append((o, coef))
                self.kinds.append("mask")
                continue
            dense.append(o)
            self.kinds.append("dense")
        self.want_cols = bool(np.any(self.col_w))
        self.want_rows = bool(np.any(self.row_w))
        self.masks = np.array(masks, dtype=bool).reshape(len(masks), h, wd)
        self.boxes = np.array(boxes, dtype=np.int64).reshape(len(masks), 4)
        self.mask_w = np.zeros((len(masks), k))
        for m, (o, coef) in enumerate(mask_coef):
            self.mask_w[m, o] = coef
        self.dense_idx = dense
        self.dense_w = np.ascontiguousarray(w[dense].reshape(len(dense), h * wd).T, dtype=self.ct)  # (H*W, kd)
        if self.fast:
            # the kernel's operands: distinct non-zero row / column weight vectors and where each goes;
            # masks with few column runs (discs, rings) as events on the column sums, the others in the
            # data's type (0 or all ones) over their bands of rows
            self.row_u, self.row_map = _distinct(self.row_w)
            self.col_u, self.col_map = _distinct(self.col_w)
            runs = [m for m in range(len(masks)) if _n_events(self.masks[m]) * EVENT_PIXELS
                    <= (self.boxes[m, 1] - self.boxes[m, 0]) * wd]
            flat = [m for m in range(len(masks)) if m not in runs]
            self.events = mask_events(self.masks[runs])
            self.n_run = len(runs)
            kt = np.dtype(np.uint8) if self.dtype.kind == "b" else self.dtype
            self.kernel_masks = np.where(self.masks[flat], kt.type(np.iinfo(kt).max), kt.type(0)).astype(kt).reshape(
                len(flat), h * wd)
            self.bands = np.ascontiguousarray(self.boxes[flat, :2])
            self.kernel_mask_w = np.ascontiguousarray(self.mask_w[runs + flat])
        else:
            self.mask_dense = np.ascontiguousarray(self.masks.reshape(len(masks), h * wd).T, dtype=self.ct)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Weighted sums of ``frames`` (n, H, W) in the source type: (n, k) float64."""
        if not self.dense_idx:
            return self._sums(frames)
        with _one_blas_thread():  # small GEMMs on several BLAS threads stall when a core is busy
            return self._sums(frames)

    @property
    def runs_async(self) -> bool:
        """Whether :meth:`submit` can return before the sums are done (the compiled kernel alone)."""
        return self.fast and not self.dense_idx

    def submit(self, frames: np.ndarray, out: np.ndarray) -> Batch:
        """Start the compiled kernel on ``frames`` into ``out`` (n, k) float64 rows; wait on the Batch."""
        x = frames if frames.flags.c_contiguous else np.ascontiguousarray(frames)
        if x.dtype.kind == "b":
            x = x.view(np.uint8)
        kern = _kernels()["frame_maps"]
        args = (*self.events, self.kernel_masks, self.bands, self.row_u, self.row_map,
                self.col_u, self.col_map, self.kernel_mask_w)
        return in_chunks(lambda a, b: kern(x[a:b], *args, out[a:b]), x.shape[0], x[0].nbytes)

    def _sums(self, frames: np.ndarray) -> np.ndarray:
        n = frames.shape[0]
        h, wd = self.shape
        out = np.zeros((n, self.k))
        if n == 0:
            return out
        if self.fast:
            self.submit(frames, out).wait()
            if self.dense_idx:
                out[:, self.dense_idx] = self._dense(frames)
            return out
        # generic path: cast a piece at a time (never the whole block)
        ct = np.dtype(self.ct)
        npix = h * wd
        step = max(1, PIECE_BYTES // (npix * ct.itemsize))
        flat = frames.reshape(n, npix)
        buf = np.empty((min(step, n), npix), ct)
        for a in range(0, n, step):
            m = min(n, a + step) - a
            piece = buf[:m]
            np.copyto(piece, flat[a:a + m], casting="unsafe")
            p3 = piece.reshape(m, h, wd)
            res = p3.sum(axis=2, dtype=np.float64) @ self.row_w if self.want_rows else np.zeros((m, self.k))
            if self.want_cols:
                res += p3.sum(axis=1, dtype=np.float64) @ self.col_w
            if len(self.masks):
                res += (piece @ self.mask_dense).astype(np.float64) @ self.mask_w
            if self.dense_idx:
                res[:, self.dense_idx] = piece @ self.dense_w
            out[a:a + m] = res
        return out

    def _dense(self, frames: np.ndarray) -> np.ndarray:
        n = frames.shape[0]
        npix = self.shape[0] * self.shape[1]
        flat = frames.reshape(n, npix)
        step = max(1, PIECE_BYTES // (npix * 8))
        res = np.empty((n, len(self.dense_idx)))
        buf = np.empty((min(step, n), npix))
        for a in range(0, n, step):
            m = min(n, a + step) - a
            np.copyto(buf[:m], flat[a:a + m], casting="unsafe")
            res[a:a + m] = buf[:m] @ self.dense_w
        return res


def _one_blas_thread():
    """Limit BLAS to one thread for a block (threadpoolctl, ~20 us), or a no-op without threadpoolctl.

    Measured on the Zernike moments (28 dense maps, zernike branch): one thread per GEMM was 2.3x faster
    than OpenBLAS's two on a loaded 2-core machine."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER = None


def sum_frames(frames: np.ndarray, acc: np.ndarray) -> None:
    """``acc += frames.sum(axis=0)``: uint64 accumulator for unsigned data (exact), float64 otherwise."""
    if acc.dtype == np.uint64 and fast_dtype(frames.dtype):
        x = frames if frames.flags.c_contiguous else np.ascontiguousarray(frames)
        _kernels()["sum_frames"](x, acc)
    else:
        acc += frames.sum(axis=0, dtype=acc.dtype)


def bin_frames(frames: np.ndarray, factor: int, start: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Sum ``factor x factor`` pixels of ``frames`` (n, H, W) from ``start`` into ``shape``: (n, bh, bw) float32."""
    n = frames.shape[0]
    bh, bw = shape
    y0, x0 = start
    if fast_dtype(frames.dtype):
        out = np.empty((n, bh, bw), np.float32)
        x = frames if frames.flags.c_contiguous else np.ascontiguousarray(frames)
        _kernels()["bin_frames"](x, int(factor), int(y0), int(x0), out)
        return out
    x = frames[:, y0:y0 + bh * factor, x0:x0 + bw * factor].reshape(n, bh, factor, bw, factor)
    acc = np.float64 if frames.dtype.itemsize > 4 or frames.dtype.kind != "f" else np.float32
    return x.sum(axis=(2, 4), dtype=acc).astype(np.float32, copy=False)


# -- public wrappers ----------------------------------------------------------------------------------
def iter_weighted_sums(ds: Dataset4D, weights: np.ndarray, block_bytes: int | None = None,
                       message: str = "reducing", check_negative: bool = False) -> Steps[np.ndarray]:
    """Per-frame weighted sums ``sum_ij I[i, j] * w_k[i, j]`` for k weight maps, block by block.

    Parameters
    ----------
    ds
        The dataset.
    weights
        ``(k, det_y, det_x)`` weight maps (or ``(det_y, det_x)`` for one).
    block_bytes
        Bytes of source data read per block (default :data:`MATMUL_BLOCK_BYTES`).
    check_negative
        Raise :class:`DataError` on negative intensities (checked on the first piece value by value
        and on every frame through its total; unsigned data are never negative).

    Returns
    -------
    ``(scan_y, scan_x, k)`` float64 array (via ``StopIteration.value``).
    """
    from .executor import Linear, iter_run

    res = yield from iter_run(ds, [Linear(weights)], block_bytes=block_bytes, message=message,
                              check_negative=check_negative)
    return res[0]


def negative_error(ds: Dataset4D):
    return DataError("the data hold negative intensities; centre of mass needs non-negative counts",
                     path=ds.provenance.source_path,
                     hint="use raw or binned counts, not mean-subtracted or PCA output "
                          "(or clip them: np.clip(data, 0, None))")


def iter_mean_pattern(ds: Dataset4D, block_bytes: int = DEFAULT_BLOCK_BYTES,
                      with_max: bool = False, message: str = "mean pattern") -> Steps:
    """Mean (and optionally max) diffraction pattern over all frames, float64, block by block."""
    from .executor import MeanPattern, iter_run

    (res,) = yield from iter_run(ds, [MeanPattern(with_max=with_max)], block_bytes=block_bytes, message=message)
    return (res["mean"], res["max"]) if with_max else res["mean"]


def sample_rows(scan_y: int, scan_x: int, max_frames: int = 1024) -> np.ndarray:
    """Evenly spaced scan rows holding at most ``max_frames`` frames (at least one row)."""
    n_rows = max(1, min(scan_y, max_frames // max(scan_x, 1)))
    return np.unique(np.linspace(0, scan_y - 1, n_rows).round().astype(int))


def sample_mean_pattern(ds: Dataset4D, max_frames: int = 1024) -> np.ndarray:
    """Mean pattern of a few evenly spaced scan rows (cheap estimate for default radii and the BF disc).

    Cached per dataset object and ``max_frames``, so COM, the virtual detectors and preprocessing of one
    analysis share one small read.
    """
    key = (id(ds.data), ds.shape, int(max_frames))
    hit = _SAMPLES.get(key)
    if hit is not None and hit[0] is ds.data:
        return hit[1]
    sy, sx = ds.scan_shape
    idx = sample_rows(sy, sx, max_frames)
    # exact uint64 sums for counting-detector data (a float64 cast of the rows cost more than the whole pass)
    acc = np.zeros(ds.detector_shape, dtype=np.uint64 if fast_dtype(ds.dtype) else np.float64)
    for r in idx:
        sum_frames(ds.rows(int(r), int(r) + 1).reshape(-1, *ds.detector_shape), acc)
    mean = acc / (len(idx) * sx)
    if len(_SAMPLES) > 8:
        _SAMPLES.clear()
    _SAMPLES[key] = (ds.data, mean)
    return mean


_SAMPLES: dict = {}


def release_pages(data, rows: slice) -> None:
    """Drop the pages of scan rows already processed from a numpy memmap's mapping.

    Pages read through a memory map count in the process's resident memory until the kernel
    reclaims them; on a file larger than RAM that looks like (and can become) memory pressure.
    ``MADV_DONTNEED`` unmaps them from this process (they stay in the page cache), so a pass over
    a 4 GiB memmap keeps the resident size at about one block.
    """
    import mmap

    mm = getattr(data, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        row_bytes = math.prod(data.shape[1:]) * data.dtype.itemsize
        if not data.flags.c_contiguous:
            return
        start = data.offset % mmap.ALLOCATIONGRANULARITY + rows.start * row_bytes
        stop = data.offset % mmap.ALLOCATIONGRANULARITY + rows.stop * row_bytes
        start -= start % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, min(stop, len(mm)) - start)
    except (ValueError, OSError, AttributeError):  # not worth failing an analysis for
        pass
