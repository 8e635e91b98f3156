"""QC figures as PNG: image montages, the TSC map, the vial calibration, a generated trajectory,
the gradient-delay estimate.

Each figure is a `matplotlib.figure.Figure` drawn on its own Agg canvas
(`matplotlib.backends.backend_agg.FigureCanvasAgg`): this module never imports `matplotlib.pyplot`
and never calls `matplotlib.use`, so it leaves the backend of the calling program (a notebook,
a GUI) as it was, keeps no global figure registry and is safe in worker threads. Every PNG is
written through `core.atomic` (complete or absent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from ..core.atomic import atomic_path
from ..core.trajectory import Trajectory
from ..errors import InputError

if TYPE_CHECKING:
    from ..quant.tsc import Calibration

__all__ = ["calibration_png", "delay_png", "delay_text", "montage_png", "new_figure", "overlay_png", "save_png",
           "trajectory_png", "tsc_png"]


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A detached figure with an Agg canvas (no pyplot, no backend switch)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: float) -> Path:
    """Render `fig` to a PNG at `path`, atomically; the figure is then cleared. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    fig.clear()
    return path


def _slices(nz: int, lo: float, hi: float, n: int) -> np.ndarray:
    return np.unique(np.linspace(nz * lo, nz * hi - 1, min(n, nz)).astype(int))


