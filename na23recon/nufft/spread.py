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


@njit(cache=True)
def to_grid_units(coord, scale, n):
    """u = coord * scale wrapped into [0, n) per axis, float64 (M, ndim)."""
    m, ndim = coord.shape
    u = np.empty((m, ndim), np.float64)
    for i in range(m):
        for a in range(ndim):
            v = coord[i, a] * scale[a]
            v = v - np.floor(v / n[a]) * n[a]
            if v >= n[a] or v < 0:  # rounding at the period edge
                v = 0.0
            u[i, a] = v
    return u


@njit(cache=True)
def take_rows(u, perm):
    """u[perm] for a 2D array (numba: faster than numpy's fancy indexing here)."""
    out = np.empty_like(u)
    for i in range(perm.shape[0]):
        for a in range(u.shape[1]):
            out[i, a] = u[perm[i], a]
    return out


@njit(cache=True)
def bin_sort(u, grid_shape, slab_of_plane, bin_size, width):
    """Stable counting sort of points by (slab along axis 0, bin along axis 1, bin along axis 2).

    Args:
        u: (M, ndim) float64 grid coordinates.
        grid_shape: (ndim,) int64 oversampled grid shape.
        slab_of_plane: (n0,) int64, slab index of every axis-0 plane; a point belongs to the slab
            of its first tap, floor(u0 - w/2) + 1, which the colouring argument relies on.
        bin_size: bin edge in cells for axes >= 1.
        width: kernel width w.

    Returns:
        perm (M,) int64 sorted position -> point; slab_ptr (nslab + 1,) int64 point ranges per slab.
    """
    m, ndim = u.shape
    nslab = slab_of_plane.max() + 1
    nb = np.ones(3, np.int64)
    for a in range(1, ndim):
        nb[a] = (grid_shape[a] + bin_size - 1) // bin_size
    nkeys = nslab * nb[1] * nb[2]
    keys = np.empty(m, np.int64)
    for i in range(m):
        w0 = int(np.floor(u[i, 0] - 0.5 * width) + 1.0) % grid_shape[0]
        key = slab_of_plane[w0]
        for a in range(1, 3):
            b = 0
            if a < ndim:
                b = (int(np.floor(u[i, a])) % grid_shape[a]) // bin_size
            key = key * nb[a] + b
        keys[i] = key
    counts = np.zeros(nkeys + 1, np.int64)
    for i in range(m):
        counts[keys[i] + 1] += 1
    for k in range(nkeys):
        counts[k + 1] += counts[k]
    slab_ptr = np.empty(nslab + 1, np.int64)
    per_slab = nb[1] * nb[2]
    for s in range(nslab + 1):
        slab_ptr[s] = counts[s * per_slab]
    perm = np.empty(m, np.int64)
    for i in range(m):
        k = keys[i]
        perm[counts[k]] = i
        counts[k] += 1
    return perm, slab_ptr
