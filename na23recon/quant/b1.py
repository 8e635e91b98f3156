"""B1 mapping by the double-angle method and the transmit/receive corrections built on it.

Double-angle method (Insko & Bolinger 1993, J Magn Reson A 103:82): two images with nominal flips
a and 2a, TR >> T1 (cheap for sodium, T1 ~ 20-60 ms), same TE. Then S(2a) / S(a) = 2 cos(k a) and

    k_B1 = arccos(S(2a) / (2 S(a))) / a,

the relative flip scale (1.0 = nominal), independent of M0, T2* and the receive profile, which
cancel in the ratio. Magnitude images only determine k a in [0, 90 deg]: choose a so that
k a stays below 90 deg (a = 60 deg covers k up to 1.5).

Corrections: the actual flip is k_B1 * nominal (used in
the signal equation, quant/relax.py); the receive sensitivity of a transmit-receive coil is
~ k_B1 by reciprocity at low field, or is given as a separate relative receive map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..core.options import B1_FITS, MAX_POLY_ORDER
from ..errors import InputError

log = logging.getLogger(__name__)



def estimate_noise_sd(image: np.ndarray, background: np.ndarray | None = None) -> float:
    """Standard deviation of the underlying Gaussian noise of `image` (x, y, z), from background voxels.

    background: boolean mask (x, y, z) of voxels with no signal; default: the corners of the FOV
    outside the inscribed ellipsoid, cleaned of objects by iterative 3-sigma clipping.
    A background that holds negative values is taken as real Gaussian noise (robust SD); an
    all-nonnegative one as a magnitude (Rayleigh) background, sigma = sqrt(mean(x^2) / 2).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise InputError(f"noise estimate needs a 3D image (x, y, z), got shape {img.shape}")
    if background is None:
        axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in img.shape]
        r2 = sum(np.meshgrid(*[a**2 for a in axes], indexing="ij"))
        background = r2 > 1.0
    vals = img[np.asarray(background, dtype=bool)]
    vals = vals[np.isfinite(vals)]
    if vals.size < 50:
        raise InputError(f"too few background voxels ({vals.size}) to estimate the noise: give the noise SD")
    rayleigh = vals.min() >= 0.0
    keep = np.ones(vals.size, dtype=bool)
    for _ in range(10):  # drop object voxels that reach into the corners
        v = vals[keep]
        if rayleigh:
            sd = np.sqrt(np.mean(v**2) / 2.0)
            new = vals < 4.0 * sd  # Rayleigh tail beyond 4 sigma: 3e-4
        else:
            med = np.median(v)
            sd = 1.4826 * np.median(np.abs(v - med))
            new = np.abs(vals - med) < 4.0 * sd
        if np.array_equal(new, keep):
            break
        keep = new
    if not np.isfinite(sd) or sd <= 0:
        raise InputError("background has no noise (all equal): give the noise SD explicitly")
    return float(sd)


@dataclass
class B1Map:
    """Result of `double_angle`: all arrays (x, y, z).

    b1: float32 relative flip scale (1.0 = nominal), fitted/smoothed, defined everywhere.
    raw: float32 voxelwise double-angle estimate, NaN outside `mask`.
    mask: bool, voxels used (S(a) above the SNR threshold, finite).
    info: what was done (method, counts of clipped and masked voxels, noise SD, fit residual).
    """

    b1: np.ndarray
    raw: np.ndarray
    mask: np.ndarray
    info: dict = field(default_factory=dict)


