"""One executor for every reduction over the scan: one read of the data, locally or on Dask distributed.

A reduction is a small :class:`Reducer` (LiberTEM's UDF idea): it declares its result buffers, processes
the frames of one block, and turns the merged buffers into its result.

* ``buffers()`` -> ``{name: Buffer}``: a ``"nav"`` buffer holds one value (of ``Buffer.shape``) per frame;
  a ``"sig"`` buffer is one array for the whole run, merged across tasks (``"sum"``, ``"max"``, ``"min"``).
* ``weights()`` -> ``(k, H, W)`` or None: linear per-frame maps. The weights of all reducers of a run
  are stacked into one :class:`~napari_4dstem.blocks.LinearPlan` evaluated once per block; a reducer's
  sums arrive as its nav buffer ``"sums"`` of shape ``(k,)``.
* ``process(frames, bufs)``: ``frames`` ``(n, H, W)`` in the source type; nav buffers sliced to these
  frames, sig buffers this task's accumulators.
* ``finalize(bufs, info)`` -> result, with nav buffers shaped ``(scan_y, scan_x, ...)``.

:func:`iter_run` runs several reducers in one pass over the scan rows. Without a client it reads block by
block in this process (one progress step per block). With a ``distributed.Client`` the scan rows are split
into tasks; each worker opens the file itself from a :class:`Source` (path + load options), so the data
never travel through the scheduler; the partial buffers come back and merge here; the tasks are pure, so
one lost with its worker is recomputed and the result stays exact.
"""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blocks import MATMUL_BLOCK_BYTES, LinearPlan, fast_dtype, negative_error, release_pages, sum_frames
from .dataset import Dataset4D, as_dataset
from .errors import DataError, FourDSTEMError
from .progress import Progress, Steps

#: Source bytes per task on a cluster (each task reads its rows block by block).
TASK_BYTES = 256 * 2**20
#: At least this many tasks per worker (balances uneven workers and keeps progress moving).
TASKS_PER_WORKER = 3
#: Seconds to wait for a scheduler to answer or for a first worker to join.
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Buffer:
    kind: str  # "nav" | "sig"
    shape: tuple = ()
    dtype: str = "float64"
    merge: str = "sum"  # sig buffers: "sum" | "max" | "min"; a sig buffer of shape () has the detector's shape


class Reducer:
    """Base class: override what the reduction needs (see the module docstring)."""

    def buffers(self) -> dict[str, Buffer]:
        return {}

    def weights(self) -> np.ndarray | None:
        return None

    def process(self, frames: np.ndarray, bufs: dict[str, np.ndarray]) -> None:
        pass

    def finalize(self, bufs: dict[str, np.ndarray], info: dict[str, Any]):
        return bufs


class Linear(Reducer):
    """Per-frame weighted sums with ``(k, H, W)`` weight maps; result ``(scan_y, scan_x, k)`` float64.

    ``check_negative``: raise on negative intensities (``weights[0]`` must be the all-ones map).
    """

    def __init__(self, weights, check_negative: bool = False):
        w = np.asarray(weights)
        self.w = w[None] if w.ndim == 2 else w
        self.check_negative = check_negative

    def weights(self):
        return self.w

    def finalize(self, bufs, info):
        return bufs["sums"]


class MeanPattern(Reducer):
    """Sum (exact, uint64 for unsigned data) and optionally max of all frames -> ``{"mean", "max", "sum"}``."""

    def __init__(self, with_max: bool = False, dtype=None):
        self.with_max = with_max
        self.dtype = None if dtype is None else np.dtype(dtype)

    def buffers(self):
        acc = "uint64" if self.dtype is not None and fast_dtype(self.dtype) else "float64"
        b = {"sum": Buffer("sig", (), acc)}
        if self.with_max:
            b["max"] = Buffer("sig", (), "float64", "max")
        return b

    def process(self, frames, bufs):
        sum_frames(frames, bufs["sum"])
        if self.with_max:
            np.maximum(bufs["max"], frames.max(axis=0), out=bufs["max"])

    def finalize(self, bufs, info):
        total = bufs["sum"]
        return {"sum": total, "mean": total.astype(np.float64) / info["n_frames"], "max": bufs.get("max")}


