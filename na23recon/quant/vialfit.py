"""The reference vials' geometry, fitted to the image through the reconstruction's PSF, as
fractional region maps for partial-volume correction.

A 20 mm vial is 2.7 voxels across at 7.5 mm and 5.3 at 3.75 mm: its detected voxels (above half
height, `quant.vials.detect_vials`) are a staircase of the true shape and its central voxels
still hold partial volume, so a calibration on vial means reads low and every tissue value
calibrated against it high. Here each detected vial is modelled as a uniform solid (an
axis-aligned ellipsoid, or a cylinder along the image axis of its longest extent) of unknown
centre and semi-axes, rasterised as voxel means (supersampled, with a linear edge ramp over one
sub-sample so the fractions move smoothly with the parameters), blurred by the PSF of the
vial's medium (`quant.pvc.convolve_psf`, the same forward model as the geometric transfer
matrix) plus a constant background, and fitted by least squares to the image around it
(model-based fitting of a known-shape object through a known PSF: the approach of the "GTM with
anatomical regions" of Rousset, Ma & Evans, J Nucl Med 1998, where the regions here come from
the image itself; cf. the object-size fitting of hot spheres in Hoffman, Huang & Phelps,
J Comput Assist Tomogr 1979). The fitted fraction maps then enter one GTM together with the
tissue regions, and the calibration line is fitted through the vials' GTM values
(`quant.roi`), so vials and tissue are corrected by the same model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.special import i0e, i1e

from ..errors import InputError
from .bandlimit import solid_band
from .pvc import convolve_psf

log = logging.getLogger(__name__)

SHAPES = ("ellipsoid", "cylinder")
#: Sub-samples per voxel axis of the rasterisation.
SUB = 4
#: The fit's window: the detected vial dilated by this many voxels.
MARGIN_VOX = 3


@dataclass
class VialShape:
    """One vial's fitted geometry: centre and semi-axes in voxels (image index space), the
    amplitude (image units: the vial's value free of partial volume), the local background,
    the fraction map (float32, the image's shape; the part of each voxel the vial fills), the
    RMS residual of the fit and its shape."""

    label: int
    centre_vox: np.ndarray
    semi_axes_vox: np.ndarray
    amplitude: float
    background: float
    fractions: np.ndarray
    rms: float
    shape: str = "ellipsoid"
    volume_rel_sd: float = 0.0
    band: np.ndarray | None = None
    """The solid's band-limited indicator at the voxel centres (`quant.bandlimit.solid_band`): what
    the PSF blurs in a model of its image (the fractions alias its sharp edge)."""

    def info(self, voxel_mm) -> dict:
        vox = np.asarray(voxel_mm, np.float64)
        return {"label": self.label, "shape": self.shape, "centre_vox": [round(float(x), 3) for x in self.centre_vox],
                "semi_axes_mm": [round(float(x), 2) for x in self.semi_axes_vox * vox],
                "volume_ml": round(float(self.fractions.sum() * np.prod(vox)) / 1e3, 3),
                "volume_rel_sd": float(self.volume_rel_sd), "amplitude": float(self.amplitude),
                "background": float(self.background), "rms": float(self.rms)}


def solid_fractions(shape: tuple[int, ...], centre, semi, kind: str = "ellipsoid", sub: int = SUB,
                    origin=(0, 0, 0)) -> np.ndarray:
    """Voxel-mean fractions (float64 `shape`) of a uniform axis-aligned solid.

    centre, semi: (3,) in voxels of the full image; `origin`: the index of this array's first
    voxel in the full image (a window). kind 'ellipsoid' (semi-axes) or 'cylinder' (elliptic
    cross-section semi[0], semi[1]; half-length semi[2] along axis 2). Each voxel is the mean of
    sub^3 points, each point's value ramping linearly from 1 to 0 over one sub-sample spacing
    across the surface (its signed distance along the radius), so the map is continuous in the
    parameters."""
    if kind not in SHAPES:
        raise InputError(f"vial shape must be one of {', '.join(SHAPES)}, got {kind!r}")
    c = np.asarray(centre, np.float64)
    s = np.maximum(np.asarray(semi, np.float64), 1e-3)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    grids = []
    for a in range(3):
        g = (np.arange(shape[a]) + origin[a])[:, None] + offs[None, :]  # (n, sub)
        grids.append((g - c[a]) / s[a])
    ux = grids[0].reshape(-1, sub, 1, 1, 1, 1)
    uy = grids[1].reshape(1, 1, -1, sub, 1, 1)
    uz = grids[2].reshape(1, 1, 1, 1, -1, sub)
    step = 1.0 / sub
    if kind == "ellipsoid":
        rho = np.sqrt(ux**2 + uy**2 + uz**2)
        # distance to the surface along the radius, in voxels: (rho - 1) |s u| / rho
        scale = np.sqrt((s[0] * ux) ** 2 + (s[1] * uy) ** 2 + (s[2] * uz) ** 2) / np.maximum(rho, 1e-9)
        d = (rho - 1.0) * np.where(rho > 1e-9, scale, s.min())
    else:
        rr = np.sqrt(ux**2 + uy**2)
        scale = np.sqrt((s[0] * ux) ** 2 + (s[1] * uy) ** 2) / np.maximum(rr, 1e-9)
        d = np.maximum((rr - 1.0) * np.where(rr > 1e-9, scale, min(s[0], s[1])), (np.abs(uz) - 1.0) * s[2])
    val = np.clip(0.5 - d / step, 0.0, 1.0)
    return val.mean(axis=(1, 3, 5))


def rician_mean(a: np.ndarray, sd) -> np.ndarray:
    """Expected magnitude of a signal `a` (>= 0) in complex Gaussian noise of SD `sd` per channel:
    sd sqrt(pi/2) L_1/2(-a^2 / 2 sd^2) (Rice 1944; Gudbjartsson & Patz, Magn Reson Med 1995), the
    model a magnitude image is fitted with (Jones & Basser, Magn Reson Med 2004). Tends to `a`
    for a >> sd and to sd sqrt(pi/2) at a = 0; `a` itself where sd is 0."""
    a = np.abs(np.asarray(a, np.float64))
    sd = np.broadcast_to(np.asarray(sd, np.float64), a.shape)
    out = a.copy()
    ok = sd > 0
    v = (a[ok] / sd[ok]) ** 2 / 4.0
    # large v: a + sd^2 / (2 a) (the series' first terms; i0e/i1e lose nothing but keep it cheap)
    out[ok] = sd[ok] * np.sqrt(np.pi / 2) * ((1 + 2 * v) * i0e(v) + 2 * v * i1e(v))
    return out


def rician_slope(a: np.ndarray, sd) -> np.ndarray:
    """d rician_mean(a, sd) / da for a signed signal `a` (the magnitude reads |a|): sign(a)
    sqrt(pi/2) |a| / (2 sd) e^-v (I0(v) + I1(v)), v = a^2 / 4 sd^2; sign(a) where sd is 0."""
    a = np.asarray(a, np.float64)
    sd = np.broadcast_to(np.asarray(sd, np.float64), a.shape)
    out = np.sign(a)
    ok = sd > 0
    v = (a[ok] / sd[ok]) ** 2 / 4.0
    out[ok] = np.sqrt(np.pi / 2) * a[ok] / (2 * sd[ok]) * (i0e(v) + i1e(v))
    return out


def _crop_psf(psf: np.ndarray, half: np.ndarray) -> np.ndarray:
    """The PSF (normalised to sum 1 over the whole array) cropped to +-half voxels about N//2."""
    h = np.asarray(psf, np.float64)
    h = h.real if np.iscomplexobj(h) else h
    tot = float(h.sum())
    if not np.isfinite(tot) or tot <= 0:
        raise InputError("the PSF does not sum to a positive number")
    sl = tuple(slice(max(n // 2 - int(k), 0), min(n // 2 + int(k) + 1, n)) for n, k in zip(h.shape, half))
    return h[sl] / tot


def fit_vial_shape(image: np.ndarray, region: np.ndarray, psf: np.ndarray, label: int = 0,
                   kind: str = "ellipsoid", margin: int = MARGIN_VOX, exclude: np.ndarray | None = None,
                   noise_sd=None, semi_vox=None) -> VialShape:
    """Fit one vial's solid (centre, semi-axes, amplitude, background) to `image` around `region`.

    image: (x, y, z) intensity proportional to concentration (receive and relaxation corrected);
    region: bool (x, y, z), the vial's detected voxels (the fit's start and window); psf: the
    reconstruction's PSF for the vial's medium (centred at N//2); exclude: bool (x, y, z) voxels
    left out of the fit (other objects' signal, e.g. the head and the other vials); noise_sd: the
    Gaussian noise SD of the magnitude image (scalar or (x, y, z), image units): the model is
    then the expected magnitude (`rician_mean`), else the signal itself. Without it the noise
    floor, high at the vial's faint edge and absent at its bright centre, would shrink the fit.
    semi_vox: the vial's known semi-axes (voxels; from its listed size): then only its centre,
    amplitude and background are fitted (a vial under ~3 voxels across cannot tell its size from
    its value in the noise).
    """
    img = np.asarray(image, np.float64)
    reg = np.asarray(region, bool)
    if not reg.any():
        raise InputError(f"vial {label}: empty region, nothing to fit")
    win = ndimage.binary_dilation(reg, iterations=margin)
    if exclude is not None:
        win &= ~(np.asarray(exclude, bool) & ~ndimage.binary_dilation(reg, iterations=1))
    idx = np.argwhere(win)
    lo = idx.min(axis=0)
    hi = idx.max(axis=0) + 1
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    patch, wmask = img[sl], win[sl]
    sd = None if noise_sd is None else np.broadcast_to(np.asarray(noise_sd, np.float64), img.shape)[sl]
    dims = hi - lo
    h = _crop_psf(psf, dims)
    pts = np.argwhere(reg)
    vals = np.clip(img[reg], 0, None)
    c0 = (pts * vals[:, None]).sum(0) / max(vals.sum(), 1e-30)
    ext = pts.max(0) - pts.min(0) + 1.0
    s0 = np.maximum(0.5 * ext, 0.75)
    ring = win & ~ndimage.binary_dilation(reg, iterations=1)
    b0 = float(np.median(img[ring])) if ring.any() and sd is None else 0.0
    a0 = max(float(np.percentile(img[reg], 90)) - b0, 1e-12)

    def model(p):
        f = solid_fractions(tuple(dims), p[0:3], p[3:6], kind, origin=tuple(lo))
        lin = p[6] * convolve_psf(f, h, voxel_means=True) + p[7]
        return lin if sd is None else rician_mean(lin, sd)

    def resid(p):
        return (model(p) - patch)[wmask] / a0

    # with the magnitude model the background is signal (spill from elsewhere), never below 0
    lb = np.concatenate([c0 - 0.5 * ext - 1, np.full(3, 0.5), [0.0], [-np.inf if sd is None else 0.0]])
    ub = np.concatenate([c0 + 0.5 * ext + 1, ext + 2.0, [np.inf], [np.inf]])
    p0 = np.clip(np.concatenate([c0, s0, [a0, b0]]), lb + 1e-6, ub - 1e-6)
    free = np.ones(8, bool)
    if semi_vox is not None:
        p0[3:6] = np.asarray(semi_vox, np.float64)
        lb[3:6], ub[3:6] = p0[3:6] - 1e-9, p0[3:6] + 1e-9
        free[3:6] = False

    def resid_free(q):
        full = p0.copy()
        full[free] = q
        return resid(full)

    sol = least_squares(resid_free, p0[free], bounds=(lb[free], ub[free]), diff_step=1e-3, max_nfev=200,
                        x_scale=np.concatenate([np.ones(6), [a0, a0]])[free])
    p = p0.copy()
    p[free] = sol.x
    full = np.zeros(img.shape, np.float32)
    # the fraction map over the whole window of the solid (it may reach beyond the fit window)
    r = np.ceil(p[3:6] + 1).astype(int)
    flo = np.maximum(np.floor(p[0:3]).astype(int) - r, 0)
    fhi = np.minimum(np.ceil(p[0:3]).astype(int) + r + 1, img.shape)
    full[tuple(slice(a, b) for a, b in zip(flo, fhi))] = solid_fractions(tuple(fhi - flo), p[0:3], p[3:6], kind,
                                                                         origin=tuple(flo))
    rms = float(np.sqrt(np.mean(sol.fun**2)) * a0)
    # the fitted volume's relative SD, from the parameters' covariance (J^T J)^-1 s^2
    dof = max(sol.fun.size - int(free.sum()), 1)
    try:
        cov = np.linalg.pinv(sol.jac.T @ sol.jac) * (2 * sol.cost / dof)
        gv = np.zeros(p.size)
        gv[3:6] = 1.0 / p[3:6]
        gv = gv[free]
        vol_rel_sd = float(np.sqrt(max(gv @ cov @ gv, 0.0)))
    except np.linalg.LinAlgError:
        vol_rel_sd = float("nan")
    return VialShape(label=int(label), centre_vox=p[0:3], semi_axes_vox=p[3:6], amplitude=float(p[6]),
                     background=float(p[7]), fractions=full, rms=rms, shape=kind, volume_rel_sd=vol_rel_sd,
                     band=solid_band(img.shape, p[0:3], p[3:6], kind))


def fit_vials(image: np.ndarray, vial_mask: np.ndarray, labels: list[int], psfs: list[np.ndarray],
              exclude: np.ndarray | None = None, kind: str = "ellipsoid", noise_sd=None,
              sizes: dict | None = None) -> list[VialShape]:
    """`fit_vial_shape` for each vial label of `vial_mask` (one PSF each); the other vials'
    dilated regions and `exclude` are left out of each fit; sizes {label: semi-axes (voxels)} fixes
    the listed vials' sizes."""
    vm = np.asarray(vial_mask)
    out = []
    for lab, h in zip(labels, psfs):
        others = (vm > 0) & (vm != lab)
        ex = ndimage.binary_dilation(others, iterations=2)
        if exclude is not None:
            ex |= np.asarray(exclude, bool)
        out.append(fit_vial_shape(image, vm == lab, h, lab, kind=kind, exclude=ex, noise_sd=noise_sd,
                                  semi_vox=(sizes or {}).get(lab)))
    return out


def listed_semi_axes_mm(vials: list, vial_mask: np.ndarray, voxel_mm) -> dict[int, np.ndarray]:
    """{label: (3,) semi-axes in mm along the image axes} of the vials whose size the vials file
    lists (`quant.vials.Vial` diameter_mm, length_mm): a sphere or a vial as long as it is wide is
    the same along every axis; otherwise the vial's length lies along the image axis along which
    its detected voxels (`vial_mask`) spread most (least for a vial shorter than it is wide)."""
    out: dict[int, np.ndarray] = {}
    vox = np.broadcast_to(np.asarray(voxel_mm, np.float64), (3,))
    for v in vials:
        if v.diameter_mm is None:
            continue
        d = float(v.diameter_mm) / 2.0
        ln = float(v.length_mm) / 2.0 if v.length_mm is not None else d
        semi = np.full(3, d)
        idx = np.argwhere(np.asarray(vial_mask) == v.label)
        if abs(ln - d) > 1e-9 and len(idx) > 1:
            spread = np.var(idx * vox, axis=0)
            semi[int(np.argmax(spread) if ln > d else np.argmin(spread))] = ln
        elif abs(ln - d) > 1e-9:
            continue  # not found: its orientation is unknown, the fit takes its size
        out[v.label] = semi
    return out
