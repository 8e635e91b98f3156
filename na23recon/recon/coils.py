"""Coil handling: noise prewhitening, coil compression, sensitivity maps and coil combination.

Shapes: k-space (ncoil, nreadout, nsample) complex64; trajectory coord (nreadout, nsample, 3) in
cycles/FOV; images (ncoil, x, y, z). Noise levels are the SD of the real (= imaginary) part of a
complex sample, as `sim.scan` adds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from ..errors import InputError
from .maps import calibration_images, espirit_maps, estimate_map_factors, estimate_maps, resample_maps, walsh_factors, walsh_maps

log = logging.getLogger(__name__)

__all__ = ["sum_of_squares", "noise_covariance", "noise_from_outer_kspace", "NoiseEstimate", "estimate_noise",
           "whitening_matrix", "prewhiten", "coil_compress", "compression_matrix", "compression_plan", "maps_rank",
           "calibration_images", "walsh_maps", "walsh_factors",
           "espirit_maps", "resample_maps", "estimate_map_factors", "estimate_maps", "combine"]


def sum_of_squares(images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root sum of squares over the coil axis: (ncoil, ...) complex -> (...) float32 magnitude."""
    return np.sqrt(np.sum(np.abs(images) ** 2, axis=axis)).astype(np.float32)


# ------------------------------------------------------------------------------------- noise
def noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Sample covariance Psi = X X^H / n of noise samples X (ncoil, n): complex128 (ncoil, ncoil).

    The samples' mean is removed first (a DC offset of the receiver is not noise).
    """
    x = np.asarray(noise)
    if x.ndim != 2 or x.shape[1] < 2 * x.shape[0]:
        raise InputError(f"noise samples must be (ncoil, n) with n >= 2 ncoil, got shape {x.shape}")
    x = x.astype(np.complex128) - x.mean(axis=1, keepdims=True)
    psi = x @ x.conj().T / x.shape[1]
    if not np.all(np.isfinite(psi)) or np.any(np.diag(psi).real <= 0):
        raise InputError("noise samples hold non-finite values or a channel without noise")
    return psi


def noise_from_outer_kspace(kspace: np.ndarray, coord: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Noise-like samples (ncoil, n): the samples beyond (1 - fraction) kmax, for scans without a
    noise-adjust scan. The object's signal there is small at sodium SNR, so the covariance is at
    most slightly overestimated (each part of the signal, not the noise, adds to it)."""
    r = np.sqrt(np.sum(np.asarray(coord, np.float64) ** 2, axis=-1))
    sel = r >= (1.0 - fraction) * r.max()
    return np.asarray(kspace)[:, sel]


@dataclass
class NoiseEstimate:
    """Coil noise of a scan: `psi` the covariance to whiten with (None: do not whiten), `sd` the
    noise SD per real/imaginary part (mean over channels), where it came from and why (sidecar)."""
    psi: np.ndarray | None
    sd: float
    source: str
    why: str | None = None
    details: dict = field(default_factory=dict)

    def sidecar(self) -> dict:
        out = {"source": self.source, "sd": float(self.sd), "prewhitened": self.psi is not None}
        if self.why:
            out["why"] = self.why
        return {**out, **self.details}


