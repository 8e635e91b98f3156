"""sigpy Linop wrappers around a `Nufft` plan, for sigpy's solvers (sigpy.alg, sigpy.app).

The package's only NUFFT Linops: `recon.operators` builds the SENSE operators on them, and
`NufftNormalLinop` is the Toeplitz A^H diag(w) A that the iterative reconstructions use.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sigpy as sp

__all__ = ["NufftLinop", "NufftAdjointLinop", "NufftNormalLinop"]


class NufftLinop(sp.linop.Linop):
    """Forward NUFFT: ishape batch + image shape -> oshape batch + coord.shape[:-1].

    `.H` gives NufftAdjointLinop, `.N` the Toeplitz normal operator (A^H A) rather than sigpy's
    default H * self.
    """

    def __init__(self, op, batch_shape: Sequence[int] = ()):
        self.op = op
        self.batch_shape = tuple(batch_shape)
        super().__init__(list(self.batch_shape + op.coord_shape), list(self.batch_shape + op.shape))

    def _apply(self, input):
        return self.op.forward(np.asarray(input))

    def _adjoint_linop(self):
        return NufftAdjointLinop(self.op, self.batch_shape)

    def _normal_linop(self):
        return NufftNormalLinop(self.op, self.batch_shape)


class NufftAdjointLinop(sp.linop.Linop):
    """Adjoint NUFFT: ishape batch + coord.shape[:-1] -> oshape batch + image shape."""

    def __init__(self, op, batch_shape: Sequence[int] = ()):
        self.op = op
        self.batch_shape = tuple(batch_shape)
        super().__init__(list(self.batch_shape + op.shape), list(self.batch_shape + op.coord_shape))

    def _apply(self, input):
        return self.op.adjoint(np.asarray(input))

    def _adjoint_linop(self):
        return NufftLinop(self.op, self.batch_shape)


class NufftNormalLinop(sp.linop.Linop):
    """A^H diag(w) A through Toeplitz embedding; self-adjoint for real weights."""

    def __init__(self, op, batch_shape: Sequence[int] = (), weights=None):
        self.op = op
        self.batch_shape = tuple(batch_shape)
        self.weights = weights
        shape = list(self.batch_shape + op.shape)
        super().__init__(shape, shape)

    def _apply(self, input):
        return self.op.normal(np.asarray(input), weights=self.weights)

    def _adjoint_linop(self):
        w = self.weights
        return NufftNormalLinop(self.op, self.batch_shape, None if w is None else np.conj(w))
