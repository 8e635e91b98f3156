"""Trajectory figure (PNG): a few readouts in 3D, |k|(t), |G|(t) and the radial sampling density."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path
from ..core.trajectory import Trajectory


def trajectory_png(path: str | Path, tr: Trajectory, n_show: int = 12) -> Path:
    """Write a 2x2 figure for a generated trajectory (matplotlib, Agg backend), atomically.

    Panels: `n_show` readouts spread over the acquisition in 3D (1/m); |k|(t) of one readout
    (t from excitation) with k0 and kmax; |G|(t) (mT/m, from the readout start) and the slew rate
    (T/m/s) of the base waveforms; samples per unit k-space volume in shells (relative, log
    scale) with the shell mean of `tr.dcf` if it has one. `tr.design` must be a `GradientDesign`.
    """
    from ..errors import InputError

    design = tr.design
    if design is None or tr.t is None:
        raise InputError("the trajectory figure needs a generated trajectory (its gradient design)")
    dcf = tr.dcf
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = plt.figure(figsize=(11, 8.5))
    ax = fig.add_subplot(2, 2, 1, projection="3d")
    for r in np.linspace(0, tr.nreadout - 1, min(n_show, tr.nreadout)).astype(int):
        ax.plot(*tr.k[r].T, lw=0.8)
    ax.set_xlabel("kx (1/m)")
    ax.set_ylabel("ky (1/m)")
    ax.set_zlabel("kz (1/m)")
    ax.set_title(f"{tr.kind}: {tr.nreadout} readouts x {tr.nsample} samples")

    ax = fig.add_subplot(2, 2, 2)
    t = np.broadcast_to(tr.t, tr.shape)[0]  # a generator's t (nsample,), from excitation
    ax.plot(t * 1e3, np.linalg.norm(tr.k[0], axis=-1), ".-", ms=2)
    ax.axhline(design.kmax_per_m, color="k", ls=":", label="kmax")
    if design.k0_per_m > 0:
        ax.axhline(design.k0_per_m, color="r", ls=":", label="k0")
    ax.set_xlabel("t from excitation (ms)")
    ax.set_ylabel("|k| (1/m)")
    ax.legend()

    ax = fig.add_subplot(2, 2, 3)
    tg = (np.arange(design.g_base.shape[1]) + 0.5) * design.raster_s * 1e3
    for b in np.unique(np.linspace(0, design.g_base.shape[0] - 1, 4).astype(int)):
        g = design.g_base[b]
        ax.plot(tg, np.linalg.norm(g, axis=-1) * 1e3, label=f"|G| base {b}")
    ax.set_xlabel("t from readout start (ms)")
    ax.set_ylabel("|G| (mT/m)")
    ax2 = ax.twinx()
    g = design.g_base[0]
    slew = np.linalg.norm(np.diff(np.vstack([np.zeros((1, 3)), g]), axis=0), axis=1) / design.raster_s
    ax2.plot(tg, slew, color="0.6", lw=0.6, label="slew base 0")
    ax2.set_ylabel("slew (T/m/s)")
    if design.report is not None:
        ax.set_title(f"peak {design.report.peak_g_T_m * 1e3:.2f} mT/m, {design.report.peak_slew_T_m_s:.0f} T/m/s",
                     fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    ax = fig.add_subplot(2, 2, 4)
    r = np.linalg.norm(tr.k, axis=-1).ravel()
    edges = np.linspace(0, design.kmax_per_m * (1 + 1e-9), 41)
    counts, _ = np.histogram(r, bins=edges)
    dens = counts / (4.0 / 3.0 * np.pi * np.diff(edges ** 3))
    mids = 0.5 * (edges[1:] + edges[:-1])
    ax.semilogy(mids, dens / dens[-5:].mean(), "o-", ms=3, label="samples per volume (rel.)")
    if dcf is not None:
        num, _ = np.histogram(r, bins=edges, weights=np.asarray(dcf).ravel())
        wmean = np.where(counts > 0, num / np.maximum(counts, 1), np.nan)
        prod = dens * wmean
        ax.semilogy(mids, prod / np.nanmedian(prod), "s-", ms=3, label="density x DCF (rel.)")
    if design.k0_per_m > 0:
        ax.axvline(design.k0_per_m, color="r", ls=":")
    ax.set_xlabel("|k| (1/m)")
    ax.set_ylabel("relative")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
