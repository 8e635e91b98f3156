"""Gradient waveforms shared by the trajectory generators: the gradient design and the limit checks.

Every generator returns a `core.Trajectory` (k in 1/m, t in s from excitation) whose `design` is a
`GradientDesign`: the gradient waveform (T/m) on the gradient raster that produces the samples.
The waveform is stored once per distinct shape (`g_base`) plus a rotation per readout, because 3D
radial and TPI readouts are rotated copies of one (radial) or a few (one per cone, TPI) waveforms;
rotations leave |G| and |dG/dt| unchanged, so checking the base waveforms checks them all.

Waveform convention: `g_base[b, i]` is the gradient held during raster interval
[i * raster, (i + 1) * raster) (piecewise constant, as a scanner's gradient raster plays it), the
readout (and the ADC) starting at t_adc = 0, i.e. te_s after excitation. Then
k(t_adc) = gamma_bar * integral_0^t_adc G dt', exactly; a sample's time from excitation is
t = te_s + t_adc.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..core.trajectory import Trajectory
from ..errors import InputError

log = logging.getLogger(__name__)

#: Relative tolerance of the Gmax and slew checks (0.1%).
LIMIT_RTOL = 1e-3
#: Relative tolerance of the k-from-integrated-G check (1% of kmax).
K_RTOL = 1e-2


@dataclasses.dataclass
class GradientReport:
    """What a waveform does against the scanner's limits (all in SI units)."""

    gmax_T_m: float
    slew_T_m_s: float
    peak_g_T_m: float
    peak_slew_T_m_s: float
    k_error_rel: float  # max |k(integrated G) - k| / kmax over all checked samples
    readout_s: float

    @property
    def ok(self) -> bool:
        return (self.peak_g_T_m <= self.gmax_T_m * (1 + LIMIT_RTOL)
                and self.peak_slew_T_m_s <= self.slew_T_m_s * (1 + LIMIT_RTOL)
                and self.k_error_rel <= K_RTOL)

    def summary(self) -> str:
        return (f"peak |G| {self.peak_g_T_m * 1e3:.3f} of {self.gmax_T_m * 1e3:.3f} mT/m, "
                f"peak slew {self.peak_slew_T_m_s:.1f} of {self.slew_T_m_s:.1f} T/m/s, "
                f"k from integrated G within {self.k_error_rel * 100:.3f}% of kmax, "
                f"readout {self.readout_s * 1e3:.3f} ms")


@dataclasses.dataclass(frozen=True, eq=False)
class GradientDesign:
    """How a generated trajectory is played: the `design` of its `core.Trajectory`.

    Attributes
    ----------
    g_base : float64 (nbase, ngrad, 3), T/m, piecewise constant on `raster_s` from the readout
        start (t_adc = 0).
    base_index : int (nreadout,), which base waveform each readout plays.
    rotation : float64 (nreadout, 3, 3); readout r plays G = rotation[r] @ g_base[base_index[r]].
    raster_s : gradient raster time, s.
    kmax_per_m, k0_per_m : nominal kmax = N / (2 FOV) and the start of the constant-density
        region (0 for plain radial), 1/m.
    te_s : time from excitation to the readout start (the first sample), s: the trajectory's
        t = te_s + t_adc.
    params : the design parameters (JSON-serialisable), saved with the trajectory file.
    report : the gradient check (`GradientReport`).
    readout_solid_angle : (nreadout,) sr, the solid angle each readout stands for (4 pi / n for
        uniformly spread spokes, per cone for TPI); used by the analytic DCF. None if unknown.
    """

    g_base: np.ndarray
    base_index: np.ndarray
    rotation: np.ndarray
    raster_s: float
    kmax_per_m: float
    k0_per_m: float
    te_s: float = 0.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    report: GradientReport | None = None
    readout_solid_angle: np.ndarray | None = None

    def gradient(self, readout: int) -> np.ndarray:
        """Gradient waveform (ngrad, 3) in T/m played during readout `readout` (from its start)."""
        return self.g_base[self.base_index[readout]] @ self.rotation[readout].T

    def file_meta(self) -> dict[str, Any]:
        """Scalar metadata to store beside `k` in the trajectory file."""
        meta = {"raster_s": self.raster_s, "kmax_per_m": self.kmax_per_m, "k0_per_m": self.k0_per_m,
                "te_s": self.te_s}
        meta.update({f"param_{k}": v for k, v in self.params.items() if np.isscalar(v)})
        return meta