def double_angle(s_a: np.ndarray, s_2a: np.ndarray, flip_deg: float, noise_sd: float | None = None,
                 snr_min: float = 5.0, mask: np.ndarray | None = None, fit: str = "poly", order: int = 3,
                 sigma_vox: float = 2.0) -> B1Map:
    """Double-angle B1+ map (Insko & Bolinger 1993) from magnitude images at flips a and 2a.

    s_a, s_2a: images (x, y, z), same shape, nominal flips `flip_deg` and 2 * `flip_deg`, TR >> T1.
    noise_sd: Gaussian noise SD of s_a (default: `estimate_noise_sd`); voxels with
    s_a < snr_min * noise_sd are masked out (the ratio is noise there). `mask` (bool, x, y, z)
    restricts further. The ratio S(2a) / (2 S(a)) is clipped to [-1, 1] (the count is logged).
    fit: 'poly' - weighted least-squares polynomial of total degree `order` in x, y, z over the
    masked voxels (weights S(a)^2, i.e. inverse variance of the estimate); 'smooth' - normalised
    Gaussian smoothing of width `sigma_vox` voxels with the same weights; 'none' - the voxelwise
    map, filled outside the mask from the nearest masked voxel.
    Returns a `B1Map`.
    """
    a = np.asarray(s_a, dtype=np.float64)
    b = np.asarray(s_2a, dtype=np.float64)
    if a.ndim != 3 or a.shape != b.shape:
        raise InputError(f"double-angle needs two 3D images of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(flip_deg) and 0 < flip_deg < 90):
        raise InputError(f"nominal flip a must be in (0, 90) deg for the double-angle method, got {flip_deg}")
    if fit not in B1_FITS:
        raise InputError(f"unknown B1 fit {fit!r}; expected poly, smooth or none")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= MAX_POLY_ORDER:
        raise InputError(f"B1 polynomial order must be an integer 0..{MAX_POLY_ORDER}, got {order!r}")
    if not (np.isfinite(snr_min) and snr_min >= 0):
        raise InputError(f"SNR threshold must be a finite number >= 0, got {snr_min}")
    if noise_sd is not None and not (np.isfinite(noise_sd) and noise_sd > 0):
        raise InputError(f"noise SD must be a finite number > 0, got {noise_sd}")
    if noise_sd is None:
        noise_sd = estimate_noise_sd(a)
    use = np.isfinite(a) & np.isfinite(b) & (a > snr_min * noise_sd)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise InputError(f"B1 mask shape {mask.shape} differs from the images' {a.shape}")
        use &= mask
    n_use = int(use.sum())
    if n_use < 20:
        raise InputError(f"only {n_use} voxels have S(a) above {snr_min} x noise ({noise_sd:.3g}): "
                         "too little signal for a B1 map")
    ratio = b[use] / (2.0 * a[use])
    n_clip = int(np.sum((ratio > 1.0) | (ratio < -1.0)))
    if n_clip:
        log.warning("double-angle ratio S(2a)/(2S(a)) outside [-1, 1] in %d of %d voxels: clipped", n_clip, n_use)
    k = np.arccos(np.clip(ratio, -1.0, 1.0)) / np.deg2rad(flip_deg)
    raw = np.full(a.shape, np.nan)
    raw[use] = k
    w = a[use] ** 2
    info = {"method": "double-angle (Insko & Bolinger 1993)", "flip_deg": float(flip_deg),
            "noise_sd": float(noise_sd), "snr_min": float(snr_min), "voxels_used": n_use,
            "voxels_clipped": n_clip, "fit": fit}
    if fit == "poly":
        b1, resid = _poly_fit(raw, use, w, order)
        info.update(order=int(order), fit_rms=resid)
    elif fit == "smooth":
        wm = np.zeros(a.shape)
        wm[use] = w
        num = ndimage.gaussian_filter(np.where(use, raw, 0.0) * wm, sigma_vox, mode="nearest")
        den = ndimage.gaussian_filter(wm, sigma_vox, mode="nearest")
        b1 = np.where(den > 1e-6 * den.max(), num / np.maximum(den, 1e-300), np.nan)
        b1 = _fill_nearest(b1, np.isfinite(b1))
        info.update(sigma_vox=float(sigma_vox))
    else:
        b1 = _fill_nearest(raw, use)
    lo, hi = float(np.min(b1[use])), float(np.max(b1[use]))
    info.update(b1_min=lo, b1_max=hi)
    if lo < 0.3 or hi > 2.0:
        log.warning("B1 map spans %.2f..%.2f of nominal inside the mask: check the flips and the coil", lo, hi)
    return B1Map(b1=b1.astype(np.float32), raw=raw.astype(np.float32), mask=use, info=info)


def _poly_design(shape: tuple[int, ...], idx: tuple[np.ndarray, ...], order: int) -> np.ndarray:
    """Monomials x^i y^j z^l (i + j + l <= order) at voxel indices idx, coordinates scaled to [-1, 1]."""
    c = [2.0 * (np.asarray(ix, dtype=np.float64) + 0.5) / n - 1.0 for ix, n in zip(idx, shape)]
    cols = []
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for m in range(order + 1 - i - j):
                cols.append(c[0] ** i * c[1] ** j * c[2] ** m)
    return np.stack(cols, axis=-1)


def _poly_fit(raw: np.ndarray, use: np.ndarray, w: np.ndarray, order: int) -> tuple[np.ndarray, float]:
    """Weighted least squares with one round of outlier rejection (|residual| > 4 robust SD)."""
    if not 0 <= order <= MAX_POLY_ORDER:
        raise InputError(f"B1 polynomial order must be 0..{MAX_POLY_ORDER}, got {order}")
    idx = np.nonzero(use)
    A = _poly_design(raw.shape, idx, order)
    y = raw[idx]
    sw = np.sqrt(w / w.max())
    keep = np.ones(y.size, dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(A[keep] * sw[keep, None], y[keep] * sw[keep], rcond=None)
        res = y - A @ coef
        z = res * sw  # residual in units of each voxel's own noise (up to one common factor)
        keep = np.abs(z) < 4.0 * (1.4826 * np.median(np.abs(z[keep])) + 1e-12)
    full = np.indices(raw.shape).reshape(3, -1)
    out = (_poly_design(raw.shape, tuple(full), order) @ coef).reshape(raw.shape)
    return out, float(np.sqrt(np.mean(res[keep] ** 2)))


def _fill_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy each invalid voxel's value from the nearest valid one."""
    if valid.all():
        return values
    _, ind = ndimage.distance_transform_edt(~valid, return_indices=True)
    return values[tuple(ind)]


def receive_sensitivity(b1: np.ndarray | None, receive_map: np.ndarray | None = None,
                        reciprocity: bool = True) -> np.ndarray | float:
    """Relative receive sensitivity (x, y, z) to divide the image by.

    receive_map given: used as is (must be finite and > 0). Otherwise, with `reciprocity`, a
    transmit-receive coil receives with the transmit profile (B1- ~ B1+ at low field; Hoult,
    Concepts Magn Reson 2000), so the sensitivity is k_B1 itself; without either, 1.0.
    """
    if receive_map is not None:
        r = np.asarray(receive_map, dtype=np.float64)
        if b1 is not None and np.shape(b1) != r.shape:
            raise InputError(f"receive map shape {r.shape} differs from the B1 map's {np.shape(b1)}")
        if not np.all(np.isfinite(r)) or np.any(r <= 0):
            raise InputError("receive map must be finite and positive everywhere")
        return r
    if reciprocity and b1 is not None:
        return np.asarray(b1, dtype=np.float64)
    return 1.0
