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


def nrmse(image: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """||image - truth|| / ||truth|| over `mask` (default: everywhere)."""
    m = np.ones(truth.shape, bool) if mask is None else np.asarray(mask, bool)
    d = np.asarray(image, float)[m] - np.asarray(truth, float)[m]
    return float(np.linalg.norm(d) / np.linalg.norm(np.asarray(truth, float)[m]))


def ssim(image: np.ndarray, truth: np.ndarray, data_range: float | None = None, sigma: float = 1.5,
         mask: np.ndarray | None = None) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, IEEE TIP 13:600) with a
    Gaussian window (SD `sigma` voxels, truncated at 3.5 SD as in their reference code; any number
    of dimensions), K1 = 0.01, K2 = 0.03, L = `data_range` (default the truth's range). The SSIM map
    is averaged over `mask` (default: everywhere)."""
    x, y = np.asarray(image, np.float64), np.asarray(truth, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    L = float(y.max() - y.min()) if data_range is None else float(data_range)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def filt(a):
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=3.5)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(smap[np.asarray(mask, bool)].mean() if mask is not None else smap.mean())


def signal_per_mM(phantom, labels: np.ndarray, te_ms: float, tr_ms: float, flip_deg: float,
                  b1: np.ndarray | None = None, receive: str = "uniform") -> np.ndarray:
    """Expected signal per mM in every voxel from its label's relaxation (spoiled GRE at TE, REFERENCES.md)
    and, optionally, a B1 map (transmit flip scale; with receive='reciprocal' the receive profile too).
    0 in the background. Compartments sharing a label must share relaxation (the brain's ventricles do)."""
    out = np.zeros(labels.shape)
    b = np.ones(labels.shape) if b1 is None else np.asarray(b1, float)
    a = np.deg2rad(flip_deg)
    for c in phantom.compartments:
        m = labels == c.label
        if m.any():
            w = c.saturation(tr_ms, a * b[m]) * c.decay(te_ms * 1e-3)
            out[m] = w * (b[m] if receive == "reciprocal" else 1.0)
    return out


def tsc_from_vials(image: np.ndarray, labels: np.ndarray, vials: dict[int, float], weight: np.ndarray | None = None,
                   erode: int = 1) -> tuple[np.ndarray, tuple[float, float, float]]:
    """TSC map (mM) by a linear vial calibration S/W = a C + b (REFERENCES.md), W the expected signal per
    mM (`signal_per_mM`, relaxation and B1; None: no correction). Returns (TSC, (a, b, R^2))."""
    s = np.asarray(image, float)
    if weight is not None:
        wref = np.median(weight[np.isin(labels, list(vials))])
        s = np.where(weight > 0, s * wref / np.where(weight > 0, weight, 1), s)
    means = compartment_means(s, labels, erode=0)
    means.update(compartment_means(s, labels, erode=erode))  # eroded where a vial keeps voxels
    labs = [lab for lab in vials if lab in means]
    if len(labs) < 2:
        raise ValueError(f"vial calibration needs at least 2 vials with voxels, found {len(labs)}")
    a, b, r2 = linear_calibration(np.array([means[lab][0] for lab in labs]), np.array([vials[lab] for lab in labs]))
    return (s - b) / a, (a, b, r2)


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
