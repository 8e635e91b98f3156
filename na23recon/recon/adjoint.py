"""Density-compensated adjoint (gridding) reconstruction.

x_c = A^H (w * y_c) for each coil c, with A the NUFFT (sigpy's orthonormal convention) and the
density compensation w normalised so that sum(w) = prod(shape): the point-spread function then
peaks at 1, and a uniform object of value v reconstructs to about v whatever the sample count
(Jackson et al. 1991; Pipe & Menon 1999 for the weights).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..nufft import Nufft


def normalise_dcf(dcf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Scale density weights (nreadout, nsample) so that their sum is prod(shape)."""
    dcf = np.asarray(dcf, dtype=np.float64)
    if not np.all(np.isfinite(dcf)) or np.any(dcf < 0) or dcf.sum() <= 0:
        raise InputError("density compensation weights must be finite, non-negative and not all zero")
    return (dcf * (np.prod(shape) / dcf.sum())).astype(np.float32)


def adjoint_recon(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: tuple[int, ...],
                  eps: float = 1e-3, op: Nufft | None = None) -> np.ndarray:
    """Gridding reconstruction of every coil.

    kspace: complex (..., nreadout, nsample), leading dims (coils, echoes) kept.
    coord:  float (nreadout, nsample, ndim) in cycles/FOV (edge of the matrix at +-N/2).
    dcf:    float (nreadout, nsample), any scale (normalised here).
    shape:  image shape (x, y[, z]).
    Returns complex64 (..., *shape).
    """
    if kspace.shape[-2:] != coord.shape[:-1]:
        raise InputError(f"k-space has {kspace.shape[-2]} readouts x {kspace.shape[-1]} samples but the "
                         f"trajectory has {coord.shape[0]} x {coord.shape[1]}")
    w = normalise_dcf(dcf, shape)
    if op is None:
        op = Nufft(coord, shape, eps=eps)
    return op.adjoint((kspace * w).astype(np.complex64, copy=False))
