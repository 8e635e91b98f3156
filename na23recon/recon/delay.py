"""Estimating per-axis gradient delays from the data (what `--estimate-delay` runs).

Two estimators, chosen by the trajectory:

- Full-diameter spokes (k runs from -kmax through the centre to +kmax): RING (Rosenzweig, Holme &
  Uecker, Magn Reson Med 2018), `recon.ring`.
- Centre-out readouts (3D radial, DA-radial, TPI; opposed spokes of a real-valued object carry
  no delay information, and the spokes share only the centre): a data-consistency search, the
  idea of trajectory auto-corrected reconstruction (Ianni & Grissom, Magn Reson Med 2016) reduced
  to three delay parameters. For a candidate d the k-space inside a small ball (matrix
  `DC_MATRIX`) is fitted by a low-resolution image on the delayed trajectory (weighted least
  squares, CG through the Toeplitz normal operator), and J(d) = sum_c ||W^(1/2) (A_d x_c - y_c)||^2
  is minimised (a common delay on a grid, per-axis grid sweeps, then Newton steps). The ridge
  is tiny (mu = 1e-6): a strong ridge (1e-2) shrinks the image and the search then trades that
  for delay, a bias of ~20% of d.

  The image decays along the readout, and a delay can absorb a wrong decay: a common delay of all
  axes and a change of the decay are nearly the same change of the data for a roundish object.
  DA-radial's compartment means move ~1% per 0.1 us: its slow ramp-sampled start puts the
  k-space that sets large compartments' means (|k| < 2 cycles/FOV) in the first ~100 us, where
  a delay error is a large relative error of |k| (and of the DCF that follows it). The image
  model is y = d(t) A x with a biexponential d(t) (Boada et al., MRM 1994; the user's T2* pair,
  else grey matter of Riemer et al., NMR Biomed 2018) whose short fraction is fitted with the
  delays: the search runs with the preset fraction, then Newton steps on J(d, f) with images
  converged from a zero start (`REFINE_ITERS`). A fixed fraction biased the brain phantom's
  DA-radial estimate by +0.16..0.28 us (its CSF decays mono-exponentially, its grey and white
  matter biexponentially: the object's mixture has less short signal than grey matter), and
  with the search's 30 CG iterations the cost's dependence on f is hidden under the unconverged
  residual. (A free decay per voxel, x0(r) + t x1(r), is degenerate with the common delay: on a
  centre-out readout each |k| is sampled at one time only.)

  Coils are SVD-compressed to a few virtual coils (Buehrer et al., MRM 2007), each fitted on its
  own: no sensitivity maps. Uncertainty: the spread of the estimates from disjoint interleaved
  readout subsets (a delete-group resampling, Efron & Tibshirani, An Introduction to the
  Bootstrap, 1993), never below the Gauss-Newton curvature sd_i = sqrt(2 s^2 / J''_ii), combined
  in quadrature with a systematic term: the change of the estimate under other T2* pairs
  (`DECAY_VARIANTS`: white matter; a free-sodium long pool).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..core.trajectory import Trajectory
from ..errors import InputError
from ..nufft import Nufft
from ..traj.dcf import normalise_dcf
from ..traj.delay import MAX_DELAY_US, delay_trajectory, delayed_k, readout_times
from .coils import coil_compress
from .ring import refine_minimum, ring_delay
from .solvers import decay_weights

log = logging.getLogger(__name__)

__all__ = ["estimate_gradient_delay", "gradient_delay_step", "is_full_diameter", "ring_delay", "consistency_delay"]

#: Matrix of the low-resolution data-consistency fit (data inside |k| <= DC_MATRIX / 2 cycles/FOV).
DC_MATRIX = 16
#: Image grid of the data-consistency fit over its matrix.
GRID_FACTOR = 1.5
#: Search range of the data-consistency estimator, us (each axis).
SEARCH_US = 15.0
#: Readouts (evenly strided) the data-consistency search uses: a matrix-16 image needs ~4 pi 8^2.
MAX_READOUTS = 3000
#: Disjoint readout subsets whose estimates give the data-consistency uncertainty.
NSUBSETS = 4
#: Decay along the readout in the estimator's image model when the user gives none: ((short, long)
#: T2* in ms, short fraction), grey matter of Riemer et al. (NMR Biomed 2018); the short fraction
#: is then fitted with the delays (`FIT_FRACTION`).
DEFAULT_DECAY = ((3.9, 26.3), 0.6)
#: Fit the decay model's short fraction jointly with the delays (a fixed fraction biases them).
FIT_FRACTION = True
#: CG iterations of the joint (delays, short fraction) refinement, from a zero start each time: the
#: 30 of the search leave the residual ~10x above its converged value at matrix 64, which hides
#: the cost's dependence on the decay (DA-radial, matrix 64, delays 2/5/8 us: 100 iterations gave
#: 1.88/4.91/7.81 us, 200 gave 1.89/4.92/7.85, 400 gave 1.95/4.97/7.95).
REFINE_ITERS = 400
#: (short, long) T2* pairs whose estimates (the delays re-fitted at the fitted short fraction) give
#: the systematic part of the uncertainty: white matter of the same study, and a long pool of
#: free sodium (CSF, T2* ~55 ms) as in tissue partial-volumed with CSF.
DECAY_VARIANTS = ((3.4, 23.5), (3.9, 55.0))
#: Virtual coils kept for the estimation.
MAX_VCOILS = 4


def is_full_diameter(k: np.ndarray) -> bool:
    """Whether the readouts are full-diameter spokes: they start and end on opposite sides of the
    centre and pass near it (median over readouts)."""
    a, b = k[:, 0], k[:, -1]
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    if not ok.any():
        return False
    cos = np.sum(a[ok] * b[ok], axis=-1) / (na[ok] * nb[ok])
    return bool(np.median(cos) < -0.95)


def _compress(ksp: np.ndarray) -> np.ndarray:
    ksp = np.asarray(ksp, dtype=np.complex64)
    if ksp.shape[0] > MAX_VCOILS:
        ksp, _ = coil_compress(ksp, ncoil=MAX_VCOILS)
    return ksp


def estimate_gradient_delay(ksp: np.ndarray, traj: Trajectory, fov_mm, dwell_s: float | None = None,
                            eps: float = 1e-3, decay=DEFAULT_DECAY) -> dict:
    """Per-axis gradient delays (us) of the scan whose k-space is `ksp` (ncoil, nreadout, nsample)
    on the nominal `traj` (k in 1/m, dcf, t). Returns a dict for the sidecar: method, delay_us,
    sd_us (one per axis of k), and what the estimator saw (pairs, cost curves)."""
    if ksp.ndim != 3 or ksp.shape[1:] != traj.shape:
        raise InputError(f"delay estimation: k-space {ksp.shape} does not match the trajectory {traj.shape}")
    t = readout_times(traj, dwell_s)
    ksp = _compress(ksp)
    t0 = time.perf_counter()
    if is_full_diameter(traj.k):
        res = ring_delay(ksp, traj.k, t)
    else:
        res = consistency_delay(ksp, traj, fov_mm, t, eps=eps, decay=decay)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("gradient delays (%s): %s us +- %s", res["method"], np.round(res["delay_us"], 2).tolist(),
             np.round(res["sd_us"], 2).tolist())
    return res


# ---------------------------------------------------------------- data consistency (centre-out)

class _ConsistencyCost:
    """J(d): the weighted residual of the best low-resolution image on the delayed trajectory.

    The image (one per virtual coil) solves (A^H W A + mu) x = A^H W y by CG through the Toeplitz
    normal operator, from a fixed start `x0`; the residual is then computed directly (one forward
    NUFFT in double precision): the expanded form y^H W y - 2 Re x^H b + x^H N x loses the small
    differences between delays to rounding."""

    def __init__(self, ksp: np.ndarray, traj: Trajectory, fov_mm, t: np.ndarray, matrix: int, grid: int,
                 cg_iters: int = 30, mu: float = 1e-6, eps: float = 1e-4, decay=None) -> None:
        self.fov_m = _fov_m(fov_mm, traj.ndim)
        r = np.sqrt(np.sum((traj.k * self.fov_m) ** 2, axis=-1))
        ns = int(np.sum(np.max(r, axis=0) <= matrix / 2))
        if ns < 2:
            raise InputError(f"delay estimation: fewer than 2 samples per readout inside |k| <= {matrix / 2:g}")
        self.traj = Trajectory(k=traj.k[:, :ns], t=(t[..., :ns]), dcf=None if traj.dcf is None else traj.dcf[:, :ns])
        self.y = np.ascontiguousarray(ksp[:, :, :ns]).astype(np.complex128)
        coord = self.traj.k * self.fov_m
        dcf = self.traj.dcf if self.traj.dcf is not None else np.sum(coord ** 2, axis=-1) + 1e-3
        self.w = normalise_dcf(dcf, coord)
        self.shape = (grid,) * traj.ndim
        self.eps, self.iters, self.mu = eps, cg_iters, mu
        self.yy = float(np.sum(self.w * np.abs(self.y) ** 2))
        self.nsamples = int(self.y.size)
        self.calls = 0
        self.x0: np.ndarray | None = None
        tt = np.broadcast_to(np.asarray(self.traj.t, dtype=np.float64), self.y.shape[1:])
        # the decay along the readout, d(t) = 1 at the readout start (None: no decay)
        self.tt, self.t2s = tt, None if decay is None else tuple(float(v) for v in np.atleast_1d(decay[0])[[0, -1]])
        self.decay = None
        if decay is not None:
            self.set_fraction(float(decay[1]))

    def set_fraction(self, frac_short: float) -> None:
        """Use the short fraction `frac_short` (clipped to [0, 1]) in the decay model."""
        self.frac_short = float(np.clip(frac_short, 0.0, 1.0))
        self.decay = decay_weights(self.tt, self.t2s, self.frac_short).astype(np.float64)

    def solve(self, d_us: np.ndarray, iters: int) -> tuple[float, np.ndarray]:
        """(J(d), the images) after `iters` CG iterations from `x0` (zero when None)."""
        self.calls += 1
        coord = (delayed_k(self.traj, d_us) * self.fov_m).astype(np.float32)
        op = Nufft(coord, self.shape, eps=self.eps)
        x0 = None if self.x0 is None else self.x0.copy()
        if self.decay is None:
            x = _cg(op, self.y, self.w, self.mu, x0, iters)
            f = op.forward(x)
        else:  # y = d(t) A x: weights w d^2 on the data y / d
            x = _cg(op, self.y / self.decay, self.w * self.decay ** 2, self.mu, x0, iters)
            f = op.forward(x) * self.decay
        res = f - self.y
        return float(np.sum(self.w * np.abs(res) ** 2)), x

    def __call__(self, d_us: np.ndarray) -> float:
        return self.solve(d_us, self.iters)[0]


def _cg(op: Nufft, y: np.ndarray, w: np.ndarray, mu: float, x: np.ndarray | None, iters: int) -> np.ndarray:
    """`iters` CG iterations on (A^H W A + mu) x = A^H W y, all coils at once, from x (or 0)."""
    b = op.adjoint(y * w)
    if x is None:
        x, r = np.zeros_like(b), b.copy()
    else:
        r = b - op.normal(x, weights=w) - mu * x
    p = r.copy()
    rr = _dots(r, r)
    for _ in range(iters):
        ap = op.normal(p, weights=w) + mu * p
        alpha = rr / np.maximum(_dots(p, ap), 1e-300)
        x = x + _scale(alpha, p)
        r = r - _scale(alpha, ap)
        rr_new = _dots(r, r)
        p = r + _scale(rr_new / np.maximum(rr, 1e-300), p)
        rr = rr_new
    return x


def _fov_m(fov_mm, ndim: int) -> np.ndarray:
    f = np.asarray(fov_mm, dtype=np.float64) * 1e-3
    return f[:ndim] if f.ndim else f


def _dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[0]
    return np.real(np.sum(a.reshape(n, -1).conj() * b.reshape(n, -1), axis=1))


def _scale(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    return s.reshape((-1,) + (1,) * (a.ndim - 1)) * a


def _newton(cost, d: np.ndarray, h, curves: list | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """One Newton step on J from a quadratic fitted to 1 + 2n + n(n-1)/2 evaluations around d
    (central differences, step h per parameter, a number or one each). Returns (step, Hessian,
    J(d)); the step is clipped to +-3h."""
    n = d.size
    h = np.broadcast_to(np.asarray(h, dtype=np.float64), (n,))
    e = np.diag(h)
    j0 = cost(d)
    jp = np.array([cost(d + e[i]) for i in range(n)])
    jm = np.array([cost(d - e[i]) for i in range(n)])
    if curves is not None:
        for i in range(n):
            curves[i] += [[float(d[i]), j0], [float(d[i] + h[i]), float(jp[i])], [float(d[i] - h[i]), float(jm[i])]]
    g = (jp - jm) / (2 * h)
    hess = np.diag((jp - 2 * j0 + jm) / h ** 2)
    for i in range(n):
        for k in range(i + 1, n):
            jik = cost(d + e[i] + e[k])
            hess[i, k] = hess[k, i] = (jik - jp[i] - jp[k] + j0) / (h[i] * h[k])
    w, v = np.linalg.eigh(hess)
    if np.all(w > 0):
        step = -np.linalg.solve(hess, g)
    else:  # not convex here: a gradient step along the positive-curvature scale
        step = -g / np.maximum(np.abs(np.diag(hess)), 1e-300)
    return np.clip(step, -3 * h, 3 * h), hess, j0


#: Short fractions at which the delays are re-fitted (`_profile_fraction`).
FRACTION_GRID = (0.0, 0.15, 0.3, 0.45, 0.6)


def _fit_delays(cost: _ConsistencyCost, d: np.ndarray, steps: int, xtol_us: float
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """Newton steps (h = 0.5 us) on J(d) from d, images from a zero start. Returns (d, Hessian,
    J at the last expansion point)."""
    cost.x0 = None
    hess, j0 = np.eye(d.size), math.inf
    for _ in range(steps):
        step, hess, j0 = _newton(cost, d, 0.5)
        d = np.clip(d + step, -MAX_DELAY_US, MAX_DELAY_US)
        if np.max(np.abs(step)) < xtol_us:
            break
    return d, hess, j0


def _profile_fraction(cost: _ConsistencyCost, d: np.ndarray, xtol_us: float, grid=FRACTION_GRID
                      ) -> tuple[np.ndarray, float, np.ndarray, list]:
    """The decay model's short fraction f with the delays: the profile min_d J(d, f) on `grid`
    (the delays re-fitted at each f by Newton steps from the previous f's), its minimum by a
    parabola through the best three points, then the delays re-fitted there. Returns (d, f, the
    delays' Hessian, the profile [[f, J, d...], ...])."""
    profile = []
    dd = d.copy()
    for f in grid:
        cost.set_fraction(f)
        dd, _, j = _fit_delays(cost, dd, 2, xtol_us)
        profile.append([float(f), float(cost(dd)), *dd.tolist()])
    vals = np.array([p[1] for p in profile])
    b = int(np.argmin(vals))
    step = grid[1] - grid[0]
    f = grid[b] + (refine_minimum(vals[b - 1:b + 2], 1, 3) - 1) * step if 0 < b < len(grid) - 1 else grid[b]
    cost.set_fraction(float(f))
    d, hess, _ = _fit_delays(cost, np.array(profile[b][2:]), 3, xtol_us)
    return d, float(f), hess, profile


def consistency_delay(ksp: np.ndarray, traj: Trajectory, fov_mm, t: np.ndarray, eps: float = 1e-3,
                      matrix: int = DC_MATRIX, search_us: float = SEARCH_US, xtol_us: float = 0.05,
                      max_readouts: int = MAX_READOUTS, nsubsets: int = NSUBSETS, decay=DEFAULT_DECAY,
                      fit_fraction: bool = FIT_FRACTION) -> dict:
    """Delays (us) per axis of k that make a low-resolution image most consistent with the data
    (see the module docstring): the best common delay of all axes on a grid of 7 points over
    +-`search_us`, two sweeps of that grid per axis, then
    Newton steps on a quadratic model of J (central differences at 2, 1, 0.5 us, the images
    warm-started from the one converged at the current estimate) until a step is below `xtol_us`.
    With `fit_fraction` (and a decay model) the short fraction of the decay is then fitted with the
    delays (`_profile_fraction`, `REFINE_ITERS` CG iterations from a zero image per evaluation).
    At most `max_readouts` readouts (evenly strided) are used. Uncertainty: the spread of one
    Newton step from the estimate on each of `nsubsets` disjoint interleaved readout subsets,
    sd = SD / sqrt(nsubsets), never below the Gauss-Newton sd from the Hessian."""
    fov = np.asarray(fov_mm, dtype=np.float64)
    base = float(2 * np.sqrt(np.max(np.sum(traj.coord(fov[:traj.ndim] if fov.ndim else fov).astype(np.float64) ** 2,
                                                  axis=-1))))
    matrix = int(min(matrix, max(8, 2 * int(base // 2))))
    grid_n = int(round(GRID_FACTOR * matrix))
    keep = np.unique(np.linspace(0, traj.nreadout - 1, min(traj.nreadout, max_readouts)).round().astype(int))
    tk = t[keep] if t.ndim == 2 else t
    sub = Trajectory(k=traj.k[keep], t=tk, dcf=None if traj.dcf is None else traj.dcf[keep])
    cost = _ConsistencyCost(ksp[:, keep], sub, fov, tk, matrix, grid_n, decay=decay)
    ndim = traj.ndim
    d = np.zeros(ndim)
    curves: list[list[list[float]]] = [[] for _ in range(ndim)]
    grid = np.linspace(-search_us, search_us, 7)
    vals = [cost(np.full(ndim, v)) for v in grid]  # a common start: all axes equal (with the T2*
    d[:] = grid[int(np.argmin(vals))]  # decay in the model an axis searched with the others at 0
    # can fall into a local minimum: radial, matrix 32, x = -10 for 2 us)
    for i in list(range(ndim)) * 2:  # coarse: each axis on a grid (the others at their current
        # value), two sweeps
        vals = []
        for v in grid:
            dd = d.copy()
            dd[i] = v
            vals.append(cost(dd))
            curves[i].append([float(v), vals[-1]])
        b = int(np.argmin(vals))
        d[i] = grid[b] + (refine_minimum(np.array(vals[b - 1:b + 2]), 1, 3) - 1) * (grid[1] - grid[0]) \
            if 0 < b < grid.size - 1 else grid[b]
    hess = np.eye(ndim)
    for h in (2.0, 1.0, 0.5, 0.5, 0.5):  # Newton on a quadratic model, warm-started images
        cost.x0 = cost.solve(d, 3 * cost.iters)[1]
        step, hess, j0 = _newton(cost, d, h, curves)
        d = np.clip(d + step, -MAX_DELAY_US, MAX_DELAY_US)
        if h <= 0.5 and np.max(np.abs(step)) < xtol_us:
            break
    fit = fit_fraction and decay is not None
    frac, profile = None, []
    if fit:  # the short fraction with the delays, converged images from a zero start
        cost.iters = REFINE_ITERS
        d, frac, hess, profile = _profile_fraction(cost, d, xtol_us)
    else:
        cost.x0 = cost.solve(d, 3 * cost.iters)[1]
    j0 = cost(d)
    s2 = j0 / max(1, 2 * cost.nsamples - hess.shape[0])  # residual per real degree of freedom
    cov = 2 * s2 * np.linalg.pinv(hess)
    sd = np.sqrt(np.maximum(np.diag(cov)[:ndim], 0.0))
    model = decay if not fit else (decay[0], frac)
    subsets = []
    for s in range(nsubsets if keep.size >= 8 * nsubsets else 0):
        part = np.arange(s, keep.size, nsubsets)
        tp = tk[part] if tk.ndim == 2 else tk
        c = _ConsistencyCost(ksp[:, keep[part]], Trajectory(k=sub.k[part], t=tp, dcf=None if sub.dcf is None
                                                            else sub.dcf[part]), fov, tp, matrix, grid_n,
                             decay=model, cg_iters=cost.iters)
        c.x0 = cost.x0
        step, _, _ = _newton(c, d, 0.5)
        subsets.append((d + step).tolist())
    if len(subsets) > 1:
        spread = np.std(np.asarray(subsets), axis=0, ddof=1) / math.sqrt(len(subsets))
        sd = np.maximum(sd, spread)
    variants = []
    for pair in DECAY_VARIANTS if decay is not None else ():  # the decay model's own uncertainty
        c = _ConsistencyCost(ksp[:, keep], sub, fov, tk, matrix, grid_n, decay=(pair, model[1]), cg_iters=cost.iters)
        if fit:
            dv = _fit_delays(c, d, 2, xtol_us)[0]
        else:
            c.x0, dv = cost.x0, d.copy()
            for _ in range(2):
                dv = dv + _newton(c, dv, 0.5)[0]
        variants.append(dv.tolist())
    systematic = np.max(np.abs(np.asarray(variants) - d), axis=0) if variants else np.zeros(ndim)
    sd = np.sqrt(sd ** 2 + systematic ** 2).tolist()
    return {"method": "data-consistency",
            "reference": "low-resolution data-consistency search (after Ianni & Grissom, Magn Reson Med 2016)",
            "delay_us": d.tolist(), "sd_us": sd,
            "sd_method": ("readout subsets" if subsets else "curvature") + (" + decay models" if variants else ""),
            "subset_delays_us": subsets, "decay_model": None if model is None else [np.atleast_1d(model[0]).tolist(), model[1]],
            "short_fraction_fitted": frac, "fraction_profile": profile,
            "decay_variant_delays_us": variants, "systematic_sd_us": systematic.tolist(), "matrix": matrix,
            "readouts_used": int(keep.size),
            "evaluations": cost.calls, "residual_relative": float(j0 / max(cost.yy, 1e-30)),
            "cost_curves": [sorted(c) for c in curves]}


# ---------------------------------------------------------------- the reconstruction's step

def gradient_delay_step(traj: Trajectory, kspace, options, fov_mm, dwell_s: float | None = None
                        ) -> tuple[Trajectory, dict | None]:
    """Apply `options.gradient_delay_us`, or estimate the delays (`options.estimate_delay`) from
    `kspace()` (a callable giving (ncoil, nreadout, nsample), called only then) and apply them.
    Returns (the trajectory at the delayed positions, the sidecar's `recon.gradient_delay` block),
    or (traj, None) when neither option is set."""
    if options.gradient_delay_us is not None:
        d = np.asarray(options.gradient_delay_us, dtype=np.float64)[:traj.ndim]
        info = {"source": "option", "applied_us": d.tolist()}
    elif options.estimate_delay:
        # the user's T2* pair starts the decay model; its short fraction is fitted with the delays
        decay = DEFAULT_DECAY if options.t2s_model is None else (options.t2s_model, options.frac_short)
        est = estimate_gradient_delay(np.asarray(kspace()), traj, fov_mm, dwell_s=dwell_s, decay=decay)
        d = np.asarray(est["delay_us"], dtype=np.float64)
        info = {"source": "estimated", "applied_us": d.tolist(), **est}
    else:
        return traj, None
    info["axes"] = ["read", "phase", "partition"][:traj.ndim]
    return delay_trajectory(traj, d, dwell_s), info
