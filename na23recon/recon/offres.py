"""The NUFFT with B0 off-resonance and readout decay: time-segmented encoding and its Toeplitz normal.

Signal model of a sample at time t (s from the first sample of the readout) and position k:

    y(k, t) = d(t) sum_r x(r) exp(+2 pi i f(r) t) exp(-2 pi i k.r)

with f the field map in Hz at the sodium frequency (the sign of the simulator, `sim.scan`: a
positive offset advances the phase), d(t) the T2* decay (`solvers.decay_weights`, 1 without a
decay model). The phase at the first sample, exp(2 pi i f TE), is a voxel-wise constant that the
complex image absorbs. The exponential is split into L temporal and spatial factors (time
segmentation with least-squares interpolators: Sutton, Noll & Fessler, IEEE TMI 2003; Man, Pauly
& Macovski, MRM 1997 for multi-frequency interpolation):

    exp(2 pi i f t) ~ sum_l b_l(t) c_l(f),   c_l(f) = exp(2 pi i f tau_l),

tau_l evenly spaced over the readout and b(t) = argmin sum_f h(f) |exp(2 pi i f t) - sum_l b_l(t)
c_l(f)|^2 over the histogram h of the map. Then

    A x = sum_l (d b_l) .* F(c_l .* x),          A^H y = sum_l conj(c_l) .* F^H(conj(d b_l) .* y)

(F the plain NUFFT; the adjoint with the density weights is the conjugate-phase reconstruction,
Noll, Meyer, Pauly, Nishimura & Macovski, IEEE TMI 1991), and the weighted normal operator is

    A^H W A x = sum_{l, l'} conj(c_l) .* T[w conj(d b_l) d b_l'] (c_l' .* x),

each T a Toeplitz operator with complex weights (Fessler, Lee, Olafsson, Shi & Noll, IEEE TSP
2005): the kernels of the L(L+1)/2 pairs l <= l' (K_l'l = conj(K_ll')) are computed once per
weight vector, from the PSFs of a low-rank basis of the pair weights w conj(d b_l) d b_l' (their
leading singular vectors over the samples: the products of L interpolators span about 2L - 1
difference frequencies, so about 2L - 1 PSF NUFFTs instead of L(L+1)/2), and one application
costs L padded forward FFTs and L inverse ones. The number of
segments L is the smallest whose worst relative RMS interpolation error over the readout is below
`tol` (capped at `MAX_SEGMENTS`), or a given one.

Intravoxel dephasing: with a field map finer than the image grid, each voxel v holds S sub-voxel
frequencies f_vs and its temporal response is the mean h_v(t) = mean_s exp(2 pi i f_vs t) (the
voxel-integrated signal model of Fessler & Noll, Proc IEEE ISBI 2007, through-plane field
inhomogeneity, here in 3D with the voxel's own sampled field instead of a linear gradient). The
segmentation then takes c_l(v) = h_v(tau_l) and fits b(t) over the histogram of all sub-voxel
frequencies: by linearity sum_l b_l(t) h_v(tau_l) = mean_s sum_l b_l(t) exp(2 pi i f_vs tau_l),
so each voxel's error is at most the mean of its sub-voxels' interpolation errors and the same
`tol` bounds it. A complex frequency nu = f + i r (r = R2*/(2 pi) Hz, r >= 0) gives exp(2 pi i nu
t) = exp(2 pi i f t - R2* t): a per-voxel (or per-sub-voxel) decay in the same spatial factors.
S = 1 (a map on the image grid) is the one-frequency-per-voxel model above.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.fft

from ..nufft import Nufft
from ..nufft.linop import NufftNormalLinop
from ..threads import default_threads

log = logging.getLogger(__name__)

__all__ = ["KERNEL_RANK_TOL", "MAX_SEGMENTS", "SegmentBasis", "segment_basis", "OffResNufft"]

MAX_SEGMENTS = 32
_NBINS = 256
_NBINS_DECAY = 16
_PSF_BATCH = 3
KERNEL_RANK_TOL = 1e-5
"""Relative energy (Frobenius) of the segment-pair weights that the low-rank kernel basis may leave out."""


class SegmentBasis:
    """Time segmentation of exp(2 pi i f t): tau (L,) s, b (L, *t.shape) complex64 temporal
    interpolators, and `error`: the worst relative RMS error over t of the interpolation over the map."""

    def __init__(self, tau: np.ndarray, b: np.ndarray, error: float) -> None:
        self.tau, self.b, self.error = tau, b, float(error)

    @property
    def nseg(self) -> int:
        return int(self.tau.shape[0])

    def spatial(self, fmap_hz: np.ndarray, subvoxel: bool = False) -> np.ndarray:
        """c (L, *shape) complex64 = exp(2 pi i f tau_l) for a map of `shape`, or with `subvoxel` (map
        (*shape, S): S frequencies per voxel) the voxel's response mean_s exp(2 pi i f_s tau_l)."""
        f = np.asarray(fmap_hz)
        f = f.astype(np.complex128 if np.iscomplexobj(f) else np.float64)
        shape = f.shape[:-1] if subvoxel else f.shape
        flat = f.reshape(int(np.prod(shape)), -1)
        out = np.empty((self.nseg, flat.shape[0]), np.complex64)
        step = max(1, (1 << 22) // flat.shape[1])
        for seg, tl in enumerate(self.tau):  # chunked: S sub-voxels per voxel can make (L, V, S) large
            for v0 in range(0, flat.shape[0], step):
                out[seg, v0:v0 + step] = np.mean(np.exp(2j * np.pi * tl * flat[v0:v0 + step]), axis=1)
        return out.reshape((self.nseg,) + shape)


def _fit(freqs: np.ndarray, hist: np.ndarray, t_unique: np.ndarray, nseg: int):
    t0, t1 = float(t_unique.min()), float(t_unique.max())
    tau = np.array([0.5 * (t0 + t1)]) if nseg == 1 else np.linspace(t0, t1, nseg)
    sw = np.sqrt(hist / hist.sum())[:, None]
    c = np.exp(2j * np.pi * freqs[:, None] * tau[None])         # (nbin, L)
    e = np.exp(2j * np.pi * freqs[:, None] * t_unique[None])    # (nbin, nt)
    b, *_ = np.linalg.lstsq(sw * c, sw * e, rcond=1e-10)        # (L, nt)
    err = np.sqrt(np.sum(np.abs(sw * (c @ b - e)) ** 2, axis=0)
                  / np.maximum(np.sum(np.abs(sw * e) ** 2, axis=0), 1e-30))  # relative per t (|e| = 1 without decay)
    return tau, b, float(err.max())


def _histogram(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, counts) of the frequencies f, real (the distinct values when there are at most
    `_NBINS`, else `_NBINS` bins) or complex (f + i r: a 2D histogram, `_NBINS` x `_NBINS_DECAY`
    bins), empty bins dropped."""
    if np.iscomplexobj(f) and np.ptp(f.imag) > 1e-9:
        hist, ex, ey = np.histogram2d(f.real, f.imag, bins=(_NBINS if np.ptp(f.real) > 1e-6 else 1, _NBINS_DECAY))
        cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
        freqs = (cx[:, None] + 1j * cy[None]).ravel()
        hist = hist.ravel()
        keep = hist > 0
        return freqs[keep], hist[keep].astype(np.float64)
    shift = 1j * float(f.imag.flat[0]) if np.iscomplexobj(f) and f.imag.flat[0] != 0 else 0.0  # one decay rate
    re = f.real
    lo, hi = float(np.min(re)), float(np.max(re))
    if hi - lo < 1e-6:
        return np.array([lo + shift]), np.array([1.0])
    vals, counts = np.unique(re, return_counts=True)
    if vals.size <= _NBINS:  # a few distinct values (a piecewise-constant map): exactly those
        return vals + shift, counts.astype(np.float64)
    hist, edges = np.histogram(re, bins=_NBINS, range=(lo, hi))
    freqs = 0.5 * (edges[1:] + edges[:-1]) + shift
    keep = hist > 0
    return freqs[keep], hist[keep].astype(np.float64)


def segment_basis(fmap_hz: np.ndarray, t_s: np.ndarray, nseg: int | None = None, tol: float = 0.01,
                  mask: np.ndarray | None = None) -> SegmentBasis:
    """The time segmentation of exp(2 pi i f t) for field map f (Hz) and sample times t (s).

    Args:
        fmap_hz: the field on the image grid, or (*shape, S): S sub-voxel frequencies per voxel (every
            one counts in the histogram); complex: f + i R2*/(2 pi), a decay with the field.
        t_s: (nsample,) or (nreadout, nsample) time of each sample from the readout start.
        nseg: number of segments, or None: the smallest L (1..MAX_SEGMENTS) whose interpolation error
            (relative RMS over the map's histogram, worst over t) is at most `tol`.
        mask: voxels whose frequencies count (default all).
    """
    f = np.asarray(fmap_hz)
    f = f.astype(np.complex128 if np.iscomplexobj(f) else np.float64)
    f = f[mask] if mask is not None and np.any(mask) else f
    freqs, hist = _histogram(f.ravel())
    t = np.asarray(t_s, np.float64)
    tu, inv = np.unique(np.round(t.ravel(), 12), return_inverse=True)
    if nseg is None:
        for L in range(1, MAX_SEGMENTS + 1):
            tau, b, err = _fit(freqs, hist, tu, L)
            if err <= tol:
                break
        else:
            log.warning("off-resonance: %d segments leave an interpolation error of %.3g (tolerance %.3g)",
                        MAX_SEGMENTS, err, tol)
    else:
        tau, b, err = _fit(freqs, hist, tu, int(nseg))
    return SegmentBasis(tau, b[:, inv].reshape((b.shape[0],) + t.shape).astype(np.complex64), err)


class OffResNufft:
    """The NUFFT `op` with the off-resonance (and decay) model: the plan's interface (shape,
    coord_shape, forward, adjoint, normal, normal_linop) for the SENSE problem and the adjoint.

    Args:
        op: the plain NUFFT plan (`operators.make_nufft`) of coord.
        coord: (nreadout, nsample, ndim) cycles/FOV.
        fmap_hz: the field map on the image grid op.shape, Hz, or (*op.shape, S): S sub-voxel frequencies
            per voxel (intravoxel dephasing, `recon.b0.resample_b0_map` of a finer map); complex values
            f + i R2*/(2 pi) add a per-voxel decay.
        t_s: (nsample,) or (nreadout, nsample) sample times from the readout start, s.
        decay: None or the per-sample factor d (broadcast to coord_shape).
        nseg: number of segments (None: chosen, `segment_basis`).
        toeplitz: False: `normal` applies forward then adjoint (2L NUFFTs) instead of the kernels.
        mask: voxels whose frequencies set the segmentation.
    """

    def __init__(self, op, coord: np.ndarray, fmap_hz: np.ndarray, t_s: np.ndarray, decay: np.ndarray | None = None,
                 nseg: int | None = None, toeplitz: bool = True, tol: float = 0.01,
                 mask: np.ndarray | None = None) -> None:
        self.op = op
        self.coord = np.asarray(coord)
        self.shape = tuple(op.shape)
        self.coord_shape = tuple(op.coord_shape)
        fshape = tuple(np.shape(fmap_hz))
        self.subvoxel = 1 if fshape == self.shape else fshape[-1]
        if fshape[:len(self.shape)] != self.shape or len(fshape) - len(self.shape) not in (0, 1):
            raise ValueError(f"field map has shape {fshape} but the image is {self.shape}")
        self.basis = segment_basis(fmap_hz, t_s, nseg=nseg, tol=tol, mask=mask)
        b = self.basis.b
        b = b.reshape(b.shape[:1] + (1,) * (len(self.coord_shape) + 1 - b.ndim) + b.shape[1:])
        b = np.broadcast_to(b, (self.nseg,) + self.coord_shape)
        if decay is not None:
            d = np.asarray(decay, np.float32)
            b = b * np.broadcast_to(d.reshape((1,) * (len(self.coord_shape) - d.ndim) + d.shape), self.coord_shape)
        self.b = np.ascontiguousarray(b, np.complex64)            # (L, *coord_shape): d b_l
        self.c = self.basis.spatial(fmap_hz, subvoxel=len(fshape) > len(self.shape))  # (L, *shape)
        self.toeplitz = bool(toeplitz)
        self._kernels: tuple | None = None  # (weights key, kernels)
        self.kernel_nuffts = 0  # PSF NUFFTs the last kernel set took (the rank of the pair weights)
        self.rank_tol = KERNEL_RANK_TOL  # 0: one PSF per segment pair (full rank)
        fr = np.real(fmap_hz)
        log.info("off-resonance model: %d time segments, interpolation error %.2g, field %.1f..%.1f Hz%s%s",
                 self.nseg, self.basis.error, float(np.min(fr)), float(np.max(fr)),
                 f", intravoxel dephasing ({self.subvoxel} sub-voxel frequencies per voxel)" if self.subvoxel > 1 else "",
                 ", with decay" if decay is not None else "")

    @property
    def nseg(self) -> int:
        return self.basis.nseg

    def describe(self) -> dict:
        """For the sidecar's `recon.b0_model`."""
        return {"segments": self.nseg, "interpolation_error": float(f"{self.basis.error:.3g}"),
                "segment_times_ms": [round(float(v) * 1e3, 4) for v in self.basis.tau],
                "voxel_model": (f"intravoxel dephasing: mean response of {self.subvoxel} sub-voxel frequencies"
                                if self.subvoxel > 1 else "one frequency per voxel"),
                "normal": "toeplitz (per segment pair)" if self.toeplitz else "nufft pair"}

    # -------------------------------------------------------------------------- transforms
    def forward(self, x: np.ndarray) -> np.ndarray:
        """complex (..., *shape) -> (..., *coord_shape)."""
        x = np.asarray(x, np.complex64)
        lead = x.shape[: x.ndim - len(self.shape)]
        out = np.zeros(lead + self.coord_shape, np.complex64)
        for cl, bl in zip(self.c, self.b):
            out += bl * self.op.forward(cl * x)
        return out

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """complex (..., *coord_shape) -> (..., *shape): the conjugate-phase adjoint."""
        y = np.asarray(y, np.complex64)
        lead = y.shape[: y.ndim - len(self.coord_shape)]
        out = np.zeros(lead + self.shape, np.complex64)
        for cl, bl in zip(self.c, self.b):
            out += np.conj(cl) * self.op.adjoint(np.conj(bl) * y)
        return out

    def normal(self, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """A^H diag(w) A x for complex (..., *shape)."""
        x = np.asarray(x, np.complex64)
        w = np.ones(self.coord_shape, np.float32) if weights is None else np.asarray(weights)
        if not self.toeplitz:
            return self.adjoint(w * self.forward(x))
        kern = self._kernels_for(w)
        lead = x.shape[: x.ndim - len(self.shape)]
        xb = x.reshape((-1,) + self.shape)
        out = np.empty_like(xb)
        for i in range(xb.shape[0]):
            out[i] = self._apply_kernels(kern, xb[i])
        return out.reshape(lead + self.shape)

    def normal_linop(self, weights: np.ndarray | None = None) -> NufftNormalLinop:
        return NufftNormalLinop(self, (), weights)

    # --------------------------------------------------------------------------- Toeplitz
    def _kernels_for(self, w: np.ndarray) -> dict:
        key = (id(w), float(np.sum(w, dtype=np.float64)))
        if self._kernels is not None and self._kernels[0] == key:
            return self._kernels[1]
        L, shape = self.nseg, self.shape
        pairs = [(i, j) for i in range(L) for j in range(i, L)]
        coef, prods = self._product_basis(w, pairs)  # w conj(b_i) b_j ~ sum_r coef[pair, r] prods[r]
        big = tuple(2 * n for n in shape)
        threads = default_threads()
        op2 = Nufft(2.0 * self.coord.reshape(-1, len(shape)).astype(np.float64), big,
                    eps=min(float(getattr(self.op, "eps", 1e-3)), 1e-4), threads=threads)
        scale = np.float32(np.sqrt(float(np.prod(big))) / float(np.prod(shape)))
        base = []
        for p0 in range(0, len(prods), _PSF_BATCH):  # a few at a time: each holds an oversampled (4N)^3 grid
            psf = op2.adjoint(np.ascontiguousarray(prods[p0:p0 + _PSF_BATCH]))  # centred: m <-> d = m - N
            for h in psf:
                h = np.fft.ifftshift(h * scale)
                for a, n in enumerate(shape):  # d = -N never enters the convolution
                    idx = [slice(None)] * len(shape)
                    idx[a] = n
                    h[tuple(idx)] = 0
                base.append(scipy.fft.fftn(h, workers=threads).astype(np.complex64))
            del psf
        del op2
        kern = {}
        for p, pr in enumerate(pairs):
            k = np.zeros_like(base[0])
            for r, kr in enumerate(base):
                if coef[p, r] != 0:
                    k += np.complex64(coef[p, r]) * kr
            kern[pr] = k
        del base
        self._kernels = (key, kern)
        self.kernel_nuffts = len(prods)
        return kern

    def _product_basis(self, w: np.ndarray, pairs: list) -> tuple[np.ndarray, np.ndarray]:
        """A low-rank basis of the pair weights P_p = w conj(b_i) b_j (p = (i, j), i <= j): (coef (npair,
        R), prods (R, M) complex64) with P ~ coef @ prods, R the fewest left singular vectors that keep
        all but KERNEL_RANK_TOL of P's energy (relative Frobenius). The products of L segment
        interpolators span about 2L - 1 difference frequencies, so R ~ 2L - 1 < L (L + 1) / 2
        PSF NUFFTs for the kernels."""
        b = self.b.reshape(self.nseg, -1)
        wf = np.broadcast_to(np.asarray(w, np.float32), self.coord_shape).reshape(-1)
        ii = np.array([i for i, _ in pairs])
        jj = np.array([j for _, j in pairs])
        M, step = b.shape[1], 1 << 16
        gram = np.zeros((len(pairs), len(pairs)), np.complex128)
        for m0 in range(0, M, step):  # the Gram matrix P P^H, chunk by chunk
            pc = (wf[m0:m0 + step] * np.conj(b[ii, m0:m0 + step]) * b[jj, m0:m0 + step]).astype(np.complex128)
            gram += pc @ pc.conj().T
        ev, vec = np.linalg.eigh(gram)
        ev, vec = ev[::-1], vec[:, ::-1]
        tail = np.cumsum(ev[::-1])[::-1]  # tail[r]: energy left out when keeping r vectors
        total = max(float(tail[0]), 1e-300)
        R = next((r for r in range(1, len(ev) + 1) if r == len(ev) or tail[r] <= self.rank_tol**2 * total),
                 len(ev))
        V = vec[:, :R]
        prods = np.empty((R, M), np.complex64)
        for m0 in range(0, M, step):
            pc = wf[m0:m0 + step] * np.conj(b[ii, m0:m0 + step]) * b[jj, m0:m0 + step]
            prods[:, m0:m0 + step] = V.conj().T.astype(np.complex64) @ pc
        return V, prods

    def _apply_kernels(self, kern: dict, x: np.ndarray) -> np.ndarray:
        ndim, L, threads = len(self.shape), self.nseg, default_threads()
        fx = []
        for cl in self.c:
            y = cl * x
            for ax in range(-1, -ndim - 1, -1):  # zero-pad and transform axis by axis (pruned)
                y = scipy.fft.fft(y, n=2 * y.shape[ax], axis=ax, workers=threads)
            fx.append(y)
        out = np.zeros(self.shape, np.complex64)
        for i in range(L):
            acc = np.zeros(fx[0].size, np.complex64)
            for j in range(L):  # one pass each: acc += K_ij X_j with K_ij = conj(K_ji) below the diagonal
                _mac(acc, (kern[i, j] if i <= j else kern[j, i]).reshape(-1), fx[j].reshape(-1), i > j)
            acc = acc.reshape(fx[0].shape)
            for n, ax in zip(self.shape, range(-ndim, 0)):  # inverse, cropping each axis after its pass
                acc = scipy.fft.ifft(acc, axis=ax, workers=threads, overwrite_x=True)
                idx = [slice(None)] * ndim
                idx[ax] = slice(0, n)
                acc = acc[tuple(idx)]
            out += np.conj(self.c[i]) * acc
        return out


@numba.njit(parallel=True, cache=True)
def _mac(acc, k, x, conj):
    """acc += k * x, or conj(k) * x (flat complex64 arrays)."""
    if conj:
        for i in numba.prange(acc.shape[0]):
            acc[i] += np.conj(k[i]) * x[i]
    else:
        for i in numba.prange(acc.shape[0]):
            acc[i] += k[i] * x[i]
