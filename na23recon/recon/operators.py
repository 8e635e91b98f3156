"""SENSE operators: coils streamed one at a time through the NUFFT, and a Toeplitz normal operator
with preallocated FFT buffers.

Encoding model for coil c (Pruessmann et al. 2001, MRM 46:638):

    y_c = D A (S_c x) + noise,

with A the NUFFT (`na23recon.nufft.Nufft`, sigpy's orthonormal convention), S_c the coil
sensitivity (a voxel-wise multiplication) and D an optional per-sample decay factor (T2* during
the readout). Iterative solvers only need the weighted normal operator

    N x = sum_c S_c^H A^H diag(w) A S_c x,        w = dcf * d^2,

which for a fixed trajectory is a convolution: A^H diag(w) A has the kernel
h[d] = prod(N)^-1 sum_j w_j exp(+2 pi i k_j . d / N), d in (-N, N), and is applied exactly by
zero-padding to a 2N grid and two FFTs (Wajer & Pruessmann, Proc. ISMRM 2001; Fessler et al. 2005,
IEEE TSP 53:3393).

The transform behind a problem is anything with `shape`, `coord_shape`, `forward(x)` and
`adjoint(y)` on a batch of coil images / coil k-spaces (leading batch axes), and `normal(x,
weights)` (the `Nufft` plan, `stack.StackNufft`, or an off-resonance operator): `normal_operator`
picks the buffered Toeplitz form for a plain `Nufft` and the transform's own `normal` otherwise.
Coils go through one at a time (`coil_batch`), so no more than one oversampled grid per batch
item is ever held: memory does not grow with the channel count beyond the k-space and the maps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.fft
import sigpy as sp

from ..nufft import Nufft
from ..nufft.toeplitz import psf_kernel
from ..threads import default_threads
from .layout import kspace_layout
from .stack import StackNufft

log = logging.getLogger(__name__)

__all__ = ["make_nufft", "ToeplitzNormal", "normal_operator", "adjoint_coils", "SenseNormal", "SenseForward"]


def make_nufft(coord: np.ndarray, shape: Sequence[int], eps: float = 1e-3, stack: bool = True) -> Nufft | StackNufft:
    """The NUFFT plan of a reconstruction (it keeps its own coordinates for the Toeplitz kernel).

    A 3D stack of 2D readouts on Cartesian kz partitions (`layout.kspace_layout` 'stack', kz
    exactly constant along each readout) gets `StackNufft` (2D NUFFTs and a DFT along z) unless
    `stack` is False; anything else the 3D (or 2D) `Nufft`.
    """
    c = np.asarray(coord)
    if (stack and len(shape) == 3 and c.ndim == 3 and c.shape[-1] == 3 and kspace_layout(c) == "stack"
            and np.max(np.ptp(c[..., 2], axis=1)) < 1e-9):
        return StackNufft(c, shape, eps=eps)
    return Nufft(coord, shape, eps=eps)


class ToeplitzNormal:
    """A^H diag(w) A of a `Nufft` plan on one image, with one preallocated 2N buffer.

    The kernel is the plan's (`nufft.toeplitz.psf_kernel`, at tolerance min(eps, 1e-4) as
    `Nufft.normal` builds it). Each call writes the image into a corner of the buffer, zeroes
    only what the pruned transforms read, and runs the FFT axis by axis in place: first axis on
    the N x N block of the others, then the next on N lines, the last axis on the whole grid;
    the inverse in the opposite order, cropping as it goes. The strided first axis is
    transformed while the data are smallest, and no zero-padded copy is ever made.
    """

    def __init__(self, op: Nufft, coord: np.ndarray, weights: np.ndarray | None, workers: int | None = None) -> None:
        self.shape = tuple(op.shape)
        self.ndim = len(self.shape)
        self.workers = int(workers or default_threads())
        self.kernel = psf_kernel(Nufft, np.asarray(coord, np.float64).reshape(-1, self.ndim), self.shape, weights,
                                 min(op.eps, 1e-4), self.workers, np.dtype(np.complex64))
        self.buf = np.zeros(tuple(2 * n for n in self.shape), np.complex64)
        nd, n = self.ndim, self.shape
        # views transformed along axis a: all of axes <= a, the first N of the later axes
        self._views = [(slice(None),) * (a + 1) + tuple(slice(0, n[b]) for b in range(a + 1, nd)) for a in range(nd)]
        self._zero = [(slice(None),) * a + (slice(n[a], None),) + tuple(slice(0, n[b]) for b in range(a + 1, nd))
                      for a in range(nd)]
        self._corner = tuple(slice(0, s) for s in n)

    @property
    def nbytes(self) -> int:
        return int(self.kernel.nbytes + self.buf.nbytes)

    def _fft(self, a: int, inverse: bool) -> None:
        view = self.buf[self._views[a]]
        fn = scipy.fft.ifft if inverse else scipy.fft.fft
        out = fn(view, axis=a, workers=self.workers, overwrite_x=True)
        if not np.shares_memory(out, view):
            view[...] = out

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A^H W A x for one image x (*shape); into `out` when given."""
        b = self.buf
        for z in self._zero:
            b[z] = 0
        b[self._corner] = x
        for a in range(self.ndim):
            self._fft(a, inverse=False)
        b *= self.kernel
        for a in range(self.ndim - 1, -1, -1):
            self._fft(a, inverse=True)
        if out is None:
            return b[self._corner].copy()
        out[...] = b[self._corner]
        return out