def montage_png(path: str | os.PathLike, image: np.ndarray, title: str = "", n_slices: int = 12,
                cmap: str = "gray", vmax: float | None = None, unit: str = "") -> str:
    """Write an axial montage of a 3D image (x, y, z): `n_slices` evenly spaced z slices.

    Slices are shown in radiological-agnostic array order (x right, y up), with a colour bar.
    Complex images are shown as magnitude. Returns the path (str).
    """
    img = np.abs(np.asarray(image)) if np.iscomplexobj(image) else np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"montage needs a 3D image (x, y, z), got shape {img.shape}")
    zs = _slices(img.shape[2], 0.1, 0.9, n_slices)
    ncol = int(np.ceil(np.sqrt(len(zs))))
    nrow = int(np.ceil(len(zs) / ncol))
    if vmax is None:
        vmax = float(np.percentile(img, 99.5)) or 1.0
    fig = new_figure((2.2 * ncol, 2.2 * nrow + 0.4))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, z in zip(axes.flat, zs):
        im = ax.imshow(img[:, :, z].T, origin="lower", cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(f"z={z}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label=unit)
    if title:
        fig.suptitle(title)
    save_png(fig, path, dpi=80)
    return str(path)


def calibration_png(path: str | os.PathLike, cal: Calibration, title: str = "vial calibration") -> str:
    """Corrected vial signal (mean +- SE) against concentration (mM) with the fitted line
    (external-reference calibration, Christensen et al. 1996; Thulborn et al. 1999).
    Returns the path (str)."""
    c = np.array([p["concentration_mM"] for p in cal.points])
    m = np.array([p["mean"] for p in cal.points])
    se = np.array([p["se"] for p in cal.points])
    fig = new_figure((4.5, 3.6))
    ax = fig.add_subplot()
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
    save_png(fig, path, dpi=90)
    return str(path)


def tsc_png(path: str | os.PathLike, tsc: np.ndarray, mask: np.ndarray | None = None, n_slices: int = 8,
            vmax: float = 160.0) -> str:
    """Axial montage of the TSC map (mM, 0..vmax) and a histogram of the voxels in `mask`
    (default: voxels with TSC > 5 mM). Returns the path (str)."""
    t = np.asarray(tsc, dtype=np.float32)
    if t.ndim != 3:
        raise ValueError(f"TSC figure needs a 3D map (x, y, z), got shape {t.shape}")
    zs = _slices(t.shape[2], 0.15, 0.85, n_slices)
    ncol = 4
    nrow = int(np.ceil(len(zs) / ncol))
    fig = new_figure((2.1 * ncol + 3.2, 2.1 * nrow + 0.3))
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
    save_png(fig, path, dpi=80)
    return str(path)


def trajectory_png(path: str | os.PathLike, tr: Trajectory, n_show: int = 12) -> Path:
    """Write a 2x2 figure for a generated trajectory, atomically. Returns the path (Path).

    Panels: `n_show` readouts spread over the acquisition in 3D (1/m); |k|(t) of one readout
    (t from excitation) with k0 and kmax; |G|(t) (mT/m, from the readout start) and the slew rate
    (T/m/s) of the base waveforms; samples per unit k-space volume in shells (relative, log
    scale) with the shell mean of `tr.dcf` if it has one. `tr.design` must be a gradient design.
    """
    design = tr.design
    if design is None or tr.t is None:
        raise InputError("the trajectory figure needs a generated trajectory (its gradient design)")
    dcf = tr.dcf
    path = Path(path)
    fig = new_figure((11, 8.5))
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
    return save_png(fig, path, dpi=90)


def delay_text(info: dict) -> str:
    """One line on the gradient delays of a reconstruction (`recon.gradient_delay`)."""
    axes = info.get("axes", ["read", "phase", "partition"])
    d = info.get("applied_us", [])
    if info.get("source") != "estimated":
        return "gradient delays applied (given): " + ", ".join(f"{a} {v:.2f} us" for a, v in zip(axes, d))
    sd = info.get("sd_us", [float("nan")] * len(d))
    return (f"gradient delays estimated ({info.get('method')}) and applied: "
            + ", ".join(f"{a} {v:.2f} +- {s:.2f} us" for a, v, s in zip(axes, d, sd)))


def delay_png(path: str | os.PathLike, info: dict) -> Path:
    """The gradient-delay estimate: the data-consistency cost along each axis (relative to its
    minimum) or, for RING, the estimates with their standard errors. Written atomically."""
    fig = new_figure((7, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    axes = info.get("axes", ["read", "phase", "partition"])
    curves = info.get("cost_curves")
    if curves:
        for a, c, d in zip(axes, curves, info["applied_us"]):
            c = np.asarray(c, dtype=np.float64)
            if c.size:
                ax.plot(c[:, 0], c[:, 1] / c[:, 1].min(), ".-", ms=3, label=f"{a}: {d:.2f} us")
        ax.set_xlabel("delay (us)")
        ax.set_ylabel("data-consistency cost / min")
        ax.legend(fontsize=8)
    else:
        x = np.arange(len(info["applied_us"]))
        ax.errorbar(x, info["applied_us"], yerr=info.get("sd_us"), fmt="o", capsize=4)
        ax.set_xticks(x, axes[:x.size])
        ax.set_ylabel("delay (us)")
        ax.axhline(0, color="0.6", lw=0.6)
    ax.set_title(delay_text(info), fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=90)


def _centre_slices(a: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through `centre` (x, y, z), each shown x/y/.. right, up."""
    x, y, z = centre
    return [a[:, :, z].T, a[:, y, :].T, a[x, :, :].T]


def overlay_png(path: str | os.PathLike, background: np.ndarray, contours: list[tuple[np.ndarray, str, str]],
                title: str = "", edges: np.ndarray | None = None, vmax: float | None = None,
                unit: str = "") -> str:
    """Three orthogonal slices through the centre of mass of `background` (x, y, z) with, over it,
    the 0.5 contour of each (map, colour, name) of `contours` and, with `edges`, the edges
    (gradient magnitude above its 90th percentile) of that image in red. For registration
    checks (the 1H image's edges over the sodium image) and regions over the TSC map.
    Returns the path (str)."""
    bg = np.asarray(background, dtype=np.float32)
    if bg.ndim != 3:
        raise ValueError(f"overlay needs a 3D image (x, y, z), got shape {bg.shape}")
    pos = np.clip(bg, 0, None)
    centre = tuple(int(round(c)) for c in ndimage.center_of_mass(pos)) if pos.sum() > 0 else \
        tuple(n // 2 for n in bg.shape)
    vmax = float(np.percentile(bg, 99.5)) or 1.0 if vmax is None else vmax
    fig = new_figure((11, 4.0))
    axes = fig.subplots(1, 3)
    edge_slices = None
    if edges is not None:
        e = np.asarray(edges, dtype=np.float32)
        g = np.sqrt(sum(ndimage.sobel(e, axis=i) ** 2 for i in range(3)))
        thr = np.percentile(g[g > 0], 90) if np.any(g > 0) else 1.0
        edge_slices = _centre_slices(np.ma.masked_less(g, thr), centre)
    im = None
    for i, ax in enumerate(axes):
        im = ax.imshow(_centre_slices(bg, centre)[i], origin="lower", cmap="gray", vmin=0, vmax=vmax)
        if edge_slices is not None:
            ax.imshow(edge_slices[i], origin="lower", cmap="autumn", alpha=0.8)
        for arr, colour, _name in contours:
            sl = _centre_slices(np.asarray(arr, dtype=np.float32), centre)[i]
            if sl.max() >= 0.5 > sl.min():
                ax.contour(sl, levels=[0.5], colors=[colour], linewidths=0.9)
        ax.set_title(("axial", "coronal", "sagittal")[i], fontsize=8)
        ax.axis("off")
    if contours:
        axes[0].legend(handles=[Line2D([], [], color=c, label=n) for _, c, n in contours], fontsize=7,
                       loc="lower left")
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label=unit)
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path, dpi=80)
    return str(path)
