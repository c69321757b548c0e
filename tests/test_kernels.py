"""The compiled integer kernel behind every linear map: exact sums against int64 references.

Every reduction of the maps pass (navigator, BF disc, ADF ring, annulus, arbitrary masks, COM sums, a
separable float map, the mean pattern) on uint8 / uint16 data with values at the top of the range, on
detector shapes that are no multiple of the SIMD width or of the kernel's four-row step, with one and
two threads and chunks down to one frame.
"""
from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import as_dataset
from napari_4dstem import blocks
from napari_4dstem.blocks import LinearPlan, iter_weighted_sums, mask_events, sample_mean_pattern
from napari_4dstem.executor import MeanPattern, iter_run
from napari_4dstem.progress import run_steps


def _maps(h, w, rng):
    """The maps of analyze's pass plus the awkward ones: (k, h, w) float64 and which are 0/1 masks."""
    ii, jj = np.indices((h, w), dtype=np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.hypot(ii - cy, jj - cx)
    rmax = r.max()
    maps = [np.ones((h, w)),                      # navigator / frame total
            ii - cy, jj - cx,                     # COM sums
            r <= 0.3 * rmax,                      # BF disc
            r >= 0.4 * rmax,                      # ADF ring to the edge (complement of a disc)
            (r >= 0.2 * rmax) & (r <= 0.6 * rmax),  # annulus (two runs in the middle columns)
            rng.random((h, w)) < 0.4,             # an arbitrary mask (many runs: the flat path)
            np.add.outer(np.cos(ii[:, 0]), 0.5 * jj[0]),  # separable float map (atom signal)
            np.zeros((h, w)),                     # an empty detector
            r <= 0.05 * rmax]                     # a tiny disc
    return np.stack([np.asarray(m, np.float64) for m in maps]), [0, 3, 4, 5, 6, 8, 9]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize("shape", [(128, 128), (37, 21), (5, 130), (1, 9), (66, 3)])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_every_map_is_exact_near_the_top_of_the_range(dtype, shape, threads, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_THREADS", threads)
    monkeypatch.setattr(blocks, "CHUNK_BYTES", 3 * shape[0] * shape[1])  # several chunks, a short last one
    rng = np.random.default_rng(hash((shape, np.dtype(dtype).str)) % 2**32)
    top = np.iinfo(dtype).max
    n = 11
    x = rng.integers(top - 40, top + 1, (n, *shape)).astype(dtype)
    x[0] = top  # every pixel at the maximum
    x[1] = 0
    w, exact = _maps(*shape, rng)
    plan = LinearPlan(w, dtype)
    assert plan.fast
    got = plan(x)
    ref = np.einsum("nij,kij->nk", x.astype(np.float64), w)
    exact_ref = np.einsum("nij,kij->nk", x.astype(np.int64), w[exact].astype(np.int64))
    np.testing.assert_array_equal(got[:, exact], exact_ref.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-6 * top)


def test_both_mask_paths_run_and_agree():
    """Discs and rings go through the column-sum events, a random mask through the AND over its band."""
    rng = np.random.default_rng(3)
    w, _ = _maps(128, 128, rng)
    plan = LinearPlan(w, np.uint16)
    assert plan.n_run >= 3 and len(plan.kernel_masks) >= 1
    x = rng.integers(0, 65536, (4, 128, 128)).astype(np.uint16)
    ref = np.einsum("nij,kij->nk", x.astype(np.int64), w.astype(np.int64)[[3, 4, 5, 6, 9]])
    np.testing.assert_array_equal(plan(x)[:, [3, 4, 5, 6, 9]], ref)


def test_mask_events_reproduce_each_mask():
    """Summing C_b(j) - C_a(j) over the events equals the masked sum, for every kind of run."""
    rng = np.random.default_rng(5)
    for h, w in [(9, 7), (4, 5), (1, 3), (13, 2)]:
        masks = rng.random((3, h, w)) < 0.5
        masks[0] = True
        x = rng.integers(0, 1000, (h, w))
        c = np.vstack([np.zeros((1, w), np.int64), np.cumsum(x, axis=0)])  # c[i] = sums of rows < i
        est, ej, epos, ranges = mask_events(masks)
        h4 = h // 4 * 4
        vals = np.zeros(len(ej), np.int64)
        for key in range(len(est) - 1):
            st, q = divmod(key, 4)
            row = 4 * st if st < h4 // 4 else h4 + st - h4 // 4
            for e in range(est[key], est[key + 1]):
                vals[epos[e]] = c[row + q, ej[e]]
        got = [vals[b:e].sum() - vals[a:b].sum() for a, b, e in ranges]
        np.testing.assert_array_equal(got, (x * masks).sum(axis=(1, 2)))


def test_the_executor_pass_is_exact_with_one_row_blocks(monkeypatch):
    """One scan row per block (the windowed path copies each row), counts near 65535."""
    monkeypatch.setenv("NAPARI_4DSTEM_THREADS", "2")
    rng = np.random.default_rng(7)
    d = rng.integers(65000, 65536, (3, 5, 24, 20)).astype(np.uint16)
    w, exact = _maps(24, 20, rng)
    got = run_steps(iter_weighted_sums(as_dataset(d), w, block_bytes=d[0].nbytes))
    ref = np.einsum("yxij,kij->yxk", d.astype(np.int64), w[exact].astype(np.int64))
    np.testing.assert_array_equal(got[..., exact], ref.astype(np.float64))
    (res,) = run_steps(iter_run(as_dataset(d), [MeanPattern(with_max=True)], block_bytes=d[0].nbytes))
    np.testing.assert_array_equal(res["sum"], d.astype(np.int64).sum(axis=(0, 1)))
    np.testing.assert_array_equal(res["max"], d.max(axis=(0, 1)))


def test_sample_mean_pattern_is_exact_for_counts():
    d = np.full((6, 4, 8, 8), 65535, np.uint16)
    d[2] = 1
    mean = sample_mean_pattern(as_dataset(d), max_frames=8)  # rows 0 and 5
    np.testing.assert_array_equal(mean, np.full((8, 8), 65535.0))
    f = np.random.default_rng(0).random((3, 2, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(sample_mean_pattern(as_dataset(f), max_frames=4),
                               f[[0, 2]].astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)


def test_thread_count_follows_the_setting_and_the_load(monkeypatch):
    monkeypatch.delenv("NAPARI_4DSTEM_THREADS", raising=False)
    monkeypatch.setattr(blocks.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(blocks, "KERNEL_THREADS", 2)
    monkeypatch.setattr(blocks.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert blocks.threads() == 2
    monkeypatch.setattr(blocks.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # every core busy elsewhere
    assert blocks.threads() == 1
    monkeypatch.setenv("NAPARI_4DSTEM_THREADS", "2")
    assert blocks.threads() == 2
    monkeypatch.setenv("NAPARI_4DSTEM_THREADS", "x")
    assert blocks.threads() == 1
