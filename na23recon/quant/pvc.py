"""Partial-volume correction with the reconstruction's own point-spread function.

The image of regions j with fractional maps r_j (the fraction of each voxel that region j fills)
and true values c_j is modelled as I = sum_j c_j (r_j * h_j), with h_j the PSF that region's
signal sees (the method, the trajectory and the region's T2* decay: `recon.psf.point_spread`) and
* a linear convolution (FFT, zero-padded: no wrap).

- `gtm`: the geometric transfer matrix (Rousset, Ma & Evans, J Nucl Med 1998). The weighted mean
  of the image over ROI i, t_i = sum_v w_i(v) I(v) / sum_v w_i(v), is t = G c with
  G_ij = sum_v w_i(v) (r_j * h_j)(v) / sum_v w_i(v); the ROI weights w_i are the region's own
  fractions unless given. c = G^-1 t (least squares when there are more ROIs than regions).
- `rbv`: region-based voxel-wise correction (Thomas et al., Eur J Nucl Med Mol Imaging 2011):
  I_pvc = I * s / (sum_j c_j r_j * h_j), s = sum_j c_j r_j, with c from the GTM.

The regions must account for all the signal near them (tissue, CSF, lesions, vials): signal of
an unlisted source spills into them uncorrected. The PSF is an array on the image grid centred
at index N//2 of each axis (a reconstruction's `X_psf.nii.gz`); `gaussian_psf` makes one from
FWHMs when no reconstruction PSF is available. By default each PSF is scaled to sum to 1: a
calibrated (TSC) map has the method's DC gain divided out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft

from ..errors import InputError

__all__ = ["convolve_psf", "gaussian_psf", "gtm", "rbv", "spread_regions"]


def gaussian_psf(fwhm_mm, voxel_mm, shape: Sequence[int]) -> np.ndarray:
    """A Gaussian PSF with the given FWHM per axis (mm) on a grid `shape`, centred at index N//2,
    summing to 1 (the fallback when no reconstruction PSF is available)."""
    fw = np.broadcast_to(np.asarray(fwhm_mm, np.float64), (len(shape),))
    vox = np.broadcast_to(np.asarray(voxel_mm, np.float64), (len(shape),))
    if np.any(fw <= 0) or np.any(vox <= 0):
        raise InputError(f"a Gaussian PSF needs positive FWHM and voxel sizes, got {list(fw)}, {list(vox)}")
    sd = fw / vox / (2 * np.sqrt(2 * np.log(2)))
    g = np.ones(tuple(int(s) for s in shape))
    for a, n in enumerate(g.shape):
        x = np.arange(n) - n // 2
        prof = np.exp(-0.5 * (x / sd[a]) ** 2)
        g = g * prof.reshape([-1 if i == a else 1 for i in range(g.ndim)])
    return g / g.sum()


def convolve_psf(image: np.ndarray, psf: np.ndarray, voxel_means: bool = False) -> np.ndarray:
    """Linear convolution of `image` with `psf` (centred at index N//2 of each of its axes), by
    FFT on a grid padded to image + psf (no wrap); the result has the image's shape.

    voxel_means: `image` holds voxel means of a continuous object (fractions of a region), which the
    PSF (the response to a point) acts on: the voxel's box transfer, prod_a sinc(f_a) with f in
    cycles per voxel (at least 2/pi per axis inside the band), is divided out of the spectrum.
    """
    x = np.asarray(image, np.float64)
    h = np.asarray(psf)
    if h.ndim != x.ndim:
        raise InputError(f"the PSF has {h.ndim} axes but the image {x.ndim}")
    h = h.real.astype(np.float64) if np.iscomplexobj(h) else h.astype(np.float64)
    full = [a + b - 1 for a, b in zip(x.shape, h.shape)]
    fshape = [sfft.next_fast_len(n, real=True) for n in full]
    spec = sfft.rfftn(x, fshape) * sfft.rfftn(h, fshape)
    if voxel_means:
        for a, m in enumerate(fshape):
            f = sfft.rfftfreq(m) if a == len(fshape) - 1 else sfft.fftfreq(m)
            spec /= np.sinc(f).reshape([-1 if i == a else 1 for i in range(len(fshape))])
    out = sfft.irfftn(spec, fshape)
    c = [n // 2 for n in h.shape]
    return out[tuple(slice(ci, ci + n) for ci, n in zip(c, x.shape))]


def _check_arrays(image: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image and its regions (R, *shape) as float64, checked."""
    img = np.asarray(image, np.float64)
    reg = np.asarray(regions, np.float64)
    if reg.ndim != img.ndim + 1 or reg.shape[1:] != img.shape:
        raise InputError(f"regions must be (R, {', '.join(map(str, img.shape))}) on the image grid, got {reg.shape}")
    if not np.all(np.isfinite(reg)) or reg.min() < 0:
        raise InputError("region fractions must be finite and >= 0")
    if not np.all(np.isfinite(img)):
        raise InputError("the image holds non-finite voxels")
    return img, reg


def _check_psfs(psf, nreg: int, ndim: int, normalize: bool) -> list:
    """One real PSF per region (`psf` one array or a list of nreg), each with ndim axes, scaled to
    sum 1 with `normalize`."""
    psfs = list(psf) if isinstance(psf, (list, tuple)) else [psf] * nreg
    if len(psfs) != nreg:
        raise InputError(f"{len(psfs)} PSFs for {nreg} regions: give one, or one per region")
    out = []
    for h in psfs:
        h = np.asarray(h)
        h = h.real if np.iscomplexobj(h) else h
        if h.ndim != ndim:
            raise InputError(f"the PSF must have the image's {ndim} axes, got shape {h.shape}")
        if normalize:
            s = float(np.sum(h))
            if not np.isfinite(s) or s <= 0:
                raise InputError("the PSF does not sum to a positive number")
            h = h / s
        out.append(h)
    return out


def _check(image: np.ndarray, regions: np.ndarray, psf, normalize: bool) -> tuple[np.ndarray, np.ndarray, list]:
    img, reg = _check_arrays(image, regions)
    return img, reg, _check_psfs(psf, reg.shape[0], img.ndim, normalize)


def spread_regions(regions: np.ndarray, psf, normalize: bool = True, voxel_means: bool = True) -> np.ndarray:
    """(R, *shape): each region's fraction map convolved with its PSF (one PSF or one per region;
    `voxel_means` as in `convolve_psf`)."""
    reg = np.asarray(regions, np.float64)
    _, reg = _check_arrays(np.zeros(reg.shape[1:]), reg)
    psfs = _check_psfs(psf, reg.shape[0], reg.ndim - 1, normalize)
    return np.stack([convolve_psf(r, h, voxel_means) for r, h in zip(reg, psfs)])


def gtm(image: np.ndarray, regions: np.ndarray, psf, rois: np.ndarray | None = None,
        normalize: bool = True, voxel_means: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Regional partial-volume correction by the geometric transfer matrix (Rousset et al. 1998).

    Args:
        image: (*shape) the reconstruction (or a map calibrated from it, such as TSC).
        regions: (R, *shape) fraction of each voxel in each region (tissue probability maps,
            atlas labels as 0/1), on the image grid.
        psf: one PSF array (any shape with the image's axes, centred at N//2) or a list of R, one
            per region (regions of different T2* blur differently).
        rois: (Q, *shape) ROI weights, Q >= R (default: the regions themselves).
        normalize: scale each PSF to sum 1 (the method's gain is calibrated out of TSC maps);
            False for an image in the reconstruction's own units.
        voxel_means: the fractions are voxel means of each region (maps averaged down from a finer
            grid, partial-volume probability maps): the voxel's box transfer is divided out of
            the spread (`convolve_psf`); False for maps sampled at the voxel centres.

    Returns:
        (values (R,) the corrected regional values, G (Q, R) the transfer matrix). The regions'
        uncorrected weighted means are G @ values (and `rois` @ image / `rois`.sum()).
    """
    img, reg, psfs = _check(image, regions, psf, normalize)
    w = reg if rois is None else np.asarray(rois, np.float64)
    if w.shape[1:] != img.shape or w.shape[0] < reg.shape[0]:
        raise InputError(f"rois must be (Q >= {reg.shape[0]}, *image shape), got {w.shape}")
    ws = w.reshape(w.shape[0], -1).sum(axis=1)
    if np.any(ws <= 0):
        raise InputError(f"ROI(s) {np.flatnonzero(ws <= 0).tolist()} are empty")
    spread = spread_regions(reg, psfs, normalize=False, voxel_means=voxel_means)
    wf = w.reshape(w.shape[0], -1)
    G = (wf @ spread.reshape(spread.shape[0], -1).T) / ws[:, None]
    t = (wf @ img.reshape(-1)) / ws
    values = np.linalg.lstsq(G, t, rcond=None)[0]
    return values, G


def rbv(image: np.ndarray, regions: np.ndarray, psf, values: np.ndarray | None = None,
        normalize: bool = True, voxel_means: bool = True, floor: float = 1e-3,
        spread: np.ndarray | None = None) -> np.ndarray:
    """Voxel-wise region-based correction (Thomas et al. 2011): I * s / (s * h), s = sum_j c_j r_j.

    values: the regional values c (default: `gtm` of the same image, regions and PSF);
    normalize, voxel_means as in `gtm`; spread: (R, *shape) the regions' model images r_j * h_j
    when the caller made them (then `psf` is not used and `values` are needed). Voxels
    where the smoothed synthetic image is below `floor` times its maximum (outside every region)
    are set to 0. Returns float64 (*shape).
    """
    if spread is not None:
        if values is None:
            raise InputError("rbv with the regions' model images needs their values")
        sp = np.asarray(spread, np.float64)
        img, reg = _check_arrays(image, regions)
        if sp.shape != reg.shape:
            raise InputError(f"spread must be {reg.shape} (one model image per region), got {sp.shape}")
    else:
        img, reg, psfs = _check(image, regions, psf, normalize)
    c = gtm(img, reg, psfs, normalize=False, voxel_means=voxel_means)[0] if values is None else np.asarray(values, np.float64)
    if c.shape != (reg.shape[0],):
        raise InputError(f"values must be one per region ({reg.shape[0]}), got shape {c.shape}")
    synth = np.tensordot(c, reg, axes=1)
    smooth = np.tensordot(c, sp, axes=1) if spread is not None else \
        sum(cj * convolve_psf(r, h, voxel_means) for cj, r, h in zip(c, reg, psfs))
    ok = np.abs(smooth) > floor * max(float(np.max(np.abs(smooth))), 1e-30)
    out = np.zeros_like(img)
    out[ok] = img[ok] * synth[ok] / smooth[ok]
    return out
