"""Receive arrays: circular loop coils on a helmet, their sensitivities by Biot-Savart.

Each loop (radius `loop_radius_mm`) sits on an ellipsoidal helmet `gap_mm` outside the head,
its normal pointing at the head's centre; loop centres are spread over the upper part of the
helmet (Fibonacci points above `min_elevation_deg`). The quasi-static field of a unit current,

    B(r) = mu0 / (4 pi) sum_segments dl x (r - r') / |r - r'|^3     (Biot-Savart, polygon of n segments),

gives the receive sensitivity by reciprocity, s(r) = B_x(r) - i B_y(r) (B0 along z; the
conjugate convention only flips the image phase). Sensitivities are scaled together so that
their root-sum-of-squares averages 1 over the head: the image SNR of an array combination is
then comparable to the single-coil `snr` (see `sim.scan`). Noise: every coil has the same
variance, with correlations rho * (normalised sensitivity overlap), which is positive definite.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MU0 = 4e-7 * np.pi


def loop_geometry(ncoil: int, head_radii_mm, gap_mm: float = 40.0, loop_radius_mm: float = 40.0,
                  min_elevation_deg: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Centres (ncoil, 3) mm and unit normals (ncoil, 3) (pointing inward) of the helmet's loops."""
    if ncoil < 1:
        raise InputError(f"ncoil must be at least 1, got {ncoil}")
    ax = np.asarray(head_radii_mm, dtype=np.float64) + gap_mm
    zmin = np.sin(np.deg2rad(min_elevation_deg))
    i = np.arange(ncoil) + 0.5
    z = 1 - (1 - zmin) * i / ncoil  # uniform in z over the cap: equal areas on a sphere
    phi = np.pi * (1 + 5**0.5) * i
    s = np.sqrt(1 - z * z)
    u = np.stack([s * np.cos(phi), s * np.sin(phi), z], -1)
    centres = u * ax
    normals = -(centres / ax**2)  # ellipsoid surface normal, inward
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return centres, normals


def loop_field(r_mm: np.ndarray, centre_mm, normal, radius_mm: float, nseg: int = 72) -> np.ndarray:
    """Biot-Savart field (npts, 3) in T of a unit-current circular loop at points r (npts, 3) mm."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    ang = 2 * np.pi * np.arange(nseg + 1) / nseg
    pts = (np.asarray(centre_mm) + radius_mm * (np.cos(ang)[:, None] * a + np.sin(ang)[:, None] * b)) * 1e-3
    mid, dl = 0.5 * (pts[1:] + pts[:-1]), np.diff(pts, axis=0)
    r = np.asarray(r_mm, dtype=np.float64).reshape(-1, 3) * 1e-3
    out = np.zeros_like(r)
    for j in range(nseg):  # segment by segment keeps memory at O(npts)
        d = r - mid[j]
        dist3 = np.maximum(np.sum(d * d, 1), 1e-10) ** 1.5
        out += np.cross(dl[j], d) / dist3[:, None]
    return out * MU0 / (4 * np.pi)


class HelmetArray:
    """`ncoil` loops on a helmet around a head of semi-axes `head_radii_mm` (see module docstring)."""

    def __init__(self, ncoil: int, head_radii_mm, gap_mm: float = 40.0, loop_radius_mm: float = 40.0,
                 min_elevation_deg: float = 5.0, nseg: int = 72):
        self.ncoil = int(ncoil)
        self.head_radii_mm = tuple(float(v) for v in head_radii_mm)
        self.loop_radius_mm = float(loop_radius_mm)
        self.nseg = nseg
        self.centres_mm, self.normals = loop_geometry(ncoil, head_radii_mm, gap_mm, loop_radius_mm,
                                                      min_elevation_deg)
        # one common scale: RSS of the sensitivities averages 1 over the head
        rng = np.random.default_rng(3)
        u = rng.normal(size=(4000, 3))
        u *= (rng.random(4000) ** (1 / 3) / np.linalg.norm(u, axis=1))[:, None]
        head = u * np.asarray(self.head_radii_mm)
        raw = self._raw(head)
        self.scale = 1.0 / float(np.mean(np.sqrt(np.sum(np.abs(raw) ** 2, 0))))
        self._head_pts = head

    def _raw(self, r_mm: np.ndarray) -> np.ndarray:
        r = np.asarray(r_mm, dtype=np.float64).reshape(-1, 3)
        out = np.empty((self.ncoil, r.shape[0]), dtype=np.complex128)
        for c in range(self.ncoil):
            b = loop_field(r, self.centres_mm[c], self.normals[c], self.loop_radius_mm, self.nseg)
            out[c] = b[:, 0] - 1j * b[:, 1]
        return out

    def sensitivities(self, r_mm: np.ndarray) -> np.ndarray:
        """Receive sensitivities (ncoil, ...) complex128 at points r (..., 3) mm."""
        r = np.asarray(r_mm, dtype=np.float64)
        return (self._raw(r) * self.scale).reshape((self.ncoil,) + r.shape[:-1])

    def noise_covariance(self, sigma: float, rho: float = 0.3) -> np.ndarray:
        """Noise covariance (ncoil, ncoil): sigma^2 [(1 - rho) I + rho G], G the normalised Gram
        matrix of the sensitivities over the head (unit diagonal, positive semi-definite)."""
        if not 0 <= rho < 1:
            raise InputError(f"noise correlation rho must be in [0, 1), got {rho}")
        s = self.sensitivities(self._head_pts)
        g = s @ s.conj().T
        d = np.sqrt(np.real(np.diag(g)))
        g = g / np.outer(d, d)
        return sigma**2 * ((1 - rho) * np.eye(self.ncoil) + rho * g)

    def describe(self) -> dict:
        return {"kind": "helmet loops (Biot-Savart)", "ncoil": self.ncoil, "loop_radius_mm": self.loop_radius_mm,
                "centres_mm": np.round(self.centres_mm, 2).tolist(), "head_radii_mm": list(self.head_radii_mm)}
