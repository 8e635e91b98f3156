"""Density-adapted 3D radial (DA-radial; Nagel et al. 2009, MRM 62:1565).

Each spoke starts like plain radial (gradient ramp, then a constant gradient G0) up to k0, and
beyond k0 the gradient falls as G(t) = G0 k0^2 / k(t)^2, i.e.

    k(t)^3 = k0^3 + 3 gamma G0 k0^2 (t - t0),

so that k^2 dk/dt is constant and every spherical shell beyond k0 gets the same number of
samples per unit volume (the SNR-efficient "density-adapted" part). The radial profile `r(t)` is
shared with TPI (Boada et al. 1997), whose readouts follow it too.

Readout duration (ramp of length tau): T = tau / 2 + (kmax^3 + 2 k0^3) / (3 gamma G0 k0^2)
= tau / 2 + (kmax / (gamma G0)) (1 + 2 p^3) / (3 p^2), p = k0 / kmax.

Limits: the gradient falls fastest at k0, |dG/dt| = 2 gamma G0^2 / k0, which caps G0 at
sqrt(slew k0 / (2 gamma)); the ramp must end before k0. Unless G0 is given, the generator takes
the largest G0 within Gmax, the slew limit and Nyquist along the readout (gamma G0 dwell <=
1 / (readout_os FOV)), and logs it.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..core.trajectory import Trajectory
from ..errors import InputError
from .gradients import (
    GradientDesign,
    check_design_params,
    check_waveforms,
    choose_readout_gradient,
    gamma_bar_default,
    generated_trajectory,
    gradient_from_k,
    ramp_intervals,
    rotation_z_to,
)
from .radial import n_spokes_nyquist, spoke_directions

log = logging.getLogger(__name__)


def da_radial_profile(t: np.ndarray, g0_T_m: float, k0_per_m: float, nramp: int, raster_s: float,
                      gamma_bar_hz_per_t: float) -> np.ndarray:
    """|k|(t) in 1/m of a density-adapted readout (Nagel 2009; the radial part of TPI, Boada 1997).

    t : times (s) from the readout start; a linear ramp of `nramp` raster intervals to g0, the
    constant g0 up to k0, then k^3 = k0^3 + 3 gamma g0 k0^2 (t - t0).
    """
    t = np.asarray(t, dtype=np.float64)
    gg = gamma_bar_hz_per_t * g0_T_m
    tau = nramp * raster_s
    k_ramp_end = gg * tau / 2.0
    if k_ramp_end > k0_per_m * (1 + 1e-12):
        raise InputError(f"the gradient ramp ends at |k| = {k_ramp_end:.2f} 1/m, beyond k0 = {k0_per_m:.2f} 1/m: "
                         f"raise k0 (p) or the slew rate, or lower G")
    t0 = tau / 2.0 + k0_per_m / gg
    r = np.empty_like(t)
    ramp = t <= tau
    r[ramp] = gg * t[ramp] ** 2 / (2.0 * tau) if tau > 0 else 0.0
    lin = (t > tau) & (t <= t0)
    r[lin] = k_ramp_end + gg * (t[lin] - tau)
    da = t > t0
    r[da] = np.cbrt(k0_per_m ** 3 + 3.0 * gg * k0_per_m ** 2 * (t[da] - t0))
    return r


def da_readout_time(g0_T_m: float, k0_per_m: float, kmax_per_m: float, nramp: int, raster_s: float,
                    gamma_bar_hz_per_t: float) -> float:
    """Time (s) at which the density-adapted profile reaches kmax: tau/2 + (kmax^3 + 2 k0^3)/(3 gamma G k0^2)."""
    gg = gamma_bar_hz_per_t * g0_T_m
    return nramp * raster_s / 2.0 + (kmax_per_m ** 3 + 2.0 * k0_per_m ** 3) / (3.0 * gg * k0_per_m ** 2)


def fit_profile_to_dwell(g0_T_m: float, k0_per_m: float, kmax_per_m: float, slew_T_m_s: float,
                         raster_s: float, dwell_s: float, gamma_bar_hz_per_t: float) -> tuple[float, int, int]:
    """Lower G slightly so that a whole number of dwells ends exactly on kmax.

    Returns (g (T/m) <= g0_T_m, nramp, nsample). T(G) = tau/2 + A / G at a fixed ramp length.
    """
    nramp = ramp_intervals(g0_T_m, slew_T_m_s, raster_s)
    T = da_readout_time(g0_T_m, k0_per_m, kmax_per_m, nramp, raster_s, gamma_bar_hz_per_t)
    nsample = int(math.ceil(T / dwell_s - 1e-9)) + 1
    a = (kmax_per_m ** 3 + 2.0 * k0_per_m ** 3) / (3.0 * gamma_bar_hz_per_t * k0_per_m ** 2)
    g = a / ((nsample - 1) * dwell_s - nramp * raster_s / 2.0)
    return min(g, g0_T_m), nramp, nsample


def _dar_base(g0, k0, kmax, slew, raster, dwell, gamma):
    g, nramp, nsample = fit_profile_to_dwell(g0, k0, kmax, slew, raster, dwell, gamma)
    t = dwell * np.arange(nsample)
    r = da_radial_profile(t, g, k0, nramp, raster, gamma)
    ngrad = int(math.ceil(t[-1] / raster - 1e-9))
    rr = da_radial_profile(raster * np.arange(ngrad + 1), g, k0, nramp, raster, gamma)
    gw = gradient_from_k(rr[:, None] * np.array([0.0, 0.0, 1.0]), raster, gamma)
    return g, nramp, t, r, gw


def _peak_slew_1d(gw: np.ndarray, raster: float) -> float:
    return float(np.max(np.linalg.norm(np.diff(np.concatenate([np.zeros((1, 3)), gw]), axis=0), axis=-1)) / raster)


def dar_3d(matrix: int, fov_mm: float, gmax_mT_m: float = 40.0, slew_T_m_s: float = 150.0,
           dwell_us: float = 10.0, k0_per_m: float | None = None, p: float | None = 0.25,
           g0_mT_m: float | None = None, undersampling: float = 1.0, readout_os: float = 1.0,
           ordering: str = "spiral", raster_us: float = 10.0, te_ms: float = 0.0,
           gamma_bar_hz_per_t: float | None = None) -> Trajectory:
    """Density-adapted 3D radial trajectory (Nagel et al. 2009), centre-out.

    Parameters
    ----------
    matrix, fov_mm : nominal matrix N and FOV; kmax = N / (2 FOV).
    gmax_mT_m, slew_T_m_s, raster_us : scanner limits and gradient raster.
    dwell_us : ADC dwell time.
    k0_per_m or p : start of the density-adapted part, k0 = p kmax (k0 wins when both given).
    g0_mT_m : gradient before k0; default the largest within Gmax, the slew limit and Nyquist
        along the readout (gamma G0 dwell <= 1 / (readout_os FOV)). An explicit value beyond a
        limit raises InputError.
    undersampling : spokes = ceil(pi N^2 / undersampling) (directions as `spoke_directions`).

    te_ms : time from excitation to the readout start.

    Returns a `Trajectory` (kind 'dar'): k (nspoke, nsample, 3) 1/m, t (nsample,) s from
    excitation, design a `GradientDesign` (g_base (1, ngrad, 3) T/m along z, rotated per spoke),
    checked against the limits.
    """
    check_design_params("DA-radial", matrix,
                        positive=dict(fov_mm=fov_mm, gmax_mT_m=gmax_mT_m, slew_T_m_s=slew_T_m_s, dwell_us=dwell_us,
                                      k0_per_m=k0_per_m, p=p, g0_mT_m=g0_mT_m, undersampling=undersampling,
                                      readout_os=readout_os, raster_us=raster_us,
                                      gamma_bar_hz_per_t=gamma_bar_hz_per_t),
                        nonnegative=dict(te_ms=te_ms))
    matrix = int(matrix)
    gamma = gamma_bar_default(gamma_bar_hz_per_t)
    fov = fov_mm * 1e-3
    kmax = matrix / (2.0 * fov)
    if k0_per_m is None:
        if p is None:
            raise InputError("DA-radial needs k0_per_m or p (k0 = p kmax)")
        k0_per_m = p * kmax
    k0 = float(k0_per_m)
    if not 0 < k0 < kmax:
        raise InputError(f"DA-radial needs 0 < k0 < kmax = {kmax:.2f} 1/m, found k0 = {k0:.2f} 1/m (p = {k0 / kmax:.3f})")
    dwell, raster, gmax, slew = dwell_us * 1e-6, raster_us * 1e-6, gmax_mT_m * 1e-3, slew_T_m_s
    g0 = choose_readout_gradient(
        "DA-radial", g0_mT_m, gmax, slew, fov, dwell, readout_os, gamma, name="G0",
        peak_slew=lambda g: _peak_slew_1d(_dar_base(g, k0, kmax, slew, raster, dwell, gamma)[4], raster))
    g, nramp, t, r, gw = _dar_base(g0, k0, kmax, slew, raster, dwell, gamma)
    n_spokes = max(1, int(math.ceil(n_spokes_nyquist(matrix) / undersampling)))
    dirs = spoke_directions(n_spokes, ordering)
    k = dirs[:, None, :] * r[None, :, None]
    k_base = r[None, :, None] * np.array([0.0, 0.0, 1.0])
    rep = check_waveforms(gw[None], raster, t, k_base, kmax, gmax, slew, gamma, what="DA-radial")
    params = dict(matrix=int(matrix), fov_mm=float(fov_mm), gmax_mT_m=float(gmax_mT_m), slew_T_m_s=float(slew_T_m_s),
                  dwell_us=float(dwell_us), k0_per_m=k0, p=k0 / kmax, g0_mT_m=float(g * 1e3),
                  undersampling=float(undersampling), readout_os=float(readout_os), ordering=ordering,
                  raster_us=float(raster_us), n_spokes=int(n_spokes), nsample=int(t.size),
                  readout_ms=float(t[-1] * 1e3))
    design = GradientDesign(g_base=gw[None], base_index=np.zeros(n_spokes, dtype=np.int64),
                            rotation=rotation_z_to(dirs), raster_s=raster, kmax_per_m=kmax, k0_per_m=k0,
                            te_s=te_ms * 1e-3, params=params, report=rep,
                            readout_solid_angle=np.full(n_spokes, 4.0 * math.pi / n_spokes))
    return generated_trajectory(k, t, "dar", design)
