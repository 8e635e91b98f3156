"""SENSE operators as sigpy Linops, on top of the NUFFT's own Linops (`na23recon.nufft.linop`).

Encoding model for coil c (Pruessmann et al. 2001, MRM 46:638):

    y_c = D A (S_c x) + noise,

with A the NUFFT (`na23recon.nufft.Nufft`, sigpy's orthonormal convention), S_c the coil
sensitivity (a voxel-wise multiplication) and D an optional per-sample decay factor (T2* during
the readout). Iterative solvers only need the weighted normal operator

    N x = sum_c S_c^H A^H diag(w) A S_c x,        w = dcf * d^2,

which for a fixed trajectory is a convolution: A^H diag(w) A has the kernel
h[d] = prod(N)^-1 sum_j w_j exp(+2 pi i k_j . d / N), d in (-N, N), and is applied exactly by
zero-padding to a 2N grid and two FFTs (Wajer & Pruessmann, Proc. ISMRM 2001; Fessler et al. 2005,
IEEE TSP 53:3393): `Nufft.normal`, wrapped as a Linop by `Nufft.normal_linop`
(`nufft.linop.NufftNormalLinop`). One application costs two FFTs of the 2N grid per coil and no
gridding: at 64^3 several times cheaper than a NUFFT forward + adjoint pair.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import sigpy as sp

from ..nufft import Nufft
from ..nufft.linop import NufftNormalLinop
from .layout import kspace_layout
from .stack import StackNufft

log = logging.getLogger(__name__)

__all__ = ["make_nufft", "SenseNormal", "SenseForward"]


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


class SenseNormal(sp.linop.Linop):
    """E^H W E for SENSE with maps S (ncoil, *shape): x (*shape) -> sum_c S_c^H T (S_c x).

    T is the plan's Toeplitz A^H W A (`Nufft.normal_linop(w)`); coils go through its `normal` in
    chunks of `coil_batch` to bound memory (each needs a (2N)^3 complex grid).
    """
    def __init__(self, maps: np.ndarray, normal: NufftNormalLinop, coil_batch: int = 4) -> None:
        self.maps = np.asarray(maps, dtype=np.complex64)
        self.maps_conj = np.conj(self.maps)
        self.normal_op = normal
        self.coil_batch = max(1, int(coil_batch))
        shape = tuple(self.maps.shape[1:])
        super().__init__(shape, shape)

    def _apply(self, input: np.ndarray) -> np.ndarray:
        x = np.asarray(input, dtype=np.complex64)
        out = np.zeros_like(x)
        ncoil = self.maps.shape[0]
        t = self.normal_op
        for c0 in range(0, ncoil, self.coil_batch):
            sl = slice(c0, min(ncoil, c0 + self.coil_batch))
            r = t.op.normal(self.maps[sl] * x, weights=t.weights)  # coils as a batch dim
            out += np.sum(self.maps_conj[sl] * r, axis=0)
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
