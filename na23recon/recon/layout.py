"""What a trajectory samples: a 3D volume, one 2D slice, or a stack of 2D planes on Cartesian partitions.

`kspace_layout(coord)` decides from k in cycles per FOV (each axis on its own FOV):
- '2d': kz = 0 everywhere (|kz| below 1% of a cycle across the slice): 2D radial, spiral or a
  Cartesian slice; reconstructed in-plane, the image (Nx, Ny, 1) on the slice geometry;
- 'stack': kz on whole cycles (Cartesian partitions), constant along each readout, with more than
  one value (stack of stars / spirals): 3D (Nx, Ny, Nz), the partition axis on the grid;
- '3d': anything else.
`default_dcf` is the density compensation of a trajectory that brings none: 3D radial shell
volumes; in-plane, uniform weights for Cartesian lines, 2D radial shells (|k| dk) for straight
spokes, else Pipe & Menon's iteration (MRM 1999).
"""

from __future__ import annotations

import numpy as np

from ..traj.dcf import dcf_pipe_menon, dcf_radial_shells

#: |kz| (cycles/FOV) below which a trajectory is 2D, and the distance from whole cycles of a partition.
KZ_TOL = 0.01


def kspace_layout(coord: np.ndarray) -> str:
    """'2d', 'stack' or '3d' for coord (nreadout, nsample, 3) in cycles/FOV (module docstring)."""
    if coord.shape[-1] < 3:
        return "2d"
    kz = coord[..., 2].astype(np.float64)
    if np.max(np.abs(kz)) < KZ_TOL:
        return "2d"
    on_grid = np.max(np.abs(kz - np.round(kz))) < KZ_TOL
    per_readout = np.max(np.ptp(kz, axis=1)) < KZ_TOL
    if on_grid and per_readout and np.unique(np.round(kz)).size > 1:
        return "stack"
    return "3d"


def is_cartesian(coord2: np.ndarray) -> bool:
    """True when every readout is a line along one in-plane axis with unit spacing on a unit lattice."""
    c = coord2.astype(np.float64)
    if c.shape[1] < 2:
        return False
    for ax in (0, 1):
        other = c[..., 1 - ax]
        step = np.diff(c[..., ax], axis=1)
        if np.max(np.ptp(other, axis=1)) < 1e-3 and np.max(np.abs(np.abs(step) - 1.0)) < 1e-3:
            off = other[:, 0] - np.round(other[:, 0])
            if np.ptp(off) < 1e-3:
                return True
    return False


def is_radial_2d(coord2: np.ndarray) -> bool:
    """True when every readout lies on a straight line through the k-space origin."""
    c = coord2.astype(np.float64)
    r = np.linalg.norm(c, axis=-1)
    far = c[np.arange(c.shape[0]), np.argmax(r, axis=1)]
    cross = c[..., 0] * far[:, None, 1] - c[..., 1] * far[:, None, 0]
    return bool(np.max(np.abs(cross)) <= 1e-4 * max(r.max(), 1e-12) ** 2)


def default_dcf(coord: np.ndarray, layout: str, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """(DCF (nreadout, nsample), what it is) for a trajectory without one."""
    if layout == "3d":
        return dcf_radial_shells(coord), "radial shell volumes (|k|^2 dk)"
    c2 = coord[..., :2]
    if is_cartesian(c2):
        return np.ones(coord.shape[:2]), "uniform (Cartesian lines)"
    if is_radial_2d(c2):
        return dcf_radial_shells(c2), "2D radial shells (|k| dk)"
    if layout == "stack":
        # one plane's in-plane pattern, iterated on the in-plane grid, holds for every partition
        return dcf_pipe_menon(c2, tuple(shape[:2])), "Pipe-Menon (in-plane)"
    return dcf_pipe_menon(c2, tuple(shape[:2])), "Pipe-Menon"
