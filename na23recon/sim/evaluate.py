"""Compare a reconstruction with the phantom's truth: compartment means and a linear calibration."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def compartment_means(image: np.ndarray, labels: np.ndarray, erode: int = 1) -> dict[int, tuple[float, int]]:
    """Mean of `image` inside each label of `labels`, eroded by `erode` voxels (partial volume).

    Returns {label: (mean, voxel count)}; labels whose eroded mask is empty are left out.
    """
    out = {}
    for lab in np.unique(labels):
        if lab == 0:
            continue
        m = labels == lab
        if erode:
            m = ndimage.binary_erosion(m, iterations=erode)
        if m.sum() > 0:
            out[int(lab)] = (float(image[m].mean()), int(m.sum()))
    return out


def linear_calibration(measured: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit measured = a * truth + b. Returns (a, b, R^2)."""
    x, y = np.asarray(truth, float), np.asarray(measured, float)
    a, b = np.polyfit(x, y, 1)
    ss_res = np.sum((y - (a * x + b)) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    return float(a), float(b), float(1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")
