"""Exact multi-coil k-space of a phantom under smooth B1+ and receive fields (numba).

With each compartment's field written as a Fourier series on its support (`sim.fields`),

    m_c(r, t) = sum_j 1_{E_j}(r) [w_j(t) h_jc(r) - w_p(t) h_pc(r)],   h_jc(r) = sum_m A_jmc e^{i 2 pi f_m . r}

(p the parent of j, w_j(t) = C_j sat_j(a) decay_j(t) exp(2 pi i f_j t) with f_j the compartment's
off-resonance `b0_hz`, h_jc = B1 signal scale x coil c's
sensitivity), the k-space of coil c is

    M_c(k, t) = sum_j sum_m F_j(k - f_m) [w_j(t) A_jmc - w_p(t) A_pmc]

with F_j the closed-form transform of compartment j's indicator (Koay, Sarlls & Ozarslan, Magn
Reson Med 2007):

    ellipsoid         F(k) = abc B(|diag(a,b,c) R^T k|) e^{-i 2 pi k.c},
                      B(q) = 4 pi (sin x - x cos x) / x^3, x = 2 pi q, B(0) = 4 pi / 3 (unit ball);
    elliptic cylinder F(k) = ab 2c D(|(a k1', b k2')|) sinc(2 c k3') e^{-i 2 pi k.c},
                      D(q) = J1(2 pi q) / q, D(0) = pi (unit disc), k' = R^T k

(a, b, c the semi-axes, c the half-length along the cylinder's axis; R the rotation; c the
centre). This module is the one place that evaluates them: `analytic_kspace` for whole phantoms
(the simulator, `Phantom.kspace`), `compartment_fourier` and `unit_shape_fourier` for single
shapes. The kernel evaluates F_j(k - f_m) once per sample, compartment and frequency and uses it
for every coil. The centre phase factorises: exp(-2 pi i (k - f).c) = exp(-2 pi i k.c) exp(2 pi i f.c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import InputError
from .fields import B1Model, FourierBasis, basis_for_phantom, fit_series, support_points
from .phantom import Compartment, Phantom


@dataclass
class FieldSet:
    """Series coefficients of every compartment's field: coef (ncomp, nterms, ncoil) complex128 on
    `basis`; residual (ncomp,) relative RMS of the fit against the model field on the compartment
    (all coils together: sqrt(sum |fit - model|^2 / sum |model|^2) over fit points and coils)."""
    basis: FourierBasis
    coef: np.ndarray
    residual: np.ndarray

    @property
    def ncoil(self) -> int:
        return self.coef.shape[2]

    @classmethod
    def uniform(cls, ncomp: int, ncoil: int = 1) -> FieldSet:
        return cls(FourierBasis(1.0, 0), np.ones((ncomp, 1, ncoil), np.complex128), np.zeros(ncomp))

    @classmethod
    def series(cls, ncomp: int, freqs_per_m: np.ndarray, amps: np.ndarray) -> FieldSet:
        """One field s(r) = sum_m amps_m exp(i 2 pi f_m . r) on every compartment, one coil
        (frequencies (nterms, 3) in 1/m, any; amplitudes (nterms,) complex)."""
        basis = FourierBasis.from_freqs(freqs_per_m)
        a = np.asarray(amps, dtype=np.complex128).reshape(-1)
        if a.shape[0] != basis.nterms:
            raise InputError(f"field series has {basis.nterms} frequencies but {a.shape[0]} amplitudes")
        return cls(basis, np.ascontiguousarray(np.broadcast_to(a[None, :, None], (ncomp, a.shape[0], 1))),
                   np.zeros(ncomp))

    def field_at(self, phantom: Phantom, r_mm: np.ndarray) -> np.ndarray:
        """The applied (series) field (ncoil, ...) at points r (..., 3) mm, each point taking its
        owner compartment's series (0 in the background)."""
        r = np.asarray(r_mm, dtype=np.float64)
        idx = phantom.index_map(r).reshape(-1)
        flat = r.reshape(-1, 3)
        out = np.zeros((self.ncoil, flat.shape[0]), np.complex128)
        for j in np.unique(idx[idx >= 0]):
            sel = idx == j
            out[:, sel] = (self.basis.design(flat[sel]) @ self.coef[j]).T
        return out.reshape((self.ncoil,) + r.shape[:-1])


