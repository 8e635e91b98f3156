"""Iterative solvers as sigpy Algs, and the SENSE problem they share.

Problem (one echo): min_x 1/2 ||W^1/2 (E x - y)||^2 + R(x), with E the SENSE encoding
(`recon.operators`), W the density compensation in absolute k-space volumes (`normalise_dcf`),
so that E^H W E is close to the identity for unit-norm maps and a well-sampled trajectory: the
data term is then roughly 1/2 ||x - x_adjoint||^2 and regularisation weights are in image units.
That is why lambda is given relative to the image noise SD (`SenseProblem.image_noise_sd`).
The DCF weighting trades a little noise optimality for far faster convergence on radial data
(Pruessmann et al. 2001 use it as the preconditioner of CG-SENSE).

- `cg_sense`: `sigpy.alg.ConjugateGradient` on the normal equations (E^H W E + lam I) x = E^H W y
  (CG-SENSE, Pruessmann et al. 2001, MRM 46:638; Hestenes & Stiefel 1952, J. Res. Natl. Bur.
  Stand. 49:409). Each iterate minimises the objective over a growing Krylov space, so the logged
  weighted residual falls monotonically.
- `PrimalDualGradient`: min f(x) + g(G x) with f smooth (the data term, gradient E^H W E x - b by
  the Toeplitz normal operator: no NUFFT inside the loop) and g = lam ||.||_{2,1} for 3D isotropic
  TV (Rudin, Osher & Fatemi 1992, Physica D 60:259; Block, Uecker & Frahm 2007, MRM 57:1086 for
  radial CS-TV). Primal-dual hybrid gradient with an explicit gradient step (Chambolle & Pock 2011,
  JMIV 40:120; Condat 2013, JOTA 158:460; Vu 2013, Adv. Comput. Math. 38:667).
- L1-wavelet CS (Lustig, Donoho & Pauly 2007, MRM 58:1182): FISTA (Beck & Teboulle 2009, SIAM J.
  Imaging Sci. 2:183) through `sigpy.alg.GradientMethod` with sigpy's wavelet soft-thresholding prox.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import sigpy as sp

from ..traj.dcf import normalise_dcf
from .operators import SenseNormal, adjoint_coils, normal_operator
from .tv_kernels import fused_available, pdhg_tv_step3

log = logging.getLogger(__name__)

__all__ = ["SenseProblem", "IterLog", "PrimalDualGradient", "forward_difference",
           "cg_sense", "cs_tv", "cs_wavelet", "decay_weights"]


def _vdot(a: np.ndarray, b: np.ndarray) -> complex:
    return complex(np.vdot(a.ravel().astype(np.complex128, copy=False), b.ravel().astype(np.complex128, copy=False)))


def _norm(a: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.abs(a.astype(np.complex128, copy=False)) ** 2)))


def decay_weights(t_s: np.ndarray, t2s_ms: float | tuple[float, float], frac_short: float = 0.0) -> np.ndarray:
    """Per-sample signal factor d(t) for a decay-aware forward model y = d(t) A S x.

    t_s: (nsample,) or (nreadout, nsample) time of each sample from the readout start, s.
    t2s_ms: one T2* (mono-exponential) or (short, long) with `frac_short` of the signal short.
    x is then the magnetisation at the readout start (d = 1 at t = 0); the T2* blurring of the long
    sodium readout is modelled for one T2* over the whole object (Boada et al. 1994, MRM 32:219 for the
    biexponential decay). The model only reweights samples: E^H W E stays a Toeplitz operator
    with weights dcf * d^2, so it costs nothing per iteration.
    """
    t = np.asarray(t_s, np.float64) * 1e3
    if isinstance(t2s_ms, (tuple, list)):
        ts, tl = (float(v) for v in t2s_ms)
    else:
        ts = tl = float(t2s_ms)
        frac_short = 0.0
    if min(ts, tl) <= 0:
        raise ValueError(f"T2* must be positive, got {t2s_ms} ms")
    return (frac_short * np.exp(-t / ts) + (1 - frac_short) * np.exp(-t / tl)).astype(np.float32)


@dataclass
class IterLog:
    """What an iterative reconstruction did: written into the sidecar's `recon` block."""

    method: str
    iterations: int = 0
    max_iter: int = 0
    tol: float = 0.0
    converged: bool = False
    residuals: list[float] = field(default_factory=list)
    """Relative weighted data residual ||W^1/2 (E x_k - y)|| / ||W^1/2 y|| per iteration (CG), or
    the relative objective (CS)."""
    lam: float = 0.0
    lam_relative: float | None = None
    seconds: float = 0.0
    stop: dict | None = None
    """CG's discrepancy stopping rule: tau, the misfit target, the misfit per iteration."""

    def as_dict(self) -> dict:
        return {"method": self.method, "iterations": self.iterations, "max_iter": self.max_iter, "tol": self.tol,
                "converged": self.converged, "lambda": self.lam, "lambda_relative_to_noise": self.lam_relative,
                "residuals": [float(f"{r:.6g}") for r in self.residuals], "seconds": round(self.seconds, 3),
                **({"stop": self.stop} if self.stop else {})}


