"""RING (Rosenzweig, Holme & Uecker, Magn Reson Med 2018): per-axis gradient delays of
full-diameter spokes from where pairs of spokes cross (`recon.delay` chooses it for such
trajectories).

With axis delays d_i a spoke along n is shifted by S n, S = -gamma_bar G diag(d) (G the readout
gradient). Two spokes a, b cross where their data agree: searching their (sinc-interpolated)
centre segments for the nominal positions (tau_a, tau_b) of that common point gives
S (n_a - n_b) = tau_b n_b - tau_a n_a, two equations per pair (projected on the pair's plane; in
3D the shifted spokes need not meet). Many near-orthogonal pairs give S by least squares, its
standard error from the residuals.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["ring_delay", "refine_minimum"]


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
            ta = refine_minimum(dd[max(i - 1, 0):i + 2, j], i, m) if 0 < i < m - 1 else float(i)
            tb = refine_minimum(dd[i, max(j - 1, 0):j + 2], j, m) if 0 < j < m - 1 else float(j)
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


def refine_minimum(v: np.ndarray, i: int, m: int) -> float:
    """Sub-grid position of a minimum from three values around index i (parabola)."""
    if v.size != 3:
        return float(i)
    den = v[0] - 2 * v[1] + v[2]
    return float(i) + (0.5 * (v[0] - v[2]) / den if den > 0 else 0.0)