def build_fields(phantom: Phantom, flip_rad: float, tr_ms: float, b1: B1Model | None = None,
                 receive=None, order: int | None = None, period_factor: float = 1.6) -> FieldSet:
    """Fit each compartment's field h_jc = [sat_j(k_B1 a) / sat_j(a)] * s_c (see module docstring).

    receive: None or 'uniform' (s = 1), 'reciprocal' (s = k_B1: a transmit-receive volume coil),
    or an object with `ncoil` and `sensitivities(r_mm) -> (ncoil, npts)` (`sim.coils.HelmetArray`).
    order: the series' total degree (default 3 for B1 alone, 63 terms; 4 with coils, 129 terms,
    since loop fields vary faster near the helmet).
    """
    ncomp = len(phantom.compartments)
    uniform_b1 = b1 is None or b1.kind == "uniform" or b1.variation == 0
    if uniform_b1 and receive in (None, "uniform", "reciprocal"):
        return FieldSet.uniform(ncomp)
    helmet = receive not in (None, "uniform", "reciprocal")
    if order is None:
        order = 4 if helmet else 3
    basis = basis_for_phantom(phantom, order, period_factor)
    coefs, res = [], []
    for comp in phantom.compartments:
        pts = support_points(comp)
        kb1 = np.ones(len(pts)) if uniform_b1 else b1(pts)
        g = comp.saturation(tr_ms, flip_rad * kb1) / comp.saturation(tr_ms, flip_rad)
        if receive in (None, "uniform"):
            rx = np.ones((1, len(pts)))
        elif receive == "reciprocal":
            rx = kb1[None]
        else:
            rx = receive.sensitivities(pts)
        vals = (g[None] * rx).T
        c, _ = fit_series(basis, pts, vals)
        coefs.append(c)
        res.append(float(np.sqrt(np.sum(np.abs(basis.design(pts) @ c - vals) ** 2) / np.sum(np.abs(vals) ** 2))))
    return FieldSet(basis, np.stack(coefs), np.asarray(res))


def _geometry(compartments: list[Compartment]):
    """Per compartment: mats (ncomp, 3, 3) with kr = mats @ k (k in the compartment's frame scaled
    by its semi-axes, m), centres (ncomp, 3) m, volumes abc (ncomp,) m^3, kind (0 ellipsoid, 1 cylinder)."""
    n = len(compartments)
    mats = np.empty((n, 3, 3))
    cen = np.empty((n, 3))
    vol = np.empty(n)
    kind = np.empty(n, np.int64)
    for j, c in enumerate(compartments):
        ax = np.asarray(c.semi_axes_mm, dtype=np.float64) * 1e-3
        mats[j] = ax[:, None] * c.rotation.T  # kr = diag(ax) R^T k
        cen[j] = np.asarray(c.center_mm, dtype=np.float64) * 1e-3
        vol[j] = np.prod(ax)
        kind[j] = 1 if c.shape == "cylinder" else 0
    return mats, cen, vol, kind


def _as_k(k_per_m: np.ndarray) -> np.ndarray:
    k = np.asarray(k_per_m, dtype=np.float64)
    if k.ndim == 0 or k.shape[-1] != 3:
        raise InputError(f"k must be (..., 3) in 1/m, got shape {k.shape}")
    return k


def analytic_kspace(phantom: Phantom, k_per_m: np.ndarray, t_s: np.ndarray | float, tr_ms: float, flip_rad: float,
                    fields: FieldSet | None = None, chunk: int = 262144) -> np.ndarray:
    """Exact k-space (ncoil, ...) complex128 in mM m^3 at k (..., 3) 1/m and times t (broadcast to
    k[..., 0]) s after excitation, under `fields` (default: uniform, one coil). A compartment with
    `b0_hz` f has the complex weight w_j(t) exp(2 pi i f t): piecewise-constant off-resonance, exact."""
    k = _as_k(k_per_m)
    shape = k.shape[:-1]
    kf = np.ascontiguousarray(k.reshape(-1, 3))
    tf = np.broadcast_to(np.asarray(t_s, dtype=np.float64), shape).reshape(-1)
    ncomp = len(phantom.compartments)
    fields = fields if fields is not None else FieldSet.uniform(ncomp)
    f = fields.basis.freqs
    mats, cen, vol, kind = _geometry(phantom.compartments)
    mf = np.einsum("jab,mb->jma", mats, f)
    phf = np.exp(2j * np.pi * (cen @ f.T))  # (ncomp, nterms)
    par = np.array([-1 if p is None else p for p in phantom.parents], np.int64)
    hz = np.array([c.b0_hz for c in phantom.compartments], np.float64)
    coef = np.ascontiguousarray(fields.coef, dtype=np.complex128)
    out = np.zeros((fields.ncoil, kf.shape[0]), np.complex128)
    for a in range(0, kf.shape[0], chunk):
        b = min(a + chunk, kf.shape[0])
        t = tf[a:b]
        w = np.stack([c.conc_mM * c.saturation(tr_ms, flip_rad) * c.decay(t) for c in phantom.compartments])
        if hz.any():  # each compartment's own off-resonance: its signal weight turns at b0_hz
            w = w * np.exp(2j * np.pi * hz[:, None] * t[None])
        _accumulate(kf[a:b], np.ascontiguousarray(w), par, mats, cen, vol, kind, mf, phf, coef, out[:, a:b])
    return out.reshape((fields.ncoil,) + shape)


