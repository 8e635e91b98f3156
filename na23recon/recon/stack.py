"""The NUFFT of a stack of 2D trajectories on Cartesian kz partitions (stack of stars / spirals).

With kz constant along each readout, the 3D transform separates: the adjoint is a 2D NUFFT of
each partition's readouts (in-plane) followed by a DFT along z over the partitions,

    x(r, z) = Nz^-1/2 sum_p exp(+2 pi i kz_p (z - Nz//2) / Nz) A_p^H y_p (r),

and the forward transform is the DFT along z followed by each partition's 2D NUFFT: the
"hybrid" reconstruction of stack-of-stars sequences (Block et al., Magn Reson Med 2014, radial
VIBE / GRASP; the separable 3D Fourier transform). The DFT along z is exact for any kz (it is
evaluated at each partition's own kz, whole cycles or not), so `StackNufft` equals the 3D
`Nufft` of the same points to the 2D plans' tolerance, with ndim^2 instead of ndim^3 kernel taps
per sample and an (upsampled) 2D grid per partition instead of a 3D grid. Partitions that share
one in-plane pattern (the usual stack of stars) share one 2D plan and go through it as a batch.

`normal` (the Toeplitz A^H W A of the iterative solvers) is the 3D plan's, made on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..nufft import Nufft
from ..nufft.linop import NufftLinop, NufftNormalLinop

__all__ = ["StackNufft"]


class StackNufft:
    """`Nufft`'s interface (forward, adjoint, normal, linop, normal_linop, shape, coord_shape, eps,
    dtype, ndim) for coord (nreadout, nsample, 3) in cycles/FOV whose kz is constant along each
    readout; shape (Nx, Ny, Nz)."""

    def __init__(self, coord: np.ndarray, shape: Sequence[int], eps: float = 1e-3) -> None:
        coord = np.asarray(coord, dtype=np.float64)
        self._shape = tuple(int(s) for s in shape)
        if len(self._shape) != 3 or coord.ndim != 3 or coord.shape[-1] != 3:
            raise ValueError(f"a stack needs coord (nreadout, nsample, 3) and a 3D shape, got {coord.shape}, {shape}")
        self._coord, self._eps = coord, float(eps)
        self._coord_shape = coord.shape[:-1]
        kz = coord[..., 2].mean(axis=1)
        values, part = np.unique(np.round(kz, 6), return_inverse=True)
        nz = self._shape[2]
        z = np.arange(nz) - nz // 2
        # E[p, z]: each partition's DFT row at its own kz, orthonormal as the NUFFT (sigpy's convention)
        self._e = np.exp(2j * np.pi * np.outer(values, z) / nz) / np.sqrt(nz)
        # partitions grouped by their in-plane pattern: one 2D plan per pattern
        self._groups: list[tuple[Nufft, np.ndarray, np.ndarray]] = []  # (plan, partitions, readouts (npart, nro))
        members = [np.flatnonzero(part == p) for p in range(values.size)]
        done = np.zeros(values.size, dtype=bool)
        for p in range(values.size):
            if done[p]:
                continue
            c2 = coord[members[p], :, :2]
            same = [q for q in range(p, values.size) if not done[q] and members[q].size == members[p].size
                    and np.array_equal(coord[members[q], :, :2], c2)]
            done[same] = True
            plan = Nufft(c2, self._shape[:2], eps=self._eps)
            self._groups.append((plan, np.asarray(same), np.stack([members[q] for q in same])))
        self._full: Nufft | None = None

    # ------------------------------------------------------------------ transforms
    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """k-space (..., nreadout, nsample) -> image (..., Nx, Ny, Nz), the 3D NUFFT's adjoint."""
        y = np.asarray(y)
        batch = y.shape[:-2]
        cdt = np.result_type(y.dtype, np.complex64)
        out = np.zeros(batch + self._shape, cdt)
        for plan, parts, ro in self._groups:
            g = plan.adjoint(y[..., ro, :])  # (..., npart, Nx, Ny)
            out += np.einsum("...pxy,pz->...xyz", g, self._e[parts].astype(cdt), optimize=True)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Image (..., Nx, Ny, Nz) -> k-space (..., nreadout, nsample), the 3D NUFFT's forward."""
        x = np.asarray(x)
        batch = x.shape[:-3]
        cdt = np.result_type(x.dtype, np.complex64)
        out = np.empty(batch + self._coord_shape, cdt)
        for plan, parts, ro in self._groups:
            planes = np.einsum("...xyz,pz->...pxy", x, np.conj(self._e[parts]).astype(cdt), optimize=True)
            out[..., ro, :] = plan.forward(np.ascontiguousarray(planes))
        return out

    def normal(self, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """A^H diag(w) A x by the 3D plan's Toeplitz embedding (`Nufft.normal`)."""
        if self._full is None:
            self._full = Nufft(self._coord, self._shape, eps=self._eps)
        return self._full.normal(x, weights=weights)

    def linop(self, batch_shape: Sequence[int] = ()):
        return NufftLinop(self, batch_shape)

    def normal_linop(self, weights: np.ndarray | None = None, batch_shape: Sequence[int] = ()):
        return NufftNormalLinop(self, batch_shape, weights)

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def coord_shape(self) -> tuple[int, ...]:
        return self._coord_shape

    @property
    def ndim(self) -> int:
        return 3

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.complex64)

    @property
    def npartitions(self) -> int:
        return int(self._e.shape[0])

    def __repr__(self) -> str:
        return (f"StackNufft(shape={self._shape}, points={self._coord_shape}, partitions={self.npartitions}, "
                f"in-plane plans={len(self._groups)}, eps={self._eps:g})")
