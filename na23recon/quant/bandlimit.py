"""Regions as the reconstruction sees them: their band-limited content at the voxel centres.

A reconstruction samples the object blurred by its point-spread function at the voxel centres,
I(r_n) = (o * h)(r_n), and h is band-limited (no k-space sample lies beyond the matrix' band).
So the only part of a region's indicator o that reaches the image is its spectrum inside the band,
and the exact model of the region's image is o_band * h sampled at the centres, o_band the
band-limited object at the voxel centres. A voxel-mean fraction map f (the box average of o) does
not give it: sampling the box average aliases the spectrum of o beyond the band back into it, most
for sharp, thin or small objects (a 20 mm vial of 3.75 mm voxels, a 6 mm CSF shell), and dividing
the box transfer out (`quant.pvc.convolve_psf` voxel_means) cannot undo aliasing. At matrix 64 the
aliased vials' modelled images were 1.3% too bright (their partial-volume corrected values, and
the calibration through them, 1.3% low) and the CSF shell's 0.8% too faint.

Here o_band comes from the object on a grid s times finer (the fine map's own aliasing lies
beyond s/2 times the band) by keeping the band of its discrete Fourier transform (`band_from_fine`,
`band_resample` for maps on any grid through the affines), or from the closed-form Fourier
transform of a uniform ellipsoid or elliptic cylinder (`solid_band`: the reference vials; the
transforms as in Koay, Sarlls & Ozarslan, Magn Reson Med 2007). The band is the DFT band of the
image grid (|m| <= N/2 cycles per FOV per axis; the Nyquist term split between +-N/2), the
support of every PSF on that grid. Models of region images and GTM (Rousset, Ma & Evans, J Nucl
Med 1998) then convolve o_band with the PSF as point samples (`convolve_psf(voxel_means=False)`).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy.special import j1

from .resample import resample_average, sub_offsets

__all__ = ["FINE_MAX", "band_from_fine", "band_resample", "fine_factor", "solid_band"]

#: Largest sub-division per axis of the fine grid (fine voxel = voxel / s).
FINE_MAX = 4
#: Largest fine grid per axis (memory: a 256^3 float32 map is 64 MiB, its transform along one axis 128 MiB).
FINE_AXIS_MAX = 256


def fine_factor(dst_vox, src_vox: float, shape) -> int:
    """The sub-division s of the fine grid: as many source voxels as fit across a destination
    voxel (at least 2, at most FINE_MAX), no fine axis over FINE_AXIS_MAX (then less, at least 1)."""
    s = int(np.clip(np.ceil(float(np.max(dst_vox)) / max(float(src_vox), 1e-6) - 1e-6), 2, FINE_MAX))
    return max(1, min(s, FINE_AXIS_MAX // max(int(n) for n in shape)))


def fine_affine(affine: np.ndarray, s: int) -> np.ndarray:
    """The affine of the grid s times finer that tiles each voxel of `affine` with s^3 sub-voxels."""
    sub = np.eye(4)
    sub[:3, :3] /= s
    sub[:3, 3] = -(s - 1) / (2.0 * s)
    return np.asarray(affine, np.float64) @ sub


def _fine_transfer(m: np.ndarray, L: int, sub: int) -> np.ndarray:
    """Transfer of a fine voxel's value at m cycles per FOV (L fine voxels across): its box mean
    (sub 0) or the mean of `sub` points spread across it (`quant.resample` sub-points)."""
    if sub <= 0:
        return np.sinc(m / L)
    if sub == 1:
        return np.ones(m.shape)
    return np.sinc(m / L) / np.sinc(m / (sub * L))


def _keep_band(x: np.ndarray, axis: int, n: int, s: int, src: float = 0.0, sub: int = 0) -> np.ndarray:
    """DFT of x along `axis` (length s n, fine voxel values), cut to the n frequencies of the coarse
    band, with the fine voxel's transfer divided out (`_fine_transfer`; and, given the source voxel
    `src` in fine voxels, the source's: its box and the trilinear interpolation's triangle, sinc^3)
    and the phase of the coarse voxel centre (at fine index s i + (s - 1) / 2) applied; divided by s
    (the coarse inverse DFT's scale)."""
    L = x.shape[axis]
    F = sfft.fft(x, axis=axis, workers=1)
    m = np.concatenate([np.arange(0, n // 2 + n % 2), np.arange(-(n // 2), 0)])
    F = np.take(F, m % L, axis=axis)
    w = np.exp(2j * np.pi * m * (s - 1) / (2.0 * L)) / _fine_transfer(m, L, sub) / np.sinc(m * src / L) ** 3 / s
    return F * w.reshape([-1 if a == axis else 1 for a in range(x.ndim)]).astype(F.dtype)


def band_from_fine(fine: np.ndarray, s: int, src_vox=(0.0, 0.0, 0.0), sub=(0, 0, 0)) -> np.ndarray:
    """Band-limited point samples at the coarse voxel centres (float32, shape / s) of a map of
    voxel means on a grid s times finer (the coarse voxel i covering fine voxels s i .. s i + s - 1).

    src_vox: (3,) the voxel (in fine voxels, along each axis) of the source map the fine one was
    interpolated from (`band_resample`): its box means and the trilinear interpolation blur the
    object by sinc^3 of it within the band, divided out here (0: a map rasterised on the fine grid);
    sub: (3,) the fine voxels are the mean of this many sub-points along each axis (0: box means)."""
    x = np.asarray(fine, np.float32)
    n = [d // s for d in x.shape]
    if any(d != k * s for d, k in zip(x.shape, n)):
        raise ValueError(f"fine grid {x.shape} is not {s} times a coarse grid")
    if s == 1:
        return x.copy()
    for a in range(3):
        x = _keep_band(x, a, n[a], s, float(src_vox[a]), int(sub[a]))
    return np.ascontiguousarray(sfft.ifftn(x, workers=1).real, dtype=np.float32)


def band_resample(src: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape,
                  world: np.ndarray | None = None) -> np.ndarray:
    """`src` ((x, y, z) or (n, x, y, z)) resampled as box averages onto a grid s times finer than the
    destination (`fine_factor`), then its band-limited content at the destination's voxel centres
    (`band_from_fine`): float32 ((n,) + dst_shape)."""
    arr = np.asarray(src, np.float32)
    stack = arr[None] if arr.ndim == 3 else arr
    dst_vox = np.linalg.norm(np.asarray(dst_affine)[:3, :3], axis=0)
    src_vox = float(np.min(np.linalg.norm(np.asarray(src_affine)[:3, :3], axis=0)))
    s = fine_factor(dst_vox, src_vox, dst_shape)
    fshape = tuple(int(n) * s for n in dst_shape)
    fa = fine_affine(dst_affine, s)
    # the source voxel along each destination axis, in fine voxels (exact for aligned grids)
    u = fa[:3, :3] / np.linalg.norm(fa[:3, :3], axis=0)
    src_along = 1.0 / np.linalg.norm(np.linalg.solve(np.asarray(src_affine, np.float64)[:3, :3], u), axis=0)
    rel = src_along / np.linalg.norm(fa[:3, :3], axis=0)
    # the fine voxels as `resample_average` samples them: the mean of this many sub-points per axis
    sub = [len(np.unique(o)) for o in sub_offsets(np.linalg.norm(fa[:3, :3], axis=0), src_vox).T]
    out = np.stack([band_from_fine(resample_average(m, src_affine, fa, fshape, world), s, rel, sub) for m in stack])
    return out[0] if arr.ndim == 3 else out


def solid_band(shape, centre, semi, kind: str = "ellipsoid") -> np.ndarray:
    """Band-limited indicator (float32 `shape`) at the voxel centres of a uniform axis-aligned
    ellipsoid (semi-axes) or elliptic cylinder (cross-section semi[0], semi[1], half-length semi[2]
    along axis 2), centre and semi-axes in voxels: the inverse DFT of its closed-form Fourier
    transform over the grid's band."""
    n = [int(v) for v in shape]
    c = np.asarray(centre, np.float64)
    a = np.maximum(np.asarray(semi, np.float64), 1e-6)
    k = [sfft.fftfreq(v) for v in n]  # cycles per voxel
    kx, ky, kz = (k[0][:, None, None], k[1][None, :, None], k[2][None, None, :])
    if kind == "cylinder":
        q = 2 * np.pi * np.sqrt((a[0] * kx) ** 2 + (a[1] * ky) ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            disc = np.where(q < 1e-8, 1.0, 2 * j1(q) / np.where(q < 1e-8, 1.0, q))
        ft = disc * np.sinc(2 * a[2] * kz) * (np.pi * a[0] * a[1] * 2 * a[2])
    else:
        u = 2 * np.pi * np.sqrt((a[0] * kx) ** 2 + (a[1] * ky) ** 2 + (a[2] * kz) ** 2)
        us = np.where(u < 1e-4, 1.0, u)
        ft = np.where(u < 1e-4, 1.0 - u**2 / 10, 3 * (np.sin(us) - us * np.cos(us)) / us**3)
        ft = ft * (4.0 / 3.0 * np.pi * np.prod(a))
    phase = (np.exp(-2j * np.pi * kx * c[0]) * np.exp(-2j * np.pi * ky * c[1]) * np.exp(-2j * np.pi * kz * c[2]))
    return np.ascontiguousarray(sfft.ifftn(ft * phase, workers=1).real, dtype=np.float32)
