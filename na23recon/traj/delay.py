"""Gradient delays: where the samples of a trajectory really are when each axis lags.

A gradient channel that plays its waveform d seconds late moves every sample's k along that axis
to the nominal value d earlier: k_i(t) -> k_i(t - d_i), i = the logical axes (read, phase,
partition) in which a `Trajectory` holds k (`core.trajectory`; the image x axis runs along the
read axis, `core.geometry`). On a constant-gradient full-diameter spoke this is the shift
k -> k - gamma G (n_i d_i) of the delay models of Peters et al. (MRM 2003) and Rosenzweig,
Holme & Uecker (MRM 2018); on a centre-out readout it also bends the spoke near the centre, where
the axes leave rest at different times.

Two ways to evaluate k(t - d), both here:
- through the gradient waveform when the trajectory has its `GradientDesign` (generated, or in
  the simulator): k_i(t) = k_i(t_0) + gamma_bar integral_0^(t - t_0 - d_i) G_i, exact on the
  piecewise-constant raster;
- else by linear interpolation of k along the readout at the sample times `t` (a trajectory
  file; times from its 't', or the scan's dwell).
Before the first sample the waveform continues with its first gradient value (linear
extrapolation of k; a ramp-sampled readout starts from rest, where that value is one ramp step),
after the last with its last.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..core.trajectory import Trajectory
from ..errors import InputError

__all__ = ["MAX_DELAY_US", "check_delays", "delayed_k", "delay_trajectory", "readout_times"]

#: Largest gradient delay accepted, us: real delays are a few us; 100 us means wrong units.
MAX_DELAY_US = 100.0


def check_delays(delay_us, ndim: int = 3, what: str = "--gradient-delay-us") -> np.ndarray:
    """The delays (ndim,) in us as float64; InputError unless one finite value per axis (a shorter
    list for a 2D trajectory is padded with 0), each within +-`MAX_DELAY_US`."""
    try:
        d = np.atleast_1d(np.asarray(delay_us, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers (us), got {delay_us!r}") from None
    if d.size not in (2, 3) or (ndim == 3 and d.size != 3):
        raise InputError(f"{what} takes one delay per axis (read, phase, partition), got {d.size} value(s)")
    if not np.all(np.isfinite(d)):
        raise InputError(f"{what} must be finite numbers (us), got {d.tolist()}")
    if np.any(np.abs(d) > MAX_DELAY_US):
        raise InputError(f"{what} {d.tolist()} us: a gradient delay beyond +-{MAX_DELAY_US:g} us is not a "
                         f"scanner's (are the values in us?)")
    d = np.concatenate([d, np.zeros(max(0, ndim - d.size))])
    return d[:ndim]


def readout_times(traj: Trajectory, dwell_s: float | None = None) -> np.ndarray:
    """Sample times (nsample,) or (nreadout, nsample) in s: the trajectory's `t`, else `dwell_s`
    apart from 0; InputError when neither is known."""
    if traj.t is not None:
        return traj.t
    if dwell_s is None or not math.isfinite(dwell_s) or dwell_s <= 0:
        raise InputError("gradient delays need each sample's time: a trajectory with 't' or a scan with its dwell")
    return float(dwell_s) * np.arange(traj.nsample, dtype=np.float64)


def delayed_k(traj: Trajectory, delay_us, dwell_s: float | None = None) -> np.ndarray:
    """k (nreadout, nsample, ndim) in 1/m of `traj` with axis i delayed by delay_us[i] (us):
    k_i(t - d_i). Through the gradient waveform when `traj.design` reproduces `traj.k`, else by
    interpolation along each readout at its times (`readout_times`)."""
    d = check_delays(delay_us, traj.ndim) * 1e-6
    if not np.any(d):
        return traj.k.copy()
    k = _through_design(traj, d)
    if k is not None:
        return k
    return _interpolated(traj.k, readout_times(traj, dwell_s), d)


def delay_trajectory(traj: Trajectory, delay_us, dwell_s: float | None = None) -> Trajectory:
    """A copy of `traj` whose k sits where axis delays `delay_us` (us) put the samples (`delayed_k`);
    times and DCF kept, the design dropped (it no longer produces these k)."""
    return replace(traj, k=delayed_k(traj, delay_us, dwell_s), design=None)


def _interpolated(k: np.ndarray, t: np.ndarray, d: np.ndarray) -> np.ndarray:
    """k_i(t - d_i) by linear interpolation (and extrapolation from the end intervals) along the
    readout; t (nsample,) shared or (nreadout, nsample)."""
    nro, ns, ndim = k.shape
    if ns < 2:
        raise InputError("gradient delays need at least 2 samples per readout")
    out = np.empty_like(k)
    if t.ndim == 1:
        if np.any(np.diff(t) <= 0):
            raise InputError("gradient delays need increasing sample times")
        for i in range(ndim):
            tau = t - d[i]
            j = np.clip(np.searchsorted(t, tau, side="right") - 1, 0, ns - 2)
            f = (tau - t[j]) / (t[j + 1] - t[j])
            out[..., i] = k[:, j, i] + f[None, :] * (k[:, j + 1, i] - k[:, j, i])
        return out
    for r in range(nro):
        out[r] = _interpolated(k[r:r + 1], t[r], d)[0]
    return out


def _waveform_k(g: np.ndarray, raster_s: float, t_adc: np.ndarray, gamma: float) -> np.ndarray:
    """gamma_bar integral_0^t G (..., nt, 3) for a piecewise-constant G (..., ngrad, 3), continued
    with G[0] before 0 and G[-1] after the end."""
    ngrad = g.shape[-2]
    kr = np.concatenate([np.zeros(g.shape[:-2] + (1, 3)), np.cumsum(g, axis=-2)], axis=-2) * (gamma * raster_s)
    pos = np.asarray(t_adc, dtype=np.float64) / raster_s
    j = np.clip(np.floor(pos).astype(np.int64), 0, ngrad - 1)
    return kr[..., j, :] + (pos - j)[:, None] * (kr[..., j + 1, :] - kr[..., j, :])


def _through_design(traj: Trajectory, d: np.ndarray) -> np.ndarray | None:
    """k_i(t - d_i) from the design's gradient waveforms, or None when the trajectory has no
    design, per-readout times, or k that its design does not reproduce (to 1e-6 of kmax)."""
    des = traj.design
    if des is None or traj.t is None or traj.t.ndim != 1 or traj.ndim != 3:
        return None
    gamma = float(des.params.get("gamma_bar_hz_per_t") or GAMMA_BAR_NA23_HZ_PER_T)
    t_adc = traj.t - des.te_s
    rot = des.rotation  # (nreadout, 3, 3): readout r plays rotation[r] @ g_base[base_index[r]]
    kb0 = _waveform_k(des.g_base, des.raster_s, t_adc, gamma)  # (nbase, nsample, 3)
    nominal = np.einsum("rij,rsj->rsi", rot, kb0[des.base_index])
    offset = traj.k[:, :1, :] - nominal[:, :1, :]  # a full-diameter spoke starts at -kmax (prephaser)
    scale = max(float(des.kmax_per_m), 1e-12)
    if np.max(np.abs(nominal + offset - traj.k)) > 1e-6 * scale:
        return None
    out = np.empty_like(traj.k)
    for i in range(3):
        kb = _waveform_k(des.g_base, des.raster_s, t_adc - d[i], gamma)[des.base_index]  # (nreadout, nsample, 3)
        out[..., i] = np.einsum("rj,rsj->rs", rot[:, i, :], kb)
    return out + offset
