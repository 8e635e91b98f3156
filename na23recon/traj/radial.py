"""3D radial (centre-out and full-diameter) and 2D golden-angle radial trajectories.

Units: k in cycles per metre (1/m), times in s, gradients in T/m. The NUFFT wants cycles per FOV:
`Trajectory.coord(fov_mm)` (edge of a matrix N at +-N/2).

Spoke directions:
- 'spiral': generalised spiral points on the sphere (Saff & Kuijlaars 1997, Math. Intelligencer
  19:5), consecutive spokes are neighbours (smooth eddy-current behaviour, local NUFFT access);
- 'golden': 3D golden means (Chan et al. 2009, MRM 61:354), any contiguous subset is nearly
  uniform (retrospective undersampling, motion binning).
Full Nyquist for centre-out 3D radial needs ~ 4 pi (kmax FOV)^2 = pi N^2 spokes: the spoke tips
on the sphere |k| = kmax must lie no more than 1/FOV apart.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.trajectory import Trajectory
from ..errors import InputError
from .gradients import (
    GradientDesign,
    check_design_params,
    check_waveforms,
    gamma_bar_default,
    generated_trajectory,
    ramp_intervals,
    rotation_z_to,
    trapezoid_ramp_profile,
)

# 3D golden means (Chan et al. 2009): eigenvector of the Fibonacci-like matrix.
GOLDEN_MEANS_3D = (0.4656002, 0.6823278)
GOLDEN_ANGLE_RAD = math.pi * (math.sqrt(5.0) - 1.0) / 2.0  # 180 deg / golden ratio = 111.25 deg, full spokes
GOLDEN_ANGLE_HALF_RAD = math.pi * (math.sqrt(5.0) - 1.0)  # 222.5 deg (= 2 pi / phi) for half spokes


def spoke_directions(n_spokes: int, ordering: str = "spiral", hemisphere: bool = False) -> np.ndarray:
    """Unit vectors (n_spokes, 3) spread uniformly over the sphere (or the upper hemisphere z >= 0).

    ordering 'spiral': Saff & Kuijlaars (1997) generalised spiral, z from -1 to 1 (0 to 1 on the
    hemisphere) with azimuth steps 3.6 / sqrt(n (1 - z^2)); 'golden': 3D golden means
    (Chan et al. 2009), z = frac(m g1), azimuth = 2 pi frac(m g2).
    A hemisphere suits full-diameter spokes (each covers both directions).
    """
    n = int(n_spokes)
    if n < 1:
        raise InputError(f"number of spokes must be >= 1, found {n_spokes}")
    m = np.arange(n, dtype=np.float64)
    if ordering == "spiral":
        if n == 1:
            return np.array([[0.0, 0.0, 1.0]])
        if hemisphere:
            # the hemisphere's points are the upper half of a 2n-point spiral
            h = (m + 0.5) / n
            nn = 2 * n
        else:
            h = -1.0 + 2.0 * m / (n - 1)
            nn = n
        s = np.sqrt(np.clip(1.0 - h * h, 0.0, None))
        step = np.zeros(n)
        inner = s > 1e-12
        step[inner] = 3.6 / np.sqrt(nn) / s[inner]
        step[0] = 0.0
        phi = np.cumsum(step)
        if not hemisphere:
            phi[-1] = 0.0
        z = h
    elif ordering == "golden":
        g1, g2 = GOLDEN_MEANS_3D
        f1 = np.mod(m * g1, 1.0)
        z = f1 if hemisphere else 2.0 * f1 - 1.0
        phi = 2.0 * np.pi * np.mod(m * g2, 1.0)
        s = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    else:
        raise InputError(f"spoke ordering must be 'spiral' or 'golden', found {ordering!r}")
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=-1)


def spoke_radii(nsample: int, kmax_per_m: float, centre_out: bool = True) -> np.ndarray:
    """Signed positions along a spoke (nsample,) in 1/m, equally spaced.

    Centre-out: 0 .. kmax. Full-diameter: -kmax .. kmax (nsample - 1) / nsample ... with the
    centre at sample nsample // 2 (the scanner's echo position for an even sample count).
    """
    if nsample < 2:
        raise InputError(f"a spoke needs at least 2 samples, found {nsample}")
    n = np.arange(nsample, dtype=np.float64)
    if centre_out:
        return kmax_per_m * n / (nsample - 1)
    half = nsample // 2
    return kmax_per_m * (n - half) / half


def radial_3d(n_spokes: int, nsample: int, kmax_per_m: float, centre_out: bool = True,
              ordering: str = "spiral", radii: np.ndarray | None = None) -> np.ndarray:
    """3D radial k-space positions, float64 (n_spokes, nsample, 3) in 1/m.

    Parameters
    ----------
    n_spokes : number of spokes (readouts); pi N^2 centre-out spokes sample a matrix N at Nyquist.
    nsample : samples per spoke.
    kmax_per_m : largest |k| (1/m), N / (2 FOV).
    centre_out : centre-out half spokes over the whole sphere (UTE sodium), or full-diameter
        spokes through the centre over a hemisphere of directions.
    ordering : 'spiral' (Saff-Kuijlaars) or 'golden' (3D golden means), see `spoke_directions`.
    radii : optional signed positions along the spoke (nsample,) in 1/m, replacing the equally
        spaced ones (ramp sampling, density adaptation).
    """
    if kmax_per_m <= 0 or not np.isfinite(kmax_per_m):
        raise InputError(f"kmax must be a positive number of cycles/m, found {kmax_per_m}")
    d = spoke_directions(n_spokes, ordering, hemisphere=not centre_out)
    r = spoke_radii(nsample, kmax_per_m, centre_out) if radii is None else np.asarray(radii, dtype=np.float64)
    if r.shape != (nsample,):
        raise InputError(f"radii must have shape ({nsample},), found {r.shape}")
    return d[:, None, :] * r[None, :, None]


def golden_angle_2d(n_spokes: int, nsample: int, kmax_per_m: float, centre_out: bool = False) -> np.ndarray:
    """2D golden-angle radial, float64 (n_spokes, nsample, 2) in 1/m (Winkelmann et al. 2007, IEEE TMI).

    Full-diameter spokes step by 111.25 deg (pi / golden ratio); centre-out spokes by 222.5 deg.
    """
    step = GOLDEN_ANGLE_HALF_RAD if centre_out else GOLDEN_ANGLE_RAD
    ang = step * np.arange(n_spokes)
    r = spoke_radii(nsample, kmax_per_m, centre_out)
    d = np.stack([np.cos(ang), np.sin(ang)], axis=-1)
    return d[:, None, :] * r[None, :, None]


def n_spokes_nyquist(matrix: int) -> int:
    """Centre-out spokes for full Nyquist sampling of a matrix N on the sphere's surface: ceil(pi N^2)."""
    return int(math.ceil(math.pi * matrix * matrix))


