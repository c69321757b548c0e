"""The executor: reducers run together in one pass; LinearPlan's evaluation paths against direct sums."""
from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import as_dataset
from napari_4dstem.blocks import LinearPlan, iter_weighted_sums
from napari_4dstem.errors import DataError
from napari_4dstem.executor import Buffer, Linear, MeanPattern, Reducer, _iter_rows, _Plan, iter_run, task_rows
from napari_4dstem.progress import run_steps


def _weights(h, w, rng):
    ii, jj = np.indices((h, w), dtype=np.float64)
    r = np.hypot(ii - 10.3, jj - 8.6)
    return np.stack([np.ones((h, w)), ii - 10.3, jj - 8.6, r < 4, r > 6, (r > 3) & (r < 7),
                     rng.random((h, w)), (ii - 3) ** 2 + (jj - 4.5) ** 2, 2.0 * (r < 5) - 1])


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.int32, np.float64])
def test_every_kind_of_weight_map_equals_a_direct_sum(dtype):
    rng = np.random.default_rng(1)
    d = rng.poisson(5, (5, 7, 22, 18)).astype(dtype)
    w = _weights(22, 18, rng)
    plan = LinearPlan(w, dtype)
    assert plan.kinds == ["separable"] * 3 + ["mask"] * 3 + ["dense", "separable", "mask"]
    got = run_steps(iter_weighted_sums(as_dataset(d), w, block_bytes=3 * 7 * 22 * 18 * d.itemsize))
    ref = np.einsum("yxij,kij->yxk", d.astype(np.float64), w)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    # integer data, 0/1 weights: exact integers
    if np.dtype(dtype).kind in "ui":
        np.testing.assert_array_equal(got[..., [0, 3, 4, 5]], ref[..., [0, 3, 4, 5]])


def test_counts_near_the_top_of_uint16_stay_exact():
    """float32 accumulation would round these sums (> 2**24); the integer kernel keeps every digit."""
    rng = np.random.default_rng(2)
    d = rng.integers(60000, 65536, (4, 3, 64, 64), dtype=np.uint16)
    ii, jj = np.indices((64, 64))
    w = np.stack([np.ones((64, 64)), jj, np.hypot(ii - 31.5, jj - 31.5) > 20])
    got = run_steps(iter_weighted_sums(as_dataset(d), w))
    ref = np.einsum("yxij,kij->yxk", d.astype(np.int64), w.astype(np.int64))
    assert ref.max() > 2**31
    np.testing.assert_array_equal(got, ref.astype(np.float64))


def test_one_pass_runs_several_reducers_and_custom_ones():
    rng = np.random.default_rng(4)
    d = rng.poisson(3, (9, 6, 16, 12)).astype(np.uint16)
    reads = []

    class Count(Reducer):  # a non-linear reducer: per-frame max and the number of frames seen
        def buffers(self):
            return {"max": Buffer("nav", (), "float64"), "n": Buffer("sig", (1,), "int64")}

        def process(self, frames, bufs):
            reads.append(len(frames))
            bufs["max"][:] = frames.max(axis=(1, 2))
            bufs["n"] += len(frames)

        def finalize(self, bufs, info):
            return bufs["max"], int(bufs["n"][0]), info["n_frames"]

    steps = []
    res = run_steps(iter_run(d, [Linear(np.ones((16, 12))), MeanPattern(with_max=True), Count()],
                             block_bytes=2 * 6 * 16 * 12 * 2), steps.append)
    np.testing.assert_array_equal(res[0][..., 0], d.sum(axis=(2, 3)))
    np.testing.assert_array_equal(res[1]["sum"], d.sum(axis=(0, 1), dtype=np.uint64))
    np.testing.assert_allclose(res[1]["mean"], d.mean(axis=(0, 1)))
    np.testing.assert_array_equal(res[1]["max"], d.max(axis=(0, 1)))
    mx, n, nf = res[2]
    np.testing.assert_array_equal(mx, d.max(axis=(2, 3)))
    assert n == nf == 54 and sum(reads) == 54  # every frame processed once: one pass
    assert [s.done for s in steps] == [1, 2, 3, 4, 5] and steps[-1].total == 5