def generated_trajectory(k: np.ndarray, t_adc: np.ndarray, kind: str, design: GradientDesign) -> Trajectory:
    """The `Trajectory` a generator returns: t from excitation (te_s + t_adc), the design's file metadata."""
    return Trajectory(k=k, t=np.asarray(t_adc, dtype=np.float64) + design.te_s, kind=kind,
                      meta=design.file_meta(), design=design)


def check_design_params(what: str, matrix: Any, positive: dict[str, Any] | None = None,
                        nonnegative: dict[str, Any] | None = None) -> None:
    """Refuse design parameters that are not finite numbers in range, before any arithmetic.

    matrix: an integer >= 2 (not bool); positive: {name: value} that must be finite and > 0
    (None values are skipped: "use the default"); nonnegative: {name: value}, finite and >= 0.
    Raises InputError naming the first offending parameter and its value.
    """
    whole = isinstance(matrix, (int, np.integer)) or (isinstance(matrix, (float, np.floating))
                                                       and math.isfinite(matrix) and float(matrix).is_integer())
    if isinstance(matrix, (bool, np.bool_)) or not whole or matrix < 2:
        raise InputError(f"{what}: matrix must be an integer >= 2, found {matrix!r}")
    for group, ok, rule in ((positive, lambda v: v > 0, "a finite number > 0"),
                            (nonnegative, lambda v: v >= 0, "a finite number >= 0")):
        for name, v in (group or {}).items():
            if v is None:
                continue
            try:
                good = not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v)) and ok(float(v))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise InputError(f"{what}: {name} must be {rule}, found {v!r}")


def largest_feasible(peak_slew: Callable[[float], float], g_hi: float, slew: float, rtol: float = 1e-4) -> float:
    """Largest g in (0, g_hi] with peak_slew(g) <= slew, by bisection (peak_slew increasing in g)."""
    if peak_slew(g_hi) <= slew:
        return g_hi
    lo, hi = g_hi * 1e-3, g_hi
    if peak_slew(lo) > slew:
        raise InputError(f"no gradient above {lo * 1e3:.3f} mT/m keeps the slew rate within {slew} T/m/s")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if peak_slew(mid) <= slew:
            lo = mid
        else:
            hi = mid
    return lo


def choose_readout_gradient(what: str, g_mT_m: float | None, gmax_T_m: float, slew_T_m_s: float,
                            fov_m: float, dwell_s: float, readout_os: float, gamma_bar_hz_per_t: float,
                            peak_slew: Callable[[float], float], name: str = "G") -> float:
    """The readout gradient (T/m) of a density-adapted design (DA-radial G0, TPI G).

    g_mT_m None: the largest g within Gmax, Nyquist along the readout
    (gamma g dwell <= 1 / (readout_os FOV)) and the slew limit (`peak_slew(g)`, T/m/s, of the
    waveform the design plays at g; an InputError from it counts as infeasible), logged.
    An explicit `g_mT_m` is checked against the same three limits: InputError naming the limit
    broken (and, for the slew rate, the largest g that fits).
    """
    g_nyq = 1.0 / (readout_os * fov_m * gamma_bar_hz_per_t * dwell_s)

    def peak_or_inf(g: float) -> float:
        try:
            return peak_slew(g)
        except InputError:
            return math.inf

    if g_mT_m is None:
        g_hi = min(gmax_T_m, g_nyq)
        g = largest_feasible(peak_or_inf, g_hi, slew_T_m_s)
        log.info("%s: %s = %.3f mT/m (Gmax %.1f, Nyquist %.2f, slew-limited %s)", what, name, g * 1e3,
                 gmax_T_m * 1e3, g_nyq * 1e3, g < g_hi)
        return g
    g = g_mT_m * 1e-3
    if g > gmax_T_m * (1 + LIMIT_RTOL):
        raise InputError(f"{what}: {name} {g_mT_m} mT/m exceeds Gmax {gmax_T_m * 1e3:g} mT/m")
    if g > g_nyq * (1 + LIMIT_RTOL):
        raise InputError(f"{what}: {name} {g_mT_m} mT/m at dwell {dwell_s * 1e6:g} us undersamples the readout "
                         f"(at most {g_nyq * 1e3:.2f} mT/m)")
    pk = peak_slew(g)  # an InputError here (e.g. the ramp overruns k0) says what is wrong with this g
    if pk > slew_T_m_s * (1 + LIMIT_RTOL):
        g_ok = largest_feasible(peak_or_inf, g, slew_T_m_s)
        raise InputError(f"{what}: {name} {g_mT_m} mT/m needs a slew rate of {pk:.0f} T/m/s, above "
                         f"{slew_T_m_s:g} T/m/s; at most {g_ok * 1e3:.2f} mT/m fits")
    return g