def radial_for_matrix(matrix: int, fov_mm: float, undersampling: float = 1.0, dwell_us: float = 10.0,
                      readout_os: float = 2.0, ordering: str = "spiral", centre_out: bool = True,
                      gmax_mT_m: float = 40.0, slew_T_m_s: float = 150.0, raster_us: float = 10.0,
                      ramp_sampling: bool = True, te_ms: float = 0.0,
                      gamma_bar_hz_per_t: float | None = None) -> Trajectory:
    """A scanner-like 3D radial acquisition for a matrix N and FOV, with times and gradients.

    Spokes: ceil(pi N^2 / undersampling) centre-out (half as many full-diameter spokes, each
    covering two directions). Samples are `dwell_us` apart; the readout gradient is chosen so
    that consecutive samples are 1 / (readout_os FOV) apart in k on the plateau. With
    `ramp_sampling` the ADC starts with the gradient ramp (ultra-short TE: the first samples
    crowd near the centre); the plateau is scaled down slightly so that the last sample lands
    exactly on kmax = N / (2 FOV). Full-diameter spokes prephase to -kmax with a gradient outside
    the readout and read at a constant gradient (no ramp sampling).

    Returns a `Trajectory` (kind 'radial'): k (nspoke, nsample, 3) 1/m, t (nsample,) s from
    excitation (`te_ms` + time from the readout start), design a `GradientDesign` (gradient
    (1, ngrad, 3) T/m along z rotated per spoke), checked against `gmax_mT_m` and `slew_T_m_s`.
    """
    check_design_params("radial", matrix,
                        positive=dict(fov_mm=fov_mm, undersampling=undersampling, dwell_us=dwell_us,
                                      readout_os=readout_os, gmax_mT_m=gmax_mT_m, slew_T_m_s=slew_T_m_s,
                                      raster_us=raster_us, gamma_bar_hz_per_t=gamma_bar_hz_per_t),
                        nonnegative=dict(te_ms=te_ms))
    matrix = int(matrix)
    gamma = gamma_bar_default(gamma_bar_hz_per_t)
    fov = fov_mm * 1e-3
    kmax = matrix / (2.0 * fov)
    dwell, raster = dwell_us * 1e-6, raster_us * 1e-6
    gmax, slew = gmax_mT_m * 1e-3, slew_T_m_s
    dk = 1.0 / (readout_os * fov)
    g_plateau = dk / (gamma * dwell)
    if g_plateau > gmax * (1 + 1e-3):
        raise InputError(f"radial: dwell {dwell_us} us at readout oversampling {readout_os} needs "
                         f"{g_plateau * 1e3:.2f} mT/m, above Gmax {gmax_mT_m} mT/m (lengthen the dwell)")
    nsp_full = n_spokes_nyquist(matrix) / undersampling
    if centre_out:
        n_spokes = max(1, int(math.ceil(nsp_full)))
        if ramp_sampling:
            nmax = int(math.ceil(kmax / dk)) * 4 + 64
            t_all = dwell * np.arange(nmax)
            nramp = ramp_intervals(g_plateau, slew, raster)
            r_all, _ = trapezoid_ramp_profile(g_plateau, nramp, raster, t_all, gamma)
            nsample = int(np.argmax(r_all >= kmax * (1 - 1e-12))) + 1
            t = t_all[:nsample]
            # r is linear in the plateau at a fixed ramp length: scale so the last sample is kmax
            g_plateau *= kmax / r_all[nsample - 1]
            r, g = trapezoid_ramp_profile(g_plateau, nramp, raster, t, gamma)
        else:
            nsample = int(math.ceil(kmax / dk - 1e-9)) + 1
            t = dwell * np.arange(nsample)
            g_plateau = kmax / (gamma * t[-1])
            ngrad = max(1, int(math.ceil(t[-1] / raster - 1e-9)))
            g = np.full(ngrad, g_plateau)
            r = g_plateau * gamma * t
    else:
        n_spokes = max(1, int(math.ceil(nsp_full / 2)))
        half = int(math.ceil(kmax / dk - 1e-9))
        nsample = 2 * half
        t = dwell * np.arange(nsample)
        r = kmax * (np.arange(nsample) - half) / half
        g_plateau = (kmax / half) / (gamma * dwell)
        # the readout gradient is constant; the prephaser (before t = 0) is not part of the readout
        ngrad = max(1, int(math.ceil(t[-1] / raster - 1e-9)))
        g = np.full(ngrad, g_plateau)
    k = radial_3d(n_spokes, nsample, kmax, centre_out=centre_out, ordering=ordering, radii=r)
    dirs = spoke_directions(n_spokes, ordering, hemisphere=not centre_out)
    g_base = np.zeros((1, g.size, 3))
    g_base[0, :, 2] = g
    k_base = np.zeros((1, nsample, 3))
    k_base[0, :, 2] = r - (r[0] if not centre_out else 0.0)
    # a full-diameter readout, or a centre-out one without ramp sampling (idealised: the ramp's
    # area is compensated before the ADC), starts on the plateau
    rep = check_waveforms(g_base, raster, t, k_base, kmax, gmax, slew, gamma, what="radial",
                          from_rest=centre_out and ramp_sampling)
    params = dict(matrix=int(matrix), fov_mm=float(fov_mm), undersampling=float(undersampling),
                  dwell_us=float(dwell_us), readout_os=float(readout_os), ordering=ordering,
                  centre_out=bool(centre_out), gmax_mT_m=float(gmax_mT_m), slew_T_m_s=float(slew_T_m_s),
                  raster_us=float(raster_us), ramp_sampling=bool(ramp_sampling and centre_out),
                  n_spokes=int(n_spokes), nsample=int(nsample), g_plateau_mT_m=float(g_plateau * 1e3))
    design = GradientDesign(g_base=g_base, base_index=np.zeros(n_spokes, dtype=np.int64),
                            rotation=rotation_z_to(dirs), raster_s=raster, kmax_per_m=kmax, k0_per_m=0.0,
                            te_s=te_ms * 1e-3, params=params, report=rep,
                            readout_solid_angle=np.full(n_spokes, 4.0 * math.pi / n_spokes / (1 if centre_out else 2)))
    return generated_trajectory(k, t, "radial", design)
