"""Reconstruction operators as sigpy Linops: the NUFFT, the Toeplitz normal operator, SENSE.

Encoding model for coil c (Pruessmann et al. 2001, MRM 46:638):

    y_c = D A (S_c x) + noise,

with A the NUFFT (`na23recon.nufft.Nufft`, sigpy's orthonormal convention), S_c the coil
sensitivity (a voxel-wise multiplication) and D an optional per-sample decay factor (T2* during
the readout). Iterative solvers only need the weighted normal operator

    N x = sum_c S_c^H A^H diag(w) A S_c x,        w = dcf * d^2,

which for a fixed trajectory is a convolution: A^H diag(w) A has the kernel
h[d] = prod(N)^-1 sum_j w_j exp(+2 pi i k_j . d / N), d in (-N, N), and is applied exactly by
zero-padding to a 2N grid and two FFTs (Wajer & Pruessmann 2001; Fessler et al. 2005, IEEE TSP
53:3393). One application costs two scipy FFTs of (2N)^3 per coil and no gridding: at 64^3 it is
several times cheaper than a NUFFT forward + adjoint pair (REFERENCES.md speed anchors).

When the NUFFT plan offers its own `normal(x, weights)` (the nufft branch's Toeplitz operator)
`ToeplitzNormal` uses that; otherwise it builds the kernel here from one adjoint NUFFT.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import scipy.fft
import sigpy as sp

if TYPE_CHECKING:
    from ..nufft import Nufft

log = logging.getLogger(__name__)

__all__ = ["NufftLinop", "ToeplitzNormal", "SenseNormal", "SenseForward"]


def _workers() -> int:
    from ..threads import default_threads

    return default_threads()


class NufftLinop(sp.linop.Linop):
    """sigpy Linop around a `Nufft` plan: image (*batch, *shape) -> samples (*batch, *coord_shape).

    batch: leading dims (e.g. (ncoil,)) that pass through in one NUFFT call.
    The adjoint (`.H`) is the exact adjoint NUFFT (type 1).
    """

    def __init__(self, op: Nufft, batch: Sequence[int] = ()) -> None:
        self.op = op
        self.batch = tuple(int(b) for b in batch)
        super().__init__(self.batch + tuple(op.coord_shape), self.batch + tuple(op.shape))

    def _apply(self, input: np.ndarray) -> np.ndarray:
        return self.op.forward(input)

    def _adjoint_linop(self) -> sp.linop.Linop:
        return _NufftAdjointLinop(self.op, self.batch)


class _NufftAdjointLinop(sp.linop.Linop):
    def __init__(self, op: Nufft, batch: tuple[int, ...]) -> None:
        self.op = op
        self.batch = batch
        super().__init__(batch + tuple(op.shape), batch + tuple(op.coord_shape))

    def _apply(self, input: np.ndarray) -> np.ndarray:
        return self.op.adjoint(input)

    def _adjoint_linop(self) -> sp.linop.Linop:
        return NufftLinop(self.op, self.batch)


class ToeplitzNormal(sp.linop.Linop):
    """A^H diag(w) A for a fixed NUFFT plan, applied by 2N-grid FFT convolution (self-adjoint).

    Args:
        op: the NUFFT plan (image shape N, coord in cycles/FOV).
        weights: float (*coord_shape) per-sample weights (DCF times decay^2), or None for 1.
        batch: leading image dims (coils) applied in one call.
        use_plan: use `op.normal` when the plan has it (True) or always the kernel built here.

    Input and output: complex64 (*batch, *shape).

    The kernel is the adjoint NUFFT of the weights on a grid of 2N (coordinates doubled), whose
    FFT is stored once (complex64, prod(2N) values): 16 MB at 64^3, 128 MB at 128^3.
    """

    def __init__(self, op: Nufft, weights: np.ndarray | None = None, batch: Sequence[int] = (),
                 use_plan: bool = True) -> None:
        self.op = op
        self.batch = tuple(int(b) for b in batch)
        shape = tuple(op.shape)
        self.shape = shape
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self._use_plan = bool(use_plan and hasattr(op, "normal"))
        self._kernel_ft = None
        if not self._use_plan:
            self._kernel_ft = self._build_kernel()
        super().__init__(self.batch + shape, self.batch + shape)

    def _build_kernel(self) -> np.ndarray:
        from ..nufft import Nufft

        op = self.op
        shape = self.shape
        ndim = len(shape)
        coord = getattr(op, "_toeplitz_coord", None)
        if coord is None:
            raise ValueError("ToeplitzNormal needs the plan's coordinates: build the plan with "
                             "make_nufft() or pass a plan that has .normal()")
        shape2 = tuple(2 * n for n in shape)
        big = Nufft(2.0 * coord, shape2, eps=op.eps)
        w = np.ones(op.coord_shape, np.complex64) if self.weights is None else self.weights.astype(np.complex64)
        img = big.adjoint(w).astype(np.complex128)
        # adjoint on the 2N grid: prod(2N)^-1/2 sum_j w_j exp(+2 pi i k_j (m - N) / N), m in [0, 2N)
        h = img * (np.sqrt(float(np.prod(shape2))) / float(np.prod(shape)))
        # index m holds lag d = m - N; the circulant wants lag d at index d mod 2N
        h = np.fft.ifftshift(h, axes=tuple(range(ndim)))
        kft = scipy.fft.fftn(h, workers=_workers())
        return kft.astype(np.complex64)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        if self._use_plan:
            return self.op.normal(input, weights=self.weights)
        return toeplitz_apply(input, self._kernel_ft, self.shape)

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self


def toeplitz_apply(x: np.ndarray, kernel_ft: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad x (..., *shape) to 2N, multiply by the kernel's FFT, crop back: complex64 (..., *shape)."""
    ndim = len(shape)
    axes = tuple(range(-ndim, 0))
    shape2 = kernel_ft.shape
    x = np.asarray(x, dtype=np.complex64)
    lead = x.shape[: x.ndim - ndim]
    pad = np.zeros(lead + shape2, np.complex64)
    pad[(Ellipsis,) + tuple(slice(0, n) for n in shape)] = x
    f = scipy.fft.fftn(pad, axes=axes, workers=_workers(), overwrite_x=True)
    f *= kernel_ft
    out = scipy.fft.ifftn(f, axes=axes, workers=_workers(), overwrite_x=True)
    return np.ascontiguousarray(out[(Ellipsis,) + tuple(slice(0, n) for n in shape)])