class SenseProblem:
    """The SENSE least-squares problem for one trajectory; reuse it for every echo.

    Args:
        op: the transform (`operators.make_nufft`, or any object with `shape`, `coord_shape`,
            `forward`/`adjoint` of a batch of coil images and `normal(x, weights)`) for coord
            (nreadout, nsample, ndim) in cycles/FOV.
        coord: the plan's coordinates (DCF normalisation and the Toeplitz kernel).
        maps: (ncoil, *shape) sensitivities (unit norm over coils inside the object), or None for a
            single coil with unit sensitivity. With `basis`: the virtual maps (nv, *shape).
        dcf: (nreadout, nsample) density compensation, any scale, or None for no weighting.
        decay: (nsample,) or (nreadout, nsample) per-sample signal factor d (`decay_weights`).
        apodise: per-sample factor a on the data: the problem fits a y (`recon.decay`'s target decay:
            with the decay model, the image is the object seen through a's k-space window).
        basis: (ncoil, nv) with orthonormal columns: the coils' maps are basis @ maps
            (`maps.estimate_map_factors`). Then E x = basis (A S_v x) and ||W^1/2 (E x - y)||^2 =
            ||W^1/2 (A S_v x - basis^H y)||^2 + a constant, so the problem over all ncoil channels
            is solved exactly on nv virtual coils (the data are projected once, in `rhs`).
    """

    def __init__(self, op, coord: np.ndarray, maps: np.ndarray | None, dcf: np.ndarray | None,
                 decay: np.ndarray | None = None, basis: np.ndarray | None = None,
                 apodise: np.ndarray | None = None) -> None:
        self.op = op
        shape = tuple(op.shape)
        self.shape = shape
        self.maps = np.ones((1,) + shape, np.complex64) if maps is None else np.asarray(maps, np.complex64)
        if self.maps.shape[1:] != shape:
            raise ValueError(f"maps have shape {self.maps.shape} but the image is {shape}")
        self.basis = None if basis is None else np.asarray(basis, np.complex64)
        if self.basis is not None and self.basis.shape[1] != self.maps.shape[0]:
            raise ValueError(f"basis {self.basis.shape} does not fit {self.maps.shape[0]} virtual maps")
        cs = tuple(op.coord_shape)
        w = np.ones(cs, np.float32) if dcf is None else normalise_dcf(dcf, coord)
        d = np.ones(cs, np.float32) if decay is None else np.broadcast_to(np.asarray(decay, np.float32), cs)
        a = np.ones(cs, np.float32) if apodise is None else np.broadcast_to(np.asarray(apodise, np.float32), cs)
        self.w = w
        self.wa2 = (w * a * a).astype(np.float32)  # the weights of the apodised data's energy and noise
        self.wd = (w * d * a).astype(np.float32)  # applied to the data: E^H W (a y) with E = D A S
        self.w_normal = (w * d * d).astype(np.float32)
        self.decay = None if decay is None else d
        self.normal = normal_operator(op, coord, self.w_normal)  # A^H W A on one image, Toeplitz
        self.T = _OneImage(self.normal, shape)
        self.N = SenseNormal(self.maps, self.normal)
        self._lipschitz = None

    @property
    def ncoil(self) -> int:
        """Coils of the data (the physical channels when the maps come with a basis)."""
        return self.maps.shape[0] if self.basis is None else self.basis.shape[0]

    def rhs(self, y: np.ndarray) -> np.ndarray:
        """b = E^H W y for k-space y (ncoil, *coord_shape): complex64 (*shape), coil by coil."""
        y = np.asarray(y)
        if y.shape != (self.ncoil,) + tuple(self.op.coord_shape):
            raise ValueError(f"k-space has shape {y.shape} but the problem expects "
                             f"{(self.ncoil,) + tuple(self.op.coord_shape)}")
        if self.basis is not None:
            y = np.tensordot(self.basis.conj().T, y.astype(np.complex64, copy=False), axes=(1, 0))
        return adjoint_coils(self.op, y, self.wd, self.maps)

    def data_energy(self, y: np.ndarray) -> float:
        """1/2 y^H W y (the objective at x = 0), accumulated in float64 coil by coil (no double-precision
        copy of every channel: 32 channels of a 7 T scan are 1.7 GB in complex128)."""
        y = np.asarray(y)
        w = self.wa2.ravel().astype(np.float64)
        total = 0.0
        rows = y.reshape(y.shape[0], -1) if y.ndim > 1 else y[None]
        for yc in rows:
            total += float(np.dot(w, yc.real.astype(np.float64) ** 2) + np.dot(w, yc.imag.astype(np.float64) ** 2))
        return 0.5 * total

    def noise_misfit(self, noise_sd: float) -> float:
        """Expected ||W^1/2 n||^2 of white k-space noise n with SD `noise_sd` per real/imaginary
        part over all coils: 2 noise_sd^2 ncoil sum(W)."""
        return float(2.0 * noise_sd ** 2 * self.ncoil * np.sum(self.wa2, dtype=np.float64))

    def image_noise_sd(self, noise_sd: float) -> float:
        """SD (real part) of the noise in E^H W y for k-space noise SD `noise_sd` (real part, white)."""
        n = float(np.prod(self.shape))
        return float(noise_sd * np.sqrt(np.sum(self.wd.astype(np.float64) ** 2) / n))

    def lipschitz(self, iters: int = 20, rtol: float = 0.01) -> float:
        """Estimate of ||E^H W E||: power iteration (`sigpy.alg.PowerMethod`) on the single-coil
        A^H W A (cheap: one coil), times max_r sum_c |S_c(r)|^2, with a 10% margin. Radial
        undersampling makes it several times 1 (sparse outer spokes with large weights), which sets
        the CS step size. The iteration stops once the estimate changes by less than `rtol` (the
        margin covers that): typically after 5-8 of the `iters` applications. `sigpy.app.MaxEig`
        would always run all of them (it has no tolerance), so the loop over PowerMethod is here."""
        if self._lipschitz is None:
            smax = float(np.max(np.sum(np.abs(self.maps) ** 2, axis=0)))
            x = np.random.default_rng(0).standard_normal(self.shape).astype(np.complex64)
            x /= np.float32(_norm(x))  # unit start: every estimate is ||T x|| / ||x||
            alg = sp.alg.PowerMethod(self.T, x, max_iter=iters)
            prev = 0.0
            while not alg.done():
                alg.update()
                lam = float(alg.max_eig)
                if alg.iter >= 4 and abs(lam - prev) <= rtol * lam:
                    break
                prev = lam
            self._lipschitz = 1.1 * lam * smax
            log.info("Lipschitz estimate of E^H W E: %.3g", self._lipschitz)
        return self._lipschitz


