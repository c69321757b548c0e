"""A small chunk runner shared by COM, virtual detectors and preprocessing.

The pattern is LiberTEM's UDF idea reduced to what we need: read a block of scan rows, reduce it
to a small per-frame result, write that into a scan-shaped buffer. The reductions are matrix
products of flattened frames with a few detector weight maps, ``(n, H*W) @ (H*W, k)``
(:func:`iter_weighted_sums`), or, for maps that are outer products of row and column weights (COM),
of detector rows with the column weights, ``(n*H, W) @ (W, c)`` (:func:`iter_separable_sums`).
Pieces are cast one at a time, never the whole dataset.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .dataset import DEFAULT_BLOCK_BYTES, Dataset4D
from .errors import DataError
from .progress import Progress, Steps

#: Bytes of source data read per block by the reductions (one progress step each).
MATMUL_BLOCK_BYTES = 16 * 2**20
#: Threads reducing the pieces of a block in memory (numpy's BLAS calls release the GIL). 1 by
#: default: on the 2-core development machine, shared with other jobs, a second thread made the
#: pass slower (it waits for a core); raise it on a machine with idle cores.
MAX_THREADS = 1
#: Pieces per task handed to a thread.
TASK_PIECES = 4
#: Bytes of one piece of a block reduced at a time (fits in a core's L2 cache).
PIECE_BYTES = 512 * 2**10
#: Pieces for the separable (single matrix product) reduction: read once, so larger pieces just
#: save Python overhead.
SEPARABLE_PIECE_BYTES = 2**20


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The float type a block is multiplied in.

    float32 data stay float32 (fast; per-frame sums in float32 have ~1e-7 relative error). Integer
    and float64 data use float64 so that integer sums are exact (no overflow of uint8/uint16).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32 or dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise DataError(f"cannot compute with data of type {dtype}", hint="convert the data to a real number type")


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
        Raise :class:`DataError` on negative intensities. To keep the pass at memory bandwidth,
        the first piece (0.5-1 MiB) is checked value by value and every frame through its total
        (``weights[0]`` must then be the all-ones map); mean-subtracted or PCA data fail at once.

    Returns
    -------
    ``(scan_y, scan_x, k)`` float64 array (via ``StopIteration.value``).
    """
    w = np.asarray(weights)
    if w.ndim == 2:
        w = w[None]
    if w.shape[1:] != ds.detector_shape:
        raise DataError(f"detector weight maps have shape {w.shape[1:]}, the detector is {ds.detector_shape}",
                        path=ds.provenance.source_path, hint="make the mask the detector's shape")
    ct = compute_dtype(ds.dtype)
    k = w.shape[0]
    wt = np.ascontiguousarray(w.reshape(k, -1), dtype=ct)  # (k, H*W)

    def kernel(piece: np.ndarray) -> np.ndarray:
        # one matrix-vector product per map: the piece is read from memory once, then from cache
        res = np.empty((k, piece.shape[0]), dtype=ct)
        for j in range(k):
            np.dot(piece, wt[j], out=res[j])
        return res

    if k >= GEMM_MIN_MAPS:  # zernike branch: many maps (Zernike moments) -> one matrix product per piece
        wtt = np.ascontiguousarray(wt.T)
        one_thread = _one_blas_thread()

        def kernel(piece: np.ndarray) -> np.ndarray:  # noqa: F811
            with one_thread():  # small GEMMs on many BLAS threads stall on a busy machine
                return (piece @ wtt).T

    return (yield from _iter_reduce(ds, k, kernel, ct, block_bytes, message, check_negative))


#: From this many weight maps on, one (single-threaded) GEMM per piece replaces the matrix-vector products:
#: measured 2.3x faster for the 28 maps of Zernike order 6 (zernike branch).
GEMM_MIN_MAPS = 8


def _one_blas_thread():
    """A context manager limiting BLAS to one thread (threadpoolctl, cheap: ~20 us), or a no-op without it."""
    import contextlib

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext
    ctl = _CONTROLLER.get("c")
    if ctl is None:
        ctl = _CONTROLLER["c"] = ThreadpoolController()
    return lambda: ctl.limit(limits=1, user_api="blas")