@dataclass
class Source:
    """How a worker opens the data itself: a file path and the :func:`napari_4dstem.io.load` options.

    ``shape``/``dtype`` are those the client saw; a worker that opens something else fails clearly.
    """

    path: str
    options: dict = field(default_factory=dict)
    shape: tuple | None = None
    dtype: str | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset4D, options: dict | None = None) -> Source:
        path = ds.provenance.source_path
        if not path:
            raise DataError("a Dask cluster run needs data read from a file (the workers open it themselves)",
                            hint="save the array (np.save) and pass the path, or run without a client")
        opts = dict(ds.provenance.options or {}) if options is None else dict(options)
        return cls(path, opts, tuple(ds.shape), str(ds.dtype))

    def __post_init__(self):
        # workers may run in another folder: a relative path is taken from the client's folder
        self.path = os.path.abspath(str(self.path))

    def open(self) -> Dataset4D:
        from .io import load

        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        ds = load(self.path, **opts)
        if self.shape is not None and (tuple(ds.shape) != tuple(self.shape) or str(ds.dtype) != self.dtype):
            raise DataError(f"the file opened on a worker has shape {ds.shape} {ds.dtype}, the client saw "
                            f"{tuple(self.shape)} {self.dtype}", path=self.path,
                            hint="every worker must see the same file at the same path")
        return ds


# -- the plan: reducers + the shared linear kernel ----------------------------------------------------
class _Plan:
    def __init__(self, reducers: list[Reducer], dtype, detector_shape):
        self.reducers = list(reducers)
        self.detector_shape = tuple(detector_shape)
        self.decl = [r.buffers() for r in self.reducers]
        ws, self.lin_slices, neg = [], [], None
        k = 0
        for r in self.reducers:
            w = r.weights()
            if w is None:
                self.lin_slices.append(None)
                continue
            w = np.asarray(w)
            w = w[None] if w.ndim == 2 else w
            if tuple(w.shape[1:]) != tuple(detector_shape):
                raise DataError(f"detector weight maps have shape {tuple(w.shape[1:])}, the detector is "
                                f"{tuple(detector_shape)}", hint="make the mask the detector's shape")
            if getattr(r, "check_negative", False) and neg is None:
                neg = k
            ws.append(w)
            self.lin_slices.append(slice(k, k + w.shape[0]))
            k += w.shape[0]
        self.linear = LinearPlan(np.concatenate(ws), dtype) if ws else None
        self.total_col = neg  # linear column holding a frame total, checked for negative values
        self.signed = np.dtype(dtype).kind in "fi"

    def new_partial(self, n: int) -> dict:
        bufs = []
        for decl in self.decl:
            d = {}
            for name, b in decl.items():
                if b.kind == "nav":
                    d[name] = np.zeros((n, *b.shape), b.dtype)
                else:
                    fill = {"sum": 0, "max": -np.inf, "min": np.inf}[b.merge]
                    d[name] = np.full(self._sig_shape(b), fill, b.dtype)
            bufs.append(d)
        lin = np.zeros((n, self.linear.k)) if self.linear is not None else None
        return {"bufs": bufs, "lin": lin}

    def _sig_shape(self, b: Buffer):
        return tuple(self.detector_shape) + tuple(b.shape) if b.shape == () else b.shape

    def process(self, part: dict, f0: int, frames: np.ndarray, first: bool, ds):
        """Reduce one piece of frames; returns the compiled kernel's Batch when it still runs, else None."""
        n = frames.shape[0]
        batch = None
        if self.linear is not None and self.linear.runs_async:  # unsigned data: nothing to check
            batch = self.linear.submit(frames, part["lin"][f0:f0 + n])
        elif self.linear is not None:
            res = self.linear(frames)
            part["lin"][f0:f0 + n] = res
            if self.total_col is not None and self.signed:
                if first and frames[:64].min() < 0:
                    raise negative_error(ds)
                if (res[:, self.total_col] < 0).any():
                    raise negative_error(ds)
        for r, decl, bufs in zip(self.reducers, self.decl, part["bufs"]):
            if not decl:
                continue
            views = {name: (bufs[name][f0:f0 + n] if b.kind == "nav" else bufs[name]) for name, b in decl.items()}
            r.process(frames, views)
        return batch

    def merge(self, total: dict, part: dict, f0: int) -> None:
        n = None
        if part["lin"] is not None:
            n = part["lin"].shape[0]
            total["lin"][f0:f0 + n] = part["lin"]
        for decl, tb, pb in zip(self.decl, total["bufs"], part["bufs"]):
            for name, b in decl.items():
                if b.kind == "nav":
                    total_b = tb[name]
                    total_b[f0:f0 + pb[name].shape[0]] = pb[name]
                elif b.merge == "sum":
                    tb[name] += pb[name]
                elif b.merge == "max":
                    np.maximum(tb[name], pb[name], out=tb[name])
                else:
                    np.minimum(tb[name], pb[name], out=tb[name])

    def finalize(self, total: dict, scan_shape, n_frames: int) -> list:
        out = []
        info = {"scan_shape": tuple(scan_shape), "n_frames": n_frames}
        for r, decl, bufs, sl in zip(self.reducers, self.decl, total["bufs"], self.lin_slices):
            b = {name: (bufs[name].reshape(*scan_shape, *decl[name].shape) if decl[name].kind == "nav"
                        else bufs[name]) for name in decl}
            if sl is not None:
                b["sums"] = total["lin"][:, sl].reshape(*scan_shape, sl.stop - sl.start)
            out.append(r.finalize(b, info))
        return out