class _OneImage(sp.linop.Linop):
    """A callable x (*shape) -> (*shape) as a sigpy Linop (self-adjoint: A^H W A)."""

    def __init__(self, fn, shape) -> None:
        self.fn = fn
        super().__init__(tuple(shape), tuple(shape))

    def _apply(self, input: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(input, np.complex64))

    def _adjoint_linop(self) -> sp.linop.Linop:
        return self


# ------------------------------------------------------------------------------------ CG
class _LoggedCG(sp.alg.ConjugateGradient):
    """`sigpy.alg.ConjugateGradient` (no preconditioner) that also records the quadratic objective.

    For A = E^H W E + lam I and b = E^H W y the objective f(x) = 1/2 ||W^1/2(Ex - y)||^2 +
    lam/2 ||x||^2 equals c - 1/2 Re x^H (b + r) with r = b - A x and c = 1/2 y^H W y; a CG step
    x + alpha p (alpha = r^H r / p^H A p, p^H r = r^H r) lowers it by alpha r^H r / 2, so it is
    logged without an extra operator application (sigpy does not update r on its last step).
    """

    def __init__(self, A, b: np.ndarray, x: np.ndarray, c: float, max_iter: int, tol: float,
                 lam: float = 0.0, stop_misfit: float | None = None) -> None:
        self.bnorm = max(_norm(b), 1e-30)
        super().__init__(A, b, x, max_iter=max_iter, tol=tol * self.bnorm)  # sigpy's tol is absolute
        self.f = float(c) - 0.5 * (_vdot(x, b).real + _vdot(x, self.r).real)
        self.objective: list[float] = []
        self.misfit: list[float] = []
        self.lam = float(lam)
        self.stop_misfit = stop_misfit
        self.stopped_by_discrepancy = False

    def _update(self) -> None:
        rr = float(self.rzold)
        super()._update()
        if not self.not_positive_definite:
            self.f -= 0.5 * float(self.alpha) * rr
            self.objective.append(self.f)
            # ||W^1/2(Ex - y)||^2 = 2 f - lam ||x||^2 (one image-sized norm, no operator)
            self.misfit.append(max(2.0 * self.f - self.lam * _norm(self.x) ** 2, 0.0))
            if self.stop_misfit is not None and self.misfit[-1] <= self.stop_misfit:
                self.stopped_by_discrepancy = True

    def _done(self) -> bool:
        return self.stopped_by_discrepancy or super()._done()


