"""QC figures of the quantification: calibration line with vials, TSC montage with histogram."""

from __future__ import annotations

import os

import numpy as np

from ..io.atomic import atomic_path
from .tsc import Calibration


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def calibration_png(path: str | os.PathLike, cal: Calibration, title: str = "vial calibration") -> str:
    """Corrected vial signal (mean +- SE) against concentration (mM) with the fitted line."""
    plt = _plt()
    c = np.array([p["concentration_mM"] for p in cal.points])
    m = np.array([p["mean"] for p in cal.points])
    se = np.array([p["se"] for p in cal.points])
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.errorbar(c, m, yerr=se, fmt="o", capsize=3, label="vials")
    for p in cal.points:
        ax.annotate(str(p["label"]), (p["concentration_mM"], p["mean"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=7)
    x = np.linspace(0, max(c.max(), 1.0) * 1.05, 50)
    ax.plot(x, cal.a * x + cal.b, "-", label=f"m = {cal.a:.4g} C + {cal.b:.3g} (R$^2$ {cal.r2:.4f})")
    ax.set_xlabel("concentration (mM)")
    ax.set_ylabel("corrected signal S / (R W)")
    ax.set_title(f"{title} ({cal.intercept})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return str(path)


def tsc_png(path: str | os.PathLike, tsc: np.ndarray, mask: np.ndarray | None = None, n_slices: int = 8,
            vmax: float = 160.0) -> str:
    """Axial montage of the TSC map (mM, 0..vmax) and a histogram of the voxels in `mask`
    (default: voxels with TSC > 5 mM)."""
    plt = _plt()
    t = np.asarray(tsc, dtype=np.float32)
    nz = t.shape[2]
    zs = np.unique(np.linspace(nz * 0.15, nz * 0.85 - 1, min(n_slices, nz)).astype(int))
    ncol = 4
    nrow = int(np.ceil(len(zs) / ncol))
    fig = plt.figure(figsize=(2.1 * ncol + 3.2, 2.1 * nrow + 0.3))
    gs = fig.add_gridspec(nrow, ncol + 2)
    im = None
    for i, z in enumerate(zs):
        ax = fig.add_subplot(gs[i // ncol, i % ncol])
        im = ax.imshow(t[:, :, z].T, origin="lower", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"z={z}", fontsize=7)
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.8, label="TSC (mM)")
    axh = fig.add_subplot(gs[:, ncol:])
    sel = np.asarray(mask, dtype=bool) if mask is not None else t > 5.0
    vals = t[sel & np.isfinite(t)]
    if vals.size:
        axh.hist(np.clip(vals, 0, vmax), bins=80, range=(0, vmax), color="0.3")
    axh.set_xlabel("TSC (mM)")
    axh.set_ylabel("voxels")
    axh.set_title("histogram", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return str(path)
