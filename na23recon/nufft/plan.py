"""The NUFFT plan: `Nufft(coord, shape, eps)` with forward, adjoint, normal, spread and interp.

Transform (the same as `sigpy.nufft`, number for number): for an image x of shape N (2D or 3D)
indexed by m, and a point k in cycles per FOV (edge of the matrix at +-N/2),

    y(k) = prod(N)^(-1/2) * sum_m x[m] * exp(-2 pi i sum_a k_a (m_a - N_a // 2) / N_a),

and the adjoint is the conjugate transpose, x[m] = prod(N)^(-1/2) sum_j y_j exp(+2 pi i ...).

Method (type-2 / type-1 NUFFT, Dutt & Rokhlin 1993, SIAM J. Sci. Comput. 14:1368; Fessler & Sutton
2003, IEEE Trans. Signal Process. 51:560; Beatty et al. 2005, IEEE Trans. Med. Imaging 24:799;
Barnett, Magland & af Klinteberg 2019, SIAM J. Sci. Comput. 41:C479 for the ES kernel and the
plan/sort/spread structure):
forward = interpolate(FFT(zero-pad(x / Phi))), adjoint = its exact transpose, where Phi is the
kernel's Fourier transform on the oversampled grid (deapodisation).
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import scipy.fft

from ..threads import default_threads
from . import _kernels
from . import kernel as _kernel
from . import planning as _planning
from . import toeplitz as _toeplitz
from .linop import NufftLinop, NufftNormalLinop

__all__ = ["Nufft"]

log = logging.getLogger(__name__)

class Nufft:
    """Non-uniform FFT plan for fixed sample points (2D or 3D), tolerance-controlled.

    Args:
        coord: float array (..., ndim), sample positions in cycles per FOV (sigpy convention:
            the edge of a matrix of N is at +-N/2; values outside wrap periodically).
        shape: image shape (2 or 3 ints), the trailing dims of `forward`'s input.
        eps: requested relative l2 accuracy, 1e-2 .. 1e-6. complex64 data run in double
            precision where float32 grids cannot reach eps (upsampling 1.25 below ~1e-4 in 3D);
            their floor is then the complex64 rounding of input and output (~1e-7).
        upsampling: grid oversampling factor; None picks 2.0 or 1.25, whichever a cost model
            says is faster for this number of points and grid among the plans that meet eps,
            preferring the smaller grid above `planning.MAX_GRID_BYTES` and refusing
            (InputError, with the grid memory of each plan) above `planning.GRID_BYTES_LIMIT`;
            the choice and why are logged.
        threads: threads for spreading, interpolation and FFTs (default `threads.default_threads()`:
                NA23RECON_THREADS or every core).
        dtype: complex dtype used when an input is real (outputs otherwise follow the input's
            complex dtype: complex64 in, complex64 out).
        precompute: store each point's per-axis kernel weights (float32) and first-tap indices
            at plan time, 4 (ndim w + ndim) bytes per point (~77 MB for 1.28 M points in 3D at
            eps 1e-3). None (default) or False: evaluate them in the transforms (vectorised
            Horner, ~5-10% of an interpolation), which keeps the plan fast and small; True stores
            them (float32: only for eps >= 1e-6 in single precision).

    Attributes (read-only): eps, width, upsampling, grid_shape, dtype, shape, ndim, coord_shape,
    work_dtype.

    Plan work (sorting the points into slabs and bins, fitting the kernel polynomial, the
    deapodisation weights) happens here once; every transform reuses it.
    """
    def __init__(
        self,
        coord: np.ndarray,
        shape: Sequence[int],
        eps: float = 1e-3,
        upsampling: float | None = None,
        threads: int | None = None,
        dtype: np.dtype | type = np.complex64,
        precompute: bool | None = None,
    ) -> None:
        coord = np.asarray(coord)
        shape = tuple(int(s) for s in shape)
        ndim = len(shape)
        if ndim not in (2, 3):
            raise ValueError(f"shape must be 2D or 3D, got {shape}")
        if coord.ndim < 2 or coord.shape[-1] != ndim:
            raise ValueError(f"coord must be (..., {ndim}) for image shape {shape}, got {coord.shape}")
        if not np.all(np.isfinite(coord)):
            raise ValueError("coord holds non-finite values")
        if min(shape) < 1:
            raise ValueError(f"image shape must be positive, got {shape}")
        if not (1e-15 <= eps < 1):
            raise ValueError(f"eps must be in [1e-15, 1), got {eps}")
        self._dtype = np.dtype(dtype)
        if self._dtype.kind != "c":
            raise ValueError(f"dtype must be complex64 or complex128, got {self._dtype}")
        self._eps = float(eps)
        self._shape = shape
        self._ndim = ndim
        self._coord_shape = coord.shape[:-1]
        m = int(np.prod(self._coord_shape))
        self._m = m
        self._threads = max(1, int(threads) if threads else default_threads())
        self._workers = self._threads

        choice = _planning.choose_plan(self._eps, shape, m, self._dtype, upsampling)
        self._upsampling, self._width, self._beta = choice.upsampling, choice.width, choice.beta
        self._kernel_kind = choice.kernel
        self._grid_shape = choice.grid_shape
        # complex64 inputs run in complex128 when float32 grids cannot reach eps here (large 1/Phi
        # range at upsampling 1.25 and wide kernels); see planning.single_precision_error.
        self._promote = choice.err32 > _planning.F32_ERROR_SHARE * self._eps
        self._grid_bytes1 = int(np.prod(self._grid_shape)) * 16  # one complex128 grid

        coef = _kernel.fit_horner(self._width, self._beta, tol=0.1 * self._eps, kind=self._kernel_kind)
        self._coef = {np.dtype(np.float64): coef, np.dtype(np.float32): coef.astype(np.float32)}

        self._deapod_1d = _kernel.deapodisation(shape, self._grid_shape, self._width, self._beta,
                                                self._kernel_kind)
        self._deapod = {}

        if coord.dtype not in (np.float32, np.float64):
            coord = coord.astype(np.float64)
        self._coord = np.array(coord.reshape(m, ndim))  # own copy, kept for the Toeplitz psf
        pts = _planning.setup_points(self._coord, shape, self._grid_shape, self._width, self._threads)
        self._u, self._perm, self._slab_ptr = pts.u, pts.perm, pts.slab_ptr
        self._task_slabs, self._color_ranges, self._chunks = pts.task_slabs, pts.color_ranges, pts.chunks
        nbytes = 4 * m * ndim * (self._width + 1)
        # float32 weights carry the same error as float32 grids
        precompute = bool(precompute) and nbytes <= _planning.MAX_PRECOMPUTE_BYTES and self._eps >= 1e-6 \
            and not self._promote
        self._wst = np.zeros((0, ndim, self._width), np.float32)
        self._ist = np.zeros((0, ndim), np.int32)
        if precompute:
            self._wst, self._ist = _planning.stored_weights(self._u, coef, self._width, self._grid_shape,
                                                             self._chunks, self._threads)
        self._toeplitz = _toeplitz.KernelCache(Nufft, self._coord, shape, min(self._eps, 1e-4), self._threads)
        log.info(
            "Nufft %s, %d points, eps %.1e: upsampling %.2f, %s kernel width %d, beta %.2f, grid %s, %s precision "
            "for complex64 data, %d threads", shape, m, self._eps, self._upsampling, self._kernel_kind, self._width, self._beta,
            self._grid_shape, "double" if self._promote else "single", self._threads,
        )

    # ---------------------------------------------------------------- plan helpers
    def _deapod_for(self, rdtype: np.dtype) -> np.ndarray:
        d = self._deapod.get(rdtype)
        if d is None:
            d = self._deapod_1d[0]
            for a in range(1, self._ndim):
                d = np.multiply.outer(d, self._deapod_1d[a])
            d = d.astype(rdtype)
            self._deapod[rdtype] = d
        return d

    def _blocks(self):
        """(grid slices, image slices) pairs: image index m sits at grid index (m - N//2) mod n."""
        per_axis = []
        for n_img, n_grid in zip(self._shape, self._grid_shape):
            h = n_img // 2
            per_axis.append([(slice(0, n_img - h), slice(h, n_img)), (slice(n_grid - h, n_grid), slice(0, h))])
        for combo in itertools.product(*per_axis):
            yield (Ellipsis,) + tuple(c[0] for c in combo), (Ellipsis,) + tuple(c[1] for c in combo)

    def _fft_pruned(self, grid: np.ndarray, inverse: bool) -> None:
        """In-place FFT (unnormalised both ways) of grid (B, *grid_shape) over the image axes,
        skipping lines that are zero (forward: only the wrapped image blocks hold data) or whose
        output is cropped away (inverse): ~0.58 of a full 3D FFT, 0.75 in 2D.

        Axis a is transformed only on the image-block slices of the axes before it; forward runs
        the last axis first, inverse the first axis first.
        """
        nd = self._ndim
        per_axis = []
        for n_img, n_grid in zip(self._shape, self._grid_shape):
            h = n_img // 2
            per_axis.append([sl for sl in (slice(0, n_img - h), slice(n_grid - h, n_grid)) if sl.stop > sl.start])
        fn = scipy.fft.ifft if inverse else scipy.fft.fft
        kw = dict(workers=self._workers, overwrite_x=True, norm="forward" if inverse else "backward")
        order = range(nd) if inverse else range(nd - 1, -1, -1)
        for a in order:
            for combo in itertools.product(*per_axis[:a]):
                view = grid[(slice(None),) + combo]
                out = fn(view, axis=1 + a, **kw)
                if not np.shares_memory(out, view):
                    view[...] = out

    def _as_batch(self, x: np.ndarray, tail: tuple, what: str) -> tuple[np.ndarray, tuple]:
        x = np.asarray(x)
        k = len(tail)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(tail):
            raise ValueError(f"{what}: expected an array (..., {', '.join(map(str, tail))}), got shape {x.shape}")
        if x.dtype.kind != "c":
            x = x.astype(self._dtype)
        elif x.dtype not in (np.complex64, np.complex128):
            x = x.astype(np.complex128)
        batch = x.shape[: x.ndim - k]
        b = int(np.prod(batch)) if batch else 1
        return np.ascontiguousarray(x.reshape((b,) + tuple(tail))), batch

    def _in_work_precision(self, fn, xb: np.ndarray, out_tail: tuple) -> np.ndarray:
        """fn(xb) -> (B, *out_tail); complex64 batches of a double-precision plan run in complex128,
        a few items at a time (one chunk's grids within MAX_GRID_BYTES), and come back complex64."""
        if not (self._promote and xb.dtype == np.complex64):
            return fn(xb)
        out = np.empty((xb.shape[0],) + tuple(out_tail), np.complex64)
        step = max(1, _planning.MAX_GRID_BYTES // self._grid_bytes1)
        for b0 in range(0, xb.shape[0], step):
            out[b0:b0 + step] = fn(xb[b0:b0 + step].astype(np.complex128))
        return out

    def _parallel(self, fn, ranges, *args) -> None:
        _planning.run_parallel(self._threads, fn, ranges, *args)

    def _fft_axes(self) -> tuple[int, ...]:
        return tuple(range(-self._ndim, 0))

    # ---------------------------------------------------------------- gridding
    def _interp_raw(self, grid: np.ndarray) -> np.ndarray:
        """grid (B, *grid_shape), uncentred (index 0 = k 0) -> values (B, M)."""
        grid = np.ascontiguousarray(grid)
        out = np.empty((grid.shape[0], self._m), grid.dtype)
        rdt = grid.real.dtype
        coef = self._coef[np.dtype(rdt)]
        fn = (_kernels.INTERP2D if self._ndim == 2 else _kernels.INTERP3D)[self._width]
        g = grid.reshape(grid.shape[0], -1).view(rdt)
        outf = out.view(rdt)
        ch = self._chunks
        ranges = list(zip(ch[:-1].tolist(), ch[1:].tolist()))
        self._parallel(lambda lo, hi: fn(g, *self._grid_shape, self._u, coef, self._wst, self._ist,
                                         self._width, self._perm, lo, hi, outf), ranges)
        return out

    def _spread_raw(self, vals: np.ndarray) -> np.ndarray:
        """values (B, M) -> grid (B, *grid_shape), uncentred."""
        vals = np.ascontiguousarray(vals)
        grid = np.zeros((vals.shape[0],) + self._grid_shape, vals.dtype)
        rdt = vals.real.dtype
        coef = self._coef[np.dtype(rdt)]
        fn = (_kernels.SPREAD2D if self._ndim == 2 else _kernels.SPREAD3D)[self._width]
        v = vals.view(rdt)
        g = grid.reshape(grid.shape[0], -1).view(rdt)
        for ranges in self._color_ranges:  # colours in sequence, a colour's slab lists concurrently
            self._parallel(lambda lo, hi: fn(v, g, *self._grid_shape, self._u, coef, self._wst, self._ist,
                                             self._width, self._perm, self._slab_ptr, self._task_slabs,
                                             lo, hi), ranges)
        return grid

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Convolve point values with the kernel onto the oversampled grid (gridding only).

        No FFT, no deapodisation, no scaling: grid[l] = sum_j phi(u_j - l) values_j with the ES
        kernel phi (peak 1) and u_j = k_j * grid_shape / shape the point in grid cells (Jackson
        et al. 1991, IEEE Trans. Med. Imaging 10:473; Beatty et al. 2005). Periodic wrap at the grid edge.

        Args:
            values: complex (..., *coord.shape[:-1]).

        Returns:
            complex (..., *grid_shape), centred: k = 0 at index grid_shape // 2 (sigpy's
            gridding layout), dtype of the input.
        """
        vals, batch = self._as_batch(values, self._coord_shape, "spread")
        vals = vals.reshape(vals.shape[0], self._m)
        grid = self._in_work_precision(self._spread_raw, vals, self._grid_shape)
        grid = np.fft.fftshift(grid, axes=self._fft_axes())
        return grid.reshape(batch + self._grid_shape)

    def interp(self, grid: np.ndarray) -> np.ndarray:
        """Transpose of `spread`: values_j = sum_l phi(u_j - l) grid[l].

        Args:
            grid: complex (..., *grid_shape), centred as `spread` returns it.

        Returns:
            complex (..., *coord.shape[:-1]).
        """
        g, batch = self._as_batch(grid, self._grid_shape, "interp")
        g = np.ascontiguousarray(np.fft.ifftshift(g, axes=self._fft_axes()))
        return self._in_work_precision(self._interp_raw, g, (self._m,)).reshape(batch + self._coord_shape)

    # ---------------------------------------------------------------- transforms
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Image -> k-space samples (type-2 NUFFT), the same transform as `sigpy.nufft`.

        Args:
            x: complex (..., *shape); leading batch dims (coils, echoes) go through in one call.

        Returns:
            complex (..., *coord.shape[:-1]), dtype of x (complex64 or complex128).
        """
        xb, batch = self._as_batch(x, self._shape, "forward")
        return self._in_work_precision(self._forward_raw, xb, (self._m,)).reshape(batch + self._coord_shape)

    def _forward_raw(self, xb: np.ndarray) -> np.ndarray:
        d = self._deapod_for(np.dtype(xb.real.dtype))
        grid = np.zeros((xb.shape[0],) + self._grid_shape, xb.dtype)
        for gs, xs in self._blocks():
            np.multiply(xb[xs], d[xs], out=grid[gs])
        self._fft_pruned(grid, inverse=False)
        return self._interp_raw(grid)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """k-space samples -> image (type-1 NUFFT), the exact adjoint of `forward`.

        Args:
            y: complex (..., *coord.shape[:-1]).

        Returns:
            complex (..., *shape), dtype of y.
        """
        yb, batch = self._as_batch(y, self._coord_shape, "adjoint")
        yb = yb.reshape(yb.shape[0], self._m)
        return self._in_work_precision(self._adjoint_raw, yb, self._shape).reshape(batch + self._shape)

    def _adjoint_raw(self, yb: np.ndarray) -> np.ndarray:
        grid = self._spread_raw(yb)
        self._fft_pruned(grid, inverse=True)
        d = self._deapod_for(np.dtype(yb.real.dtype))
        x = np.empty((yb.shape[0],) + self._shape, yb.dtype)
        for gs, xs in self._blocks():
            np.multiply(grid[gs], d[xs], out=x[xs])
        return x

    def normal(self, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """A^H diag(w) A x through Toeplitz embedding (two pruned FFTs of the 2N grid per call).

        The Fourier-domain kernel on the 2N grid is computed on first use for each weight vector
        (an adjoint NUFFT at tolerance min(eps, 1e-4)) and cached (the last two weight vectors and
        the unweighted one), keyed by a SHA-1 of the weights; the hash is remembered for the same
        array object while its sum and a sample of its entries are unchanged, so pass a new array
        rather than editing the old one in place. Wajer & Pruessmann, Proc. ISMRM 2001, p. 767;
        Fessler et al. 2005, IEEE Trans. Signal Process. 53:3393.

        Args:
            x: complex (..., *shape).
            weights: real or complex (*coord.shape[:-1]) sample weights (e.g. density
                compensation), or None for A^H A.

        Returns:
            complex (..., *shape), dtype of x.
        """
        xb, batch = self._as_batch(x, self._shape, "normal")
        kern = self._toeplitz.get(weights, xb.dtype)
        z = _toeplitz.apply_normal(kern, xb, self._ndim, self._workers)
        return z.reshape(batch + self._shape)

    def linop(self, batch_shape: Sequence[int] = ()):
        """sigpy Linop for this NUFFT: ishape batch + shape, oshape batch + coord.shape[:-1].

        `.H` is the adjoint, `.N` the Toeplitz normal operator A^H A; usable in sigpy.alg and
        sigpy.app solvers.
        """
        return NufftLinop(self, batch_shape)

    def normal_linop(self, weights: np.ndarray | None = None, batch_shape: Sequence[int] = ()):
        """sigpy Linop of A^H diag(w) A (Toeplitz), ishape = oshape = batch + shape."""
        return NufftNormalLinop(self, batch_shape, weights)

    # ---------------------------------------------------------------- attributes
    @property
    def eps(self) -> float:
        """Requested tolerance."""
        return self._eps

    @property
    def width(self) -> int:
        """Kernel width in grid cells (taps per axis)."""
        return self._width

    @property
    def beta(self) -> float:
        """ES kernel shape parameter."""
        return self._beta

    @property
    def kernel(self) -> str:
        """Kernel family: "es" (exponential of semicircle) or "pswf" (prolate spheroidal)."""
        return self._kernel_kind

    @property
    def upsampling(self) -> float:
        """Nominal grid oversampling factor (2.0 or 1.25 unless overridden)."""
        return self._upsampling

    @property
    def work_dtype(self) -> np.dtype:
        """Complex dtype complex64 inputs are gridded and FFT'd in (complex128 inputs: complex128)."""
        return np.dtype(np.complex128 if self._promote else np.complex64)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Oversampled grid shape."""
        return self._grid_shape

    @property
    def dtype(self) -> np.dtype:
        """Complex dtype used for real inputs and by the sigpy Linop."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Image shape."""
        return self._shape

    @property
    def ndim(self) -> int:
        """2 or 3."""
        return self._ndim

    @property
    def coord_shape(self) -> tuple[int, ...]:
        """Shape of the sample set, coord.shape[:-1]."""
        return self._coord_shape

    def __repr__(self) -> str:
        return (f"Nufft(shape={self._shape}, points={self._coord_shape}, eps={self._eps:g}, "
                f"upsampling={self._upsampling:g}, width={self._width}, grid={self._grid_shape})")