_CONTROLLER: dict = {}


def iter_separable_sums(ds: Dataset4D, col_weights: np.ndarray, terms: list[list[tuple[int, np.ndarray]]],
                        block_bytes: int | None = None, message: str = "reducing",
                        check_negative: bool = False) -> Steps[np.ndarray]:
    """Per-frame sums for weight maps that are sums of outer products ``a(i) b_c(j)``.

    One matrix product per piece, ``(frames * H, W) @ (W, c)``, gives for every detector row its sums
    with the column weights ``b_c``; output ``k`` is then ``sum over its terms (c, a) of
    sum_i a(i) * rowsum_c(i)``. This reads each frame once and runs close to memory bandwidth (COM
    needs only ``b = [1, j - cx]``).

    Parameters
    ----------
    col_weights
        ``(c, det_x)`` column weights.
    terms
        For each output, a list of ``(column weight index, row weight (det_y,))``.
    check_negative
        As in :func:`iter_weighted_sums`; output 0 must be the frame total.
    """
    h, wd = ds.detector_shape
    ct = compute_dtype(ds.dtype)
    b = np.ascontiguousarray(np.asarray(col_weights, dtype=ct).reshape(-1, wd).T)  # (W, c)
    if b.shape[1] == 1:  # keep a matrix product (BLAS gemv would be chosen for one column anyway)
        b = np.ascontiguousarray(np.concatenate([b, np.zeros_like(b)], axis=1))
    nc = b.shape[1]
    k = len(terms)
    # the row weights of every output as one (H * c, k) matrix: res = rowsums (m, H * c) @ a_mat
    a_mat = np.zeros((h, nc, k))
    for o, tt in enumerate(terms):
        for c, a in tt:
            a_mat[:, int(c), o] += np.asarray(a, dtype=np.float64).reshape(h)
    a_mat = np.ascontiguousarray(a_mat.reshape(h * nc, k), dtype=ct)

    def kernel(piece: np.ndarray) -> np.ndarray:
        m = piece.shape[0]
        t = (piece.reshape(m * h, wd) @ b).reshape(m, h * nc)
        return (t @ a_mat).T

    return (yield from _iter_reduce(ds, k, kernel, ct, block_bytes, message, check_negative,
                                    SEPARABLE_PIECE_BYTES))


