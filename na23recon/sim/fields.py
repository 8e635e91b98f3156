"""Smooth spatial fields (B1+ flip scale, receive sensitivities) as finite Fourier series.

A smooth field h(r) that multiplies the object is written on each compartment's support as

    h(r) ~ sum_m a_m exp(i 2 pi f_m . r),   f_m = m / L,  m in Z^3 with |m|_1 <= order,

so the k-space of h * 1_E is sum_m a_m F_E(k - f_m): a sum of shifted closed-form transforms,
exact for the series (no voxel grid, no NUFFT). The series is fitted by least squares to the
model field on points inside the compartment only (a field need only be right where the object
is); the fitted series *is* the field the simulator applies, and the fit's relative RMS residual
against the model (Biot-Savart coils, B1 profile) is reported beside the data.

The flip-angle nonlinearity is handled the same way: the spoiled-gradient-echo factor
sat(k_B1(r) a) of each compartment is a smooth field g_j(r) = sat_j(k_B1(r) a) / sat_j(a), fitted
per compartment (spoiled gradient-echo steady state, Ernst & Anderson, Rev Sci Instrum 1966).

B1+ models (relative flip scale, 1.0 = nominal):
- 'birdcage': central brightening of a quadrature volume coil at high field, a Gaussian bump
  1 + v (2 exp(-rho^2 ln2 / rho_half^2) - 1) with rho the radius normalised by the head's
  semi-axes (1 + v at the centre, 1 at rho_half = 0.8, towards 1 - v far out), tilted by a weak
  left-right gradient so that it is not symmetric;
- 'gradient': 1 + v tanh(d . r / R), a smooth left-right (or any direction) slope;
- 'uniform': 1 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass
class FourierBasis:
    """Frequencies f_m = m / L (1/m) with |m|_1 <= order (a 'total degree' lattice: 25 terms at
    order 2, 63 at order 3)."""

    period_m: float
    order: int
    freqs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.order < 0 or not np.isfinite(self.period_m) or self.period_m <= 0:
            raise InputError(f"Fourier basis needs order >= 0 and a positive period, got {self.order}, {self.period_m}")
        r = np.arange(-self.order, self.order + 1)
        m = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        m = m[np.abs(m).sum(1) <= self.order]
        # the zero frequency first: a uniform field is the single term (0, 1)
        m = m[np.argsort(np.abs(m).sum(1), kind="stable")]
        self.freqs = m / self.period_m

    @classmethod
    def from_freqs(cls, freqs_per_m: np.ndarray) -> FourierBasis:
        """A basis of arbitrary frequencies (nterms, 3) in 1/m, not a lattice (period_m is then nan
        and order -1: they describe nothing)."""
        f = np.asarray(freqs_per_m, dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(f)):
            raise InputError("field series frequencies must be finite")
        b = cls(1.0, 0)
        b.period_m, b.order, b.freqs = float("nan"), -1, f.copy()
        return b

    @property
    def nterms(self) -> int:
        return self.freqs.shape[0]

    def design(self, r_mm: np.ndarray) -> np.ndarray:
        """Design matrix (npts, nterms) complex128 at points r (npts, 3) in mm."""
        return np.exp(2j * np.pi * (np.asarray(r_mm, dtype=np.float64) * 1e-3) @ self.freqs.T)

    def evaluate(self, coef: np.ndarray, r_mm: np.ndarray) -> np.ndarray:
        """Series value at points r (..., 3) mm for coefficients (nterms, ...) -> (npts..., ...)."""
        r = np.asarray(r_mm, dtype=np.float64)
        phi = self.design(r.reshape(-1, 3))
        out = phi @ np.asarray(coef).reshape(self.nterms, -1)
        return out.reshape(r.shape[:-1] + np.asarray(coef).shape[1:])


def basis_for_phantom(phantom, order: int = 3, period_factor: float = 1.6) -> FourierBasis:
    """A basis whose period is `period_factor` times the phantom's extent (so that the series is not
    forced to be periodic across the object)."""
    pts = np.concatenate([c.surface_points(200) for c in phantom.compartments])
    extent_mm = 2.0 * np.max(np.abs(pts))
    return FourierBasis(period_m=period_factor * extent_mm * 1e-3, order=order)


def support_points(comp, spacing_frac: float = 0.12, nsurf: int = 300) -> np.ndarray:
    """Fit points (n, 3) mm inside a compartment: a regular grid plus points on its surface."""
    ax = np.asarray(comp.semi_axes_mm, dtype=np.float64)
    n = max(4, int(np.ceil(2.0 / spacing_frac)))
    u = (np.arange(n) + 0.5) / n * 2 - 1
    g = np.stack(np.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)
    if comp.shape == "cylinder":
        g = g[g[:, 0] ** 2 + g[:, 1] ** 2 <= 1]
    else:
        g = g[np.sum(g * g, 1) <= 1]
    inner = (g * ax) @ comp.rotation.T + np.asarray(comp.center_mm)
    return np.concatenate([inner, comp.surface_points(nsurf, seed=7)])


def fit_series(basis: FourierBasis, r_mm: np.ndarray, values: np.ndarray, ridge: float = 1e-8
               ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares series coefficients (nterms, nch) for field values (npts, nch) at r (npts, 3) mm.

    Returns (coef, relative RMS residual per channel)."""
    vals = np.asarray(values, dtype=np.complex128)
    if vals.ndim == 1:
        vals = vals[:, None]
    phi = basis.design(r_mm)
    # a tiny ridge keeps high frequencies from blowing up where the points do not constrain them
    a = phi.conj().T @ phi
    a += ridge * np.trace(a).real / a.shape[0] * np.eye(a.shape[0])
    coef = np.linalg.solve(a, phi.conj().T @ vals)
    res = phi @ coef - vals
    rel = np.sqrt(np.sum(np.abs(res) ** 2, 0) / np.maximum(np.sum(np.abs(vals) ** 2, 0), 1e-300))
    return coef, rel