def _frames_of(block: np.ndarray):
    """The frames of a block of scan rows as C-contiguous (n, H, W) pieces (one per scan row if windowed)."""
    h, w = block.shape[2:]
    if block.flags.c_contiguous:
        yield 0, block.reshape(-1, h, w)
        return
    nx = block.shape[1]
    for t in range(block.shape[0]):
        yield t * nx, np.ascontiguousarray(block[t])


def _iter_rows(ds: Dataset4D, plan: _Plan, y0: int, y1: int, window, block_bytes: int, part=None):
    """Run the plan over window rows ``y0:y1``; yields once per block, returns the partial buffers."""
    wy0, _, wx0, wx1 = window
    nx = wx1 - wx0
    if part is None:
        part = plan.new_partial((y1 - y0) * nx)
    step = ds.rows_per_block(block_bytes)
    full_width = wx0 == 0 and wx1 == ds.scan_shape[1]
    # the kernel's last chunks of a block may still run while the next block is read: a block's pages
    # are released once its chunks are done, and all are awaited before the partial is returned
    pending: list = []
    ok = False
    try:
        for a in range(y0, y1, step):
            b = min(y1, a + step)
            block = ds.rows(wy0 + a, wy0 + b)
            if not full_width:
                block = block[:, wx0:wx1]
            batches = [plan.process(part, (a - y0) * nx + off, frames, a == y0 and off == 0, ds)
                       for off, frames in _frames_of(block)]
            del block
            pending.append(([bt for bt in batches if bt is not None], slice(wy0 + a, wy0 + b)))
            while pending and all(bt.done() for bt in pending[0][0]):
                for bt in pending[0][0]:
                    bt.wait()  # raises a chunk's error
                release_pages(ds.data, pending.pop(0)[1])
            yield b - a
        ok = True
    finally:
        for batches, rows in pending:
            for bt in batches:
                bt.wait(check=ok)
            release_pages(ds.data, rows)
    return part


def _run_task(src, plan, y0: int, y1: int, window, block_bytes: int) -> dict:
    """One cluster task: open the data (on the worker), reduce rows ``y0:y1``, return the partial buffers."""
    ds = src.open() if isinstance(src, Source) else src
    gen = _iter_rows(ds, plan, y0, y1, window, block_bytes)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        part = stop.value
        try:
            from distributed import get_worker

            part["worker"] = get_worker().address
        except (ImportError, ValueError):
            pass
        return part
    finally:
        if isinstance(src, Source):
            ds.close()


# -- the executor ------------------------------------------------------------------------------------
def iter_run(data, reducers: list[Reducer], *, client=None, source: Source | None = None, window=None,
             block_bytes: int | None = None, message: str = "reducing", check_negative: bool = False,
             stats: dict | None = None) -> Steps[list]:
    """Run ``reducers`` together in one pass over the data; returns their results in order.

    Parameters
    ----------
    data
        Dataset4D (or array) as seen here: shapes, type, and the data themselves for a local run.
    client
        A ``distributed.Client``: run the tasks on its workers, which open ``source`` themselves.
    source
        How workers open the data (default: the dataset's file and load options, see :class:`Source`).
    window
        ``(y0, y1, x0, x1)`` scan window to reduce (default the whole scan); results have its shape.
    check_negative
        Shorthand for a single :class:`Linear` reducer: raise on negative intensities.
    stats
        A dict filled with ``tasks`` and, on a cluster, ``workers`` (the addresses that ran them).
    """
    ds = as_dataset(data)
    sy, sx = ds.scan_shape
    window = (0, sy, 0, sx) if window is None else tuple(int(v) for v in window)
    y0, y1, x0, x1 = window
    if not (0 <= y0 < y1 <= sy and 0 <= x0 < x1 <= sx):
        raise DataError(f"scan window {list(window)} is outside the scan {ds.scan_shape} or empty")
    if check_negative:
        for r in reducers:
            if isinstance(r, Linear):
                r.check_negative = True
    for r in reducers:
        if isinstance(r, MeanPattern) and r.dtype is None:
            r.dtype = ds.dtype
    plan = _Plan(reducers, ds.dtype, ds.detector_shape)
    block_bytes = block_bytes or MATMUL_BLOCK_BYTES
    n_rows, n_cols = y1 - y0, x1 - x0
    scan_shape = (n_rows, n_cols)
    if client is None:
        total_steps = math.ceil(n_rows / ds.rows_per_block(block_bytes))
        gen = _iter_rows(ds, plan, 0, n_rows, window, block_bytes)
        done = 0
        try:
            while True:
                next(gen)
                done += 1
                yield Progress(done, total_steps, message)
        except StopIteration as stop:
            part = stop.value
        if stats is not None:
            stats.update(tasks=1)
        return plan.finalize(part, scan_shape, n_rows * n_cols)
    src = source if source is not None else Source.from_dataset(ds)
    total = plan.new_partial(n_rows * n_cols)
    workers = yield from _iter_cluster(client, src, plan, total, window, block_bytes, message, ds)
    if stats is not None:
        stats.update(tasks=sum(workers.values()), workers=dict(workers))
    return plan.finalize(total, scan_shape, n_rows * n_cols)


