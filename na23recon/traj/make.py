"""Generate a trajectory by name, with its DCF, and write it (file + PNG): what `na23recon traj` calls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.memory import check_fits
from ..core.trajectory import Trajectory
from ..errors import InputError
from ..io.trajfile import save_traj
from ..report.figures import trajectory_png
from .dar import dar_3d
from .dcf import dcf_for, dcf_pipe_menon
from .radial import radial_for_matrix
from .tpi import tpi_3d

log = logging.getLogger(__name__)

KINDS = ("radial", "dar", "tpi")


def generate(kind: str, matrix: int, fov_mm: float, **opts: Any) -> Trajectory:
    """Generate a 'radial' (`radial_for_matrix`), 'dar' (`dar_3d`) or 'tpi' (`tpi_3d`) trajectory.

    `opts` go to the generator; None values are dropped (generator defaults apply). The result has
    t from excitation and its `GradientDesign` as `design`; no DCF yet (`trajectory_dcf`).
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    if kind in KINDS and isinstance(matrix, int | float) and matrix > 0:
        # at least pi N^2 / undersampling readouts of N/2 samples, k float64 (3) + dcf + t + work copies
        spokes = np.pi * float(matrix) ** 2 / max(float(opts.get("undersampling", 1.0) or 1.0), 1e-3)
        check_fits(spokes * float(matrix) / 2 * 3 * 8 * 4, f"a {kind} trajectory for matrix {matrix}")
    if kind == "radial":

        opts.pop("p", None)
        return radial_for_matrix(matrix, fov_mm, **opts)
    if kind == "dar":

        return dar_3d(matrix, fov_mm, **opts)
    if kind == "tpi":

        opts.pop("undersampling", None)
        opts.pop("ordering", None)
        return tpi_3d(matrix, fov_mm, **opts)
    raise InputError(f"trajectory kind must be one of {KINDS}, found {kind!r}")


def trajectory_dcf(traj: Trajectory, method: str = "analytic") -> np.ndarray | None:
    """DCF (nreadout, nsample) in (1/m)^3 for a generated trajectory: 'analytic', 'pipe-menon' or 'none'.

    'analytic': shell volumes (`dcf.dcf_for`); 'pipe-menon': iterated from them (Pipe & Menon,
    MRM 1999) on the design's matrix and FOV. Attach it with `traj.with_dcf(dcf)`.
    """
    if method == "none":
        return None
    if method == "analytic":
        return dcf_for(traj)
    if method == "pipe-menon":
        if traj.design is None:
            raise InputError("the Pipe-Menon DCF needs a generated trajectory (its design's matrix and FOV)")
        fov_mm = float(traj.design.params["fov_mm"])
        n = int(traj.design.params["matrix"])
        cell = (fov_mm * 1e-3) ** 3  # (1/m)^3 -> (cycles/FOV)^3
        w0 = dcf_for(traj) * cell
        return dcf_pipe_menon(traj.coord(fov_mm), (n, n, n), w0=w0) / cell
    raise InputError(f"DCF method must be 'analytic', 'pipe-menon' or 'none', found {method!r}")


def write_trajectory(out: str | Path, traj: Trajectory, png: bool = True) -> dict[str, Path]:
    """Write `traj` (with its dcf, t from excitation) to `out` (.npz, `io.trajfile.save_traj`) and,
    with `png`, a figure beside it. Returns the paths by name ('traj', 'png')."""
    out = Path(out)
    paths = {"traj": save_traj(out, traj)}
    if png:

        paths["png"] = trajectory_png(out.with_suffix(".png"), traj)
    return paths