# --- B1+ models ----------------------------------------------------------------------------------


@dataclass
class B1Model:
    """Relative transmit flip scale k_B1(r) (1.0 = nominal), see the module docstring.

    kind: 'birdcage' | 'gradient' | 'uniform'; variation v: the field spans about 1 +- v.
    radii_mm: the normalising semi-axes (the head's); direction: unit vector of 'gradient'.
    """

    kind: str = "birdcage"
    variation: float = 0.3
    radii_mm: tuple[float, float, float] = (80.0, 95.0, 75.0)
    direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    tilt: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in ("birdcage", "gradient", "uniform"):
            raise InputError(f"B1 model must be 'birdcage', 'gradient' or 'uniform', got {self.kind!r}")
        if not np.isfinite(self.variation) or not 0 <= self.variation < 0.9:
            raise InputError(f"B1 variation must be in [0, 0.9), got {self.variation}")

    def __call__(self, r_mm: np.ndarray) -> np.ndarray:
        r = np.asarray(r_mm, dtype=np.float64)
        v = self.variation
        if self.kind == "uniform" or v == 0:
            return np.ones(r.shape[:-1])
        u = r / np.asarray(self.radii_mm)
        if self.kind == "birdcage":
            rho2 = np.sum(u * u, -1)
            bump = 2 * np.exp(-rho2 * np.log(2) / 0.8**2) - 1
            return 1 + v * (bump + self.tilt * np.tanh(u[..., 0])) / (1 + self.tilt)
        d = np.asarray(self.direction, dtype=np.float64)
        d = d / np.linalg.norm(d)
        return 1 + v * np.tanh(u @ d)

    def describe(self) -> dict:
        return {"kind": self.kind, "variation": self.variation, "radii_mm": list(self.radii_mm),
                "direction": list(self.direction), "tilt": self.tilt}


def head_radii_mm(phantom) -> tuple[float, float, float]:
    """Semi-axes of the phantom's outermost compartment that has no parent and contains others."""
    roots = [j for j, p in enumerate(phantom.parents) if p is None]
    j = max(roots, key=lambda i: np.prod(phantom.compartments[i].semi_axes_mm))
    return tuple(float(a) for a in phantom.compartments[j].semi_axes_mm)
