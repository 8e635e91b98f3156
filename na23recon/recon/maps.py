"""Coil sensitivity maps from the k-space centre: calibration images, Walsh and ESPIRiT maps,
resampling to the image matrix.

Everything runs on a low-resolution calibration grid (ncal^3, default 32^3) and only the result
is interpolated to the full matrix; with many channels the Walsh covariances are formed in the
span of the calibration images' leading singular vectors, and the maps can stay factored as
basis @ virtual maps (`estimate_map_factors`) so that a SENSE problem over all channels runs on
the virtual ones (`solvers.SenseProblem`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..nufft import Nufft
from ..traj.radial import n_spokes_nyquist

__all__ = ["calibration_images", "calibration_factors", "walsh_maps", "walsh_factors", "espirit_maps", "resample_maps",
           "estimate_map_factors", "estimate_maps", "expand_maps"]


# ------------------------------------------------------------------------- sensitivity maps
def calibration_images(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, ncal: int = 32,
                       radius: float | None = None, eps: float = 1e-3) -> np.ndarray:
    """Low-resolution coil images (ncoil, ncal, ncal, ncal) from the k-space centre.

    Samples with |k| < radius (cycles/FOV; default 0.4 ncal) are density-compensated (`dcf`, any
    scale), tapered by a Hann window in |k| (no ringing into the maps), and gridded with an
    adjoint NUFFT onto a ncal^3 matrix over the same FOV.
    """
    return calibration_factors(kspace, coord, dcf, ncal, radius, eps)[1]


def calibration_factors(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, ncal: int = 32,
                        radius: float | None = None, eps: float = 1e-3, rank: int | None = None
                        ) -> tuple[np.ndarray | None, np.ndarray]:
    """`calibration_images`, compressed first when `rank` is below the coil count: (basis
    (ncoil, rank) with orthonormal columns, images of the rank virtual coils), or (None, images).

    Readouts (nreadout, nsample, 3) beyond the Nyquist count of the calibration sphere are
    thinned to every step-th (spread evenly by the generators' orderings). The basis holds the
    leading eigenvectors of the calibration samples' weighted coil covariance
    sum_j w_j y_j y_j^H, which by Parseval is that of the calibration images (Buehrer et al.
    2007, MRM 57:1131): only `rank` coils are gridded.
    """
    coord = np.asarray(coord, np.float32)
    ndim = coord.shape[-1]
    radius = 0.4 * ncal if radius is None else float(radius)
    x = np.asarray(kspace)
    nc = x.shape[0]
    pts = coord.reshape(-1, ndim)
    flat_idx = np.arange(pts.shape[0])
    if ndim == 3 and coord.ndim == 3 and x.shape[1:] == coord.shape[:-1]:
        # centre-out readouts sample the centre far above Nyquist: every step-th readout still
        # has n_spokes_nyquist(2 radius) of them (pi (2 radius)^2, the sphere of the calibration)
        step = max(1, coord.shape[0] // n_spokes_nyquist(int(np.ceil(2 * radius))))
        if step > 1:
            flat_idx = (np.arange(0, coord.shape[0], step)[:, None] * coord.shape[1]
                        + np.arange(coord.shape[1])[None, :]).ravel()
    p = pts[flat_idx].astype(np.float64)
    r = np.sqrt(np.sum(p * p, axis=-1))
    keep = r < radius
    sel, rs = flat_idx[keep], r[keep]
    if sel.size < 16:
        raise InputError(f"only {int(sel.size)} samples inside the calibration radius {radius:.1f} cycles/FOV")
    dsel = np.asarray(dcf, np.float64).reshape(-1)[sel]
    w = dsel * 0.5 * (1 + np.cos(np.pi * rs / radius))
    w *= (4.0 / 3.0 * np.pi * radius**3 if ndim == 3 else np.pi * radius**2) / max(float(np.sum(dsel)), 1e-30)
    y = np.take(x.reshape(nc, -1), sel, axis=1).astype(np.complex64, copy=False)
    basis = None
    if rank is not None and int(rank) < y.shape[0]:
        ys = y * np.sqrt(w).astype(np.float32)
        cov = (ys @ ys.conj().T).astype(np.complex128)
        del ys
        ev, vec = np.linalg.eigh(cov)
        basis = vec[:, np.argsort(ev)[::-1][: int(rank)]].astype(np.complex64)
        y = basis.conj().T @ y
    y *= w.astype(np.float32)
    op = Nufft(pts[sel], (ncal,) * ndim, eps=eps)
    return basis, op.adjoint(y) * np.float32(np.sqrt(float(ncal) ** ndim))


def _phase_reference(maps: np.ndarray) -> np.ndarray:
    """Remove the common phase: make the first (strongest virtual) coil's map real positive."""
    ref = maps[0]
    ph = np.where(np.abs(ref) > 0, np.conj(ref) / np.maximum(np.abs(ref), 1e-30), 1.0)
    return maps * ph


def walsh_maps(images: np.ndarray, window: int = 5, rank: int | None = None) -> np.ndarray:
    """Adaptive-combination sensitivity estimate (Walsh, Gmitro & Marcellin 2000, MRM 43:682).

    images: (ncoil, *shape) complex coil images (low resolution is enough). For every voxel the
    coil covariance R = sum over a window^ndim neighbourhood of c c^H is formed and its dominant
    eigenvector taken as the relative sensitivity (unit l2 norm over coils, phase relative to
    coil 0). With `rank` below the coil count the covariances are formed in the span of the
    images' `rank` leading singular vectors (`walsh_factors`). Returns complex64 (ncoil, *shape).
    """
    basis, m = walsh_factors(images, window, rank)
    return m if basis is None else _phase_reference(expand_maps(basis, m))


def walsh_factors(images: np.ndarray, window: int = 5, rank: int | None = None, basis: np.ndarray | None = None
                  ) -> tuple[np.ndarray | None, np.ndarray]:
    """Walsh maps as basis (ncoil, rank) with orthonormal columns and virtual maps (rank, *shape):
    maps = basis @ virtual, unit norm over coils. (None, maps (ncoil, *shape)) without compression.

    The images are first projected on their `rank` leading left singular vectors (an SVD over the
    voxels, Buehrer et al. 2007, MRM 57:1131): the rank x rank covariances and their eigenvectors
    cost (rank / ncoil)^2 of the full ones, and where the images lie in that span the dominant
    eigenvector is the same. Virtual maps have the phase of the first physical coil's removed.
    With `basis` (ncoil, nv) the images are virtual already (`calibration_factors`).
    """
    x = np.asarray(images, np.complex64)
    nc = x.shape[0]
    if basis is not None:
        basis = np.asarray(basis, np.complex64)
    elif rank is not None and int(rank) < nc:
        flat = x.reshape(nc, -1)
        cov = (flat @ flat.conj().T).astype(np.complex128)
        ev, vec = np.linalg.eigh(cov)
        basis = vec[:, np.argsort(ev)[::-1][: int(rank)]].astype(np.complex64)
        x = np.tensordot(basis.conj().T, x, axes=(1, 0))
    nv = x.shape[0]
    shape = x.shape[1:]
    r = np.empty(shape + (nv, nv), np.complex64)
    for i in range(nv):
        for j in range(i, nv):
            p = x[i] * np.conj(x[j])
            s = ndimage.uniform_filter(p.real, window, mode="nearest") + 1j * ndimage.uniform_filter(
                p.imag, window, mode="nearest")
            r[..., i, j] = s
            r[..., j, i] = np.conj(s)
    m = np.moveaxis(dominant_eigenvectors(r), -1, 0)
    if basis is None:
        return None, _phase_reference(m).astype(np.complex64)
    ref = np.tensordot(basis[0], m, axes=(0, 0))  # physical coil 0's map
    ph = np.where(np.abs(ref) > 0, np.conj(ref) / np.maximum(np.abs(ref), 1e-30), 1.0)
    return basis, (m * ph).astype(np.complex64)


def dominant_eigenvectors(r: np.ndarray, iters: int = 30) -> np.ndarray:
    """Unit dominant eigenvectors (..., n) of a stack of Hermitian positive semi-definite
    matrices r (..., n, n) by the power method (Golub & Van Loan, Matrix Computations, sec. 7.3),
    all matrices at once with the voxels innermost: numpy's batched eigh spends ~70 us of LAPACK
    call on each 8 x 8 matrix, a matrix-vector pass over all of them ~ms. Start: the column of
    largest norm (R e_j, already mostly along the top eigenvector); each iteration shrinks the
    other components by lambda_2 / lambda_1. Where the top eigenvalue is (nearly) degenerate,
    as in noise-only voxels, the result is some unit vector of that eigenspace, as with eigh.
    """
    n = r.shape[-1]
    lead = r.shape[:-2]
    a = np.ascontiguousarray(np.moveaxis(np.asarray(r, np.complex128).reshape(-1, n, n), 0, -1))  # (n, n, V)
    a /= np.maximum(np.einsum("iiv->v", a).real, 1e-300)  # trace 1: no overflow, same eigenvectors
    a = a.astype(np.complex64)
    col = np.argmax(np.sum(np.abs(a) ** 2, axis=0), axis=0)
    v = np.take_along_axis(a, col[None, None, :], axis=1)[:, 0]  # (n, V)
    for _ in range(iters + 1):
        v /= np.maximum(np.sqrt(np.sum(v.real ** 2 + v.imag ** 2, axis=0)), 1e-30)
        v = np.einsum("ijv,jv->iv", a, v)
    v /= np.maximum(np.sqrt(np.sum(v.real ** 2 + v.imag ** 2, axis=0)), 1e-30)
    return np.moveaxis(v, 0, -1).reshape(lead + (n,)).astype(np.complex64)


def expand_maps(basis: np.ndarray, m: np.ndarray) -> np.ndarray:
    """basis (ncoil, nv) @ virtual maps (nv, *shape) -> (ncoil, *shape) complex64 (one matrix product)."""
    nv = m.shape[0]
    return (np.asarray(basis, np.complex64) @ m.reshape(nv, -1)).reshape((basis.shape[0],) + m.shape[1:])


def espirit_maps(images: np.ndarray, calib_width: int | None = None, kernel_width: int = 5,
                 thresh: float = 0.02, crop: float = 0.9, max_iter: int = 30) -> np.ndarray:
    """ESPIRiT sensitivity maps (Uecker et al. 2014, MRM 71:990) from gridded calibration data.

    images: (ncoil, *shape) low-resolution coil images (`calibration_images`); their FFT is the
    Cartesian k-space that `sigpy.mri.app.EspiritCalib` expects. calib_width defaults to 3/4 of
    the grid. Voxels whose eigenvalue is below `crop` are zero (outside the object).
    Returns complex64 (ncoil, *shape), unit norm where not cropped, phase relative to coil 0.
    """
    import sigpy as sp
    from sigpy.mri.app import EspiritCalib

    x = np.asarray(images, np.complex64)
    n = min(x.shape[1:])
    cw = int(calib_width) if calib_width is not None else max(kernel_width + 2, (2 * n) // 3)
    ksp = sp.fft(x, axes=tuple(range(1, x.ndim)))
    maps = EspiritCalib(ksp, calib_width=cw, thresh=thresh, kernel_width=kernel_width, crop=crop,
                        max_iter=max_iter, show_pbar=False).run()
    return _phase_reference(np.asarray(maps)).astype(np.complex64)


def _linear_weights(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices i0, i1 and weight f of linear interpolation from m to n samples over the same FOV
    (sigpy centring), edges held (`ndimage.map_coordinates(order=1, mode='nearest')`)."""
    p = np.clip((np.arange(n) - n // 2) / n * m + m // 2, 0, m - 1)
    i0 = np.floor(p).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    return i0, i1, (p - i0).astype(np.float32)


def _resample_linear(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation of a (*low) onto `shape`, axis by axis (the tensor-product
    form of trilinear interpolation: the same numbers, ~ndim passes instead of 2^ndim gathers)."""
    out = np.asarray(a, np.complex64)
    for ax, (n, m) in enumerate(zip(shape, a.shape)):
        if n == m:
            continue
        i0, i1, f = _linear_weights(n, m)
        f = f.reshape((-1,) + (1,) * (out.ndim - ax - 1))
        lo = np.take(out, i0, axis=ax)
        hi = np.take(out, i1, axis=ax)
        lo *= 1 - f
        hi *= f
        lo += hi
        out = lo
    return out


def resample_maps(maps: np.ndarray, shape: Sequence[int], basis: np.ndarray | None = None) -> np.ndarray:
    """Linear interpolation of maps (ncoil, *low) onto a finer matrix (same FOV, sigpy centring:
    index n at (n - N//2) / N FOV), renormalised to unit norm over coils where nonzero.

    With `basis` (ncoil_out, ncoil) of orthonormal columns the maps are virtual (`walsh_factors`):
    they are interpolated and normalised as they are (norms are the same after the basis) and
    come back as basis @ maps, (ncoil_out, *shape).
    """
    maps = np.asarray(maps)
    shape = tuple(int(s) for s in shape)
    if maps.shape[1:] == shape and basis is None:
        return maps.astype(np.complex64)
    out = np.empty((maps.shape[0],) + shape, np.complex64)
    for c in range(maps.shape[0]):
        out[c] = _resample_linear(maps[c], shape)
    norm2 = np.zeros(shape, np.float32)
    for c in range(out.shape[0]):
        norm2 += out[c].real ** 2 + out[c].imag ** 2
    scale = np.where(norm2 > 1e-12, 1.0 / np.sqrt(np.maximum(norm2, 1e-12)), 0).astype(np.float32)
    out *= scale
    return out if basis is None else expand_maps(basis, out)


def estimate_map_factors(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: Sequence[int],
                         method: str = "walsh", ncal: int = 32, eps: float = 1e-3, rank: int | None = None
                         ) -> tuple[np.ndarray | None, np.ndarray]:
    """Sensitivity maps as (basis, maps): `estimate_maps` = basis @ maps (basis None: maps are the
    coils' own). Walsh maps with `rank` below the coil count come as a basis (ncoil, rank) with
    orthonormal columns and `rank` virtual maps at full resolution (`walsh_factors`), so that a
    SENSE problem over all coils can run on rank virtual coils exactly (`SenseProblem`).

    Calibration images on a ncal^3 grid from the k-space centre (`calibration_images`), maps
    there, then linear interpolation to `shape`: nothing at full resolution but the result.
    """
    ncal = int(min(ncal, min(shape)))
    if method == "espirit":
        ncal = min(ncal, 24)  # EspiritCalib's per-voxel power iterations: keep the grid small
    if method == "walsh":
        cb, cal = calibration_factors(kspace, coord, dcf, ncal=ncal, eps=eps, rank=rank)
        basis, maps = walsh_factors(cal, basis=cb)
    elif method == "espirit":
        basis, maps = None, espirit_maps(calibration_images(kspace, coord, dcf, ncal=ncal, eps=eps))
    else:
        raise InputError(f"sensitivity method must be 'walsh' or 'espirit', got {method!r}")
    return basis, resample_maps(maps, shape)


def estimate_maps(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: Sequence[int],
                  method: str = "walsh", ncal: int = 32, eps: float = 1e-3, rank: int | None = None) -> np.ndarray:
    """Sensitivity maps (ncoil, *shape) complex64 from the k-space centre: 'walsh' or 'espirit'
    (`estimate_map_factors`, expanded)."""
    basis, maps = estimate_map_factors(kspace, coord, dcf, shape, method, ncal, eps, rank)
    return maps if basis is None else expand_maps(basis, maps)
