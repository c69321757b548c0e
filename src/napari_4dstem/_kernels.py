"""Compiled (numba) block kernels for unsigned 8/16-bit data; used through :mod:`napari_4dstem.blocks`.

Integer sums, exact by construction: a row or column sum holds at most 65537 x 65535 < 2**32.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def frame_sums(x, want_cols, masks, boxes, rows_out, cols_out, mask_out):
    # x: (n, H, W) unsigned ints. rows_out (n, H) and cols_out (n, W) uint32 (cols zeroed by the caller);
    # a row sum holds at most W x 65535 (< 2**32 for W <= 65537), likewise a column sum.
    n, h, w = x.shape
    for f in range(n):
        c = cols_out[f]
        for i in range(h):
            r = x[f, i]
            s = np.uint32(0)
            if want_cols:
                for j in range(w):
                    v = np.uint32(r[j])
                    c[j] += v
                    s += v
            else:
                for j in range(w):
                    s += np.uint32(r[j])
            rows_out[f, i] = s
        # masked sums over each mask's bounding box (masks are 0 / 0xFFFFFFFF: an AND selects)
        for m in range(masks.shape[0]):
            y0, y1, x0, x1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
            acc = np.uint64(0)
            for i in range(y0, y1):
                r = x[f, i, x0:x1]
                mr = masks[m, i, x0:x1]
                s = np.uint32(0)
                for j in range(r.shape[0]):
                    s += np.uint32(r[j]) & mr[j]
                acc += s
            mask_out[f, m] = acc


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
