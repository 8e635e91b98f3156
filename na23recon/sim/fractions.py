"""Exact-enough tissue fractions of an analytic phantom on an image grid.

Each voxel is sampled at `supersample`^3 points on a regular sub-grid; a point belongs to the last
compartment that contains it (the phantom's painting order), and a compartment's fraction in the
voxel is the share of its points. The error is that of a midpoint rule on the compartment's
indicator: about one sub-voxel layer along its surface, so 1/supersample of a boundary voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError
from .phantom import Phantom


def compartment_fractions(phantom: Phantom, matrix: int | Sequence[int], fov_mm: float | Sequence[float],
                          supersample: int = 5, rotation: np.ndarray | None = None,
                          offset_mm=None) -> np.ndarray:
    """(ncomp, x, y, z) float32: the fraction of each voxel that each compartment owns (the grid of
    `Phantom.truth`: voxel n at (n - N//2) FOV/N, rotation/offset to phantom coordinates)."""
    if supersample < 1:
        raise InputError(f"supersample must be >= 1, got {supersample}")
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    off = np.zeros(3) if offset_mm is None else np.asarray(offset_mm, dtype=float)
    n = np.broadcast_to(np.asarray(matrix, dtype=int), (3,))
    fov = np.broadcast_to(np.asarray(fov_mm, dtype=float), (3,))
    r = phantom.voxel_centres_mm(tuple(n), tuple(fov)) @ rot.T + off
    vox = fov / n
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    ncomp = len(phantom.compartments)
    counts = np.zeros((ncomp + 1,) + tuple(n), np.int32)
    flat = counts.reshape(ncomp + 1, -1)
    cells = np.arange(flat.shape[1])
    for ox in offs:
        for oy in offs:
            for oz in offs:
                idx = phantom.index_map(r + rot @ (vox * np.array([ox, oy, oz]))).reshape(-1)
                np.add.at(flat, (idx.astype(np.int64) + 1, cells), 1)  # row 0: background
    return (counts[1:] / float(supersample) ** 3).astype(np.float32)


def tissue_fractions(phantom: Phantom, matrix, fov_mm, groups: Mapping[str, Sequence[int]] | None = None,
                     supersample: int = 5, rotation: np.ndarray | None = None, offset_mm=None) -> dict[str, np.ndarray]:
    """{name: fraction map (x, y, z)} summing the compartments of each group of labels (default:
    one group per compartment label, named by its first compartment). Background is left out."""
    frac = compartment_fractions(phantom, matrix, fov_mm, supersample, rotation, offset_mm)
    labels = np.array([c.label for c in phantom.compartments])
    if groups is None:
        first: dict[int, str] = {}
        for c in phantom.compartments:
            first.setdefault(c.label, c.name)
        groups = {name: [lab] for lab, name in first.items()}
    out = {}
    for name, labs in groups.items():
        sel = np.isin(labels, list(labs))
        if not sel.any():
            raise InputError(f"group {name!r}: no compartment has label(s) {list(labs)}")
        out[name] = frac[sel].sum(axis=0)
    return out