# ----------------------------------------------------------------------------------- TV
def forward_difference(shape) -> sp.linop.Linop:
    """G: forward differences with periodic wrap along every image axis, (*shape) -> (ndim, *shape):
    (G x)_a = roll(x, -1, a) - x, built from sigpy's Circshift and Identity (G^H = -div for free).

    Not `sigpy.linop.FiniteDifference`: that is the backward difference x - roll(x, 1, a), whose
    components at a voxel pair it with its lower neighbours, so its isotropic ||.||_{2,1} is the
    mirrored TV and the iterates differ; the fused `tv_kernels` step computes this forward one.
    """
    shape = tuple(int(s) for s in shape)
    eye = sp.linop.Identity(shape)
    rows = [sp.linop.Reshape((1,) + shape, shape) * (sp.linop.Circshift(shape, [-1], axes=[a]) - eye)
            for a in range(len(shape))]
    return sp.linop.Vstack(rows, axis=0)


class PrimalDualGradient(sp.alg.Alg):
    """min_x f(x) + lam ||G x||_{2,1} with grad f(x) = N x - b (Condat-Vu primal-dual iteration).

    x+ = x - tau (N x - b + G^H u);   u+ = proj_{|u_v| <= lam}(u + sigma G (2 x+ - x)).
    Converges for 1/tau - sigma ||G||^2 >= L/2 (L = ||N||, ||G||^2 <= 4 ndim); we take
    tau = 1/L, sigma = L / (8 ndim). Logs the objective f(x) + lam TV(x) at every iterate (f from
    the gradient already computed: f = c + 1/2 Re x^H (grad - b)). Stops when the relative
    change ||x+ - x|| / ||x+|| <= tol.
    """

    def __init__(self, N, b: np.ndarray, x: np.ndarray, lam: float, lipschitz: float, c: float,
                 max_iter: int = 30, tol: float = 0.0) -> None:
        self.N, self.b, self.x, self.lam = N, b, x, float(lam)
        self.G = forward_difference(x.shape)
        ndim = x.ndim
        self.tau = 1.0 / lipschitz
        self.sigma = lipschitz / (8.0 * ndim)
        self.u = np.zeros((ndim,) + x.shape, np.complex64)
        self.c, self.tol = float(c), float(tol)
        self.objective: list[float] = []
        self.change = np.inf
        super().__init__(max_iter)

    def _update(self) -> None:
        x = self.x
        grad = self.N(x) - self.b
        if fused_available(x, self.u):  # same step, two memory passes instead of ~15
            x_new = np.empty_like(x)
            tv, dch, nrm = pdhg_tv_step3(np.ascontiguousarray(x), np.ascontiguousarray(grad, np.complex64), self.u,
                                         np.float32(self.tau), np.float32(self.sigma), self.lam, x_new)
            self.objective.append(self.c + 0.5 * _vdot(x, grad - self.b).real + self.lam * tv)
            self.change = float(np.sqrt(dch) / max(np.sqrt(nrm), 1e-30))
            self.x = x_new
            return
        gx = self.G(x)
        tv = float(np.sum(np.sqrt(np.sum(np.abs(gx) ** 2, axis=0))))
        self.objective.append(self.c + 0.5 * _vdot(x, grad - self.b).real + self.lam * tv)
        x_new = x - np.complex64(self.tau) * (grad + self.G.H(self.u))
        u = self.u + np.complex64(self.sigma) * self.G(2 * x_new - x)
        mag = np.sqrt(np.sum(np.abs(u) ** 2, axis=0))
        u /= np.maximum(1.0, mag / max(self.lam, 1e-30)).astype(np.float32)
        self.u = u
        self.change = _norm(x_new - x) / max(_norm(x_new), 1e-30)
        self.x = x_new

    def _done(self) -> bool:
        return self.iter >= self.max_iter or self.change <= self.tol


