"""Density-compensated adjoint (gridding) reconstruction.

x_c = A^H (w * y_c) for each coil c, with A the NUFFT (sigpy's orthonormal convention) and the
density compensation w in absolute units: each sample's share of the k-space volume, in
(cycles/FOV)^ndim, so that the weights add up to the volume the trajectory covers (a ball of
radius max |k| for the centre-out trajectories of sodium MRI). The point-spread function then
integrates to 1 and an extended uniform object of value v reconstructs to v whatever the sample
count (Jackson et al. 1991; Pipe & Menon 1999 for the weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..nufft import Nufft


def normalise_dcf(dcf: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Scale density weights (nreadout, nsample) of any scale to absolute k-space volumes.

    coord: (nreadout, nsample, ndim) in cycles/FOV. The weights are scaled so that they add up to
    the volume of the ball (disc in 2D) of radius max |coord|.
    """
    dcf = np.asarray(dcf, dtype=np.float64)
    if dcf.shape != coord.shape[:-1]:
        raise InputError(f"density compensation has shape {dcf.shape} but the trajectory {coord.shape[:-1]}")
    if not np.all(np.isfinite(dcf)) or np.any(dcf < 0) or dcf.sum() <= 0:
        raise InputError("density compensation weights must be finite, non-negative and not all zero")
    kmax = float(np.sqrt(np.max(np.sum(np.asarray(coord, dtype=np.float64) ** 2, axis=-1))))
    ndim = coord.shape[-1]
    vol = 4.0 / 3.0 * np.pi * kmax**3 if ndim == 3 else np.pi * kmax**2
    return (dcf * (vol / dcf.sum())).astype(np.float32)


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
    w = normalise_dcf(dcf, coord)
    if op is None:
        from ..nufft import Nufft

        op = Nufft(coord, shape, eps=eps)
    return op.adjoint((kspace * w).astype(np.complex64, copy=False))
