"""Coil handling: noise prewhitening, coil compression, sensitivity maps and coil combination.

Shapes: k-space (ncoil, nreadout, nsample) complex64; trajectory coord (nreadout, nsample, 3) in
cycles/FOV; images (ncoil, x, y, z). Noise levels are the SD of the real (= imaginary) part of a
complex sample, as `sim.scan` adds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, ndimage

from ..errors import InputError
from ..nufft import Nufft

log = logging.getLogger(__name__)

__all__ = ["sum_of_squares", "noise_covariance", "noise_from_outer_kspace", "NoiseEstimate", "estimate_noise",
           "whitening_matrix", "prewhiten",
           "coil_compress", "calibration_images", "walsh_maps", "espirit_maps", "resample_maps",
           "estimate_maps", "combine"]


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
    cov = (flat @ flat.conj().T).astype(np.complex128)
    ev, vec = np.linalg.eigh(cov)
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
    mat = vec[:, :nv].conj().T.astype(np.complex64)
    log.info("coil compression: %d -> %d virtual coils (%.1f%% of the energy)", nc, nv, 100 * ev[:nv].sum() / ev.sum())
    return prewhiten(x, mat), mat


# ------------------------------------------------------------------------- sensitivity maps
def calibration_images(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, ncal: int = 32,
                       radius: float | None = None, eps: float = 1e-3) -> np.ndarray:
    """Low-resolution coil images (ncoil, ncal, ncal, ncal) from the k-space centre.

    Samples with |k| < radius (cycles/FOV; default 0.4 ncal) are density-compensated (`dcf`, any
    scale), tapered by a Hann window in |k| (no ringing into the maps), and gridded with an
    adjoint NUFFT onto a ncal^3 matrix over the same FOV.
    """
    coord = np.asarray(coord, np.float32)
    ndim = coord.shape[-1]
    radius = 0.4 * ncal if radius is None else float(radius)
    r = np.sqrt(np.sum(coord.astype(np.float64) ** 2, axis=-1))
    sel = r < radius
    if sel.sum() < 16:
        raise InputError(f"only {int(sel.sum())} samples inside the calibration radius {radius:.1f} cycles/FOV")
    w = np.asarray(dcf, np.float64)[sel] * 0.5 * (1 + np.cos(np.pi * r[sel] / radius))
    w *= (4.0 / 3.0 * np.pi * radius**3 if ndim == 3 else np.pi * radius**2) / max(float(np.sum(np.asarray(dcf)[sel])), 1e-30)
    op = Nufft(coord[sel], (ncal,) * ndim, eps=eps)
    y = np.asarray(kspace)[:, sel] * w.astype(np.float32)
    return op.adjoint(y.astype(np.complex64)) * np.float32(np.sqrt(float(ncal) ** ndim))


def _phase_reference(maps: np.ndarray) -> np.ndarray:
    """Remove the common phase: make the first (strongest virtual) coil's map real positive."""
    ref = maps[0]
    ph = np.where(np.abs(ref) > 0, np.conj(ref) / np.maximum(np.abs(ref), 1e-30), 1.0)
    return maps * ph


def walsh_maps(images: np.ndarray, window: int = 5) -> np.ndarray:
    """Adaptive-combination sensitivity estimate (Walsh, Gmitro & Marcellin 2000, MRM 43:682).

    images: (ncoil, *shape) complex coil images (low resolution is enough). For every voxel the
    coil covariance R = sum over a window^ndim neighbourhood of c c^H is formed and its dominant
    eigenvector taken as the relative sensitivity (unit l2 norm over coils, phase relative to
    coil 0). Returns complex64 (ncoil, *shape).
    """
    x = np.asarray(images, np.complex64)
    nc = x.shape[0]
    shape = x.shape[1:]
    r = np.empty(shape + (nc, nc), np.complex64)
    for i in range(nc):
        for j in range(i, nc):
            p = x[i] * np.conj(x[j])
            s = ndimage.uniform_filter(p.real, window, mode="nearest") + 1j * ndimage.uniform_filter(
                p.imag, window, mode="nearest")
            r[..., i, j] = s
            r[..., j, i] = np.conj(s)
    _, vec = np.linalg.eigh(r)
    maps = np.moveaxis(vec[..., -1], -1, 0)
    return _phase_reference(maps).astype(np.complex64)


def espirit_maps(images: np.ndarray, calib_width: int | None = None, kernel_width: int = 5,
                 thresh: float = 0.02, crop: float = 0.9, max_iter: int = 30) -> np.ndarray:
    """ESPIRiT sensitivity maps (Uecker et al. 2014, MRM 71:990) from gridded calibration data.

    images: (ncoil, *shape) low-resolution coil images (`calibration_images`); their FFT is the
    Cartesian k-space that `sigpy.mri.app.EspiritCalib` expects. calib_width defaults to 3/4 of
    the grid. Voxels whose eigenvalue is below `crop` are zero (outside the object).
    Returns complex64 (ncoil, *shape), unit norm where not cropped, phase relative to coil 0.
    """
    import sigpy as sp
    from sigpy.mri.app import EspiritCalib

    x = np.asarray(images, np.complex64)
    n = min(x.shape[1:])
    cw = int(calib_width) if calib_width is not None else max(kernel_width + 2, (2 * n) // 3)
    ksp = sp.fft(x, axes=tuple(range(1, x.ndim)))
    maps = EspiritCalib(ksp, calib_width=cw, thresh=thresh, kernel_width=kernel_width, crop=crop,
                        max_iter=max_iter, show_pbar=False).run()
    return _phase_reference(np.asarray(maps)).astype(np.complex64)


def resample_maps(maps: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of maps (ncoil, *low) onto a finer matrix (same FOV, sigpy centring:
    index n at (n - N//2) / N FOV), renormalised to unit norm over coils where nonzero."""
    maps = np.asarray(maps)
    low = maps.shape[1:]
    shape = tuple(int(s) for s in shape)
    if low == shape:
        return maps.astype(np.complex64)
    grids = [((np.arange(n) - n // 2) / n) * m + m // 2 for n, m in zip(shape, low)]
    pts = np.meshgrid(*grids, indexing="ij")
    out = np.empty((maps.shape[0],) + shape, np.complex64)
    for c in range(maps.shape[0]):
        re = ndimage.map_coordinates(maps[c].real, pts, order=1, mode="nearest")
        im = ndimage.map_coordinates(maps[c].imag, pts, order=1, mode="nearest")
        out[c] = re + 1j * im
    norm = np.sqrt(np.sum(np.abs(out) ** 2, axis=0))
    return np.where(norm > 1e-6, out / np.maximum(norm, 1e-6), 0).astype(np.complex64)


def estimate_maps(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: Sequence[int],
                  method: str = "walsh", ncal: int = 32, eps: float = 1e-3) -> np.ndarray:
    """Sensitivity maps (ncoil, *shape) complex64 from the k-space centre: 'walsh' or 'espirit'.

    Calibration images on a ncal^3 grid (`calibration_images`), maps there, then linear
    interpolation to `shape`.
    """
    ncal = int(min(ncal, min(shape)))
    if method == "espirit":
        ncal = min(ncal, 24)  # EspiritCalib's per-voxel power iterations: keep the grid small
    cal = calibration_images(kspace, coord, dcf, ncal=ncal, eps=eps)
    if method == "walsh":
        maps = walsh_maps(cal)
    elif method == "espirit":
        maps = espirit_maps(cal)
    else:
        raise InputError(f"sensitivity method must be 'walsh' or 'espirit', got {method!r}")
    return resample_maps(maps, shape)


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