def make_nufft(coord: np.ndarray, shape: Sequence[int], eps: float = 1e-3) -> Nufft:
    """A `Nufft` plan that also remembers its coordinates (float64) for the Toeplitz kernel."""
    from ..nufft import Nufft

    op = Nufft(coord, shape, eps=eps)
    op._toeplitz_coord = np.asarray(coord, dtype=np.float64)
    return op


class SenseNormal(sp.linop.Linop):
    """E^H W E for SENSE with maps S (ncoil, *shape): x (*shape) -> sum_c S_c^H T (S_c x).

    T is a `ToeplitzNormal` (or any Linop on (*shape) that is A^H W A). Coils go through T in
    chunks of `coil_batch` to bound memory (each needs a (2N)^3 complex64 grid).
    `lam` adds Tikhonov lam * x (the normal operator of min ||W^1/2(Ex - y)||^2 + lam ||x||^2).
    """

    def __init__(self, maps: np.ndarray, normal: ToeplitzNormal, lam: float = 0.0, coil_batch: int = 4) -> None:
        self.maps = np.asarray(maps, dtype=np.complex64)
        self.maps_conj = np.conj(self.maps)
        self.normal_op = normal
        self.lam = float(lam)
        self.coil_batch = max(1, int(coil_batch))
        shape = tuple(self.maps.shape[1:])
        super().__init__(shape, shape)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        x = np.asarray(input, dtype=np.complex64)
        out = np.zeros_like(x)
        ncoil = self.maps.shape[0]
        t = self.normal_op
        kft = getattr(t, "_kernel_ft", None)
        for c0 in range(0, ncoil, self.coil_batch):
            sl = slice(c0, min(ncoil, c0 + self.coil_batch))
            sx = self.maps[sl] * x
            if kft is not None:
                r = toeplitz_apply(sx, kft, t.shape)
            else:
                r = t.op.normal(sx, weights=t.weights)
            out += np.sum(self.maps_conj[sl] * r, axis=0)
        if self.lam:
            out += self.lam * x
        return out

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self


class SenseForward(sp.linop.Linop):
    """E: x (*shape) -> y (ncoil, *coord_shape) = A (S_c x), with optional per-sample factor d."""

    def __init__(self, maps: np.ndarray, op: Nufft, decay: np.ndarray | None = None) -> None:
        self.maps = np.asarray(maps, dtype=np.complex64)
        self.op = op
        self.decay = None if decay is None else np.asarray(decay, np.float32)
        super().__init__((self.maps.shape[0],) + tuple(op.coord_shape), tuple(self.maps.shape[1:]))

    def _apply(self, input: np.ndarray) -> np.ndarray:
        y = self.op.forward(self.maps * np.asarray(input, np.complex64))
        return y if self.decay is None else y * self.decay

    def _adjoint_linop(self) -> sp.linop.Linop:
        return _SenseAdjoint(self)


class _SenseAdjoint(sp.linop.Linop):
    def __init__(self, fwd: SenseForward) -> None:
        self.fwd = fwd
        super().__init__(fwd.ishape, fwd.oshape)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        y = np.asarray(input, np.complex64)
        if self.fwd.decay is not None:
            y = y * self.fwd.decay
        return np.sum(np.conj(self.fwd.maps) * self.fwd.op.adjoint(y), axis=0)

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self.fwd
