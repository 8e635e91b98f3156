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
    """Scale density weights of any scale to absolute k-space volumes in (cycles/FOV)^ndim.

    coord: (nreadout, nsample, ndim) in cycles/FOV, or a flat (M, ndim) list; dcf: coord.shape[:-1].
    The weights are scaled to add up to the volume of the ball (disc in 2D) that the samples cover:
    radius max |k| plus half the radial step of the readouts' last samples (each sample owns the
    interval to the midpoints between it and its neighbours); max |k| for a flat list.
    """
    dcf = np.asarray(dcf, dtype=np.float64)
    coord = np.asarray(coord)
    if dcf.shape != coord.shape[:-1]:
        raise InputError(f"density compensation has shape {dcf.shape} but the trajectory {coord.shape[:-1]}")
    if not np.all(np.isfinite(dcf)) or np.any(dcf < 0) or dcf.sum() <= 0:
        raise InputError("density compensation weights must be finite, non-negative and not all zero")
    r = np.sqrt(np.sum(coord.astype(np.float64) ** 2, axis=-1))
    kmax = float(r.max())
    if coord.ndim == 3 and coord.shape[1] >= 2:
        end = np.argmax(r, axis=1)  # the outermost sample of each readout and its inner neighbour
        rows = np.arange(r.shape[0])
        step = np.abs(r[rows, end] - r[rows, np.where(end > 0, end - 1, 1)])
        kmax += 0.5 * float(np.median(step))
    ndim = coord.shape[-1]
    vol = 4.0 / 3.0 * np.pi * kmax**3 if ndim == 3 else np.pi * kmax**2
    return (dcf * (vol / dcf.sum())).astype(np.float32)


def adjoint_recon(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: tuple[int, ...],
                  eps: float = 1e-3, op: Nufft | None = None) -> np.ndarray:
    """Gridding reconstruction of every coil.

    kspace: complex (..., *coord.shape[:-1]), leading dims (coils, echoes) kept.
    coord:  float (nreadout, nsample, ndim) in cycles/FOV (edge of the matrix at +-N/2), or any
            (..., ndim) sample layout such as a flat list (M, ndim).
    dcf:    float coord.shape[:-1], any scale (normalised here).
    shape:  image shape (x, y[, z]).
    Returns complex64 (..., *shape).
    """
    npt = coord.ndim - 1
    if kspace.shape[kspace.ndim - npt:] != coord.shape[:-1]:
        raise InputError(f"k-space samples {kspace.shape[kspace.ndim - npt:]} do not match the trajectory's "
                         f"{coord.shape[:-1]}")
    w = normalise_dcf(dcf, coord)
    if op is None:
        from ..nufft import Nufft

        op = Nufft(coord, shape, eps=eps)
    return op.adjoint((kspace * w).astype(np.complex64, copy=False))