def compartment_fourier(comp: Compartment, k_per_m: np.ndarray) -> np.ndarray:
    """Closed-form transform of one compartment's indicator at k (..., 3) 1/m: complex128 (...) in m^3
    (see the module docstring)."""
    k = _as_k(k_per_m)
    kf = np.ascontiguousarray(k.reshape(-1, 3))
    mats, cen, vol, kind = _geometry([comp])
    out = np.empty(kf.shape[0], np.complex128)
    _transform(kf, mats[0], cen[0], vol[0], kind[0], out)
    return out.reshape(k.shape[:-1])


def unit_shape_fourier(u: np.ndarray, shape: str = "ellipsoid") -> np.ndarray:
    """Transform of the unit ball ('ellipsoid') or of the cylinder of radius 1 and half-length 1 along
    z ('cylinder') at frequencies u (..., 3) in cycles per unit length: float64 (...)."""
    if shape not in ("ellipsoid", "cylinder"):
        raise InputError(f"shape must be 'ellipsoid' or 'cylinder', got {shape!r}")
    uu = _as_k(u)
    uf = np.ascontiguousarray(uu.reshape(-1, 3))
    out = np.empty(uf.shape[0], np.float64)
    _transform_unit(uf, 1 if shape == "cylinder" else 0, out)
    return out.reshape(uu.shape[:-1])


@numba.njit(cache=True, inline="always")
def _bessel_j1(x):
    """J1(x), the rational approximations of bessj1 in Press, Teukolsky, Vetterling & Flannery, Numerical
    Recipes (Cambridge University Press, 2nd ed. 1992), |error| < 1e-8."""
    ax = abs(x)
    if ax < 8.0:
        y = x * x
        a1 = x * (72362614232.0 + y * (-7895059235.0 + y * (242396853.1 + y * (-2972611.439 + y * (
            15704.48260 + y * (-30.16036606))))))
        a2 = 144725228442.0 + y * (2300535178.0 + y * (18583304.74 + y * (99447.43394 + y * (
            376.9991397 + y * 1.0))))
        return a1 / a2
    z = 8.0 / ax
    y = z * z
    xx = ax - 2.356194491
    a1 = 1.0 + y * (0.183105e-2 + y * (-0.3516396496e-4 + y * (0.2457520174e-5 + y * (-0.240337019e-6))))
    a2 = 0.04687499995 + y * (-0.2002690873e-3 + y * (0.8449199096e-5 + y * (-0.88228987e-6 + y * 0.105787412e-6)))
    ans = math.sqrt(0.636619772 / ax) * (math.cos(xx) * a1 - z * math.sin(xx) * a2)
    return -ans if x < 0 else ans


@numba.njit(cache=True, inline="always")
def _shape_ft(u0, u1, u2, kind):
    """Transform of the unit ball (kind 0) or unit-radius, half-length-1 cylinder (kind 1) at u."""
    if kind == 0:
        x = 2.0 * math.pi * math.sqrt(u0 * u0 + u1 * u1 + u2 * u2)
        if x < 1e-2:
            xx = x * x
            return 4.0 * math.pi * (1.0 / 3.0 - xx / 30.0 + xx * xx / 840.0)
        return 4.0 * math.pi * (math.sin(x) - x * math.cos(x)) / (x * x * x)
    q = math.sqrt(u0 * u0 + u1 * u1)
    disc = math.pi if q < 1e-8 else _bessel_j1(2.0 * math.pi * q) / q
    z = 2.0 * math.pi * u2
    sz = 1.0 if abs(z) < 1e-8 else math.sin(z) / z
    return disc * 2.0 * sz


