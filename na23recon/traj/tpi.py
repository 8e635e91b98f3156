"""Twisted projection imaging (TPI; Boada et al. 1997, MRM 38:1022).

Each readout runs radially up to k0 = p kmax, then twists on a cone of half-angle theta about z
with a constant gradient magnitude G, keeping k^2 d|k|/dt constant (uniform sampling density
beyond k0). With q = |k| / k0 its azimuth is

    phi(q) = [sqrt(q^4 - 1) - atan(sqrt(q^4 - 1))] / (2 sin theta),

and its radius follows the density-adapted profile |k|^3 = k0^3 + 3 gamma G k0^2 (t - t0) (shared
with `dar.da_radial_profile`), so the readout lasts (kmax / (gamma G)) (1 + 2 p^3) / (3 p^2)
(+ half the initial ramp). Cones: n_cones = ceil(pi R) (R = N / 2) half-angles
theta_i = (i + 1/2) pi / n_cones, spaced <= 1/R rad (Nyquist between cones at kmax); on cone i,
n_i = ceil(2 pi R p sin theta_i) projections at azimuths 2 pi j / n_i (Nyquist at k0, where the
projections are radial); ~4 pi R^2 p projections in total.

Limits: on a narrow cone the twist is a tight helix whose centripetal acceleration
(gamma G)^2 (1 - q^-4) cot(theta) / |k| needs a slew rate ~ G^2, and the bend at k0 needs
~G^1.5 / sqrt(raster). Unless G is given, the generator takes the largest G within Gmax, Nyquist
along the readout (gamma G dwell <= 1 / (readout_os FOV)) and the slew rate on every cone, and
logs it; an explicit G beyond a limit, or a readout longer than `max_readout_ms`, raises
InputError.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..core.trajectory import Trajectory
from ..errors import InputError
from .dar import da_radial_profile, fit_profile_to_dwell
from .gradients import (
    GradientDesign,
    check_design_params,
    check_waveforms,
    choose_readout_gradient,
    gamma_bar_default,
    generated_trajectory,
    gradient_from_k,
    rotation_about_z,
)

log = logging.getLogger(__name__)


def tpi_twist(q: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """Boada's twist angle phi (rad) at q = |k| / k0 (0 for q <= 1) on a cone of half-angle theta."""
    q = np.asarray(q, dtype=np.float64)
    s = np.sqrt(np.clip(q ** 4 - 1.0, 0.0, None))
    return (s - np.arctan(s)) / (2.0 * np.sin(theta))


