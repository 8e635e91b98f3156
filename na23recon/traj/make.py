"""Generate a trajectory by name, with its DCF, and write it (file + PNG): what `na23recon traj` calls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .gradients import GeneratedTrajectory

log = logging.getLogger(__name__)

KINDS = ("radial", "dar", "tpi")


def generate(kind: str, matrix: int, fov_mm: float, **opts: Any) -> GeneratedTrajectory:
    """Generate a 'radial' (`radial_for_matrix`), 'dar' (`dar_3d`) or 'tpi' (`tpi_3d`) trajectory.

    `opts` go to the generator; None values are dropped (generator defaults apply).
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    if kind == "radial":
        from .radial import radial_for_matrix

        opts.pop("p", None)
        return radial_for_matrix(matrix, fov_mm, **opts)
    if kind == "dar":
        from .dar import dar_3d

        return dar_3d(matrix, fov_mm, **opts)
    if kind == "tpi":
        from .tpi import tpi_3d

        opts.pop("undersampling", None)
        opts.pop("ordering", None)
        return tpi_3d(matrix, fov_mm, **opts)
    raise InputError(f"trajectory kind must be one of {KINDS}, found {kind!r}")


def trajectory_dcf(tr: GeneratedTrajectory, method: str = "analytic") -> np.ndarray | None:
    """DCF (nreadout, nsample) in (1/m)^3 for a generated trajectory: 'analytic', 'pipe-menon' or 'none'."""
    from .dcf import dcf_for, dcf_pipe_menon

    if method == "none":
        return None
    if method == "analytic":
        return dcf_for(tr)
    if method == "pipe-menon":
        fov_m = tr.params["fov_mm"] * 1e-3
        n = int(tr.params["matrix"])
        w0 = dcf_for(tr) * fov_m ** 3
        return dcf_pipe_menon(tr.k * fov_m, (n, n, n), w0=w0) / fov_m ** 3
    raise InputError(f"DCF method must be 'analytic', 'pipe-menon' or 'none', found {method!r}")


def write_trajectory(out: str | Path, tr: GeneratedTrajectory, dcf: np.ndarray | None = None,
                     png: bool = True) -> dict[str, Path]:
    """Write `out` (.npz, DESIGN.md contract; t from excitation = t + te_s) and, with `png`, a figure beside it."""
    from ..io.trajfile import save_traj

    out = Path(out)
    paths = {"traj": save_traj(out, tr.k, dcf=dcf, t=tr.t + tr.te_s, **tr.file_meta())}
    if png:
        from ..report.figures import trajectory_png

        paths["png"] = trajectory_png(out.with_suffix(".png"), tr, dcf)
    return paths
