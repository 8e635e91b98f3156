"""Analytic sodium phantoms: ellipsoids with closed-form Fourier transforms and per-sample T2* decay.

A phantom is an ordered list of ellipsoidal compartments. Later compartments are painted over
earlier ones, and each must lie wholly inside the one it covers (its parent) or outside all
others. The object is then the exact sum

    m(r, t) = sum_j [s_j(t) - s_parent(j)(t)] * 1_{E_j}(r)

so its k-space is a sum of closed-form ellipsoid transforms (never a NUFFT of a voxel image: no
inverse crime). s_j(t) is the compartment's signal weight at time t after excitation:

    s_j(t) = C_j * sin(a) (1 - E1) / (1 - E1 cos a) * [f exp(-t/T2*_s) + (1 - f) exp(-t/T2*_l)]

with E1 = exp(-TR/T1) (spoiled gradient echo, REFERENCES.md; Boada 1994 for the biexponential
sodium decay). Positions are in mm from the FOV centre along the image axes (x, y, z).

Fourier convention: M(k) = integral m(r) exp(-i 2 pi k.r) dr with k in cycles/m, r in m. For a
unit ball, B(q) = (sin(2 pi q) - 2 pi q cos(2 pi q)) / (2 pi^2 q^3), q = |k|, B(0) = 4 pi / 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

DATA_SIM = Path(__file__).resolve().parents[2] / "data-sim"


@dataclass
class Compartment:
    """One ellipsoid of uniform tissue. Units: mm, mM, ms, degrees."""

    name: str
    label: int
    conc_mM: float
    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rot_deg: float = 0.0
    t1_ms: float = 40.0
    t2s_short_ms: float = 4.0
    t2s_long_ms: float = 30.0
    frac_short: float = 0.6
    medium: str | None = None
    shape: str = "ellipsoid"
    """'ellipsoid' (semi-axes a, b, c) or 'cylinder' (elliptic cross-section a, b; half-length c along z)."""

    def __post_init__(self) -> None:
        if self.shape not in ("ellipsoid", "cylinder"):
            raise InputError(f"compartment {self.name!r}: shape must be 'ellipsoid' or 'cylinder', got {self.shape!r}")

    @property
    def rotation(self) -> np.ndarray:
        """3x3 rotation about z: columns are the ellipsoid's axes in image coordinates."""
        a = np.deg2rad(self.rot_deg)
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def decay(self, t_s: np.ndarray | float) -> np.ndarray:
        """Biexponential transverse decay at time t (s) after excitation (1 at t = 0)."""
        t = np.asarray(t_s, dtype=np.float64)
        return self.frac_short * np.exp(-t / (self.t2s_short_ms * 1e-3)) + (1 - self.frac_short) * np.exp(
            -t / (self.t2s_long_ms * 1e-3))

    def saturation(self, tr_ms: float, flip_rad: float | np.ndarray) -> np.ndarray:
        """Spoiled gradient-echo steady-state factor sin(a)(1-E1)/(1-E1 cos a)."""
        e1 = np.exp(-tr_ms / self.t1_ms)
        return np.sin(flip_rad) * (1 - e1) / (1 - e1 * np.cos(flip_rad))

    def inside(self, r_mm: np.ndarray) -> np.ndarray:
        """Boolean mask of points r (..., 3) in mm that lie inside the ellipsoid."""
        u = (np.asarray(r_mm, dtype=np.float64) - np.asarray(self.center_mm)) @ self.rotation
        u = u / np.asarray(self.semi_axes_mm)
        if self.shape == "cylinder":
            return (u[..., 0] ** 2 + u[..., 1] ** 2 <= 1.0) & (np.abs(u[..., 2]) <= 1.0)
        return np.sum(u**2, axis=-1) <= 1.0

    def surface_points(self, n: int = 400, seed: int = 0) -> np.ndarray:
        """Points (n, 3) mm on the compartment's surface (for the nesting check)."""
        rng = np.random.default_rng(seed)
        if self.shape == "cylinder":
            phi = rng.uniform(0, 2 * np.pi, n)
            z = rng.uniform(-1, 1, n)
            u = np.stack([np.cos(phi), np.sin(phi), z], -1)
            cap = rng.random(n) < 0.3  # some points on the end caps, anywhere on the disc
            rho = np.sqrt(rng.random(cap.sum()))
            u[cap, 0] *= rho
            u[cap, 1] *= rho
            u[cap, 2] = np.sign(u[cap, 2])
        else:
            u = rng.normal(size=(n, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
        return (u * np.asarray(self.semi_axes_mm)) @ self.rotation.T + np.asarray(self.center_mm)

    def fourier(self, k_per_m: np.ndarray) -> np.ndarray:
        """Closed-form transform of the compartment's indicator at k (..., 3) in 1/m: complex128 (...).

        Ellipsoid: abc B(|diag(a,b,c) R^T k|) (unit ball B). Elliptic cylinder: ab 2c D(|(a k1', b k2')|)
        sinc(2 c k3'), with D the unit disc's transform and k' = R^T k (Koay et al. 2007)."""
        k = np.asarray(k_per_m, dtype=np.float64)
        axes_m = np.asarray(self.semi_axes_mm) * 1e-3
        kr = (k @ self.rotation) * axes_m  # k in the compartment's frame, scaled by its semi-axes
        phase = np.exp(-2j * np.pi * (k @ (np.asarray(self.center_mm) * 1e-3)))
        if self.shape == "cylinder":
            q = np.sqrt(kr[..., 0] ** 2 + kr[..., 1] ** 2)
            return np.prod(axes_m) * unit_disc_fourier(q) * 2 * np.sinc(2 * kr[..., 2]) * phase
        q = np.sqrt(np.sum(kr * kr, axis=-1))
        return np.prod(axes_m) * unit_ball_fourier(q) * phase


def unit_ball_fourier(q: np.ndarray) -> np.ndarray:
    """Fourier transform of the unit ball's indicator at radial frequency q (cycles per unit)."""
    q = np.asarray(q, dtype=np.float64)
    x = 2 * np.pi * q
    out = np.empty_like(q)
    small = x < 1e-2
    xs = x[~small]
    out[~small] = 4 * np.pi * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    xx = x[small] ** 2  # Taylor series: 4 pi (1/3 - x^2/30 + x^4/840)
    out[small] = 4 * np.pi * (1 / 3 - xx / 30 + xx * xx / 840)
    return out


def unit_disc_fourier(q: np.ndarray) -> np.ndarray:
    """Fourier transform of the unit disc's indicator at radial frequency q: J1(2 pi q) / q, D(0) = pi."""
    from scipy.special import j1

    q = np.asarray(q, dtype=np.float64)
    out = np.full_like(q, np.pi)
    nz = q > 1e-8
    out[nz] = j1(2 * np.pi * q[nz]) / q[nz]
    return out


@dataclass
class Phantom:
    """Ordered ellipsoidal compartments (see module docstring)."""

    name: str
    compartments: list[Compartment]
    parents: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.compartments:
            raise InputError(f"phantom {self.name!r} has no compartments")
        self.parents = _find_parents(self.compartments)

    @property
    def labels(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for c in self.compartments:
            out.setdefault(c.label, []).append(c.name)
        return out

    def weights(self, t_s: np.ndarray, tr_ms: float = 1e9, flip_rad: float = np.pi / 2) -> np.ndarray:
        """Signal weight per compartment and time: (ncomp, *t.shape) = C * saturation * decay."""
        return np.stack([c.conc_mM * c.saturation(tr_ms, flip_rad) * c.decay(t_s) for c in self.compartments])

    def kspace(self, k_per_m: np.ndarray, t_s: np.ndarray | float = 0.0, tr_ms: float = 1e9,
               flip_rad: float = np.pi / 2, sens_terms: list[tuple[np.ndarray, complex]] | None = None) -> np.ndarray:
        """Analytic k-space M(k, t) at points k (..., 3) in 1/m sampled at times t (broadcast to k[..., 0]).

        sens_terms, optional: a receive sensitivity written as a finite Fourier series
        s(r) = sum_m a_m exp(i 2 pi f_m . r) (f_m in 1/m); then M_s(k) = sum_m a_m M(k - f_m), exact.
        Returns complex128 (...) in units of mM * m^3.
        """
        k = np.asarray(k_per_m, dtype=np.float64)
        if k.shape[-1] != 3:
            raise InputError(f"k must be (..., 3) in 1/m, got shape {k.shape}")
        t = np.broadcast_to(np.asarray(t_s, dtype=np.float64), k.shape[:-1])
        w = self.weights(t, tr_ms, flip_rad)
        terms = sens_terms if sens_terms is not None else [(np.zeros(3), 1.0)]
        out = np.zeros(k.shape[:-1], dtype=np.complex128)
        for f, a in terms:
            kk = k - np.asarray(f, dtype=np.float64)
            for j, comp in enumerate(self.compartments):
                p = self.parents[j]
                dw = w[j] - (w[p] if p is not None else 0.0)
                out += a * dw * comp.fourier(kk)
        return out

    def label_map(self, r_mm: np.ndarray) -> np.ndarray:
        """Label of the compartment that owns each point r (..., 3) mm (0 = background)."""
        lab = np.zeros(np.asarray(r_mm).shape[:-1], dtype=np.int16)
        for c in self.compartments:
            lab[c.inside(r_mm)] = c.label
        return lab

    def index_map(self, r_mm: np.ndarray) -> np.ndarray:
        """Index (into compartments) of the owner of each point, -1 for background."""
        idx = np.full(np.asarray(r_mm).shape[:-1], -1, dtype=np.int16)
        for j, c in enumerate(self.compartments):
            idx[c.inside(r_mm)] = j
        return idx

    def voxel_centres_mm(self, matrix: int | tuple[int, int, int], fov_mm: float | tuple) -> np.ndarray:
        """Voxel centre positions (N, N, N, 3) in mm, index n at (n - N//2) * FOV / N (sigpy centring)."""
        n = np.broadcast_to(np.asarray(matrix, dtype=int), (3,))
        fov = np.broadcast_to(np.asarray(fov_mm, dtype=float), (3,))
        axes = [(np.arange(n[i]) - n[i] // 2) * fov[i] / n[i] for i in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def truth(self, matrix: int | tuple[int, int, int], fov_mm: float | tuple, quantity: str = "conc",
              supersample: int = 1) -> np.ndarray:
        """Voxelised ground truth (x, y, z): 'conc' (mM, partial-volume averaged with `supersample`^3
        points per voxel) or 'label' (label of the voxel centre)."""
        r = self.voxel_centres_mm(matrix, fov_mm)
        if quantity == "label":
            return self.label_map(r)
        if quantity != "conc":
            raise ValueError(f"quantity must be 'conc' or 'label', got {quantity!r}")
        conc = np.array([c.conc_mM for c in self.compartments] + [0.0])
        fov = np.broadcast_to(np.asarray(fov_mm, dtype=float), (3,))
        n = np.broadcast_to(np.asarray(matrix, dtype=int), (3,))
        vox = fov / n
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        acc = np.zeros(r.shape[:-1])
        for ox in offs:
            for oy in offs:
                for oz in offs:
                    acc += conc[self.index_map(r + vox * np.array([ox, oy, oz]))]
        return acc / supersample**3


def _find_parents(comps: list[Compartment]) -> list[int | None]:
    """For each compartment the latest earlier one that contains it; check nesting is proper."""
    parents: list[int | None] = []
    for j, c in enumerate(comps):
        surf = c.surface_points()
        parent = None
        for i in range(j - 1, -1, -1):
            ins = comps[i].inside(surf)
            if ins.all():
                parent = i
                break
            if ins.any() or c.inside(np.asarray(comps[i].center_mm)[None])[0]:
                raise InputError(f"compartment {c.name!r} partly overlaps {comps[i].name!r}: "
                                 "each must lie inside the one it covers or outside all others")
        parents.append(parent)
    return parents


def load_phantom(name_or_path: str | Path) -> Phantom:
    """Load a phantom definition: a name in data-sim/ ('brain') or a path to a JSON file."""
    p = Path(name_or_path)
    if not p.suffix:
        p = DATA_SIM / f"{name_or_path}.json"
    if not p.exists():
        avail = sorted(q.stem for q in DATA_SIM.glob("*.json"))
        raise InputError(f"phantom {str(name_or_path)!r} not found (built in: {', '.join(avail)})")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"phantom file {p} is not valid JSON: {exc}") from None
    media = d.get("media", {})
    comps = []
    for cd in d.get("compartments", []):
        cd = dict(cd)
        med = cd.get("medium")
        if med is not None:
            if med not in media:
                raise InputError(f"compartment {cd.get('name')!r} names unknown medium {med!r}")
            for k, v in media[med].items():
                cd.setdefault(k, v)
        try:
            comp = Compartment(**cd)
        except TypeError as exc:
            raise InputError(f"bad compartment in {p}: {exc}") from None
        vals = [comp.conc_mM, comp.t1_ms, comp.t2s_short_ms, comp.t2s_long_ms, *comp.semi_axes_mm]
        if not np.all(np.isfinite(vals)) or min(vals[1:]) <= 0 or comp.conc_mM < 0 or not 0 <= comp.frac_short <= 1:
            raise InputError(f"compartment {comp.name!r} in {p} has impossible parameters")
        comps.append(comp)
    return Phantom(name=d.get("name", p.stem), compartments=comps)
