"""The phantom as a 1H scan of the same visit would segment it: GM, WM and CSF probability maps
and an atlas of its compartments, at 1 mm (or `voxel_mm`) in scanner coordinates, optionally with
a known rigid motion of the head between the 1H and the sodium scan.

The maps hold each voxel's exact fractional content: every voxel is crossed by s x s lines along
its third axis, and the length of each line inside each ellipsoid is the closed-form root interval
of a quadratic, so the content is exact along the lines (sampled only across them, s = 4 by
default); each compartment owns its ellipsoid minus the ellipsoids painted over it (the
phantom's nesting, `sim.phantom`). Tissue classes follow the compartments' relaxation presets
(a lesion counts as white matter, as a segmentation without a lesion class would put it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.atomic import write_text_atomic
from ..core.nifti import save_nifti
from ..errors import InputError
from .phantom import Phantom

FLIP = np.diag([-1.0, -1.0, 1.0])
#: Tissue class of each relaxation preset.
TISSUE_OF = {"gm": "gm", "wm": "wm", "csf": "csf", "lesion": "wm"}
TISSUES = ("gm", "wm", "csf")


def euler_deg(rot_deg) -> np.ndarray:
    """3x3 rotation R = Rz(c) Rx(a) Ry(b) for (a, b, c) degrees about x, y, z (ITK's Euler3D order)."""
    a, b, c = np.deg2rad(np.asarray(rot_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def head_motion(where_lps, offset_mm=(0.0, 0.0, 0.0), rot_deg=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(M, centre): M 4x4 RAS, the head's rigid motion from the sodium scan to the 1H scan
    (x -> c + R (x - c) + offset, rotation about the phantom's origin c), i.e. the transform from
    sodium scanner coordinates to 1H scanner coordinates that registration should find.
    where_lps: the phantom origin in patient coordinates (LPS mm)."""
    c = FLIP @ np.asarray(where_lps, dtype=float)
    R = euler_deg(rot_deg)
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = c + np.asarray(offset_mm, dtype=float) - R @ c
    return M, c


def _tissue_compartments(ph: Phantom) -> list[int]:
    return [j for j, c in enumerate(ph.compartments) if c.medium is None]


def _line_lengths(comp, P0: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t0, t1): the interval of each line P0 + t d (P0 (n, 3) mm, d (3,) unit) inside the ellipsoid
    (t0 = t1 = 0 when it misses)."""
    if comp.shape != "ellipsoid":
        raise InputError(f"tissue maps need ellipsoid compartments; {comp.name!r} is a {comp.shape}")
    A_inv = comp.rotation / np.asarray(comp.semi_axes_mm)[None, :]  # u = (p - c) @ R / s
    u0 = (P0 - np.asarray(comp.center_mm)) @ A_inv
    v = d @ A_inv
    a = float(v @ v)
    b = u0 @ v
    cc = np.sum(u0 * u0, axis=1) - 1.0
    disc = b * b - a * cc
    hit = disc > 0
    s = np.sqrt(np.where(hit, disc, 0.0))
    return np.where(hit, (-b - s) / a, 0.0), np.where(hit, (-b + s) / a, 0.0)


def tissue_maps(ph: Phantom, where_lps, voxel_mm: float = 1.0, motion: np.ndarray | None = None,
                sub: int = 4) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """({gm, wm, csf: float32 fraction maps}, atlas int16 (compartment label at the voxel centre),
    affine 4x4 RAS) of the phantom on an axis-aligned `voxel_mm` grid covering the head, as seen by
    a 1H scan after the head motion `motion` (4x4 RAS, `head_motion`; None: none); where_lps: the
    phantom origin in patient coordinates (LPS mm)."""
    if not 0.25 <= voxel_mm <= 4:
        raise InputError(f"tissue map voxel must be 0.25-4 mm, got {voxel_mm}")
    M = np.eye(4) if motion is None else np.asarray(motion, dtype=float)
    c_ras = FLIP @ np.asarray(where_lps, dtype=float)
    idx = _tissue_compartments(ph)
    reach = max(np.linalg.norm(np.asarray(ph.compartments[j].center_mm)) + max(ph.compartments[j].semi_axes_mm)
                for j in idx)
    centre = M[:3, :3] @ c_ras + M[:3, 3]
    n = int(np.ceil(2 * (reach + 6.0) / voxel_mm))
    origin = centre - (n // 2) * voxel_mm
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    Minv = np.linalg.inv(M)
    # 1H RAS q -> phantom p = FLIP (M^-1 q - c)
    to_ph = FLIP @ Minv[:3, :3]
    d = to_ph @ np.array([0.0, 0.0, 1.0])
    offs = ((np.arange(sub) + 0.5) / sub - 0.5) * voxel_mm
    parents = ph.parents
    fr = {t: np.zeros((n, n, n), dtype=np.float32) for t in TISSUES}
    edges = (np.arange(n + 1) - 0.5) * voxel_mm  # t of the voxel boundaries along a line from the first centre
    ys = origin[1] + np.arange(n) * voxel_mm
    for ix in range(n):
        x = origin[0] + ix * voxel_mm
        q0 = np.array([[x + ox, y + oy, origin[2]] for y in ys for ox in offs for oy in offs])
        P0 = (q0 @ Minv[:3, :3].T + Minv[:3, 3] - c_ras) @ FLIP.T
        lengths = {}
        for j in idx:
            t0, t1 = _line_lengths(ph.compartments[j], P0, d)
            lo = np.maximum(t0[:, None], edges[None, :-1])
            hi = np.minimum(t1[:, None], edges[None, 1:])
            lengths[j] = np.maximum(hi - lo, 0.0)
        for j in idx:
            own = lengths[j] - sum(lengths[k] for k in idx if parents[k] == j)
            tissue = TISSUE_OF.get(ph.compartments[j].relaxation or "")
            if tissue is not None:
                fr[tissue][ix] += (own.reshape(n, sub * sub, n).mean(axis=1) / voxel_mm).astype(np.float32)
    for t in TISSUES:
        np.clip(fr[t], 0.0, 1.0, out=fr[t])
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    q = grid * voxel_mm + origin
    p = (q @ Minv[:3, :3].T + Minv[:3, 3] - c_ras) @ FLIP.T
    sub_ph = Phantom(ph.name, [ph.compartments[j] for j in idx])
    atlas = sub_ph.label_map(p).reshape(n, n, n)
    return fr, atlas, affine


def write_anatomy(out: str | os.PathLike, ph: Phantom, where_lps, voxel_mm: float = 1.0,
                  offset_mm=(0.0, 0.0, 0.0), rot_deg=(0.0, 0.0, 0.0), sidecar: dict | None = None) -> dict[str, Path]:
    """Write anat_gm/wm/csf.nii.gz (probabilities), anat_atlas.nii.gz + anat_atlas.tsv (id, name)
    into `out`; their sidecars record the head motion (`head_motion`) between the two scans."""
    out = Path(out)
    M, c = head_motion(where_lps, offset_mm, rot_deg)
    fr, atlas, affine = tissue_maps(ph, where_lps, voxel_mm, M)
    side = dict(sidecar or {})
    side["anatomy"] = {"what": "tissue fractions of the phantom as a 1H scan sees it (exact along lines, "
                               "4x4 lines per voxel)", "voxel_mm": voxel_mm,
                       "motion": {"matrix": M.tolist(), "direction": "sodium RAS mm -> 1H RAS mm",
                                  "offset_mm": list(map(float, offset_mm)), "rot_deg": list(map(float, rot_deg)),
                                  "centre_mm": c.tolist()},
                       "tissue_of_preset": TISSUE_OF}
    paths = {}
    for t in TISSUES:
        paths[f"anat_{t}"] = out / f"anat_{t}.nii.gz"
        save_nifti(paths[f"anat_{t}"], fr[t], affine, {**side, "tissue": t, "unit": "probability"})
    paths["anat_atlas"] = out / "anat_atlas.nii.gz"
    save_nifti(paths["anat_atlas"], atlas.astype(np.float32), affine, side)
    names: dict[int, str] = {}
    for comp in ph.compartments:
        if comp.medium is None:
            names.setdefault(comp.label, comp.name.split("_")[0] if comp.name.startswith("ventricle") else comp.name)
    paths["anat_atlas_table"] = out / "anat_atlas.tsv"
    write_text_atomic(paths["anat_atlas_table"], "id\tname\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(names.items())))
    paths["anat_motion"] = out / "anat_motion.json"
    write_text_atomic(paths["anat_motion"], json.dumps(side["anatomy"]["motion"], indent=2) + "\n")
    return paths
