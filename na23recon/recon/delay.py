"""Estimating per-axis gradient delays from the data (what `--estimate-delay` runs).

Two estimators, chosen by the trajectory:

- Full-diameter spokes (k runs from -kmax through the centre to +kmax): RING (Rosenzweig, Holme &
  Uecker, Magn Reson Med 2018). With axis delays d_i a spoke along n is shifted by S n, S =
  -gamma_bar G diag(d) (G the readout gradient). Two spokes a, b cross where their data agree:
  searching their (sinc-interpolated) centre segments for the nominal positions (tau_a, tau_b) of
  that common point gives S (n_a - n_b) = tau_b n_b - tau_a n_a, two equations per pair (projected
  on the pair's plane; in 3D the shifted spokes need not meet). Many near-orthogonal pairs give S
  by least squares, its standard error from the residuals.
- Centre-out readouts (3D radial, DA-radial, TPI; opposed spokes of a real-valued object carry
  no delay information, and the spokes share only the centre): a data-consistency search, the
  idea of trajectory auto-corrected reconstruction (Ianni & Grissom, Magn Reson Med 2016) reduced
  to three delay parameters. For a candidate d the k-space inside a small ball (matrix `DC_MATRIX`) is fitted
  by a low-resolution image on the delayed trajectory (weighted least squares, CG through the
  Toeplitz normal operator), and J(d) = sum_c ||W^(1/2) (A_d x_c - y_c)||^2 is minimised axis by
  axis (a coarse grid, then Brent's bounded search; a second sweep warm-started from the image
  converged at the first estimate). The ridge term is tiny (mu = 1e-6) and CG runs 30 iterations:
  a strong ridge (1e-2) shrinks the image and the search then trades that for delay, a bias of
  ~20% of d. The image model decays along the readout, y = d(t) A x with the biexponential d(t)
  of Boada et al. (MRM 1994) (the user's T2*, else grey matter of Riemer et al., NMR Biomed
  2018): a delay otherwise absorbs the decay (the brain phantom's estimates were 0.15-0.55 us
  low without it). Coils are SVD-compressed to a few virtual coils (Buehrer et al., MRM 2007),
  each fitted on its own: no sensitivity maps. Uncertainty: the spread of the estimates from
  disjoint interleaved readout subsets (a delete-group resampling, Efron & Tibshirani, An
  Introduction to the Bootstrap, 1993), never below the Gauss-Newton curvature
  sd_i = sqrt(2 s^2 / J''_ii), combined in quadrature with a systematic term: the largest change
  of the estimate under the other decay models `DECAY_VARIANTS`.
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
from .solvers import decay_weights

log = logging.getLogger(__name__)

__all__ = ["estimate_gradient_delay", "gradient_delay_step", "is_full_diameter", "ring_delay", "consistency_delay"]

#: Matrix of the low-resolution data-consistency fit (data inside |k| <= DC_MATRIX / 2 cycles/FOV).
DC_MATRIX = 16
#: Search range of the data-consistency estimator, us (each axis).
SEARCH_US = 15.0
#: Readouts (evenly strided) the data-consistency search uses: a matrix-16 image needs ~4 pi 8^2.
MAX_READOUTS = 3000
#: Disjoint readout subsets whose estimates give the data-consistency uncertainty.
NSUBSETS = 4
#: Decay along the readout in the estimator's image model when the user gives none (--t2s-ms):
#: ((short, long) T2* in ms, short fraction), grey matter of Riemer et al. (NMR Biomed 2018).
DEFAULT_T2S = ((3.9, 26.3), 0.6)
#: Other decay models whose estimates (one Newton step from the estimate) give the systematic part
#: of the uncertainty: white matter of the same study, and tissue mixed with free sodium (half the
#: short fraction).
DECAY_VARIANTS = (((3.4, 23.5), 0.6), ((3.9, 26.3), 0.3))
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
                            eps: float = 1e-3, t2s=DEFAULT_T2S) -> dict:
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
        res = consistency_delay(ksp, traj, fov_mm, t, eps=eps, t2s=t2s)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("gradient delays (%s): %s us +- %s", res["method"], np.round(res["delay_us"], 2).tolist(),
             np.round(res["sd_us"], 2).tolist())
    return res


# ---------------------------------------------------------------- RING (full-diameter spokes)

def _upsample(y: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited (FFT zero-padding) interpolation along the last axis by `factor`: sample j of
    the input lands on index j * factor."""
    n = y.shape[-1]
    f = np.fft.fftshift(np.fft.fft(y, axis=-1), axes=-1)
    pad = (n * factor - n) // 2
    f = np.concatenate([np.zeros(f.shape[:-1] + (pad,), f.dtype), f,
                        np.zeros(f.shape[:-1] + (n * factor - n - pad,), f.dtype)], axis=-1)
    return np.fft.ifft(np.fft.ifftshift(f, axes=-1), axis=-1) * factor


