"""Compiled (numba) block kernels for unsigned 8/16-bit data; used through :mod:`napari_4dstem.blocks`.

Integer sums, exact by construction: a row or column sum holds at most 65537 x 65535 < 2**32.

Written for LLVM's loop vectoriser (docs/analysis.md, "Bandwidth"): every inner loop runs from 0 over a
contiguous slice (a loop from a variable start keeps numba's negative-index handling and is not
vectorised) and keeps its accumulators in 32 bits (``np.uint32(a + b)``: numba widens small integers to
64 bits otherwise, halving the SIMD width).
"""
import numpy as np
from numba import njit

U32 = np.uint32
# Reassociation lets LLVM vectorise the float dot products; no "nnan"/"ninf", so NaN weights stay NaN.
_FM = {"reassoc", "contract", "nsz"}


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_FM)
def _sweep(x, f, rows, cols, est, ej, epos, vals):
    # One sweep over frame f: row sums ``rows`` (H,) and column sums ``cols`` (W,), uint32, four rows at
    # a time (the column accumulator is loaded and stored once per four rows); on the way, the masked
    # sums of the "run" masks: a run of mask rows a:b in column j adds C_b(j) - C_a(j), C_i(j) being the
    # sum of rows < i of column j, i.e. cols[j] at row i; each C goes to vals[epos[e]]. Events are grouped
    # by step (one per four-row group, then one per remaining row, then a last one: the column totals)
    # and by q, the rows of the group to add to cols[j]: est[4 s + q]:est[4 s + q + 1] (four plain loops,
    # no branch per event).
    h, w = x.shape[1], x.shape[2]
    h4 = (h // 4) * 4
    for j in range(w):
        cols[j] = 0
    st = 0
    for g in range(0, h4, 4):
        r0 = x[f, g]
        r1 = x[f, g + 1]
        r2 = x[f, g + 2]
        r3 = x[f, g + 3]
        e0 = 4 * st
        for e in range(est[e0], est[e0 + 1]):
            vals[epos[e]] = np.int64(cols[ej[e]])
        for e in range(est[e0 + 1], est[e0 + 2]):
            j = ej[e]
            vals[epos[e]] = np.int64(cols[j]) + np.int64(r0[j])
        for e in range(est[e0 + 2], est[e0 + 3]):
            j = ej[e]
            vals[epos[e]] = np.int64(cols[j]) + np.int64(r0[j]) + np.int64(r1[j])
        for e in range(est[e0 + 3], est[e0 + 4]):
            j = ej[e]
            vals[epos[e]] = np.int64(cols[j]) + np.int64(r0[j]) + np.int64(r1[j]) + np.int64(r2[j])
        st += 1
        s0 = U32(0)
        s1 = U32(0)
        s2 = U32(0)
        s3 = U32(0)
        for j in range(w):
            v0 = U32(r0[j])
            v1 = U32(r1[j])
            v2 = U32(r2[j])
            v3 = U32(r3[j])
            s0 = U32(s0 + v0)
            s1 = U32(s1 + v1)
            s2 = U32(s2 + v2)
            s3 = U32(s3 + v3)
            cols[j] = U32(cols[j] + U32(U32(v0 + v1) + U32(v2 + v3)))
        rows[g] = s0
        rows[g + 1] = s1
        rows[g + 2] = s2
        rows[g + 3] = s3
    for i in range(h4, h + 1):
        for e in range(est[4 * st], est[4 * st + 1]):
            vals[epos[e]] = np.int64(cols[ej[e]])
        st += 1
        if i == h:
            break
        r0 = x[f, i]
        s0 = U32(0)
        for j in range(w):
            v0 = U32(r0[j])
            s0 = U32(s0 + v0)
            cols[j] = U32(cols[j] + v0)
        rows[i] = s0


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_FM)
def frame_maps(x, est, ej, epos, ranges, masks, bands, row_w, row_map, col_w, col_map, mask_map, out):
    """out (n, K) float64 = the weighted sums of frames x (n, H, W) (unsigned 8/16-bit, C order).

    Per frame, exact integer sums: row sums r and column sums c; the masked sums of the "run" masks
    from the column sums (events ``est, ej, epos``, see ``_sweep``; mask m's sum is
    ``vals[mid:end].sum() - vals[start:mid].sum()``, ``ranges[m] = start, mid, end``); for each other mask
    m (``masks`` (nm, H*W) in x's type, 0 or all ones: an AND selects) the masked sum over its band of
    rows ``bands[m, 0]:bands[m, 1]`` (one long loop over the band's contiguous pixels). Then
    ``out = (row_w @ r) @ row_map + (col_w @ c) @ col_map + msum @ mask_map`` with row_w (kr, H),
    row_map (kr, K), col_w (kc, W), col_map (kc, K), mask_map (n_run + nm, K).
    """
    n, h, w = x.shape
    nm = masks.shape[0]
    kr, kc, k = row_w.shape[0], col_w.shape[0], out.shape[1]
    rows = np.empty(h, np.uint32)
    cols = np.empty(w, np.uint32)
    n_run = ranges.shape[0]
    vals = np.zeros(ej.shape[0], np.int64)
    xf = x.reshape(n, h * w)
    for f in range(n):
        _sweep(x, f, rows, cols, est, ej, epos, vals)
        o = out[f]
        for q in range(k):
            o[q] = 0.0
        for r in range(kr):
            wr = row_w[r]
            d = 0.0
            for i in range(h):
                d += np.float64(rows[i]) * wr[i]
            for q in range(k):
                o[q] += d * row_map[r, q]
        for c in range(kc):
            wc = col_w[c]
            d = 0.0
            for j in range(w):
                d += np.float64(cols[j]) * wc[j]
            for q in range(k):
                o[q] += d * col_map[c, q]
        for m in range(n_run):
            plus = vals[ranges[m, 1]:ranges[m, 2]]
            minus = vals[ranges[m, 0]:ranges[m, 1]]
            t = np.int64(0)
            for p in range(plus.shape[0]):
                t += plus[p]
            for p in range(minus.shape[0]):
                t -= minus[p]
            ms = np.float64(t)
            for q in range(k):
                o[q] += ms * mask_map[m, q]
        for m in range(nm):
            a, b = bands[m, 0] * w, bands[m, 1] * w
            px = xf[f, a:b]
            mk = masks[m, a:b]
            t = np.uint64(0)
            # uint32 partial sums of at most 65536 pixels (< 2**32), merged in uint64
            for p0 in range(0, px.shape[0], 65536):
                pp = px[p0:p0 + 65536]
                mm = mk[p0:p0 + 65536]
                s = U32(0)
                for p in range(pp.shape[0]):
                    s = U32(s + U32(pp[p] & mm[p]))
                t += s
            ms = np.float64(t)
            for q in range(k):
                o[q] += ms * mask_map[n_run + m, q]


@njit(cache=True, nogil=True, boundscheck=False)
def sum_frames(x, acc):
    # acc (H, W) uint64 += sum over frames of x (n, H, W)
    n, h, w = x.shape
    for f in range(n):
        for i in range(h):
            r = x[f, i]
            a = acc[i]
            for j in range(w):
                a[j] += r[j]


@njit(cache=True, nogil=True, boundscheck=False)
def bin_frames(x, factor, y0, x0, out):
    # out (n, bh, bw) float32 = sums of factor x factor pixels starting at (y0, x0); integer partial sums
    n = x.shape[0]
    bh, bw = out.shape[1], out.shape[2]
    tmp = np.zeros(bw, np.uint64)
    for f in range(n):
        for bi in range(bh):
            tmp[:] = 0
            for di in range(factor):
                r = x[f, y0 + bi * factor + di, x0:x0 + bw * factor]
                for bj in range(bw):
                    s = np.uint64(0)
                    for dj in range(factor):
                        s += r[bj * factor + dj]
                    tmp[bj] += s
            for bj in range(bw):
                out[f, bi, bj] = np.float32(tmp[bj])