def normal_operator(op, coord: np.ndarray | None, weights: np.ndarray | None):
    """x (*shape) -> A^H W A x: `ToeplitzNormal` for a plain `Nufft` (with its coordinates), the
    transform's own `normal` otherwise."""
    if isinstance(op, Nufft) and coord is not None:
        return ToeplitzNormal(op, coord, weights)
    return lambda x, out=None: _assign(op.normal(x, weights=weights), out)


def _assign(v: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return v
    out[...] = v
    return out


def adjoint_coils(op, y: np.ndarray, weights: np.ndarray | None = None, maps: np.ndarray | None = None,
                  coil_batch: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """A^H (w y_c) for coil k-spaces y (ncoil, *coord_shape), `coil_batch` coils at a time.

    Without maps: the coil images (ncoil, *shape) complex64 (into `out` when given). With maps
    (ncoil, *shape): their combination sum_c conj(S_c) A^H (w y_c), (*shape). Only one batch's
    weighted copy of the data and its grids exist at a time.
    """
    y = np.asarray(y)
    nc = y.shape[0]
    shape = tuple(op.shape)
    w = None if weights is None else np.asarray(weights, np.float32)
    if maps is None:
        res = np.empty((nc,) + shape, np.complex64) if out is None else out
    else:
        res = np.zeros(shape, np.complex64) if out is None else out
        if out is not None:
            res[...] = 0
    step = max(1, int(coil_batch))
    for c0 in range(0, nc, step):
        yc = y[c0:c0 + step].astype(np.complex64)  # a copy: weighting in place is safe
        if w is not None:
            yc *= w
        img = op.adjoint(yc)
        if maps is None:
            res[c0:c0 + step] = img
        else:
            img *= np.conj(maps[c0:c0 + step])
            res += img.sum(axis=0)
    return res


class SenseNormal(sp.linop.Linop):
    """E^H W E for SENSE with maps S (ncoil, *shape): x (*shape) -> sum_c S_c^H T (S_c x).

    T is A^H W A for one image (`normal_operator`, or a sigpy Linop such as
    `Nufft.normal_linop(w)`); coils go through it one at a time.
    """
    def __init__(self, maps: np.ndarray, normal, coil_batch: int = 1) -> None:
        self.maps = np.asarray(maps, dtype=np.complex64)
        self.normal_op = normal
        self.coil_batch = max(1, int(coil_batch))
        shape = tuple(self.maps.shape[1:])
        self._tmp = np.empty(shape, np.complex64)
        super().__init__(shape, shape)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        x = np.asarray(input, dtype=np.complex64)
        out = np.zeros_like(x)
        t = self.normal_op
        tmp = self._tmp
        for c in range(self.maps.shape[0]):
            np.multiply(self.maps[c], x, out=tmp)
            r = t(tmp, out=tmp) if isinstance(t, ToeplitzNormal) else np.asarray(t(tmp), np.complex64)
            r *= np.conj(self.maps[c])
            out += r
        return out

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self


class SenseForward(sp.linop.Linop):
    """E: x (*shape) -> y (ncoil, *coord_shape) = A (S_c x), with optional per-sample factor d;
    coil by coil."""
    def __init__(self, maps: np.ndarray, op, decay: np.ndarray | None = None) -> None:
        self.maps = np.asarray(maps, dtype=np.complex64)
        self.op = op
        self.decay = None if decay is None else np.asarray(decay, np.float32)
        super().__init__((self.maps.shape[0],) + tuple(op.coord_shape), tuple(self.maps.shape[1:]))

    def _apply(self, input: np.ndarray) -> np.ndarray:
        x = np.asarray(input, np.complex64)
        y = np.empty(self.oshape, np.complex64)
        for c in range(self.maps.shape[0]):
            y[c] = self.op.forward(self.maps[c] * x)
            if self.decay is not None:
                y[c] *= self.decay
        return y

    def _adjoint_linop(self) -> sp.linop.Linop:
        return _SenseAdjoint(self)


class _SenseAdjoint(sp.linop.Linop):
    def __init__(self, fwd: SenseForward) -> None:
        self.fwd = fwd
        super().__init__(fwd.ishape, fwd.oshape)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        return adjoint_coils(self.fwd.op, input, self.fwd.decay, self.fwd.maps)

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self.fwd
