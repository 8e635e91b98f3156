"""numba kernels: bin sorting, spreading (points -> grid) and interpolation (grid -> points).

All kernels are module-level `@njit(cache=True)` functions, so a fresh process loads them from
numba's cache instead of recompiling. Conventions shared by every kernel:

- `u` (M, ndim) float64: point coordinates in oversampled-grid cells, already in sorted order;
  the grid is periodic, index = floor-based tap index modulo the grid size.
- `coef` (P, w): Horner coefficients of the kernel (see kernel.fit_horner), in the weight dtype
  (float32 for complex64 data, float64 for complex128).
- `perm` (M,) int64: sorted position -> original sample index.
- grids are (B, n0, n1[, n2]) complex, values are (B, M) complex, B = flattened batch dims.

Spreading is race-free without atomics: points are sorted into slabs along axis 0, each slab at
least w planes thick, so slabs of the same colour (even / odd, plus a third colour for the last
slab when the count is odd) never touch the same grid plane; slabs of one colour are spread in
parallel, colour by colour, with the slabs dealt to threads by point count at plan time
(Barnett et al. 2019 spread by subproblems into private subgrids; the colouring gets the same
race freedom without the private grids or their reduction).
Interpolation is parallel over chunks of points (Beatty et al. 2005, Fessler & Sutton 2003 for
the gridding / min-max interpolation background).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_FASTMATH = {"contract", "arcp", "nsz", "reassoc"}


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _axis_weights(u, n, coef, width, wts, idx):
    """Kernel weights and wrapped grid indices of the w taps of one point along one axis."""
    i0f = np.floor(u - 0.5 * width) + 1.0
    t = 2.0 * (u - i0f) - width + 1.0
    i0 = int(i0f) % n
    npow = coef.shape[0]
    for j in range(width):
        v = coef[0, j] * 1.0
        for p in range(1, npow):
            v = v * t + coef[p, j]
        wts[j] = v
        k = i0 + j
        if k >= n:
            k -= n
        idx[j] = k


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


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def interp2d(grid, u, coef, width, perm, chunks, out):
    """out[b, perm[j]] = sum over taps of phi * grid[b, taps] for sorted points j."""
    nb, n0, n1 = grid.shape
    nch = chunks.shape[0] - 1
    for c in prange(nch):
        w0 = np.empty(width, coef.dtype)
        w1 = np.empty(width, coef.dtype)
        i0 = np.empty(width, np.int64)
        i1 = np.empty(width, np.int64)
        for j in range(chunks[c], chunks[c + 1]):
            _axis_weights(u[j, 0], n0, coef, width, w0, i0)
            _axis_weights(u[j, 1], n1, coef, width, w1, i1)
            p = perm[j]
            for b in range(nb):
                z = grid[b, 0, 0]
                acc = z - z
                for a in range(width):
                    row = grid[b, i0[a]]
                    accr = z - z
                    for d in range(width):
                        accr += w1[d] * row[i1[d]]
                    acc += w0[a] * accr
                out[b, p] = acc


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def interp3d(grid, u, coef, width, perm, chunks, out):
    """3D version of interp2d."""
    nb, n0, n1, n2 = grid.shape
    nch = chunks.shape[0] - 1
    for c in prange(nch):
        w0 = np.empty(width, coef.dtype)
        w1 = np.empty(width, coef.dtype)
        w2 = np.empty(width, coef.dtype)
        i0 = np.empty(width, np.int64)
        i1 = np.empty(width, np.int64)
        i2 = np.empty(width, np.int64)
        for j in range(chunks[c], chunks[c + 1]):
            _axis_weights(u[j, 0], n0, coef, width, w0, i0)
            _axis_weights(u[j, 1], n1, coef, width, w1, i1)
            _axis_weights(u[j, 2], n2, coef, width, w2, i2)
            p = perm[j]
            for b in range(nb):
                z = grid[b, 0, 0, 0]
                acc = z - z
                for a in range(width):
                    plane = grid[b, i0[a]]
                    acca = z - z
                    for e in range(width):
                        row = plane[i1[e]]
                        acce = z - z
                        for d in range(width):
                            acce += w2[d] * row[i2[d]]
                        acca += w1[e] * acce
                    acc += w0[a] * acca
                out[b, p] = acc


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def spread2d(vals, u, coef, width, perm, slab_ptr, task_slabs, task_ptr, ncolor, nthread, grid):
    """grid[b, taps] += phi * vals[b, perm[j]]; slabs of one colour in parallel (see module doc)."""
    nb, n0, n1 = grid.shape
    for color in range(ncolor):
        for t in prange(nthread):
            w0 = np.empty(width, coef.dtype)
            w1 = np.empty(width, coef.dtype)
            i0 = np.empty(width, np.int64)
            i1 = np.empty(width, np.int64)
            q = color * nthread + t
            for k in range(task_ptr[q], task_ptr[q + 1]):
                s = task_slabs[k]
                for j in range(slab_ptr[s], slab_ptr[s + 1]):
                    _axis_weights(u[j, 0], n0, coef, width, w0, i0)
                    _axis_weights(u[j, 1], n1, coef, width, w1, i1)
                    p = perm[j]
                    for b in range(nb):
                        v = vals[b, p]
                        for a in range(width):
                            row = grid[b, i0[a]]
                            va = w0[a] * v
                            for d in range(width):
                                row[i1[d]] += w1[d] * va


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def spread3d(vals, u, coef, width, perm, slab_ptr, task_slabs, task_ptr, ncolor, nthread, grid):
    """3D version of spread2d."""
    nb, n0, n1, n2 = grid.shape
    for color in range(ncolor):
        for t in prange(nthread):
            w0 = np.empty(width, coef.dtype)
            w1 = np.empty(width, coef.dtype)
            w2 = np.empty(width, coef.dtype)
            i0 = np.empty(width, np.int64)
            i1 = np.empty(width, np.int64)
            i2 = np.empty(width, np.int64)
            q = color * nthread + t
            for k in range(task_ptr[q], task_ptr[q + 1]):
                s = task_slabs[k]
                for j in range(slab_ptr[s], slab_ptr[s + 1]):
                    _axis_weights(u[j, 0], n0, coef, width, w0, i0)
                    _axis_weights(u[j, 1], n1, coef, width, w1, i1)
                    _axis_weights(u[j, 2], n2, coef, width, w2, i2)
                    p = perm[j]
                    for b in range(nb):
                        v = vals[b, p]
                        for a in range(width):
                            plane = grid[b, i0[a]]
                            va = w0[a] * v
                            for e in range(width):
                                row = plane[i1[e]]
                                vae = w1[e] * va
                                for d in range(width):
                                    row[i2[d]] += w2[d] * vae