def ring_delay(ksp: np.ndarray, k: np.ndarray, t: np.ndarray, npairs: int = 1500, half_width: int | None = None,
               factor: int = 16, seed: int = 0) -> dict:
    """RING (Rosenzweig et al., MRM 2018) on full-diameter spokes: delays (us) per axis of k.

    ksp (ncoil, nreadout, nsample) on spokes k (nreadout, nsample, ndim) 1/m with uniform sample
    spacing along each spoke; t the sample times (s). `half_width` samples either side of the
    centre are searched, band-limited interpolation `factor` times finer."""
    nro, ns, ndim = k.shape
    if half_width is None:  # one coil's complex values can agree at a spurious pair of points
        half_width = 4 if ksp.shape[0] > 1 else 2
    direction = k[:, -1] - k[:, 0]
    n = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    pos = np.einsum("rsi,ri->rs", k, n)  # signed position along each spoke, 1/m
    step = float(np.median(np.diff(pos, axis=1)))
    tt = np.broadcast_to(t, (nro, ns))
    gk = step / float(np.median(np.diff(tt, axis=1)))  # gamma_bar G: 1/m per s
    centre = int(np.median(np.argmin(np.abs(pos), axis=1)))
    if not half_width + 1 <= centre <= ns - half_width - 2:
        raise InputError("RING delay estimation: the spokes do not pass through the centre")
    up = _upsample(ksp, factor)  # (nc, nro, ns * factor)
    lo, hi = (centre - half_width) * factor, (centre + half_width) * factor + 1
    seg = up[..., lo:hi]  # (nc, nro, m)
    grid = (np.arange(lo, hi) / factor - centre) * step + np.median(pos[:, centre])  # nominal positions, 1/m
    rng = np.random.default_rng(seed)
    a_idx = rng.choice(nro, size=min(npairs, nro), replace=False)
    cand = rng.integers(0, nro, size=(a_idx.size, 64))
    dots = np.abs(np.einsum("pi,pqi->pq", n[a_idx], n[cand]))
    b_idx = cand[np.arange(a_idx.size), np.argmin(dots, axis=1)]
    keep = np.min(dots, axis=1) < 0.5
    a_idx, b_idx = a_idx[keep], b_idx[keep]
    if a_idx.size < ndim:
        raise InputError("RING delay estimation: too few spokes at large angles to each other")
    rows, rhs, tau = [], [], []
    m = grid.size
    for chunk in range(0, a_idx.size, 64):
        ia, ib = a_idx[chunk:chunk + 64], b_idx[chunk:chunk + 64]
        ya, yb = seg[:, ia], seg[:, ib]  # (nc, p, m)
        dist = np.sum(np.abs(ya[..., :, None] - yb[..., None, :]) ** 2, axis=0)  # (p, m, m)
        for p in range(ia.size):
            dd = dist[p]
            i, j = np.unravel_index(int(np.argmin(dd)), dd.shape)
            ta = _refine(dd[max(i - 1, 0):i + 2, j], i, m) if 0 < i < m - 1 else float(i)
            tb = _refine(dd[i, max(j - 1, 0):j + 2], j, m) if 0 < j < m - 1 else float(j)
            ta_k, tb_k = np.interp(ta, np.arange(m), grid), np.interp(tb, np.arange(m), grid)
            na, nb = n[ia[p]], n[ib[p]]
            e2 = nb - (nb @ na) * na
            e2 /= np.linalg.norm(e2)
            lhs = na - nb  # S (na - nb) = tb nb - ta na, S diagonal
            r = tb_k * nb - ta_k * na
            for e in (na, e2):
                rows.append(e * lhs)
                rhs.append(float(e @ r))
            tau.append((ta_k, tb_k))
    a_mat, b_vec = np.asarray(rows), np.asarray(rhs)
    s, *_ = np.linalg.lstsq(a_mat, b_vec, rcond=None)
    resid = b_vec - a_mat @ s
    dof = max(1, b_vec.size - ndim)
    cov = float(resid @ resid) / dof * np.linalg.inv(a_mat.T @ a_mat)
    delay = -s / gk * 1e6
    sd = np.sqrt(np.diag(cov)) / gk * 1e6
    return {"method": "ring", "reference": "Rosenzweig, Holme & Uecker, Magn Reson Med 2018",
            "delay_us": delay.tolist(), "sd_us": sd.tolist(), "pairs": int(a_idx.size),
            "shift_per_m": s.tolist(), "readout_gradient_k_per_s": gk,
            "residual_rms_per_m": float(np.sqrt(np.mean(resid ** 2)))}


