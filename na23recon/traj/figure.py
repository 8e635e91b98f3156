"""Trajectory figure (PNG): a few readouts in 3D, |k|(t), |G|(t) and the radial sampling density."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from .gradients import GeneratedTrajectory


def trajectory_png(path: str | Path, tr: GeneratedTrajectory, dcf: np.ndarray | None = None,
                   n_show: int = 12) -> Path:
    """Write a 2x2 figure for a generated trajectory (matplotlib, Agg backend), atomically.

    Panels: `n_show` readouts spread over the acquisition in 3D (1/m); |k|(t) of one readout
    with k0 and kmax; |G|(t) (mT/m) and the slew rate (T/m/s) of the base waveforms; samples per
    unit k-space volume in shells (relative, log scale) with the DCF's shell mean if given.
    """
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
    ax.plot(tr.t * 1e3, np.linalg.norm(tr.k[0], axis=-1), ".-", ms=2)
    ax.axhline(tr.kmax_per_m, color="k", ls=":", label="kmax")
    if tr.k0_per_m > 0:
        ax.axhline(tr.k0_per_m, color="r", ls=":", label="k0")
    ax.set_xlabel("t from readout start (ms)")
    ax.set_ylabel("|k| (1/m)")
    ax.legend()

    ax = fig.add_subplot(2, 2, 3)
    tg = (np.arange(tr.g_base.shape[1]) + 0.5) * tr.raster_s * 1e3
    for b in np.unique(np.linspace(0, tr.g_base.shape[0] - 1, 4).astype(int)):
        g = tr.g_base[b]
        ax.plot(tg, np.linalg.norm(g, axis=-1) * 1e3, label=f"|G| base {b}")
    ax.set_xlabel("t (ms)")
    ax.set_ylabel("|G| (mT/m)")
    ax2 = ax.twinx()
    g = tr.g_base[0]
    slew = np.linalg.norm(np.diff(np.vstack([np.zeros((1, 3)), g]), axis=0), axis=1) / tr.raster_s
    ax2.plot(tg, slew, color="0.6", lw=0.6, label="slew base 0")
    ax2.set_ylabel("slew (T/m/s)")
    if tr.report is not None:
        ax.set_title(f"peak {tr.report.peak_g_T_m * 1e3:.2f} mT/m, {tr.report.peak_slew_T_m_s:.0f} T/m/s",
                     fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    ax = fig.add_subplot(2, 2, 4)
    r = np.linalg.norm(tr.k, axis=-1).ravel()
    edges = np.linspace(0, tr.kmax_per_m * (1 + 1e-9), 41)
    counts, _ = np.histogram(r, bins=edges)
    dens = counts / (4.0 / 3.0 * np.pi * np.diff(edges ** 3))
    mids = 0.5 * (edges[1:] + edges[:-1])
    ax.semilogy(mids, dens / dens[-5:].mean(), "o-", ms=3, label="samples per volume (rel.)")
    if dcf is not None:
        num, _ = np.histogram(r, bins=edges, weights=np.asarray(dcf).ravel())
        wmean = np.where(counts > 0, num / np.maximum(counts, 1), np.nan)
        prod = dens * wmean
        ax.semilogy(mids, prod / np.nanmedian(prod), "s-", ms=3, label="density x DCF (rel.)")
    if tr.k0_per_m > 0:
        ax.axvline(tr.k0_per_m, color="r", ls=":")
    ax.set_xlabel("|k| (1/m)")
    ax.set_ylabel("relative")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