def gamma_bar_default(gamma_bar_hz_per_t: float | None) -> float:
    return GAMMA_BAR_NA23_HZ_PER_T if gamma_bar_hz_per_t is None else float(gamma_bar_hz_per_t)


def gradient_from_k(k_raster: np.ndarray, raster_s: float, gamma_bar_hz_per_t: float) -> np.ndarray:
    """Piecewise-constant gradient (..., ngrad, 3) T/m that moves k through `k_raster`.

    k_raster : (..., ngrad + 1, 3) 1/m, k at the raster points 0, raster, 2 raster, ... (k[0] = 0).
    The gradient of interval i is (k[i+1] - k[i]) / (gamma_bar raster), so integrating it gives
    k_raster back exactly at the raster points.
    """
    return np.diff(k_raster, axis=-2) / (gamma_bar_hz_per_t * raster_s)


def integrate_gradient(g: np.ndarray, raster_s: float, t: np.ndarray, gamma_bar_hz_per_t: float) -> np.ndarray:
    """k (..., nsample, 3) in 1/m at times `t` (s) from a piecewise-constant gradient (..., ngrad, 3)."""
    g = np.asarray(g, dtype=np.float64)
    ngrad = g.shape[-2]
    kr = np.concatenate([np.zeros(g.shape[:-2] + (1, 3)), np.cumsum(g, axis=-2)], axis=-2)
    kr *= gamma_bar_hz_per_t * raster_s
    pos = np.clip(np.asarray(t, dtype=np.float64) / raster_s, 0.0, ngrad)
    i = np.minimum(np.floor(pos).astype(int), ngrad - 1)
    frac = (pos - i)[:, None]
    return kr[..., i, :] + frac * (kr[..., i + 1, :] - kr[..., i, :])