def tpi_cones(matrix: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Cone half-angles theta (ncone,) in rad and projections per cone (ncone,) for a matrix N and p."""
    R = matrix / 2.0
    n_cones = int(math.ceil(math.pi * R))
    theta = (np.arange(n_cones) + 0.5) * math.pi / n_cones
    nproj = np.maximum(1, np.ceil(2.0 * math.pi * R * p * np.sin(theta) - 1e-9)).astype(np.int64)
    return theta, nproj


def tpi_readout_time_formula(kmax_per_m: float, g_T_m: float, p: float, gamma_bar_hz_per_t: float) -> float:
    """Boada's TPI readout duration (kmax / (gamma G)) (1 + 2 p^3) / (3 p^2) in s."""
    return kmax_per_m / (gamma_bar_hz_per_t * g_T_m) * (1.0 + 2.0 * p ** 3) / (3.0 * p ** 2)


def _cone_k(r: np.ndarray, k0: float, theta: np.ndarray) -> np.ndarray:
    """k (ncone, n, 3) on each cone (azimuth 0 at the start of the twist) for radii r (n,)."""
    phi = tpi_twist(r[None, :] / k0, theta[:, None])
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    return np.stack([r * st * np.cos(phi), r * st * np.sin(phi), r * ct * np.ones_like(phi)], axis=-1)


def _tpi_base(g, k0, kmax, slew, raster, dwell, gamma, theta):
    g, nramp, nsample = fit_profile_to_dwell(g, k0, kmax, slew, raster, dwell, gamma)
    t = dwell * np.arange(nsample)
    ngrad = int(math.ceil(t[-1] / raster - 1e-9))
    rr = da_radial_profile(raster * np.arange(ngrad + 1), g, k0, nramp, raster, gamma)
    gw = gradient_from_k(_cone_k(rr, k0, theta), raster, gamma)
    return g, nramp, t, gw


def _peak_slew(gw: np.ndarray, raster: float) -> float:
    padded = np.concatenate([np.zeros(gw.shape[:-2] + (1, 3)), gw], axis=-2)
    return float(np.max(np.linalg.norm(np.diff(padded, axis=-2), axis=-1)) / raster)


def tpi_3d(matrix: int, fov_mm: float, p: float = 0.4, gmax_mT_m: float = 40.0, slew_T_m_s: float = 150.0,
           dwell_us: float = 10.0, g_mT_m: float | None = None, readout_os: float = 1.0,
           raster_us: float = 10.0, max_readout_ms: float | None = None, te_ms: float = 0.0,
           gamma_bar_hz_per_t: float | None = None) -> Trajectory:
    """Twisted projection imaging trajectory (Boada et al. 1997), 3D, centre-out.

    Parameters
    ----------
    matrix, fov_mm : nominal matrix N and FOV; kmax = N / (2 FOV), R = N / 2.
    p : k0 / kmax, the fraction of the radius read radially (0 < p < 1).
    gmax_mT_m, slew_T_m_s, raster_us : scanner limits and gradient raster.
    dwell_us : ADC dwell time.
    g_mT_m : gradient magnitude of the twist; default the largest within the limits (see module).
    max_readout_ms : optional cap on the readout duration (T2* budget); exceeding it raises.
    gamma_bar_hz_per_t : gamma / 2 pi of the nucleus (default 23Na).

    te_ms : time from excitation to the readout start.

    Returns a `Trajectory` (kind 'tpi'): k (nproj, nsample, 3) 1/m, t (nsample,) s from
    excitation, design a `GradientDesign`: g_base (ncone, ngrad, 3) T/m (cone i at azimuth 0),
    base_index (nproj,) the cone of each projection, rotation (nproj, 3, 3) about z; params include
    the cone angles and projections per cone.
    """
    check_design_params("TPI", matrix,
                        positive=dict(fov_mm=fov_mm, p=p, gmax_mT_m=gmax_mT_m, slew_T_m_s=slew_T_m_s, dwell_us=dwell_us,
                                      g_mT_m=g_mT_m, readout_os=readout_os, raster_us=raster_us,
                                      max_readout_ms=max_readout_ms, gamma_bar_hz_per_t=gamma_bar_hz_per_t),
                        nonnegative=dict(te_ms=te_ms))
    matrix = int(matrix)
    if not 0 < p < 1:
        raise InputError(f"TPI needs 0 < p < 1 (k0 = p kmax), found p = {p}")
    gamma = gamma_bar_default(gamma_bar_hz_per_t)
    fov = fov_mm * 1e-3
    kmax = matrix / (2.0 * fov)
    k0 = p * kmax
    dwell, raster, gmax, slew = dwell_us * 1e-6, raster_us * 1e-6, gmax_mT_m * 1e-3, slew_T_m_s
    theta, nproj = tpi_cones(matrix, p)
    # cones mirrored about the equator need the same slew: design on the upper half only
    half = theta <= math.pi / 2 + 1e-12
    theta_u = theta[half]
    g = choose_readout_gradient(
        "TPI", g_mT_m, gmax, slew, fov, dwell, readout_os, gamma, name="G",
        peak_slew=lambda g: _peak_slew(_tpi_base(g, k0, kmax, slew, raster, dwell, gamma, theta_u)[3], raster))
    g, nramp, t, gw = _tpi_base(g, k0, kmax, slew, raster, dwell, gamma, theta)
    if max_readout_ms is not None and t[-1] > max_readout_ms * 1e-3:
        raise InputError(f"TPI: the readout lasts {t[-1] * 1e3:.2f} ms at G {g * 1e3:.2f} mT/m, longer than "
                         f"max_readout_ms {max_readout_ms} (raise p, Gmax or the slew rate, or lower N)")
    r = da_radial_profile(t, g, k0, nramp, raster, gamma)
    k_cone = _cone_k(r, k0, theta)  # (ncone, nsample, 3)
    base_index = np.repeat(np.arange(theta.size), nproj)
    az = np.concatenate([2.0 * math.pi * np.arange(n) / n for n in nproj])
    rot = rotation_about_z(az)
    k = np.einsum("rij,rsj->rsi", rot, k_cone[base_index])
    rep = check_waveforms(gw, raster, t, k_cone, kmax, gmax, slew, gamma, what="TPI")
    dtheta = math.pi / theta.size
    solid = 2.0 * math.pi * (np.cos(theta - dtheta / 2) - np.cos(theta + dtheta / 2)) / nproj
    params = dict(matrix=int(matrix), fov_mm=float(fov_mm), p=float(p), k0_per_m=float(k0),
                  gmax_mT_m=float(gmax_mT_m), slew_T_m_s=float(slew_T_m_s), dwell_us=float(dwell_us),
                  g_mT_m=float(g * 1e3), readout_os=float(readout_os), raster_us=float(raster_us),
                  n_cones=int(theta.size), n_proj=int(nproj.sum()), nsample=int(t.size),
                  readout_ms=float(t[-1] * 1e3),
                  readout_formula_ms=float(tpi_readout_time_formula(kmax, g, p, gamma) * 1e3),
                  cone_theta_rad=theta.tolist(), proj_per_cone=nproj.tolist())
    design = GradientDesign(g_base=gw, base_index=base_index, rotation=rot, raster_s=raster, kmax_per_m=kmax,
                            k0_per_m=float(k0), te_s=te_ms * 1e-3, params=params, report=rep,
                            readout_solid_angle=solid[base_index])
    return generated_trajectory(k, t, "tpi", design)
