"""Compare a reconstruction with the phantom's truth: compartment means, a linear fit, NRMSE,
SSIM and per-compartment statistics of a TSC map.

The TSC map itself comes from the product's quantification (`na23recon.quant.tsc.quantify`, as
in scripts/validate_phantoms.py): there is no second calibration here.
"""

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


def nrmse(image: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """||image - truth|| / ||truth|| over `mask` (default: everywhere)."""
    m = np.ones(truth.shape, bool) if mask is None else np.asarray(mask, bool)
    d = np.asarray(image, float)[m] - np.asarray(truth, float)[m]
    return float(np.linalg.norm(d) / np.linalg.norm(np.asarray(truth, float)[m]))


def ssim(image: np.ndarray, truth: np.ndarray, data_range: float | None = None, sigma: float = 1.5,
         mask: np.ndarray | None = None) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh & Simoncelli, IEEE Trans Image Process 2004)
    by scikit-image's `structural_similarity`: Gaussian window of SD `sigma` voxels (truncated at 3.5
    SD, as in their reference code; any number of dimensions, each at least the window's 11 voxels
    at sigma 1.5), population covariances, K1 = 0.01, K2 = 0.03, L = `data_range` (default the
    truth's range). The SSIM map is averaged over `mask` (default: everywhere)."""
    from skimage.metrics import structural_similarity

    x, y = np.asarray(image, np.float64), np.asarray(truth, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    L = float(y.max() - y.min()) if data_range is None else float(data_range)
    _, smap = structural_similarity(x, y, data_range=L, gaussian_weights=True, sigma=sigma,
                                    use_sample_covariance=False, K1=0.01, K2=0.03, full=True)
    return float(smap[np.asarray(mask, bool)].mean() if mask is not None else smap.mean())


def compartment_stats(tsc: np.ndarray, labels: np.ndarray, truth_conc: dict[int, float], erode: int = 1
                      ) -> dict[int, dict[str, float]]:
    """Per label: mean, SD over voxels, bias = mean - true (mM and %), voxels (eroded masks)."""
    out = {}
    for lab, c in truth_conc.items():
        m = labels == lab
        if erode:
            m = ndimage.binary_erosion(m, iterations=erode)
        if m.sum() == 0:
            continue
        v = tsc[m]
        out[lab] = {"true": c, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                    "bias": float(v.mean() - c), "bias_pct": float(100 * (v.mean() - c) / c), "voxels": int(m.sum())}
    return out
