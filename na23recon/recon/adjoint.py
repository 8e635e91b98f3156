"""Density-compensated adjoint (gridding) reconstruction.

x_c = A^H (w * y_c) for each coil c, with A the NUFFT (sigpy's orthonormal convention) and the
density compensation w in absolute units: each sample's share of the k-space volume, in
(cycles/FOV)^ndim, so that the weights add up to the volume the trajectory covers (a ball of
radius max |k| for the centre-out trajectories of sodium MRI). The point-spread function then
integrates to 1 and an extended uniform object of value v reconstructs to v whatever the sample
count (Jackson et al. 1991, IEEE Trans. Med. Imaging 10:473; Pipe & Menon 1999, MRM 41:179 for
the weights). The scaling is `traj.dcf.normalise_dcf`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..nufft import Nufft
from ..traj.dcf import normalise_dcf
from .operators import adjoint_coils

__all__ = ["adjoint_recon"]


def adjoint_recon(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: tuple[int, ...],
                  eps: float = 1e-3, op: Nufft | None = None, coil_batch: int = 1) -> np.ndarray:
    """Gridding reconstruction of every coil.

    kspace: complex (..., *coord.shape[:-1]), leading dims (coils, echoes) kept.
    coord:  float (nreadout, nsample, ndim) in cycles/FOV (edge of the matrix at +-N/2), or any
            (..., ndim) sample layout such as a flat list (M, ndim).
    dcf:    float coord.shape[:-1], any scale (normalised here).
    shape:  image shape (x, y[, z]).
    Returns complex64 (..., *shape).

    Coils (and echoes) go through the NUFFT `coil_batch` at a time (`operators.adjoint_coils`):
    one oversampled grid and one weighted copy of one coil's samples at a time, whatever the
    channel count.
    """
    npt = coord.ndim - 1
    if kspace.shape[kspace.ndim - npt:] != coord.shape[:-1]:
        raise InputError(f"k-space samples {kspace.shape[kspace.ndim - npt:]} do not match the trajectory's "
                         f"{coord.shape[:-1]}")
    w = normalise_dcf(dcf, coord)
    if op is None:
        op = Nufft(coord, shape, eps=eps)
    y = np.asarray(kspace)
    lead = y.shape[:y.ndim - npt]
    flat = y.reshape((-1,) + tuple(coord.shape[:-1]))  # a view for contiguous k-space
    return adjoint_coils(op, flat, w, coil_batch=coil_batch).reshape(lead + tuple(op.shape))
