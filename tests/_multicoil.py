"""Multi-coil sodium test data from the analytic phantom (never from our NUFFT).

Eight receive coils around the head, each sensitivity a short Fourier series
s_c(r) = e^{i theta_c} [1 + beta sin(2 pi f u_c . r)] + gamma e^{i phi_c} e^{i 2 pi g v_c . r}:
magnitude rising smoothly towards the coil (direction u_c in the transverse plane, tilted in z),
a distinct smooth phase per coil. `sim.kspace.phantom_kspace(..., sens_terms=...)` turns each series into exact
k-space (a sum of shifted closed-form transforms), so no voxel image and no NUFFT is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na23recon.sim.kspace import phantom_kspace
from na23recon.sim.phantom import Phantom, load_phantom
from na23recon.traj.dcf import dcf_radial_shells
from na23recon.traj.radial import radial_for_matrix


def coil_terms(ncoil: int = 8, f_per_m: float = 2.2, beta: float = 0.65, gamma: float = 0.3,
               g_per_m: float = 1.5) -> list[list[tuple[np.ndarray, complex]]]:
    """Fourier-series terms [(f (3,) 1/m, a), ...] for each coil."""
    out = []
    for c in range(ncoil):
        ang = 2 * np.pi * c / ncoil
        u = np.array([np.cos(ang), np.sin(ang), 0.35 * (-1) ** c])
        u /= np.linalg.norm(u)
        v = np.array([-np.sin(ang), np.cos(ang), 0.5])
        v /= np.linalg.norm(v)
        th = 0.7 * c
        e = np.exp(1j * th)
        terms = [(np.zeros(3), e), (f_per_m * u, beta * e / 2j), (-f_per_m * u, -beta * e / 2j),
                 (g_per_m * v, gamma * np.exp(1j * (1.9 * c + 0.4)))]
        out.append(terms)
    return out


def sens_on_grid(terms: list[list[tuple[np.ndarray, complex]]], r_mm: np.ndarray) -> np.ndarray:
    """Sensitivities (ncoil, *grid) evaluated at points r (..., 3) mm."""
    r = np.asarray(r_mm) * 1e-3
    out = np.zeros((len(terms),) + r.shape[:-1], np.complex128)
    for c, tc in enumerate(terms):
        for f, a in tc:
            out[c] += a * np.exp(2j * np.pi * (r @ f))
    return out


@dataclass
class MultiCoilCase:
    n: int
    fov_mm: float
    k_per_m: np.ndarray      # (nreadout, nsample, 3)
    t_s: np.ndarray          # (nsample,)
    coord: np.ndarray        # cycles/FOV float32
    dcf: np.ndarray
    kspace: np.ndarray       # (ncoil, nreadout, nsample) complex64
    noise: np.ndarray        # (ncoil, 4096) noise-adjust samples
    sigma: float             # k-space noise SD (real part)
    truth: np.ndarray        # (n, n, n) signal weight, partial-volume voxelised
    labels: np.ndarray       # (n, n, n)
    rss: np.ndarray          # (n, n, n) root sum of squares of the true sensitivities
    phantom: Phantom
    conc: dict               # label -> signal weight of the compartment


def make_case(n: int = 32, fov_mm: float = 240.0, undersampling: float = 3.5, snr: float = 20.0,
              ncoil: int = 8, seed: int = 0, decay: bool = False, phantom: Phantom | None = None,
              dwell_us: float = 10.0) -> MultiCoilCase:
    """Radial multi-coil case at matrix n. SNR is that of the brightest compartment in one coil's
    density-compensated adjoint image at unit sensitivity (`sim.scan.noise_sigma`'s definition).
    decay=False evaluates every sample at t = 0 (no T2* blurring); True at its readout time."""
    ph = phantom if phantom is not None else load_phantom("brain")
    tr = radial_for_matrix(n, fov_mm, undersampling=undersampling, dwell_us=dwell_us)
    k = np.asarray(tr.k, np.float64)
    t = np.asarray(tr.t, np.float64)
    coord = tr.coord(fov_mm)
    dcf = dcf_radial_shells(coord)
    vox = (fov_mm * 1e-3 / n) ** 3
    scale = 1.0 / (vox * np.sqrt(float(n) ** 3))
    tt = t[None, :] if decay else 0.0
    terms = coil_terms(ncoil)
    y = np.stack([phantom_kspace(ph, k, tt, sens_terms=tc) * scale for tc in terms])
    from na23recon.traj.dcf import normalise_dcf

    w = normalise_dcf(dcf, coord).astype(np.float64)
    peak = max(c.conc_mM for c in ph.compartments)
    sigma = peak / snr / np.sqrt(np.sum(w * w) / n**3)
    rng = np.random.default_rng(seed)

    def cn(shape):
        return (rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape))

    data = (y + cn(y.shape)).astype(np.complex64)
    noise = cn((ncoil, 4096)).astype(np.complex64)
    r = ph.voxel_centres_mm(n, fov_mm)
    truth = ph.truth(n, fov_mm, "conc", supersample=3)
    labels = ph.truth(n, fov_mm, "label")
    rss = np.sqrt(np.sum(np.abs(sens_on_grid(terms, r)) ** 2, axis=0))
    conc = {}
    for c in ph.compartments:
        conc.setdefault(c.label, c.conc_mM)
    return MultiCoilCase(n, fov_mm, k, t, coord, dcf, data, noise, float(sigma), truth, labels, rss, ph, conc)


def nrmse(image: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """||a |x| - t|| / ||t|| with the least-squares scale a (over `mask`, default everywhere)."""
    x = np.abs(image).astype(np.float64)
    t = np.asarray(truth, np.float64)
    if mask is not None:
        x, t = x[mask], t[mask]
    a = float(np.sum(x * t) / max(np.sum(x * x), 1e-30))
    return float(np.linalg.norm(a * x - t) / np.linalg.norm(t))
