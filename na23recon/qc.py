"""QC figures (matplotlib, Agg): montages of 3D images, written atomically as PNG."""

from __future__ import annotations

import os

import numpy as np

from .io.atomic import atomic_path


def montage_png(path: str | os.PathLike, image: np.ndarray, title: str = "", n_slices: int = 12,
                cmap: str = "gray", vmax: float | None = None, unit: str = "") -> str:
    """Write an axial montage of a 3D image (x, y, z): `n_slices` evenly spaced z slices.

    Slices are shown in radiological-agnostic array order (x right, y up), with a colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.abs(np.asarray(image)) if np.iscomplexobj(image) else np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"montage needs a 3D image (x, y, z), got shape {img.shape}")
    nz = img.shape[2]
    zs = np.unique(np.linspace(nz * 0.1, nz * 0.9 - 1, min(n_slices, nz)).astype(int))
    ncol = int(np.ceil(np.sqrt(len(zs))))
    nrow = int(np.ceil(len(zs) / ncol))
    if vmax is None:
        vmax = float(np.percentile(img, 99.5)) or 1.0
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.2 * nrow + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, z in zip(axes.flat, zs):
        im = ax.imshow(img[:, :, z].T, origin="lower", cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(f"z={z}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label=unit)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return str(path)
