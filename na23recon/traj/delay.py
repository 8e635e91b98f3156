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
A centre-out readout (every readout's first sample at k = 0) starts from rest: before its first
sample no gradient plays, so k_i(t - d_i) = 0 for t - d_i before it (the spoke leaves the centre
d_i later along axis i); other readouts (full-diameter spokes, whose prephaser and ramp precede
the ADC) continue with the first gradient value (linear extrapolation of k). After the last sample
the waveform continues with its last value.

The delayed samples are not where the nominal density compensation assumed them: on the gradient
ramp of a centre-out readout (ramp sampling, DA-radial's and TPI's dense centre) a delay d moves
a sample from |k(t)| to |k(t - d)|, e.g. for a linear ramp k ~ t^2 the radial density of the
first samples changes by ((t - d) / t)^3, several tens of percent at matrix 32. `delayed_dcf`
carries the nominal weights over by the ratio of each sample's radial shell volume on the delayed
and the nominal readout (the Jacobian of the radial map, Pipe & Menon, MRM 1999, for shell
weights); `delay_trajectory` applies it. Without it the true delays reconstruct 15-60% off.
The carried-over weights add up to the star-shaped region the delayed spokes reach (each ends
short of kmax by gamma G (n . d n)); the reconstructions scale them to that volume
(`dcf.covered_volume`), not to the ball of the longest spoke (+1.4% at matrix 64, 2/5/8 us).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..core.trajectory import Trajectory
from ..errors import InputError

__all__ = ["MAX_DELAY_US", "check_delays", "delayed_dcf", "delayed_k", "delay_trajectory", "readout_times",
           "starts_at_centre"]

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


def starts_at_centre(k: np.ndarray) -> bool:
    """Whether every readout of k (nreadout, nsample, ndim) starts at the k-space centre (its first
    sample within 1e-6 of the largest |k|): a centre-out readout from rest."""
    r0 = np.linalg.norm(k[:, 0], axis=-1)
    return bool(np.all(r0 <= 1e-6 * max(float(np.linalg.norm(k, axis=-1).max()), 1e-300)))


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
    return _interpolated(traj.k, readout_times(traj, dwell_s), d, rest=starts_at_centre(traj.k))


def delay_trajectory(traj: Trajectory, delay_us, dwell_s: float | None = None) -> Trajectory:
    """A copy of `traj` whose k sits where axis delays `delay_us` (us) put the samples (`delayed_k`)
    with its DCF carried over to them (`delayed_dcf`); times kept, the design dropped (it no
    longer produces these k)."""
    k = delayed_k(traj, delay_us, dwell_s)
    return replace(traj, k=k, dcf=delayed_dcf(traj, k, delay_us, dwell_s), design=None)


def _intervals(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The radial interval [lo, hi] each sample of the profiles r (..., nsample) owns: between the
    midpoints to its neighbours, from 0 for the first, half a step beyond the last."""
    mid = 0.5 * (r[..., 1:] + r[..., :-1])
    lo = np.concatenate([np.zeros(r.shape[:-1] + (1,)), mid], axis=-1)
    hi = np.concatenate([mid, 2 * r[..., -1:] - mid[..., -1:]], axis=-1)
    return lo, hi


def _shell_ratio(k: np.ndarray, k_delayed: np.ndarray) -> np.ndarray:
    """Per sample: the volume of its radial shell interval on the delayed readout over that on the
    nominal one (|hi^n - lo^n|, n = ndim; the `dcf_shells` rule)."""
    n = k.shape[-1]
    lo0, hi0 = _intervals(np.linalg.norm(k, axis=-1))
    lo1, hi1 = _intervals(np.linalg.norm(k_delayed, axis=-1))
    v0, v1 = np.abs(hi0 ** n - lo0 ** n), np.abs(hi1 ** n - lo1 ** n)
    return np.divide(v1, v0, out=np.ones_like(v1), where=v0 > 1e-12 * max(float(v0.max()), 1e-300))


def _spoke_jacobian(k: np.ndarray, rho_j: np.ndarray) -> np.ndarray:
    """|det dk_delayed / dk| per sample for straight centre-out spokes k = n rho(t): with rho_j =
    rho(t - d_j), k_delayed_j = n_j rho_j and det = sum_j n_j^2 (rho_j' / rho') prod_(i != j)
    (rho_i / rho). Discretised on the samples' shell intervals (rho' -> hi - lo, rho -> the rms
    radius of the interval, sqrt((hi^3 - lo^3) / (3 (hi - lo)))), so equal delays give exactly
    the shell-volume ratio. rho_j (ndim, nreadout, nsample): the profiles delayed by d_j."""
    ndim = k.shape[-1]
    rho = np.linalg.norm(k, axis=-1)  # (nreadout, nsample)
    n = k[:, -1] / np.maximum(rho[:, -1:], 1e-300)  # spoke directions (nreadout, ndim)

    def parts(r):
        lo, hi = _intervals(r)
        step = np.abs(hi - lo)
        rms = np.sqrt(np.abs(hi ** 3 - lo ** 3) / np.maximum(3 * step, 1e-300))
        return step, rms

    step0, rms0 = parts(rho)
    steps, rmss = parts(rho_j)  # (ndim, nro, ns)
    ok = (step0 > 0) & (rms0 > 0)
    safe0, saferms = np.where(ok, step0, 1.0), np.where(ok, rms0, 1.0)
    det = np.zeros_like(rho)
    for j in range(ndim):
        term = steps[j] / safe0
        for i in range(ndim):
            if i != j:
                term = term * rmss[i] / saferms
        det += n[:, j:j + 1] ** 2 * term
    return np.where(ok, det, 1.0)


def delayed_dcf(traj: Trajectory, k_delayed: np.ndarray, delay_us=None, dwell_s: float | None = None
                ) -> np.ndarray | None:
    """The DCF of `traj` carried over to its delayed samples `k_delayed` (axis delays `delay_us`):
    the weights follow the samples by the Jacobian of the map nominal -> delayed position (a
    density 1/w moves with its samples). Straight centre-out spokes (radial, DA-radial): the
    per-axis Jacobian `_spoke_jacobian`; other centre-out readouts (TPI): the ratio of each
    sample's radial shell volume on the delayed and on the nominal readout. Full-diameter and
    other readouts keep their weights (a delay shifts a constant-gradient spoke, which keeps its
    density). None when `traj` has no DCF."""
    if traj.dcf is None:
        return None
    if not starts_at_centre(traj.k):
        return traj.dcf.copy()
    rho = np.linalg.norm(traj.k, axis=-1)
    far = traj.k[:, -1] / np.maximum(rho[:, -1:], 1e-300)
    straight = np.max(np.abs(np.einsum("rsd,rd->rs", traj.k, far) - rho)) <= 1e-6 * rho.max()
    if straight and delay_us is not None:
        d = check_delays(delay_us, traj.ndim)  # rho(t - d_j): the spokes delayed by d_j on every axis
        rho_j = np.stack([np.linalg.norm(delayed_k(traj, np.full(traj.ndim, v), dwell_s), axis=-1) for v in d])
        return traj.dcf * _spoke_jacobian(traj.k, rho_j)
    return traj.dcf * _shell_ratio(traj.k, k_delayed)


def _interpolated(k: np.ndarray, t: np.ndarray, d: np.ndarray, rest: bool = False) -> np.ndarray:
    """k_i(t - d_i) by linear interpolation (and extrapolation from the end intervals) along the
    readout; t (nsample,) shared or (nreadout, nsample). `rest`: before the first sample k keeps
    its first value (a readout from rest at the centre) instead of extrapolating."""
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
            if rest:
                f = np.maximum(f, 0.0)
            out[..., i] = k[:, j, i] + f[None, :] * (k[:, j + 1, i] - k[:, j, i])
        return out
    for r in range(nro):
        out[r] = _interpolated(k[r:r + 1], t[r], d, rest)[0]
    return out


def _waveform_k(g: np.ndarray, raster_s: float, t_adc: np.ndarray, gamma: float, rest: bool = False) -> np.ndarray:
    """gamma_bar integral_0^t G (..., nt, 3) for a piecewise-constant G (..., ngrad, 3), continued
    with G[0] before 0 (with `rest`: no gradient before 0) and G[-1] after the end."""
    ngrad = g.shape[-2]
    kr = np.concatenate([np.zeros(g.shape[:-2] + (1, 3)), np.cumsum(g, axis=-2)], axis=-2) * (gamma * raster_s)
    pos = np.asarray(t_adc, dtype=np.float64) / raster_s
    j = np.clip(np.floor(pos).astype(np.int64), 0, ngrad - 1)
    if rest:
        pos = np.maximum(pos, 0.0)
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
    rest = starts_at_centre(traj.k)
    for i in range(3):
        kb = _waveform_k(des.g_base, des.raster_s, t_adc - d[i], gamma, rest)[des.base_index]  # (nreadout, nsample, 3)
        out[..., i] = np.einsum("rj,rsj->rs", rot[:, i, :], kb)
    return out + offset