def check_waveforms(g_base: np.ndarray, raster_s: float, t: np.ndarray, k_base: np.ndarray,
                    kmax_per_m: float, gmax_T_m: float, slew_T_m_s: float,
                    gamma_bar_hz_per_t: float, what: str = "trajectory",
                    raise_on_fail: bool = True, from_rest: bool = True) -> GradientReport:
    """Check |G| <= Gmax and |dG/dt| <= slew (to 0.1%) and that integrating G gives k (to 1%).

    g_base : (nbase, ngrad, 3) T/m piecewise constant on `raster_s`. With `from_rest` the slew
        check includes the step from 0 at t = 0 (a centre-out readout starts from rest).
    k_base : (nbase, nsample, 3) 1/m, the k the generator returns for each base waveform at `t`.
    Raises InputError (one line naming the limit and the value) if a limit is broken and
    `raise_on_fail`; the k check failing is an internal fault (AssertionError-like RuntimeError).
    """
    g_base = np.asarray(g_base, dtype=np.float64)
    gnorm = np.linalg.norm(g_base, axis=-1)
    padded = np.concatenate([np.zeros(g_base.shape[:-2] + (1, 3)), g_base], axis=-2) if from_rest else g_base
    slew = np.linalg.norm(np.diff(padded, axis=-2), axis=-1) / raster_s
    k_int = integrate_gradient(g_base, raster_s, t, gamma_bar_hz_per_t)
    kerr = float(np.max(np.linalg.norm(k_int - k_base, axis=-1)) / kmax_per_m)
    rep = GradientReport(gmax_T_m=gmax_T_m, slew_T_m_s=slew_T_m_s, peak_g_T_m=float(gnorm.max()),
                         peak_slew_T_m_s=float(slew.max()), k_error_rel=kerr,
                         readout_s=float(t[-1]))
    log.info("%s: %s", what, rep.summary())
    if raise_on_fail:
        if rep.peak_g_T_m > gmax_T_m * (1 + LIMIT_RTOL):
            raise InputError(f"{what}: needs a gradient of {rep.peak_g_T_m * 1e3:.2f} mT/m, above Gmax "
                             f"{gmax_T_m * 1e3:.2f} mT/m (lengthen the dwell time or lower the resolution)")
        if rep.peak_slew_T_m_s > slew_T_m_s * (1 + LIMIT_RTOL):
            raise InputError(f"{what}: needs a slew rate of {rep.peak_slew_T_m_s:.1f} T/m/s, above the "
                             f"limit {slew_T_m_s:.1f} T/m/s")
        if kerr > K_RTOL:
            raise RuntimeError(f"{what}: k from the integrated gradient is off by {kerr * 100:.2f}% of kmax "
                               f"(limit {K_RTOL * 100:.0f}%): a generator fault")
    return rep


def rotation_z_to(directions: np.ndarray) -> np.ndarray:
    """Rotations (n, 3, 3) that map the unit z axis onto each unit vector in `directions` (n, 3).

    Built as [e1, e2, d] columns with e1, e2 completing an orthonormal right-handed frame, so that
    rotation @ (0, 0, 1) = d.
    """
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    helper = np.where(np.abs(d[:, 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(d, e1)
    return np.stack([e1, e2, d], axis=-1)


def rotation_about_z(phi: np.ndarray) -> np.ndarray:
    """Rotations (n, 3, 3) by angles `phi` (rad) about the z axis."""
    c, s = np.cos(phi), np.sin(phi)
    z, o = np.zeros_like(phi), np.ones_like(phi)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def ramp_intervals(g_T_m: float, slew_T_m_s: float, raster_s: float) -> int:
    """Raster intervals needed to ramp from 0 to `g_T_m` at no more than `slew_T_m_s`."""
    return int(np.ceil(g_T_m / (slew_T_m_s * raster_s) - 1e-9))


def trapezoid_ramp_profile(g_T_m: float, nramp: int, raster_s: float, t: np.ndarray,
                           gamma_bar_hz_per_t: float) -> tuple[np.ndarray, np.ndarray]:
    """Radial profile of a readout gradient ramped from 0 to `g_T_m` in `nramp` raster steps.

    Sampled from t = 0 (ramp sampling). Returns (r (nsample,) 1/m at times t, g (ngrad,) T/m on
    the raster covering t[-1]).
    """
    ngrad = int(np.ceil(t[-1] / raster_s - 1e-9))
    ngrad = max(ngrad, 1)
    i = np.arange(ngrad)
    g = np.where(i < nramp, g_T_m * (i + 1) / max(nramp, 1), g_T_m) if nramp else np.full(ngrad, g_T_m)
    kr = np.concatenate([[0.0], np.cumsum(g)]) * gamma_bar_hz_per_t * raster_s
    pos = np.clip(t / raster_s, 0, ngrad)
    j = np.minimum(np.floor(pos).astype(int), ngrad - 1)
    r = kr[j] + (pos - j) * (kr[j + 1] - kr[j])
    return r, g
