"""Plan-time choices of the `Nufft` plan: grid size, upsampling, and the sorting of the points.

- `grid_size` and `choose_plan`: the oversampled grid, and 2.0 or 1.25 upsampling in single or
  double precision: the fastest plan by a cost model (spreading taps against FFT size; Barnett,
  Magland & af Klinteberg 2019, SIAM J. Sci. Comput., choose the same way) among those whose
  modelled float32 error meets eps and whose grid fits the memory bounds.
- `setup_points`: points in grid units, sorted into slabs along axis 0 and bins within them, the
  slabs coloured so that a colour's slabs can be spread concurrently without write conflicts, and
  dealt into load-balanced tasks.
- `pool` and `run_parallel`: the process-wide thread pool for the nogil numba kernels.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..errors import InputError
from . import kernel as _kernel
from . import spread as _spread

log = logging.getLogger(__name__)

# Cost model for the automatic upsampling choice, in ns per unit on the 2-core reference machine:
# one kernel tap of spreading/interpolation, and one n log2 n unit of a complex FFT.
NS_PER_TAP = 0.7
NS_PER_FFT_UNIT = 0.35
BIN = 16  # bin edge (cells) along axes >= 1 for the sort
MAX_GRID_BYTES = 2**29  # above 512 MB (one grid) the automatic choice takes the smallest grid that meets eps
# No plan whose one grid exceeds this is made (InputError): half the physical memory, or 8 GB.
try:
    GRID_BYTES_LIMIT = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
except (ValueError, OSError, AttributeError):
    GRID_BYTES_LIMIT = 2**33
DOUBLE_COST = 2.0  # a double-precision plan costs ~2x a single one (gridding and FFT)
# Single precision is used while its modelled error (single_precision_error) is <= this share of eps.
F32_ERROR_SHARE = 0.5
F32_ERROR_C = 1.6
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


@functools.lru_cache(maxsize=64)
def single_precision_error(width: int, beta: float, upsampling: float, ndim: int, kind: str = "es") -> float:
    """Modelled relative error that float32 grids and FFTs add at this kernel (double adds none).

    The forward transform FFTs x / Phi and the adjoint multiplies by 1 / Phi after its FFT, so the
    float32 rounding of the grid (unit roundoff u = 2^-24) reaches the output amplified by the
    rms of Phi(0) / Phi(xi) over the kept frequencies |xi| <= 1 / (2 sigma), once per axis:

        err32 ~= C * u * rms(Phi(0) / Phi(xi))^ndim,    C = F32_ERROR_C.

    At upsampling 2 the ratio stays below ~1.5 per axis; at 1.25 the ES kernel's transform falls
    much further over the band (rms 9 at w = 8, 33 at w = 11), which is why complex64 missed eps
    1e-5 / 1e-6 by 10-600x there. C was fitted to the float32-minus-float64 error of forward and
    adjoint (worst of the two; 2D 128^2 and 3D 32^3 / 64^3, 100 k random points, w = 6 .. 10):
    C = 1.1 .. 1.6 (Barnett et al. 2019, sec. 4, note the same single-precision limit).
    """
    xi = np.linspace(0.0, 0.5 / upsampling, 257)
    ratio = _kernel.kernel_ft(0.0, width, beta, kind) / _kernel.kernel_ft(xi, width, beta, kind)
    rms = float(np.sqrt(np.mean(ratio**2)))
    return F32_ERROR_C * 2.0**-24 * rms**ndim


@dataclass(frozen=True)
class PlanChoice:
    """One candidate plan: upsampling, kernel, grid, working precision, memory and modelled cost.

    work_dtype is the complex dtype the grid, FFTs and gridding run in: complex128 for a complex64
    input when float32 cannot reach eps at this upsampling (inputs and outputs stay complex64).
    """

    upsampling: float
    width: int
    beta: float
    grid_shape: tuple
    work_dtype: np.dtype
    grid_bytes: int
    cost_ms: float
    err32: float
    meets_eps: bool
    kernel: str = "es"

    def describe(self) -> str:
        prec = "double" if self.work_dtype == np.complex128 else "single"
        return (f"upsampling {self.upsampling:g}, width {self.width}, {prec} precision, {self.kernel} kernel, grid "
                f"{'x'.join(map(str, self.grid_shape))} = {self.grid_bytes / 2**20:.3g} MB, modelled {self.cost_ms:.0f} ms")


def candidate(eps: float, shape: Sequence[int], m: int, dtype: np.dtype, upsampling: float,
              work_dtype: np.dtype) -> PlanChoice:
    """The plan at this upsampling and working precision, with its memory, cost and accuracy."""
    ndim = len(shape)
    kind, w, beta = _kernel.kernel_params(eps, upsampling)
    grid = tuple(grid_size(n, upsampling, w) for n in shape)
    ntot = float(np.prod(grid))
    work = np.dtype(work_dtype)
    slow = DOUBLE_COST if work == np.complex128 else 1.0
    cost = (m * w**ndim * NS_PER_TAP + ntot * math.log2(ntot) * NS_PER_FFT_UNIT) * slow * 1e-6
    err32 = single_precision_error(w, beta, upsampling, ndim, kind)
    meets = work == np.complex128 or err32 <= F32_ERROR_SHARE * eps
    return PlanChoice(float(upsampling), w, beta, grid, work, int(ntot) * work.itemsize, cost, err32, meets, kind)


def choose_plan(eps: float, shape: Sequence[int], m: int, dtype: np.dtype,
                upsampling: float | None = None) -> PlanChoice:
    """The plan the `Nufft` runs: upsampling (2.0 or 1.25 unless given), width and precision.

    Candidates: each upsampling in single precision (complex64 data) or double; a single
    precision plan whose modelled float32 error (`single_precision_error`) exceeds
    F32_ERROR_SHARE * eps is dropped, its double-precision twin kept. Among the rest, the fastest
    by the cost model whose grid fits in MAX_GRID_BYTES; if none fits, the one with the smallest
    grid, provided it fits in GRID_BYTES_LIMIT; otherwise InputError with the grid memory of
    each. The choice and the reason go to the log.
    """
    dtype = np.dtype(dtype)
    sigmas = (2.0, 1.25) if upsampling is None else (float(upsampling),)
    works = (dtype,) if dtype == np.complex128 else (dtype, np.dtype(np.complex128))
    cands = [candidate(eps, shape, m, dtype, s, wd) for s in sigmas for wd in works]
    # a double twin is a candidate only where single precision misses eps
    ok = [c for c in cands if c.meets_eps and not (
        c.work_dtype != dtype and any(o.upsampling == c.upsampling and o.work_dtype == dtype and o.meets_eps
                                      for o in cands))]
    small = [c for c in ok if c.grid_bytes <= MAX_GRID_BYTES]
    if small:
        best = min(small, key=lambda c: c.cost_ms)
        why = "fastest by the cost model" + (" within MAX_GRID_BYTES" if len(small) < len(ok) else "")
    else:
        best = min(ok, key=lambda c: c.grid_bytes)
        why = f"smallest grid (every plan that meets eps exceeds MAX_GRID_BYTES {MAX_GRID_BYTES / 2**20:.0f} MB)"
        if best.grid_bytes > GRID_BYTES_LIMIT:
            figures = "; ".join(f"{c.upsampling:g} {'double' if c.work_dtype == np.complex128 else 'single'}: "
                                f"{c.grid_bytes / 2**20:.3g} MB" for c in cands)
            raise InputError(
                f"NUFFT {'x'.join(map(str, shape))} at eps {eps:.0e}: no plan meets eps within the grid memory "
                f"limit of {GRID_BYTES_LIMIT / 2**20:.3g} MB (grid memory per upsampling/precision: {figures}); "
                f"raise eps or reduce the matrix")
    dropped = [f"{c.upsampling:g} single (float32 error ~{c.err32:.1e} > {F32_ERROR_SHARE:g} eps)"
               for c in cands if not c.meets_eps]
    log.info("Nufft plan for %s, %d points, eps %.1e, %s data: %s; %s%s", tuple(shape), m, eps, dtype.name,
             best.describe(), why, ("; dropped " + ", ".join(dropped)) if dropped else "")
    return best


def stored_weights(u: np.ndarray, coef: np.ndarray, width: int, grid_shape: tuple, chunks: np.ndarray,
                   threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-point kernel weights (M, ndim, w) float32 and first-tap indices (M, ndim) int32 (float64 coef)."""
    m, ndim = u.shape
    wst = np.empty((m, ndim, width), np.float32)
    ist = np.empty((m, ndim), np.int32)
    gs = np.array(grid_shape, np.int64)
    run_parallel(threads, _spread.precompute_weights, list(zip(chunks[:-1].tolist(), chunks[1:].tolist())),
                 u, coef, width, gs, wst, ist)
    return wst, ist


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
    m, ndim = coord.shape
    n = np.array(grid_shape, np.int64)
    scale = n / np.array(shape, np.float64)
    n0 = grid_shape[0]
    nslab = max(1, n0 // width)
    if nslab < 2:
        nslab = 1
    slab_of_plane = (np.arange(n0, dtype=np.int64) * nslab) // n0
    # stable counting sort by (slab, bin, bin), in parallel over chunks of points: grid units and
    # keys, counts per chunk, offsets (serial, keys x chunks), scatter of the indices, gather of the grid units
    nb = np.ones(3, np.int64)
    for a in range(1, ndim):
        nb[a] = (grid_shape[a] + BIN - 1) // BIN
    nch = max(1, min(m, 4 * nthread if nthread > 1 else 1))
    bounds = (np.arange(nch + 1, dtype=np.int64) * m) // nch
    spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    keys = np.empty(m, np.int64)
    u0 = np.empty((m, ndim), np.float64)  # wrapped once: the kernels assume [0, n)
    run_parallel(nthread, _spread.point_keys, spans, coord, scale, n, slab_of_plane, nb, BIN, width, u0, keys)
    counts = np.zeros((nch, nslab * int(nb[1] * nb[2])), np.int64)
    each = [(c, c + 1) for c in range(nch)]
    run_parallel(nthread, _spread.count_keys, each, keys, bounds, counts)
    off = _spread.key_offsets(counts)
    slab_ptr = np.append(off[0, ::int(nb[1] * nb[2])], m).astype(np.int64)
    perm = np.empty(m, np.int64)
    run_parallel(nthread, _spread.scatter_keys, each, keys, bounds, off, perm)
    u = np.empty((m, ndim), np.float64)
    run_parallel(nthread, _spread.take_rows, spans, u0, perm, u)
    del u0
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