# ------------------------------------------------------------------------------- drivers
def _run(alg: sp.alg.Alg, desc: str, progress: bool | None) -> float:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    # disable=None: tqdm stays quiet when stderr is not a terminal
    with tqdm(total=alg.max_iter, desc=desc, disable=None if progress is None else not progress, leave=False) as bar:
        while not alg.done():
            alg.update()
            bar.update(1)
    return time.perf_counter() - t0


def cg_sense(problem: SenseProblem, y: np.ndarray, lam: float = 0.0, max_iter: int = 20, tol: float = 1e-4,
             x0: np.ndarray | None = None, progress: bool | None = None, noise_sd: float | None = None,
             discrepancy: float | None = None) -> tuple[np.ndarray, IterLog]:
    """CG-SENSE (Pruessmann et al. 2001): x = argmin 1/2 ||W^1/2(E x - y)||^2 + lam/2 ||x||^2.

    y: (ncoil, nreadout, nsample) k-space; lam: Tikhonov weight, absolute (E^H W E ~ I, so lam is
    relative to 1). From x = 0 the first CG iterate is the scaled DCF adjoint E^H W y; later ones
    sharpen the PSF and unfold aliasing but also amplify noise. With `noise_sd` (k-space noise SD
    per real/imaginary part after whitening) and `discrepancy` = tau, the iteration stops at the
    first iterate whose weighted data misfit ||W^1/2(E x - y)||^2 is at most tau times the noise's
    expected share 2 noise_sd^2 ncoil sum(W): Morozov's discrepancy principle as the stopping rule
    of CG for ill-posed problems (Hanke, Conjugate Gradient Type Methods for Ill-Posed Problems,
    Longman 1995), so the data are never fitted closer than their noise. Returns (complex64 image
    (*shape), IterLog with the relative weighted residual sqrt(2 objective / y^H W y) per
    iteration and, when the rule is on, the misfit target and whether it stopped the iteration).
    """
    b = problem.rhs(y)
    c = problem.data_energy(y)
    x = np.zeros(problem.shape, np.complex64) if x0 is None else np.asarray(x0, np.complex64).copy()
    A = problem.N if not lam else problem.N + lam * sp.linop.Identity(problem.shape)
    target = None
    if discrepancy is not None and noise_sd is not None and noise_sd > 0:
        target = float(discrepancy) * problem.noise_misfit(noise_sd)
    alg = _LoggedCG(A, b, x, c, max_iter=max_iter, tol=tol, lam=float(lam), stop_misfit=target)
    secs = _run(alg, "CG-SENSE", progress)
    res = [float(np.sqrt(max(2 * o, 0.0) / max(2 * c, 1e-30))) for o in alg.objective]
    # alg.resid is ||b - A x|| before the last step when max_iter ran out: `converged` errs on no
    logd = IterLog("cg", iterations=alg.iter, max_iter=max_iter, tol=tol, residuals=res, lam=float(lam),
                   converged=bool(alg.resid <= tol * alg.bnorm or alg.stopped_by_discrepancy), seconds=secs)
    if target is not None:
        logd.stop = {"rule": "discrepancy", "tau": float(discrepancy), "misfit_target": target,
                     "misfit": [float(f"{m:.6g}") for m in alg.misfit],
                     "stopped_by_discrepancy": alg.stopped_by_discrepancy}
    return alg.x, logd


