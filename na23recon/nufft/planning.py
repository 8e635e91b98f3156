"""Plan-time choices of the `Nufft` plan: grid size, upsampling, and the sorting of the points.

- `grid_size` and `choose_upsampling`: the oversampled grid, and 2.0 or 1.25 upsampling by a
  cost model (spreading taps against FFT size; Barnett, Magland & af Klinteberg 2019, SIAM J. Sci.
  Comput., choose the same way).
- `setup_points`: points in grid units, sorted into slabs along axis 0 and bins within them, the
  slabs coloured so that a colour's slabs can be spread concurrently without write conflicts, and
  dealt into load-balanced tasks.
- `pool` and `run_parallel`: the process-wide thread pool for the nogil numba kernels.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft

from . import kernel as _kernel
from . import spread as _spread

log = logging.getLogger(__name__)

# Cost model for the automatic upsampling choice, in ns per unit on the 2-core reference machine:
# one kernel tap of spreading/interpolation, and one n log2 n unit of a complex FFT.
NS_PER_TAP = 0.7
NS_PER_FFT_UNIT = 0.35
BIN = 16  # bin edge (cells) along axes >= 1 for the sort
MAX_GRID_BYTES = 2**29  # above 512 MB the automatic choice takes upsampling 1.25
MAX_PRECOMPUTE_BYTES = 2**28  # stored kernel weights up to 256 MB by default

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool(nthreads: int) -> ThreadPoolExecutor:
    """Process-wide worker pool for the nogil numba kernels (grown on demand, never shrunk)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < nthreads:
            _POOL = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="na23recon-nufft")
        return _POOL


def run_parallel(nthreads: int, fn, ranges, *args) -> None:
    """Run fn(*args, lo, hi) for each (lo, hi) in ranges, concurrently (kernels release the GIL)."""
    ranges = [r for r in ranges if r[1] > r[0]]
    if len(ranges) <= 1 or nthreads == 1:
        for lo, hi in ranges:
            fn(*args, lo, hi)
        return
    ex = pool(nthreads)
    for f in [ex.submit(fn, *args, lo, hi) for lo, hi in ranges]:
        f.result()


def grid_size(n_img: int, upsampling: float, width: int) -> int:
    """Smallest even, FFT-friendly grid size >= upsampling * n_img and >= 2 * width."""
    n = max(int(math.ceil(upsampling * n_img - 1e-9)), 2 * width)
    if upsampling == 2.0:
        return max(2 * n_img, 2 * width)
    while True:
        n = scipy.fft.next_fast_len(n)
        if n % 2 == 0:
            return n
        n += 1


def choose_upsampling(eps: float, shape: Sequence[int], m: int, dtype: np.dtype) -> float:
    """2.0 or 1.25, whichever the cost model says is faster for m points on this image shape."""
    ndim = len(shape)
    costs = {}
    for sigma in (2.0, 1.25):
        w, _ = _kernel.es_params(eps, sigma)
        grid = [grid_size(n, sigma, w) for n in shape]
        ntot = float(np.prod(grid))
        costs[sigma] = m * w**ndim * NS_PER_TAP + ntot * math.log2(ntot) * NS_PER_FFT_UNIT
    best = min(costs, key=costs.get)
    big = float(np.prod([grid_size(n, 2.0, 2) for n in shape])) * np.dtype(dtype).itemsize
    if best == 2.0 and big > MAX_GRID_BYTES:
        best = 1.25  # a 2x grid this large costs more memory than the speed is worth
    log.info("Nufft upsampling: modelled cost %s ms -> %.2f",
             {k: round(v * 1e-6, 1) for k, v in costs.items()}, best)
    return best


@dataclass
class PointSetup:
    """The sorted points and the work partition of a plan.

    u: (M, ndim) points in grid units in [0, n), sorted; perm: original index of each sorted
    point; slab_ptr: start of each slab in the sorted order; task_slabs, color_ranges: per colour,
    (lo, hi) ranges into task_slabs, one per spreading task; chunks: M split for interpolation.
    """

    u: np.ndarray
    perm: np.ndarray
    slab_ptr: np.ndarray
    task_slabs: np.ndarray
    color_ranges: list
    chunks: np.ndarray


def setup_points(coord: np.ndarray, shape: tuple, grid_shape: tuple, width: int, nthread: int) -> PointSetup:
    """Scale coord (M, ndim) in cycles/FOV to grid units, sort into slabs and bins, partition."""
    m = coord.shape[0]
    n = np.array(grid_shape, np.int64)
    scale = n / np.array(shape, np.float64)
    u = _spread.to_grid_units(coord, scale, n)  # wrapped once: the kernels assume [0, n)
    n0 = grid_shape[0]
    nslab = max(1, n0 // width)
    if nslab < 2:
        nslab = 1
    slab_of_plane = (np.arange(n0, dtype=np.int64) * nslab) // n0
    perm, slab_ptr = _spread.bin_sort(u, n, slab_of_plane, BIN, width)
    u = _spread.take_rows(u, perm)
    # Colours: neighbouring slabs differ; with an odd count the last slab gets its own colour.
    if nslab == 1:
        colors = np.zeros(1, np.int64)
    else:
        colors = np.arange(nslab) % 2
        if nslab % 2:
            colors[-1] = 2
    ncolor = int(colors.max()) + 1
    counts = np.diff(slab_ptr)
    # Per colour, the slabs are dealt (longest first) into up to 4 tasks per thread of similar
    # point counts; the pool hands tasks out dynamically, so a thread that the OS delays does
    # not hold up the colour's barrier.
    task_slabs, color_ranges = [], []
    for c in range(ncolor):
        slabs = np.flatnonzero(colors == c)
        ntask = max(1, min(len(slabs), 4 * nthread if nthread > 1 else 1))
        loads = np.zeros(ntask)
        lists = [[] for _ in range(ntask)]
        for s in slabs[np.argsort(-counts[slabs], kind="stable")]:
            t = int(np.argmin(loads))
            lists[t].append(int(s))
            loads[t] += counts[s]
        ranges = []
        for t in np.argsort(-loads, kind="stable"):  # biggest tasks first
            lo = len(task_slabs)
            task_slabs.extend(sorted(lists[t]))
            ranges.append((lo, len(task_slabs)))
        color_ranges.append(ranges)
    nch = max(1, min(m, 8 * nthread))
    chunks = (np.arange(nch + 1, dtype=np.int64) * m) // nch
    return PointSetup(u, perm, slab_ptr, np.array(task_slabs, np.int64), color_ranges, chunks)