def task_rows(n_rows: int, row_bytes: int, n_workers: int, rows_per_block: int) -> list[tuple[int, int]]:
    """Row ranges of the cluster tasks: about :data:`TASK_BYTES` each, at least
    :data:`TASKS_PER_WORKER` per worker, whole blocks where possible."""
    n_tasks = max(TASKS_PER_WORKER * max(n_workers, 1), math.ceil(n_rows * row_bytes / TASK_BYTES))
    step = max(1, math.ceil(n_rows / n_tasks))
    if step > rows_per_block:
        step = math.ceil(step / rows_per_block) * rows_per_block
    return [(a, min(n_rows, a + step)) for a in range(0, n_rows, step)]


def _iter_cluster(client, src: Source, plan: _Plan, total: dict, window, block_bytes, message, ds) -> Steps:
    from distributed import as_completed

    n_workers = _wait_for_workers(client)
    nx = window[3] - window[2]
    row_bytes = nx * ds.detector_shape[0] * ds.detector_shape[1] * ds.dtype.itemsize
    ranges = task_rows(window[1] - window[0], row_bytes, n_workers, ds.rows_per_block(block_bytes))
    run_id = uuid.uuid4().hex[:8]
    # the plan (reducers and weights, small) goes to every worker once; the data are opened there
    plan_f = client.scatter(plan, broadcast=True, hash=False)
    futs = {}
    for i, (a, b) in enumerate(ranges):
        f = client.submit(_run_task, src, plan_f, a, b, window, block_bytes, key=f"napari-4dstem-{run_id}-{i}",
                          pure=False)
        futs[f.key] = (f, a)
    done = 0
    workers: dict[str, int] = {}
    try:
        for fut in as_completed([f for f, _ in futs.values()]):
            try:
                part = fut.result()
            except FourDSTEMError as e:
                raise DataError(f"a Dask worker failed on the data: {e}", path=None,
                                hint="every worker must see the file at the same path (shared file system)"
                                ) from None
            except Exception as e:  # noqa: BLE001 - worker-side errors arrive as any type
                raise DataError(f"a Dask worker failed on {src.path}: {type(e).__name__}: {e}".rstrip(": "),
                                hint="check that every worker can open the file (same path, same "
                                     "napari-4dstem version)") from None
            a = futs[fut.key][1]
            plan.merge(total, part, a * nx)
            w = part.get("worker", "?")
            workers[w] = workers.get(w, 0) + 1
            done += 1
            yield Progress(done, len(ranges), message, {"workers": n_workers, "task": fut.key, "worker": w})
        return workers
    finally:
        pending = [f for f, _ in futs.values() if not f.done()]
        if pending:
            client.cancel(pending)
        client.cancel([plan_f])


def _wait_for_workers(client) -> int:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - distributed raises TimeoutError subclasses that vary by version
        raise DataError(f"the Dask cluster at {client.scheduler.address} has no workers",
                        hint="start workers with `dask worker ADDRESS`") from None
    return len(client.scheduler_info().get("workers", {}))


def connect(spec: str, timeout: float | None = None):
    """A ``distributed.Client`` for ``tcp://HOST:PORT`` (an existing scheduler) or ``local:N`` (a local
    cluster of N worker processes, one thread each). Returns ``(client, cluster_or_None)``; close both."""
    from distributed import Client, LocalCluster

    spec = str(spec).strip()
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
            if n < 1:
                raise ValueError
        except ValueError:
            raise DataError(f"--scheduler {spec!r}: local:N needs a whole number of workers >= 1",
                            hint="e.g. --scheduler local:2") from None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    if "://" not in spec:
        raise DataError(f"--scheduler {spec!r} is not an address",
                        hint="use tcp://HOST:PORT (a running `dask scheduler`) or local:N")
    try:
        client = Client(spec, timeout=timeout)
    except (OSError, TimeoutError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot reach the Dask scheduler at {spec} ({reason[:120]})",
                        hint="check the address and that `dask scheduler` runs there, or use local:N") from None
    return client, None
