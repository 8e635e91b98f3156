"""QC figures (matplotlib, Agg): montages of 3D images, written atomically as PNG."""

from __future__ import annotations

import os

import numpy as np

from .io.atomic import atomic_path
from .io.nifti import sidecar_path


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


def html_report(path: str | os.PathLike, title: str, outputs: dict) -> str:
    """A self-contained HTML QC report: every PNG among `outputs` (and beside each NIfTI) embedded,
    each NIfTI's sidecar summarised. Written atomically."""
    import base64
    import html
    import json
    from pathlib import Path

    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:6px;font-size:12px}</style>", f"<h1>{html.escape(title)}</h1>"]
    seen = set()
    for name, p in outputs.items():
        p = Path(p)
        pngs = [p] if p.suffix == ".png" else []
        if p.name.endswith((".nii.gz", ".nii")):
            side = sidecar_path(p)
            pngs += sorted(p.parent.glob(side.stem + "*.png"))
            parts.append(f"<h2>{html.escape(name)}: {html.escape(p.name)}</h2>")
            if side.exists():
                meta = json.loads(side.read_text())
                keep = {k: meta[k] for k in ("acquisition", "recon", "quant", "b1", "calibration") if k in meta}
                parts.append(f"<pre>{html.escape(json.dumps(keep, indent=1)[:4000])}</pre>")
        for png in pngs:
            if png in seen or not png.exists():
                continue
            seen.add(png)
            b64 = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(png.name)}</h3><img src='data:image/png;base64,{b64}'>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return str(path)
