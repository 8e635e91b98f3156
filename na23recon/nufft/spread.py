"""numba helpers for gridding: point preparation, bin sorting, kernel weights per point and axis.

The spreading (points -> grid) and interpolation (grid -> points) kernels themselves live in
`_kernels.py`, generated per kernel width by `_gen_kernels.py`, and follow the conventions below.
All kernels are module-level serial `@njit(cache=True, nogil=True)` functions, so a fresh process
loads them from numba's cache instead of recompiling, and the plan runs them in a thread pool.
Not `parallel=True`: with numba 0.61 the prange versions of these loops ran ~2x slower when
loaded from the cache than freshly compiled (measured here); serial nogil kernels keep
their speed from the cache and let the plan schedule the threads itself. Conventions shared by every kernel:

- `u` (M, ndim) float64: point coordinates in oversampled-grid cells, already in sorted order;
  the grid is periodic, index = floor-based tap index modulo the grid size.
- `coef` (P, w): Horner coefficients of the kernel (see kernel.fit_horner), in the weight dtype
  (float32 for complex64 data, float64 for complex128).
- `perm` (M,) int64: sorted position -> original sample index.
- `wst` (M, ndim, w) float32 and `ist` (M, ndim) int32: per-point, per-axis kernel weights and
  first-tap indices stored at plan time (see precompute_weights); zero-length arrays mean
  "evaluate the polynomial on the fly". Storing them costs 4 (ndim w + ndim) bytes per point and
  saves the ~1/3 of a transform that the Horner evaluation takes.
- grids (B, n0, n1[, n2]) and values (B, M) are complex arrays passed as float views
  (B, 2 * n0 * n1 [* n2]) and (B, 2 * M), B = flattened batch dims.

Spreading is race-free without atomics: points are sorted into slabs along axis 0, each slab at
least w planes thick, so slabs of the same colour (even / odd, plus a third colour for the last
slab when the count is odd) never touch the same grid plane; slabs of one colour are spread in
parallel, colour by colour, with the slabs dealt into balanced tasks by point count at plan time
(Barnett et al. 2019 spread by subproblems into private subgrids; the colouring gets the same
race freedom without the private grids or their reduction).
Interpolation is parallel over chunks of points (Beatty et al. 2005, Fessler & Sutton 2003 for
the gridding / min-max interpolation background).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_FASTMATH = {"contract", "arcp", "nsz", "reassoc"}


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _kernel_row(u, n, coef, width, ker):
    """Kernel values ker[0:w] of the w taps of one point along one axis; returns the wrapped first
    tap index. Horner's rule runs over the powers outside and the taps inside, so the tap loop is
    w independent lanes that LLVM vectorises (FINUFFT evaluates its kernel the same way)."""
    i0f = np.floor(u - 0.5 * width) + 1.0
    t = 2.0 * (u - i0f) - width + 1.0
    tt = ker.dtype.type(t)
    for j in range(width):
        ker[j] = coef[0, j]
    for p in range(1, coef.shape[0]):
        for j in range(width):
            ker[j] = ker[j] * tt + coef[p, j]
    i0 = int(i0f)
    if i0 < 0:
        i0 += n
    return i0


@njit(cache=True, inline="always")
def _kernel_row_stored(wst, ist, j, a, width, ker):
    """_kernel_row from the plan's stored tables (point j, axis a)."""
    for jj in range(width):
        ker[jj] = wst[j, a, jj]
    return ist[j, a]


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def precompute_weights(u, coef, width, grid_shape, wst, ist, j0, j1):
    """Fill wst[j] (ndim, w) kernel weights and ist[j] (ndim,) first-tap indices for j0 <= j < j1."""
    ndim = u.shape[1]
    ker = np.empty(width, coef.dtype)
    for j in range(j0, j1):
        for a in range(ndim):
            ist[j, a] = _kernel_row(u[j, a], grid_shape[a], coef, width, ker)
            for jj in range(width):
                wst[j, a, jj] = ker[jj]


@njit(cache=True, nogil=True)
def _wrap(v, n):
    """v wrapped into [0, n) (0 where rounding at the period edge gives n)."""
    v = v - np.floor(v / n) * n
    if v >= n or v < 0:
        v = 0.0
    return v


@njit(cache=True, nogil=True)
def point_keys(coord, scale, n, slab_of_plane, nb, bin_size, width, u, keys, lo, hi):
    """Grid units and sort key of points lo..hi-1.

    coord (M, ndim) in cycles/FOV; scale (ndim,) grid cells per cycle/FOV; n (ndim,) int64 grid
    shape; slab_of_plane (n0,) int64: the slab of every axis-0 plane (a point belongs to the slab
    of its first tap, floor(u0 - w/2) + 1, which the colouring argument relies on); nb (3,) bins
    per axis (1 beyond ndim); bin_size: bin edge in cells for axes >= 1. Out: u (M, ndim) float64
    coord * scale wrapped into [0, n); keys (M,) int64 (slab, bin along axis 1, bin along axis 2)."""
    ndim = coord.shape[1]
    for i in range(lo, hi):
        for a in range(ndim):
            u[i, a] = _wrap(coord[i, a] * scale[a], n[a])
        key = slab_of_plane[int(np.floor(u[i, 0] - 0.5 * width) + 1.0) % n[0]]
        for a in range(1, 3):
            b = 0
            if a < ndim:
                b = (int(np.floor(u[i, a])) % n[a]) // bin_size
            key = key * nb[a] + b
        keys[i] = key


@njit(cache=True, nogil=True)
def count_keys(keys, bounds, counts, c0, c1):
    """counts[c, k] = how many points of chunk c (bounds[c]..bounds[c+1]-1) have key k, c in c0..c1-1."""
    for c in range(c0, c1):
        for i in range(bounds[c], bounds[c + 1]):
            counts[c, keys[i]] += 1


@njit(cache=True)
def key_offsets(counts):
    """(nchunk, nkeys) first sorted position of each (chunk, key): keys in order, chunks in order
    within a key, so the scatter is a stable sort."""
    nchunk, nkeys = counts.shape
    off = np.empty_like(counts)
    run = 0
    for k in range(nkeys):
        for c in range(nchunk):
            off[c, k] = run
            run += counts[c, k]
    return off


@njit(cache=True, nogil=True)
def scatter_keys(keys, bounds, off, perm, c0, c1):
    """perm[sorted position] = point, for the points of chunks c0..c1-1 (their rows of `off` advance)."""
    for c in range(c0, c1):
        for i in range(bounds[c], bounds[c + 1]):
            k = keys[i]
            perm[off[c, k]] = i
            off[c, k] += 1


@njit(cache=True, nogil=True)
def take_rows(u, perm, out, lo, hi):
    """out[j] = u[perm[j]] for j in lo..hi-1 (numba: faster than numpy's fancy indexing here)."""
    for j in range(lo, hi):
        i = perm[j]
        for a in range(u.shape[1]):
            out[j, a] = u[i, a]
