"""Analytic sodium phantoms: ellipsoids with closed-form Fourier transforms and per-sample T2* decay.

A phantom is an ordered list of ellipsoidal compartments. Later compartments are painted over
earlier ones, and each must lie wholly inside the one it covers (its parent) or outside all
others. The object is then the exact sum

    m(r, t) = sum_j [s_j(t) - s_parent(j)(t)] * 1_{E_j}(r)

so its k-space is a sum of closed-form ellipsoid transforms (never a NUFFT of a voxel image: no
inverse crime). s_j(t) is the compartment's signal weight at time t after excitation:

    s_j(t) = C_j * sin(a) (1 - E1) / (1 - E1 cos a) * [f exp(-t/T2*_s) + (1 - f) exp(-t/T2*_l)]

with E1 = exp(-TR/T1) (spoiled gradient-echo steady state, Ernst & Anderson, Rev Sci Instrum
1966; biexponential sodium decay, Boada et al., Magn Reson Med 1994). T1 and T2* come from a
named relaxation preset (na23recon/data/relaxation.json, shared with na23recon.quant.relax).
Positions are in mm from the FOV centre along the image axes (x, y, z).

Fourier convention: M(k) = integral m(r) exp(-i 2 pi k.r) dr with k in cycles/m, r in m. The
closed forms (unit ball, elliptic cylinder; Koay, Sarlls & Ozarslan, Magn Reson Med 2007) and
the one engine that evaluates them live in `sim.kspace`; `Compartment.fourier` and
`Phantom.kspace` call it.

Built-in phantoms ('brain', 'qa_cylinders') are package data in na23recon/data/, read with
importlib.resources.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..quant.relax import RELAXATION_FILE, Relaxation, presets

RELAX_FIELDS = tuple(f.name for f in fields(Relaxation))
"""The relaxation fields a compartment takes from its preset: t1_ms, t2s_short_ms, t2s_long_ms, frac_short."""


@dataclass
class Compartment:
    """One ellipsoid of uniform tissue. Units: mm, mM, ms, degrees.

    medium: set for a reference vial (the relaxation preset of its gel or saline; the vials file
    lists these). relaxation: the preset the T1/T2* fields were taken from (None: given inline).
    """

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
    relaxation: str | None = None
    b0_hz: float = 0.0
    """Off-resonance of the compartment at the sodium frequency, Hz: its signal carries exp(2 pi i f t)."""

    def __post_init__(self) -> None:
        if self.shape not in ("ellipsoid", "cylinder"):
            raise InputError(f"compartment {self.name!r}: shape must be 'ellipsoid' or 'cylinder', got {self.shape!r}")

    @property
    def rotation(self) -> np.ndarray:
        """3x3 rotation about z: columns are the ellipsoid's axes in image coordinates."""
        a = np.deg2rad(self.rot_deg)
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def relax(self) -> Relaxation:
        """The compartment's relaxation (quant/relax.py), which decay and saturation evaluate."""
        return Relaxation(self.t1_ms, self.t2s_short_ms, self.t2s_long_ms, self.frac_short)

    def decay(self, t_s: np.ndarray | float) -> np.ndarray:
        """Biexponential transverse decay at time t (s) after excitation (1 at t = 0)."""
        return self.relax.decay(np.asarray(t_s, dtype=np.float64) * 1e3)

    def saturation(self, tr_ms: float, flip_rad: float | np.ndarray) -> np.ndarray:
        """Spoiled gradient-echo steady-state factor sin(a)(1-E1)/(1-E1 cos a)."""
        return self.relax.saturation(tr_ms, flip_rad)

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
              supersample: int = 1, rotation: np.ndarray | None = None, offset_mm=None) -> np.ndarray:
        """Voxelised ground truth (x, y, z): 'conc' (mM, partial-volume averaged with `supersample`^3
        points per voxel), 'label' (label of the voxel centre) or 'b0_hz' (the off-resonance of the
        compartment that owns the voxel centre, 0 in the background). rotation (3, 3) and offset_mm (3,):
        the grid's voxel positions r map to phantom coordinates rotation @ r + offset_mm (an
        oblique, off-centre scan of a phantom that stays put; default: the phantom's own axes)."""
        rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        off = np.zeros(3) if offset_mm is None else np.asarray(offset_mm, dtype=float)
        r = self.voxel_centres_mm(matrix, fov_mm) @ rot.T + off
        if quantity == "label":
            return self.label_map(r)
        if quantity == "b0_hz":
            return np.array([c.b0_hz for c in self.compartments] + [0.0])[self.index_map(r)]
        if quantity != "conc":
            raise ValueError(f"quantity must be 'conc', 'label' or 'b0_hz', got {quantity!r}")
        conc = np.array([c.conc_mM for c in self.compartments] + [0.0])
        fov = np.broadcast_to(np.asarray(fov_mm, dtype=float), (3,))
        n = np.broadcast_to(np.asarray(matrix, dtype=int), (3,))
        vox = fov / n
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        acc = np.zeros(r.shape[:-1])
        for ox in offs:
            for oy in offs:
                for oz in offs:
                    acc += conc[self.index_map(r + rot @ (vox * np.array([ox, oy, oz])))]
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