@numba.njit(parallel=True, cache=True)
def _accumulate(k, w, par, mats, cen, vol, kind, mf, phf, coef, out):
    npts = k.shape[0]
    ncomp, nterms, ncoil = coef.shape
    for p in numba.prange(npts):
        k0, k1, k2 = k[p, 0], k[p, 1], k[p, 2]
        acc_own = np.zeros(ncoil, np.complex128)
        acc_par = np.zeros(ncoil, np.complex128)
        for j in range(ncomp):
            m = mats[j]
            r0 = m[0, 0] * k0 + m[0, 1] * k1 + m[0, 2] * k2
            r1 = m[1, 0] * k0 + m[1, 1] * k1 + m[1, 2] * k2
            r2 = m[2, 0] * k0 + m[2, 1] * k1 + m[2, 2] * k2
            arg = -2.0 * math.pi * (k0 * cen[j, 0] + k1 * cen[j, 1] + k2 * cen[j, 2])
            ph = complex(math.cos(arg), math.sin(arg))
            pj = par[j]
            for c in range(ncoil):
                acc_own[c] = 0.0
                acc_par[c] = 0.0
            for t in range(nterms):
                val = vol[j] * _shape_ft(r0 - mf[j, t, 0], r1 - mf[j, t, 1], r2 - mf[j, t, 2], kind[j]) * phf[j, t]
                for c in range(ncoil):
                    acc_own[c] += val * coef[j, t, c]
                if pj >= 0:
                    for c in range(ncoil):
                        acc_par[c] += val * coef[pj, t, c]
            wj = w[j, p]
            wp = w[pj, p] if pj >= 0 else 0.0
            for c in range(ncoil):
                out[c, p] += ph * (wj * acc_own[c] - wp * acc_par[c])


@numba.njit(parallel=True, cache=True)
def _transform(k, m, cen, vol, kind, out):
    for p in numba.prange(k.shape[0]):
        k0, k1, k2 = k[p, 0], k[p, 1], k[p, 2]
        r0 = m[0, 0] * k0 + m[0, 1] * k1 + m[0, 2] * k2
        r1 = m[1, 0] * k0 + m[1, 1] * k1 + m[1, 2] * k2
        r2 = m[2, 0] * k0 + m[2, 1] * k1 + m[2, 2] * k2
        arg = -2.0 * math.pi * (k0 * cen[0] + k1 * cen[1] + k2 * cen[2])
        out[p] = vol * _shape_ft(r0, r1, r2, kind) * complex(math.cos(arg), math.sin(arg))


@numba.njit(parallel=True, cache=True)
def _transform_unit(u, kind, out):
    for p in numba.prange(u.shape[0]):
        out[p] = _shape_ft(u[p, 0], u[p, 1], u[p, 2], kind)


def phantom_kspace(phantom: Phantom, k_per_m: np.ndarray, t_s: np.ndarray | float = 0.0, tr_ms: float = 1e9,
                   flip_rad: float = np.pi / 2, sens_terms: list[tuple[np.ndarray, complex]] | None = None) -> np.ndarray:
    """Analytic k-space M(k, t) of `phantom` at points k (..., 3) in 1/m sampled at times t (s from
    excitation, broadcast to k[..., 0]): complex128 (...) in mM * m^3.

    sens_terms, optional: a receive sensitivity written as a finite Fourier series
    s(r) = sum_m a_m exp(i 2 pi f_m . r) (f_m in 1/m); then M_s(k) = sum_m a_m M(k - f_m), exact.
    One coil of `analytic_kspace` (the series as a `FieldSet` shared by every compartment).
    """
    fs = None
    if sens_terms is not None:
        freqs = np.array([np.asarray(f, dtype=np.float64) for f, _ in sens_terms]).reshape(-1, 3)
        amps = np.array([a for _, a in sens_terms], dtype=np.complex128)
        fs = FieldSet.series(len(phantom.compartments), freqs, amps)
    return analytic_kspace(phantom, k_per_m, t_s, tr_ms, flip_rad, fs)[0]