def _iter_reduce(ds: Dataset4D, k: int, kernel, ct: np.dtype, block_bytes: int | None, message: str,
                 check_negative: bool, piece_bytes: int | None = None) -> Steps[np.ndarray]:
    """Drive ``kernel(piece) -> (k, m)`` over the dataset: blocks of scan rows, pieces of ~PIECE_BYTES.

    ``kernel`` receives a C-contiguous ``(m, H*W)`` piece in the compute type ``ct``. Integer pieces are cast into a reused buffer, never a whole block; pieces
    of one block are shared among threads when the data are in memory.
    """
    sy, sx = ds.scan_shape
    npix = ds.detector_shape[0] * ds.detector_shape[1]
    out = np.zeros((sy * sx, k), dtype=np.float64)
    block_bytes = block_bytes or MATMUL_BLOCK_BYTES
    total = ds.n_blocks(block_bytes)
    signed = ds.dtype.kind in "fi"
    rows = max(1, (piece_bytes or PIECE_BYTES) // (npix * ct.itemsize))
    cast = np.dtype(ds.dtype) != ct
    # threads only for arrays in memory: on a memmap, concurrent page faults slow the pass down
    in_memory = isinstance(ds.data, np.ndarray) and not isinstance(ds.data, np.memmap)
    n_threads = max(1, min(MAX_THREADS, os.cpu_count() or 1)) if in_memory else 1
    bufs = [np.empty((rows, npix), dtype=ct) if cast else None for _ in range(n_threads)]
    pool = ThreadPoolExecutor(n_threads - 1) if n_threads > 1 else None

    def run(flat, res, s0, s1, buf):
        for a in range(s0, s1, rows):
            piece = flat[a:min(s1, a + rows)]
            m = piece.shape[0]
            if buf is not None:
                np.copyto(buf[:m], piece, casting="unsafe")
                piece = buf[:m]
            elif not piece.flags.c_contiguous:
                piece = np.ascontiguousarray(piece)
            res[:, a:a + m] = kernel(piece)

    try:
        for i, (rows_sl, block) in enumerate(ds.iter_blocks(block_bytes)):
            flat = block.reshape(-1, npix)
            n = flat.shape[0]
            if check_negative and signed and i == 0 and flat.size and flat[:rows].min() < 0:
                _negative(ds)
            res = np.empty((k, n), dtype=np.float64)
            if pool is None:
                run(flat, res, 0, n, bufs[0])
            else:
                # small tasks taken in turn by the threads (numpy releases the GIL): a thread
                # descheduled by another process does not hold the block up
                step = TASK_PIECES * rows
                starts = iter(range(0, n, step))
                lock = threading.Lock()

                def worker(buf, flat=flat, res=res, n=n, starts=starts, lock=lock, step=step):
                    while True:
                        with lock:
                            a = next(starts, None)
                        if a is None:
                            return
                        run(flat, res, a, min(n, a + step), buf)

                futs = [pool.submit(worker, bufs[t]) for t in range(1, n_threads)]
                worker(bufs[0])
                for f in futs:
                    f.result()
            if check_negative and signed and (res[0] < 0).any():
                _negative(ds)
            out[rows_sl.start * sx:rows_sl.stop * sx] = res.T
            del flat, block
            release_pages(ds.data, rows_sl)
            yield Progress(i + 1, total, message)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return out.reshape(sy, sx, k)


def _negative(ds: Dataset4D):
    raise DataError("the data hold negative intensities; centre of mass needs non-negative counts",
                    path=ds.provenance.source_path,
                    hint="use raw or binned counts, not mean-subtracted or PCA output "
                         "(or clip them: np.clip(data, 0, None))")


def iter_mean_pattern(ds: Dataset4D, block_bytes: int = DEFAULT_BLOCK_BYTES,
                      with_max: bool = False, message: str = "mean pattern") -> Steps:
    """Mean (and optionally max) diffraction pattern over all frames, float64, block by block."""
    total = ds.n_blocks(block_bytes)
    acc = np.zeros(ds.detector_shape, dtype=np.float64)
    mx = np.full(ds.detector_shape, -np.inf) if with_max else None
    for i, (rows, block) in enumerate(ds.iter_blocks(block_bytes)):
        acc += block.sum(axis=(0, 1), dtype=np.float64)
        if with_max:
            np.maximum(mx, block.max(axis=(0, 1)), out=mx)
        release_pages(ds.data, rows)
        yield Progress(i + 1, total, message)
    mean = acc / ds.n_frames
    return (mean, mx) if with_max else mean


def sample_mean_pattern(ds: Dataset4D, max_frames: int = 1024) -> np.ndarray:
    """Mean pattern of a few evenly spaced scan rows (cheap estimate for default radii)."""
    sy, sx = ds.scan_shape
    n_rows = max(1, min(sy, max_frames // max(sx, 1)))
    idx = np.unique(np.linspace(0, sy - 1, n_rows).round().astype(int))
    acc = np.zeros(ds.detector_shape, dtype=np.float64)
    for r in idx:
        acc += ds.rows(int(r), int(r) + 1).sum(axis=(0, 1), dtype=np.float64)
    return acc / (len(idx) * sx)


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
        row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
        if not data.flags.c_contiguous:
            return
        start = data.offset % mmap.ALLOCATIONGRANULARITY + rows.start * row_bytes
        stop = data.offset % mmap.ALLOCATIONGRANULARITY + rows.stop * row_bytes
        start -= start % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, min(stop, len(mm)) - start)
    except (ValueError, OSError, AttributeError):  # not worth failing an analysis for
        pass