def _data_dir():
    return files("na23recon") / "data"


def builtin_phantoms() -> list[str]:
    """Names of the phantoms shipped as package data (na23recon/data/*.json)."""
    return sorted(p.name[:-5] for p in _data_dir().iterdir()
                  if p.name.endswith(".json") and p.name != RELAXATION_FILE)


def load_phantom(name_or_path: str | Path) -> Phantom:
    """Load a phantom definition: a built-in name ('brain', 'qa_cylinders'; package data read with
    importlib.resources) or a path to a JSON file.

    Each compartment names its relaxation: a reference vial by "medium", tissue by "relaxation"
    (a preset of na23recon/data/relaxation.json), or gives t1_ms, t2s_short_ms, t2s_long_ms and
    frac_short inline (not both). A file's optional "media" block {name: {field: value}} adds
    presets or overrides fields of known ones (as the quantification's relaxation config does).
    """
    p = Path(name_or_path)
    if not p.suffix:
        if str(name_or_path) not in builtin_phantoms():
            raise InputError(f"phantom {str(name_or_path)!r} not found (built in: {', '.join(builtin_phantoms())})")
        where = f"built-in phantom {name_or_path!s}"
        text = (_data_dir() / f"{name_or_path}.json").read_text(encoding="utf-8")
    else:
        if not p.exists():
            raise InputError(f"phantom {str(name_or_path)!r} not found (built in: {', '.join(builtin_phantoms())})")
        where = str(p)
        text = p.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"phantom file {where} is not valid JSON: {exc}") from None
    media = d.get("media", {})
    if not isinstance(media, Mapping):
        raise InputError(f"phantom file {where}: 'media' must be an object {{name: {{field: value}}}}")
    table = presets(media)
    comps = [_compartment(cd, table, where) for cd in d.get("compartments", [])]
    return Phantom(name=d.get("name", p.stem), compartments=comps)


def _compartment(cd: Mapping, table: Mapping[str, Relaxation], where: str) -> Compartment:
    """A Compartment from its JSON dict, relaxation filled from the named preset."""
    cd = dict(cd)
    preset = cd.get("relaxation", cd.get("medium"))
    if preset is not None:
        inline = sorted(set(RELAX_FIELDS) & set(cd))
        if inline:
            raise InputError(f"compartment {cd.get('name')!r} in {where} names relaxation preset {preset!r} and "
                             f"also gives {inline}: give one or the other (or a 'media' block)")
        if preset not in table:
            raise InputError(f"compartment {cd.get('name')!r} in {where} names unknown relaxation preset "
                             f"{preset!r}; known: {', '.join(sorted(table))}")
        cd.update({f: getattr(table[preset], f) for f in RELAX_FIELDS})
        cd["relaxation"] = preset
    try:
        comp = Compartment(**cd)
    except TypeError as exc:
        raise InputError(f"bad compartment in {where}: {exc}") from None
    vals = [comp.conc_mM, comp.t1_ms, comp.t2s_short_ms, comp.t2s_long_ms, *comp.semi_axes_mm]
    if not np.isfinite(comp.b0_hz) or abs(comp.b0_hz) > 1000:
        raise InputError(f"compartment {comp.name!r} in {where}: b0_hz must be a number of Hz within +-1000")
    if not np.all(np.isfinite(vals)) or min(vals[1:]) <= 0 or comp.conc_mM < 0 or not 0 <= comp.frac_short <= 1:
        raise InputError(f"compartment {comp.name!r} in {where} has impossible parameters")
    return comp