def _shells(coord: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the outermost `fraction` of the samples by |k| and of an inner band, the
    samples ranked 6 to 10 times `fraction` from the edge (|k| ~ 0.5-0.7 kmax on radial, where
    the object's signal is several times that at the edge)."""
    r = np.sqrt(np.sum(np.asarray(coord, np.float64) ** 2, axis=-1)).ravel()
    order = np.argsort(r, kind="stable")[::-1]
    m = max(int(round(fraction * r.size)), 1)
    return order[:m], order[6 * m:10 * m]


def estimate_noise(kspace: np.ndarray, coord: np.ndarray, noise: np.ndarray | None = None,
                   fraction: float = 0.05, k_sigma: float = 2.0) -> NoiseEstimate:
    """Coil noise covariance from samples that hold noise only, or no whitening.

    1. Noise-adjust samples (ncoil, n), when given: their covariance.
    2. Otherwise the outermost `fraction` of the samples by |k|, but only after checking that
       they hold no signal: white receiver noise is the same at every |k| while the object's
       signal falls with |k|, so a shell further in (`_shells`) must have the same covariance.
       The generalised eigenvalues mu of (Psi_inner, Psi_outer) are then 1 up to sampling
       error; for complex Gaussian samples (n per shell, p coils) the sample eigenvalues stay
       within (1 +- sqrt(p/n))^2 of the truth (Marchenko & Pastur, Math USSR-Sb 1967), so
       log mu_max > k_sigma (sqrt(p/n_out) + sqrt(p/n_in)) is taken as signal that grows
       towards the k-space centre, correlated between coils.
    3. Signal found (or no noise at all: noiseless data): no whitening (whitening with signal
       reshapes the combined image), a logged warning and the reason in the sidecar. The SD for
       the regularisation scale is then the mean of the outer shell's eigenvalues outside the
       signal directions (the count of mu above the threshold), or, with no such direction left,
       the least eigenvalue, an upper bound (signal adds to it; with one coil the shell's level).
    """
    y = np.asarray(kspace)
    nc = y.shape[0]
    if noise is not None:
        nz = np.asarray(noise)
        if nz.ndim == 2 and nz.shape[0] == nc and nz.shape[1] >= 2 * nc:
            try:
                psi = noise_covariance(nz)
                whitening_matrix(psi)
            except InputError as exc:  # a dead channel or no noise: go on unwhitened, say so
                log.warning("no prewhitening: %s", exc)
                sd = float(np.sqrt(np.mean(np.abs(nz) ** 2) / 2)) or 1e-12
                return NoiseEstimate(None, sd, "noise-adjust scan", str(exc))
            return NoiseEstimate(psi, float(np.sqrt(np.mean(np.diag(psi).real) / 2)), "noise-adjust scan")
        log.warning("noise-adjust samples of shape %s do not fit %d coils: not used", nz.shape, nc)
    flat = y.reshape(nc, -1)
    outer, inner = _shells(coord, fraction)
    if outer.size < 4 * nc or inner.size < 4 * nc:
        why = f"too few samples ({outer.size}) in the outer k-space for a {nc}-coil noise estimate"
        xo = flat[:, outer].astype(np.complex128)
        sd = float(np.sqrt(np.mean(np.abs(xo) ** 2) / 2))
        log.warning("no prewhitening: %s", why)
        return NoiseEstimate(None, sd, "outer k-space (upper bound)", why)
    xo, xi = flat[:, outer].astype(np.complex128), flat[:, inner].astype(np.complex128)
    p_out, p_in = xo @ xo.conj().T / xo.shape[1], xi @ xi.conj().T / xi.shape[1]
    ev_out = np.linalg.eigvalsh(p_out)
    thr = k_sigma * (np.sqrt(nc / xo.shape[1]) + np.sqrt(nc / xi.shape[1]))
    details = {"outer_samples": int(xo.shape[1]), "inner_samples": int(xi.shape[1]),
               "log_mu_threshold": round(float(thr), 4)}
    src = f"outermost {100 * fraction:g}% of k-space samples"
    if ev_out[-1] <= 0 or ev_out[0] <= 1e-9 * ev_out[-1]:
        why = "the outer k-space samples hold no noise in some coil combination (noiseless or degenerate data)"
        sd = float(np.sqrt(max(ev_out[0], 0.0) / 2)) or 1e-12
        log.warning("no prewhitening: %s", why)
        return NoiseEstimate(None, sd, src, why, {**details, "sd_from": "least outer eigenvalue"})
    mu = linalg.eigh(p_in, p_out, eigvals_only=True)
    nsig = int(np.sum(np.log(np.maximum(mu, 1e-30)) > thr))
    details["log_mu_max"] = round(float(np.log(mu.max())), 4)
    if nsig == 0:
        try:
            psi = noise_covariance(xo)
            whitening_matrix(psi)
        except InputError as exc:  # constant or degenerate "noise" (e.g. noiseless data): do not whiten
            log.warning("no prewhitening: %s", exc)
            sd = float(np.sqrt(max(ev_out[0], 0.0) / 2)) or 1e-12
            return NoiseEstimate(None, sd, src, str(exc), {**details, "sd_from": "least outer eigenvalue"})
        return NoiseEstimate(psi, float(np.sqrt(np.mean(np.diag(psi).real) / 2)), src + " (checked: no signal)",
                             None, details)
    if nsig < nc:
        sd, sd_from = float(np.sqrt(np.mean(ev_out[: nc - nsig]) / 2)), f"{nc - nsig} noise-only directions"
    else:  # noise is at most the least eigenvalue (with one coil: the shell's level)
        sd, sd_from = float(np.sqrt(ev_out[0] / 2)), "least outer eigenvalue (upper bound: holds signal)"
    why = (f"the outer k-space holds signal: its coil covariance grows towards the centre in {nsig} of {nc} "
           f"directions (log mu {np.log(mu.max()):.2f} > {thr:.2f}); no noise-adjust scan to whiten with")
    (log.warning if nc > 1 else log.info)("no prewhitening: %s", why)  # one coil: whitening is a scale
    return NoiseEstimate(None, sd, src, why, {**details, "signal_directions": nsig, "sd_from": sd_from})


def whitening_matrix(psi: np.ndarray) -> tuple[np.ndarray, float]:
    """Prewhitening W (ncoil, ncoil) with W Psi W^H = s I, s = mean(diag Psi), and the noise SD
    sqrt(s / 2) per real/imaginary part after whitening.

    W = sqrt(s) L^-1 with Psi = L L^H (Cholesky): channels become uncorrelated with the average
    channel's noise level, so images stay in the scanner's signal units (Pruessmann et al. 2001,
    Appendix; Hansen & Kellman 2015 for the recipe).
    """
    psi = np.asarray(psi, dtype=np.complex128)
    s = float(np.mean(np.diag(psi).real))
    try:
        chol = np.linalg.cholesky(psi)
    except np.linalg.LinAlgError as exc:
        raise InputError("noise covariance is not positive definite (too few noise samples or a dead channel)") from exc
    w = np.sqrt(s) * np.linalg.inv(chol)
    return w, float(np.sqrt(s / 2.0))


def prewhiten(kspace: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Apply the coil mixing matrix w (nout, ncoil) to k-space (ncoil, ...) -> (nout, ...) complex64."""
    x = np.asarray(kspace)
    return np.tensordot(np.asarray(w, np.complex64), x.astype(np.complex64, copy=False), axes=(1, 0))


def coil_compress(kspace: np.ndarray, ncoil: int | None = None, energy: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SVD coil compression to virtual coils (Buehrer et al. 2007, MRM 57:1131; Huang et al. 2008).

    kspace: (ncoil, ...) prewhitened data. Keep `ncoil` virtual coils, or the fewest whose
    singular values hold `energy` (0 < energy <= 1) of the total squared norm; the default keeps
    all coils (rotation only). Returns (compressed (nv, ...) complex64, matrix (nv, ncoil)).
    With white noise in, the virtual coils have white noise of the same level (the matrix is
    unitary).
    """
    x = np.asarray(kspace)
    nc = x.shape[0]
    flat = x.reshape(nc, -1)
    mat, _ = compression_matrix((flat @ flat.conj().T).astype(np.complex128), ncoil, energy)
    return prewhiten(x, mat), mat


def compression_matrix(cov: np.ndarray, ncoil: int | None = None, energy: float | None = None
                       ) -> tuple[np.ndarray, float]:
    """The matrix (nv, ncoil) of `coil_compress` from the data's coil covariance (ncoil, ncoil)
    (of whitened data: W C W^H for whitening W and raw covariance C), and the share of the
    energy the nv virtual coils keep."""
    nc = cov.shape[0]
    ev, vec = np.linalg.eigh(np.asarray(cov, np.complex128))
    order = np.argsort(ev)[::-1]
    ev, vec = np.clip(ev[order].real, 0, None), vec[:, order]
    if ncoil is not None and energy is not None:
        raise InputError("give coil compression as a count or an energy fraction, not both")
    if ncoil is not None:
        if not 1 <= int(ncoil) <= nc:
            raise InputError(f"coil compression to {ncoil} virtual coils needs 1 <= N <= {nc} (the scan's coils)")
        nv = int(ncoil)
    elif energy is not None:
        if not 0 < energy <= 1:
            raise InputError(f"coil compression energy must be in (0, 1], got {energy}")
        cum = np.cumsum(ev) / ev.sum()
        nv = int(np.searchsorted(cum, energy - 1e-12) + 1)
    else:
        nv = nc
    kept = float(ev[:nv].sum() / max(ev.sum(), 1e-300))
    log.info("coil compression: %d -> %d virtual coils (%.1f%% of the energy)", nc, nv, 100 * kept)
    return vec[:, :nv].conj().T.astype(np.complex64), kept


# Automatic coil compression: scans with more than COMPRESS_ABOVE channels go to AUTO_VIRTUAL
# virtual coils (its NRMSE cost on the analytic phantom: tests/test_scale.py).
COMPRESS_ABOVE = 12
AUTO_VIRTUAL = 8


MAPS_RANK = 8


def maps_rank(ncoil: int) -> int | None:
    """Rank of the Walsh maps of an `ncoil`-channel problem: MAPS_RANK above COMPRESS_ABOVE
    channels (`maps.walsh_factors`), else None (every channel's own map)."""
    return MAPS_RANK if ncoil > COMPRESS_ABOVE else None


def compression_plan(ncoil: int, setting: str | int = "auto") -> tuple[int | None, dict]:
    """Virtual coil count for a scan of `ncoil` channels under --coil-compress `setting` ('auto',
    'none' or a count), or None to keep every channel, and the sidecar's record of which and why.

    'auto' compresses above COMPRESS_ABOVE channels to AUTO_VIRTUAL: the iterative solvers' cost
    is one pair of 2N-grid FFTs per coil and iteration, and a head array's 27-32 channels hold
    few more independent sensitivity profiles than that at sodium resolution (Buehrer et al.
    2007, MRM 57:1131; Huang et al. 2008, MRI 26:133).
    """
    if setting in (None, "none"):
        return None, {"mode": "none", "ncoil": ncoil, "why": "--coil-compress none: every channel kept"}
    if setting == "auto":
        if ncoil > COMPRESS_ABOVE:
            return AUTO_VIRTUAL, {"mode": "auto", "from": ncoil, "to": AUTO_VIRTUAL,
                                  "why": f"{ncoil} channels > {COMPRESS_ABOVE}: SVD-compressed to {AUTO_VIRTUAL} "
                                         "virtual coils (override with --coil-compress none|N)"}
        return None, {"mode": "auto", "ncoil": ncoil,
                      "why": f"{ncoil} channels <= {COMPRESS_ABOVE}: every channel kept"}
    n = int(setting)
    if n > ncoil:
        raise InputError(f"--coil-compress {n} but the scan has {ncoil} coils")
    return n, {"mode": "count", "from": ncoil, "to": n, "why": f"--coil-compress {n}"}


# ------------------------------------------------------------------------------ combination
def combine(images: np.ndarray, method: str = "sos", maps: np.ndarray | None = None,
            window: int = 5) -> np.ndarray:
    """Combine coil images (ncoil, *shape) into one image (*shape).

    'sos': root sum of squares (magnitude, float32). 'adaptive': Walsh et al. 2000, sum_c m_c^* x_c
    with maps estimated from the images themselves (complex64). 'sense': sensitivity-weighted
    sum_c S_c^* x_c / sum_c |S_c|^2 with the given maps (Roemer et al. 1990 with white noise;
    complex64; 0 where the maps vanish).
    """
    x = np.asarray(images)
    if method == "sos":
        return sum_of_squares(x)
    if method == "adaptive":
        m = walsh_maps(x, window=window)
        return np.sum(np.conj(m) * x, axis=0).astype(np.complex64)
    if method == "sense":
        if maps is None:
            raise InputError("sensitivity-weighted combination needs sensitivity maps")
        den = np.sum(np.abs(maps) ** 2, axis=0)
        num = np.sum(np.conj(maps) * x, axis=0)
        return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0).astype(np.complex64)
    raise InputError(f"coil combination must be 'sos', 'adaptive' or 'sense', got {method!r}")