def _refine(v: np.ndarray, i: int, m: int) -> float:
    """Sub-grid position of a minimum from three values around index i (parabola)."""
    if v.size != 3:
        return float(i)
    den = v[0] - 2 * v[1] + v[2]
    return float(i) + (0.5 * (v[0] - v[2]) / den if den > 0 else 0.0)


# ---------------------------------------------------------------- data consistency (centre-out)

class _ConsistencyCost:
    """J(d): the weighted residual of the best low-resolution image on the delayed trajectory.

    The image (one per virtual coil) solves (A^H W A + mu) x = A^H W y by CG through the Toeplitz
    normal operator, from a fixed start `x0`; the residual is then computed directly (one forward
    NUFFT in double precision): the expanded form y^H W y - 2 Re x^H b + x^H N x loses the small
    differences between delays to rounding."""

    def __init__(self, ksp: np.ndarray, traj: Trajectory, fov_mm, t: np.ndarray, matrix: int, grid: int,
                 cg_iters: int = 30, mu: float = 1e-6, eps: float = 1e-4, t2s=None) -> None:
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
        self.decay = None if t2s is None else decay_weights(tt, *t2s).astype(np.float64)

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


def _newton(cost: _ConsistencyCost, d: np.ndarray, h: float, curves: list | None = None
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """One Newton step on J from a quadratic fitted to 1 + 2n + n(n-1)/2 evaluations around d
    (central differences, step h us). Returns (step, Hessian, J(d)); the step is clipped to +-3h."""
    n = d.size
    e = np.eye(n) * h
    j0 = cost(d)
    jp = np.array([cost(d + e[i]) for i in range(n)])
    jm = np.array([cost(d - e[i]) for i in range(n)])
    if curves is not None:
        for i in range(n):
            curves[i] += [[float(d[i]), j0], [float(d[i] + h), float(jp[i])], [float(d[i] - h), float(jm[i])]]
    g = (jp - jm) / (2 * h)
    hess = np.diag((jp - 2 * j0 + jm) / h ** 2)
    for i in range(n):
        for k in range(i + 1, n):
            jik = cost(d + e[i] + e[k])
            hess[i, k] = hess[k, i] = (jik - jp[i] - jp[k] + j0) / h ** 2
    w, v = np.linalg.eigh(hess)
    if np.all(w > 0):
        step = -np.linalg.solve(hess, g)
    else:  # not convex here: a gradient step along the positive-curvature scale
        step = -g / max(float(np.abs(np.diag(hess)).max()), 1e-300)
    return np.clip(step, -3 * h, 3 * h), hess, j0


def consistency_delay(ksp: np.ndarray, traj: Trajectory, fov_mm, t: np.ndarray, eps: float = 1e-3,
                      matrix: int = DC_MATRIX, search_us: float = SEARCH_US, xtol_us: float = 0.05,
                      max_readouts: int = MAX_READOUTS, nsubsets: int = NSUBSETS, t2s=DEFAULT_T2S) -> dict:
    """Delays (us) per axis of k that make a low-resolution image most consistent with the data
    (see the module docstring): the best common delay of all axes on a grid of 7 points over
    +-`search_us`, two sweeps of that grid per axis, then
    Newton steps on a quadratic model of J (central differences at 2, 1, 0.5 us, the images
    warm-started from the one converged at the current estimate) until a step is below `xtol_us`.
    At most `max_readouts` readouts (evenly strided) are used. Uncertainty: the spread of one
    Newton step from the estimate on each of `nsubsets` disjoint interleaved readout subsets,
    sd = SD / sqrt(nsubsets), never below the Gauss-Newton sd from the Hessian."""
    fov = np.asarray(fov_mm, dtype=np.float64)
    base = float(2 * np.sqrt(np.max(np.sum(traj.coord(fov[:traj.ndim] if fov.ndim else fov).astype(np.float64) ** 2,
                                                  axis=-1))))
    matrix = int(min(matrix, max(8, 2 * int(base // 2))))
    grid_n = int(round(1.5 * matrix))
    keep = np.unique(np.linspace(0, traj.nreadout - 1, min(traj.nreadout, max_readouts)).round().astype(int))
    tk = t[keep] if t.ndim == 2 else t
    sub = Trajectory(k=traj.k[keep], t=tk, dcf=None if traj.dcf is None else traj.dcf[keep])
    cost = _ConsistencyCost(ksp[:, keep], sub, fov, tk, matrix, grid_n, t2s=t2s)
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
        d[i] = grid[b] + (_refine(np.array(vals[b - 1:b + 2]), 1, 3) - 1) * (grid[1] - grid[0]) \
            if 0 < b < grid.size - 1 else grid[b]
    hess = np.eye(ndim)
    for h in (2.0, 1.0, 0.5, 0.5, 0.5):  # Newton on a quadratic model, warm-started images
        cost.x0 = cost.solve(d, 3 * cost.iters)[1]
        step, hess, j0 = _newton(cost, d, h, curves)
        d = np.clip(d + step, -MAX_DELAY_US, MAX_DELAY_US)
        if h <= 0.5 and np.max(np.abs(step)) < xtol_us:
            break
    cost.x0 = cost.solve(d, 3 * cost.iters)[1]
    j0 = cost(d)
    s2 = j0 / max(1, 2 * cost.nsamples - ndim)  # residual per real degree of freedom
    cov = 2 * s2 * np.linalg.pinv(hess)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    subsets = []
    for s in range(nsubsets if keep.size >= 8 * nsubsets else 0):
        part = np.arange(s, keep.size, nsubsets)
        tp = tk[part] if tk.ndim == 2 else tk
        c = _ConsistencyCost(ksp[:, keep[part]], Trajectory(k=sub.k[part], t=tp, dcf=None if sub.dcf is None
                                                            else sub.dcf[part]), fov, tp, matrix, grid_n, t2s=t2s)
        c.x0 = cost.x0
        step, _, _ = _newton(c, d, 0.5)
        subsets.append((d + step).tolist())
    if len(subsets) > 1:
        spread = np.std(np.asarray(subsets), axis=0, ddof=1) / math.sqrt(len(subsets))
        sd = np.maximum(sd, spread)
    variants = []
    for model in DECAY_VARIANTS if t2s is not None else ():  # the decay model's own uncertainty
        c = _ConsistencyCost(ksp[:, keep], sub, fov, tk, matrix, grid_n, t2s=model)
        c.x0 = cost.x0
        dv = d.copy()
        for _ in range(2):
            dv = dv + _newton(c, dv, 0.5)[0]
        variants.append(dv.tolist())
    systematic = np.max(np.abs(np.asarray(variants) - d), axis=0) if variants else np.zeros(ndim)
    sd = np.sqrt(sd ** 2 + systematic ** 2).tolist()
    return {"method": "data-consistency",
            "reference": "low-resolution data-consistency search (after Ianni & Grissom, Magn Reson Med 2016)",
            "delay_us": d.tolist(), "sd_us": sd,
            "sd_method": ("readout subsets" if subsets else "curvature") + (" + decay models" if variants else ""),
            "subset_delays_us": subsets, "decay_model": None if t2s is None else list(t2s),
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
        t2s = DEFAULT_T2S if options.t2s_model is None else (options.t2s_model, options.frac_short)
        est = estimate_gradient_delay(np.asarray(kspace()), traj, fov_mm, dwell_s=dwell_s, t2s=t2s)
        d = np.asarray(est["delay_us"], dtype=np.float64)
        info = {"source": "estimated", "applied_us": d.tolist(), **est}
    else:
        return traj, None
    info["axes"] = ["read", "phase", "partition"][:traj.ndim]
    return delay_trajectory(traj, d, dwell_s), info