def test_partial_results_merge_to_the_whole_run_and_windows():
    """What the cluster does: tasks over row ranges, merged; equal to one local pass, also for a window."""
    rng = np.random.default_rng(5)
    d = rng.poisson(4, (11, 7, 10, 10)).astype(np.uint16)
    ds = as_dataset(d)
    window = (1, 10, 2, 6)
    reducers = [Linear(_weights(10, 10, rng)[:6]), MeanPattern(dtype=d.dtype)]
    whole = run_steps(iter_run(ds, reducers, window=window))
    plan = _Plan(reducers, d.dtype, (10, 10))
    total = plan.new_partial(9 * 4)
    for a, b in task_rows(9, 4 * 100 * 2, 2, 2):
        gen = _iter_rows(ds, plan, a, b, window, 2 * 7 * 100 * 2)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            plan.merge(total, stop.value, a * 4)
    merged = plan.finalize(total, (9, 4), 36)
    np.testing.assert_array_equal(merged[0], whole[0])
    np.testing.assert_array_equal(merged[1]["sum"], whole[1]["sum"])
    np.testing.assert_array_equal(whole[1]["sum"], d[1:10, 2:6].sum(axis=(0, 1)))
    with pytest.raises(DataError, match="outside the scan"):
        run_steps(iter_run(ds, reducers, window=(0, 12, 0, 7)))


def test_task_rows_cover_the_scan_once():
    for n_rows, n_workers, rpb in [(1, 4, 1), (7, 2, 3), (256, 2, 2), (1000, 3, 16)]:
        ranges = task_rows(n_rows, 2**20, n_workers, rpb)
        rows = [r for a, b in ranges for r in range(a, b)]
        assert rows == list(range(n_rows))
        assert len(ranges) >= min(n_rows, 3 * n_workers) or len(ranges) * rpb >= n_rows


def test_negative_data_and_bad_weights_are_refused():
    d = np.ones((2, 2, 4, 4), np.float32)
    d[0, 0, 0, 0] = -5
    with pytest.raises(DataError, match="negative"):
        run_steps(iter_weighted_sums(as_dataset(d), np.ones((4, 4)), check_negative=True))
    with pytest.raises(DataError, match="weight maps have shape"):
        run_steps(iter_weighted_sums(as_dataset(d), np.ones((3, 4))))


class _CountingArray:
    """A 4-D array that counts the frames read from it (what a file would serve)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.frames = 0

    def __getitem__(self, key):
        out = np.asarray(self.a[key])
        self.frames += int(np.prod(out.shape[:-2])) if out.ndim >= 2 else 0
        return out


@pytest.mark.parametrize("rrvae", [False, True])
def test_analyze_reads_the_raw_data_once(rrvae):
    """navigator, virtual images, COM sums (and the binned stack) from one pass, plus the small frame sample."""
    from napari_4dstem import Dataset4D
    from napari_4dstem.errors import Cancelled
    from napari_4dstem.pipeline import iter_analyze

    rng = np.random.default_rng(6)
    ii, jj = np.indices((32, 32))
    lam = np.where(np.hypot(ii - 15.5, jj - 15.5) < 6, 20.0, 1.0)
    d = rng.poisson(lam, (40, 30, 32, 32)).astype(np.uint16)
    src = _CountingArray(d)
    ds = Dataset4D(src)
    stages = []

    def cb(p):
        stages.append(p.info.get("stage"))

    steps = iter_analyze(ds, {"run_rrvae": rrvae, "preprocess": {"remove_hot_pixels": True}})
    try:
        for p in steps:
            cb(p)
            if p.info.get("stage") == "rrvae":  # stop before training: every read is done by then
                steps.close()
                break
    except Cancelled:
        pass
    sample = 1024 // 30 * 30  # evenly spaced whole scan rows, at most 1024 frames
    precheck = 3 * 30 if rrvae else 0  # params.check_fits: first, middle and last scan row (constant data?)
    assert src.frames == d.shape[0] * d.shape[1] + sample + precheck
    assert ("preprocess" in stages) == rrvae


def test_analyze_with_zernike_reads_one_more_pass_for_the_class_averages_only():
    # the moments ride along in the one pass; the class averages need the labels, so they read the data again
    from napari_4dstem import Dataset4D
    from napari_4dstem.motifs import zernike_motifs
    from napari_4dstem.pipeline import analyze

    rng = np.random.default_rng(7)
    ii, jj = np.indices((24, 24))
    lam = np.where(np.hypot(ii - 11.5, jj - 11.5) < 5, 30.0, 1.0)
    d = rng.poisson(lam, (100, 12, 24, 24)).astype(np.uint16)
    src = _CountingArray(d)
    res = analyze(Dataset4D(src), {"run_rrvae": False, "run_zernike": True})
    sample = 1024 // 12 * 12  # evenly spaced whole scan rows, at most 1024 frames
    assert src.frames == 2 * d.shape[0] * d.shape[1] + sample
    ref = zernike_motifs(d)  # the standalone run: moments in a pass of their own
    np.testing.assert_array_equal(res.maps["zernike/labels"], ref.labels)
    np.testing.assert_allclose(res.maps["zernike/outlier"], ref.outlier, rtol=1e-5, atol=1e-6)