def cs_tv(problem: SenseProblem, y: np.ndarray, lam: float, max_iter: int = 30, tol: float = 1e-4,
          x0: np.ndarray | None = None, progress: bool | None = None) -> tuple[np.ndarray, IterLog]:
    """Compressed sensing with 3D isotropic total variation (Block et al. 2007; Chambolle-Pock PDHG).

    min_x 1/2 ||W^1/2(E x - y)||^2 + lam TV(x); lam in image units (see `SenseProblem.image_noise_sd`).
    Starts from the CG-free E^H W y (x0 overrides). Returns (complex64 image, IterLog with the
    objective per iteration relative to its first value).
    """
    b = problem.rhs(y)
    c = problem.data_energy(y)
    x = b.copy() if x0 is None else np.asarray(x0, np.complex64).copy()
    alg = PrimalDualGradient(problem.N, b, x, lam, problem.lipschitz(), c, max_iter=max_iter, tol=tol)
    secs = _run(alg, "CS-TV", progress)
    obj0 = alg.objective[0] if alg.objective else 1.0
    logd = IterLog("cs-tv", iterations=alg.iter, max_iter=max_iter, tol=tol, lam=float(lam), seconds=secs,
                   residuals=[o / obj0 for o in alg.objective], converged=alg.change <= tol)
    return alg.x, logd


def cs_wavelet(problem: SenseProblem, y: np.ndarray, lam: float, max_iter: int = 30, tol: float = 1e-4,
               wave_name: str = "db4", x0: np.ndarray | None = None,
               progress: bool | None = None) -> tuple[np.ndarray, IterLog]:
    """Compressed sensing with L1 in an orthogonal wavelet basis (Lustig et al. 2007), FISTA.

    min_x 1/2 ||W^1/2(E x - y)||^2 + lam ||Psi x||_1 with sigpy's `Wavelet` (Daubechies `wave_name`)
    and soft-thresholding prox; step 1/L. The log holds the objective at the gradient points
    (FISTA's extrapolated iterates) relative to the first.
    """
    b = problem.rhs(y)
    c = problem.data_energy(y)
    x = b.copy() if x0 is None else np.asarray(x0, np.complex64).copy()
    W = sp.linop.Wavelet(problem.shape, wave_name=wave_name)
    proxg = sp.prox.UnitaryTransform(sp.prox.L1Reg(W.oshape, lam), W)
    objective: list[float] = []

    def gradf(v: np.ndarray) -> np.ndarray:
        g = problem.N(v) - b
        objective.append(c + 0.5 * _vdot(v, g - b).real + lam * float(np.sum(np.abs(W(v)))))
        return g

    alg = sp.alg.GradientMethod(gradf, x, 1.0 / problem.lipschitz(), proxg=proxg, accelerate=True,
                                max_iter=max_iter, tol=tol)
    secs = _run(alg, "CS-wavelet", progress)
    obj0 = objective[0] if objective else 1.0
    logd = IterLog("cs-wavelet", iterations=alg.iter, max_iter=max_iter, tol=tol, lam=float(lam), seconds=secs,
                   residuals=[o / obj0 for o in objective], converged=alg.iter < max_iter)
    return np.asarray(alg.x, np.complex64), logd
