"""Tissue sodium concentration (TSC) from a sodium image and reference vials.

Each voxel's signal S is divided by the receive sensitivity R and by the spoiled-GRE weight W of
its tissue at the actual flip (k_B1 * nominal; quant/relax.py), giving m = S / (R W), which is
proportional to concentration. Over the vials (each with its own medium's W) the calibration
m = a C + b is fitted (free intercept, zero intercept, or intercept fixed at the noise floor as
the 0 mM point), and TSC = (m - b) / a. With b = 0 this is exactly
TSC = C_ref (S_tissue / S_ref) (W_ref / W_tissue) (Christensen et al., Magn Reson Med 1996 and
Thulborn et al., Radiology 1999 for the external-reference calibration; Boada et al., Magn Reson
Med 1994 for the biexponential relaxation weighting).

Uncertainty: per voxel, first-order propagation of the image noise (sigma / (R W)) and of the
calibration's covariance (a, b), the covariance scaled by the reduced chi^2 when that exceeds 1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..core.options import INTERCEPTS
from ..errors import InputError
from .b1 import estimate_noise_sd, receive_sensitivity
from .relax import check_acquisition, get_preset, spgr_weight
from .vial_detect import detect_vials
from .vials import Vial, vial_core

log = logging.getLogger(__name__)

B1_CLIP = (0.2, 3.0)  # flip scales outside this are not physical: extrapolated fits far from the object
#: A B1 map outside B1_CLIP in more than this fraction of the object is refused (not a flip-scale map).
B1_BAD_FRACTION = 0.1
INT32_MAX = np.iinfo(np.int32).max
#: Voxels whose tissue fractions sum below this take the default preset (no tissue there).
MIN_FRACTION = 1e-3
#: Below this R^2 of the vials' best line (3 or more vials, intercept free) the calibration is refused: vials assigned the
#: wrong labels, not noise (the simulated scans' lines read R^2 above 0.99; swapped labels ~0.5).
MIN_CALIBRATION_R2 = 0.8


def as_label_image(arr: np.ndarray, what: str) -> np.ndarray:
    """An int32 label image from `arr` (x, y, z): refuses non-finite, non-integer or out-of-int32 values
    (which a cast would silently wrap)."""
    a = np.asarray(arr)
    if a.dtype.kind in "iub":
        if a.size and (a.min() < 0 or a.max() > INT32_MAX):
            raise InputError(f"{what} holds labels outside 0..{INT32_MAX}")
        return a.astype(np.int32)
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} has non-finite voxels (NaN/inf)")
    if np.any(a != np.round(a)):
        raise InputError(f"{what} must hold integer labels")
    if a.size and (a.min() < 0 or a.max() > INT32_MAX):
        raise InputError(f"{what} holds labels outside 0..{INT32_MAX}")
    return a.astype(np.int32)


@dataclass
class Calibration:
    """Line m = a C + b through the vials: a (signal per mM), b, their 2x2 covariance, R^2, and the
    per-vial points (label, concentration mM, mean m, standard error of m, voxels)."""

    a: float
    b: float
    cov: np.ndarray
    r2: float
    intercept: str
    points: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"slope": self.a, "intercept": self.b, "cov": self.cov.tolist(), "r2": self.r2,
                "intercept_mode": self.intercept, "vials": self.points}


def fit_calibration(conc_mM: np.ndarray, m: np.ndarray, se: np.ndarray, intercept: str = "fit",
                    floor: float = 0.0, floor_se: float = 0.0) -> Calibration:
    """Weighted least-squares line m = a C + b over the vials.

    conc_mM, m, se: (nvial,) concentrations, measured means and their standard errors.
    intercept: 'fit' (a and b free; >= 2 vials), 'zero' (b = 0), 'noise-floor' (b = `floor`, the
    mean corrected background, with variance floor_se^2). Covariance from (X^T W X)^-1, scaled by
    the reduced chi^2 when it is above 1 (scatter beyond the noise: model error).
    """
    c = np.asarray(conc_mM, dtype=np.float64)
    y = np.asarray(m, dtype=np.float64)
    s = np.maximum(np.asarray(se, dtype=np.float64), 1e-12 * max(np.abs(y).max(), 1e-30))
    if intercept not in INTERCEPTS:
        raise InputError(f"unknown intercept mode {intercept!r}; expected one of {', '.join(INTERCEPTS)}")
    if intercept == "fit" and (len(c) < 2 or np.ptp(c) == 0):
        raise InputError("a fit with intercept needs at least 2 vials of different concentrations")
    w = 1.0 / s**2
    b_fixed = 0.0 if intercept == "zero" else float(floor)
    if intercept == "fit":
        X = np.stack([c, np.ones_like(c)], axis=1)
        cov = np.linalg.inv(X.T @ (X * w[:, None]))
        a, b = cov @ (X.T @ (w * y))
        dof = len(c) - 2
    else:
        var_a = 1.0 / np.sum(w * c**2)
        a = var_a * np.sum(w * c * (y - b_fixed))
        b = b_fixed
        var_b = floor_se**2 if intercept == "noise-floor" else 0.0
        # a depends on the fixed b: da/db = -sum(w c) / sum(w c^2)
        dadb = -np.sum(w * c) * var_a
        cov = np.array([[var_a + dadb**2 * var_b, dadb * var_b], [dadb * var_b, var_b]])
        dof = len(c) - 1
    res = y - (a * c + b)
    if dof > 0:
        chi2 = float(np.sum(w * res**2) / dof)
        if chi2 > 1.0:
            cov = cov * chi2
    if not a > 0:
        raise InputError(f"vial calibration has a non-positive slope ({a:.3g}): signal does not grow with "
                         "concentration; check the vials file and mask")
    ss_tot = np.sum((y - y.mean()) ** 2)
    r2 = float(1 - np.sum(res**2) / ss_tot) if ss_tot > 0 else float("nan")
    return Calibration(a=float(a), b=float(b), cov=np.asarray(cov, dtype=np.float64), r2=r2, intercept=intercept)


@dataclass
class TSCResult:
    """tsc, sd: float32 (x, y, z) in mM; vial_mask: int32 (x, y, z); calibration; info (what was done).
    weight: the signal weight W of each voxel (its relaxation mix, float64 (x, y, z)); weights: W
    of each preset used {name: (x, y, z)}; receive: R (x, y, z); sd_noise: the image noise part of
    `sd` (mM). So m = image / (R W) and TSC = (m - b) / a."""

    tsc: np.ndarray
    sd: np.ndarray
    vial_mask: np.ndarray
    calibration: Calibration
    info: dict
    weight: np.ndarray | None = None
    weights: dict = field(default_factory=dict)
    receive: np.ndarray | None = None
    sd_noise: np.ndarray | None = None


def quantify(image: np.ndarray, vials: list[Vial], flip_deg: float, tr_ms: float, te_ms: float,
             vial_mask: np.ndarray | None = None, b1: np.ndarray | None = None,
             receive: np.ndarray | None = None, reciprocity: bool = True, tissue: str = "gm",
             labels: np.ndarray | None = None, label_tissue: Mapping[int, str] | None = None,
             noise_sd: float | None = None, intercept: str = "fit", config: Mapping | None = None,
             vial_threshold: float | None = None, core_depth_vox: float = 1.0,
             tissue_fractions: Mapping[str, np.ndarray] | None = None,
             voxel_mm: tuple[float, float, float] | None = None) -> TSCResult:
    """TSC map (mM) and its SD from a magnitude sodium image and reference vials.

    image: (x, y, z) magnitude; vials: from the vials file; flip_deg / tr_ms / te_ms: the nominal
    acquisition. vial_mask: int (x, y, z) holding the vials' labels, or None to detect them
    (quant/vial_detect.py). b1: relative flip scale (x, y, z), 1.0 nominal (None: uniform). receive:
    relative receive map; default with `reciprocity` is R = b1 (transmit-receive coil).
    tissue: relaxation preset of voxels without another (below); tissue_fractions {preset:
    fraction (x, y, z)} (GM, WM, CSF maps from the 1H scan): each voxel's weight is the
    fraction-weighted mix sum f_t W_t / sum f_t of those presets' weights; `labels` (int (x, y, z))
    with `label_tissue` {label: preset} sets the preset of the listed labels' voxels; the vials'
    voxels take their medium's weight. noise_sd: Gaussian noise SD of
    the image (default: estimated from the background). intercept: 'fit' | 'zero' | 'noise-floor'.
    config: relaxation preset overrides (quant/relax.py). core_depth_vox: each vial is averaged over its
    central voxels, those within this depth of its deepest point (quant/vials.py `vial_core`:
    small vials are mostly partial volume). voxel_mm: the voxel size, which lets detection use the
    vials' listed sizes. Detected vials that are not found are left out of the calibration with
    a warning naming them (info 'vials_missing'); fewer than 2 found is an InputError.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise InputError(f"quantify needs a 3D image (x, y, z), got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise InputError(f"image has {int(np.sum(~np.isfinite(img)))} non-finite voxels (NaN/inf)")
    fracs = {k: np.asarray(v, dtype=np.float64) for k, v in (tissue_fractions or {}).items()}
    for name, arr in (("vial mask", vial_mask), ("B1 map", b1), ("receive map", receive), ("label image", labels),
                      *((f"{k} fraction map", v) for k, v in fracs.items())):
        if arr is not None and np.shape(arr) != img.shape:
            raise InputError(f"{name} shape {tuple(np.shape(arr))} differs from the image's {img.shape}")
    if b1 is not None and not np.all(np.isfinite(b1)):
        raise InputError("B1 map has non-finite voxels (NaN/inf)")
    if intercept not in INTERCEPTS:
        raise InputError(f"unknown intercept mode {intercept!r}; expected one of {', '.join(INTERCEPTS)}")
    check_acquisition(flip_deg, tr_ms, te_ms)
    if noise_sd is not None and not (np.isfinite(noise_sd) and noise_sd > 0):
        raise InputError(f"noise SD must be a finite number > 0, got {noise_sd}")
    if vial_threshold is not None and not (np.isfinite(vial_threshold) and vial_threshold > 0):
        raise InputError(f"vial threshold must be a finite number > 0, got {vial_threshold}")
    if vial_mask is not None:
        vial_mask = as_label_image(vial_mask, "vial mask")
    if labels is not None:
        labels = as_label_image(labels, "label image")
    if noise_sd is None:
        noise_sd = estimate_noise_sd(img)
    if b1 is not None:
        _check_b1_in_object(np.asarray(b1, dtype=np.float64), img > 5.0 * noise_sd)
    info: dict = {"flip_deg": float(flip_deg), "tr_ms": float(tr_ms), "te_ms": float(te_ms),
                  "noise_sd": float(noise_sd), "intercept": intercept, "b1": b1 is not None,
                  "receive": "map" if receive is not None else (
                      "reciprocity (R = k_B1)" if (reciprocity and b1 is not None) else "none")}
    if b1 is None:
        k = np.ones_like(img)
    else:
        k = np.asarray(b1, dtype=np.float64)
        n_clip = int(np.sum((k < B1_CLIP[0]) | (k > B1_CLIP[1])))
        if n_clip:
            log.warning("B1 map outside %s in %d voxels: clipped for the correction", B1_CLIP, n_clip)
        info["b1_voxels_clipped"] = n_clip
        k = np.clip(k, *B1_CLIP)
    R = np.broadcast_to(receive_sensitivity(k if b1 is not None else None, receive, reciprocity), img.shape)

    def weight(preset: str) -> np.ndarray:
        return spgr_weight(get_preset(preset, config), flip_deg, tr_ms, te_ms, k)

    media = sorted({v.medium for v in vials})
    w_media = {med: weight(med) for med in media}
    if vial_mask is None:
        common = max(media, key=lambda med: sum(v.medium == med for v in vials))
        w0 = spgr_weight(get_preset(common, config), flip_deg, tr_ms, te_ms, 1.0)
        expected = {v.label: v.concentration_mM * float(spgr_weight(get_preset(v.medium, config), flip_deg, tr_ms,
                                                                     te_ms, 1.0)) / float(w0) for v in vials}
        # found in the image as reconstructed (uniform noise), matched after the receive/B1/relaxation
        # correction; vial_threshold (None: automatic) is the least filtered peak of a vial, image units.
        corrected_scale = 1.0 / (R * w_media[common])
        det = detect_vials(img, vials, expected, vial_threshold, scale=corrected_scale, voxel_mm=voxel_mm)
        vmask = det.mask
        info["vials_detected"] = True
        info["vial_detection"] = det.as_dict()
        if len(vials) - len(det.missing) < 2:
            raise InputError(f"automatic detection found {len(vials) - len(det.missing)} of {len(vials)} vials, "
                             f"calibration needs 2: {'; '.join(det.missing.values())}; give --vial-mask")
        for why in det.missing.values():
            log.warning("%s: calibrating without it", why)
        info["vials_missing"] = sorted(det.missing)
        vials = [v for v in vials if v.label not in det.missing]
    else:
        vmask = vial_mask
        missing = [v.label for v in vials if not np.any(vmask == v.label)]
        if missing:
            raise InputError(f"vial label(s) {missing} of the vials file are absent from the vial mask "
                             f"(it holds {sorted(int(x) for x in np.unique(vmask) if x)})")
        info["vials_detected"] = False

    points = []
    for v in vials:
        m = vial_core(vmask == v.label, core_depth_vox)
        mv = img[m] / (R[m] * w_media[v.medium][m])
        n = int(m.sum())
        sd_noise = float(np.sqrt(np.mean((noise_sd / (R[m] * w_media[v.medium][m])) ** 2)))
        se = max(float(np.std(mv, ddof=1)) if n > 1 else 0.0, sd_noise) / np.sqrt(n)
        points.append({"label": v.label, "concentration_mM": v.concentration_mM, "medium": v.medium,
                       "mean": float(np.mean(mv)), "se": float(se), "voxels": n})
    c = np.array([p["concentration_mM"] for p in points])
    mm = np.array([p["mean"] for p in points])
    se = np.array([p["se"] for p in points])
    floor, floor_se = 0.0, 0.0
    if intercept == "noise-floor":
        # The mean magnitude of pure noise (Rayleigh mean sigma sqrt(pi/2)) is what 0 mM reads as.
        wref = float(np.median(np.concatenate([w_media[v.medium][vmask == v.label] for v in vials])))
        floor = noise_sd * np.sqrt(np.pi / 2) / wref
        floor_se = 0.05 * floor
    cal = fit_calibration(c, mm, se, intercept, floor, floor_se)
    cal.points = points
    # whatever the intercept mode, the vials must lie on some line (a forced intercept that misses
    # the floor lowers cal.r2 without any vial being wrong)
    r2_line = 1.0
    if len(points) > 2 and np.ptp(c) > 0:
        r2_line = cal.r2 if intercept == "fit" else fit_calibration(c, mm, se, "fit").r2
    if r2_line < MIN_CALIBRATION_R2:
        how = ("a receive array's shading left in (give --receive-reference) or vials matched to the wrong labels "
               "(give --vial-mask)" if info.get("vials_detected")
               else "check the vial mask's labels against the vials file, and a receive array's shading")
        raise InputError(f"the vials do not follow their listed concentrations (R^2 of the best line = {r2_line:.2f} "
                         f"< {MIN_CALIBRATION_R2}): {how}")
    if cal.r2 < 0.95:
        log.warning("vial calibration fits poorly (R^2 = %.3f): check vials, media and B1", cal.r2)

    w_t = weight(tissue)
    used = {tissue}
    weights = {tissue: w_t, **w_media}
    if fracs:
        total = sum(fracs.values())
        num = sum(f * weights.setdefault(k, weight(k)) for k, f in fracs.items())
        has = total > MIN_FRACTION
        w_t = np.where(has, num / np.where(has, total, 1.0), w_t)
        used |= set(fracs)
    if label_tissue:
        if labels is None:
            raise InputError("a per-label tissue mapping needs a label image")
        lab = np.asarray(labels).astype(np.int64)
        for lab_id, preset in label_tissue.items():
            sel = lab == int(lab_id)
            if sel.any():
                w_t = np.where(sel, weights.setdefault(preset, weight(preset)), w_t)
                used.add(preset)
    for v in vials:  # the vials read their own concentration
        sel = vmask == v.label
        w_t = np.where(sel, w_media[v.medium], w_t)
    mt = img / (R * w_t)
    tsc = (mt - cal.b) / cal.a
    var_m = (noise_sd / (R * w_t)) ** 2
    var = (var_m + cal.cov[1, 1] + tsc**2 * cal.cov[0, 0] + 2 * tsc * cal.cov[0, 1]) / cal.a**2
    info.update(tissue=tissue, label_tissue={str(k_): v_ for k_, v_ in (label_tissue or {}).items()},
                relaxation=("fraction-weighted mix of " + ", ".join(sorted(fracs)) + f" (elsewhere {tissue})"
                            if fracs else f"preset {tissue} for every tissue voxel"
                            + (" (label presets where given)" if label_tissue else "")) + "; vials: their medium",
                calibration=cal.as_dict())
    if not fracs and not label_tissue:
        log.info("one relaxation preset (%s) for every tissue voxel: give tissue maps (GM, WM, CSF) for a per-"
                 "voxel mix", tissue)
    return TSCResult(tsc=tsc.astype(np.float32), sd=np.sqrt(np.maximum(var, 0)).astype(np.float32),
                     vial_mask=vmask, calibration=cal, info=info, weight=w_t,
                     weights={k: np.broadcast_to(v, img.shape) for k, v in weights.items()}, receive=R,
                     sd_noise=np.sqrt(var_m / cal.a**2).astype(np.float32))


def _check_b1_in_object(b1: np.ndarray, obj: np.ndarray) -> None:
    """Refuse a B1 map that is not a relative flip scale over the object (`obj`: bool, voxels with
    signal; the whole image when it has fewer than 20): outside B1_CLIP (zero, negative, a map in
    percent, ...) in more than B1_BAD_FRACTION of it. A few such voxels (a fit extrapolated at the
    object's edge) are clipped later, with a warning."""
    if obj.sum() < 20:
        obj = np.ones(b1.shape, dtype=bool)
    k = b1[obj]
    bad = float(np.mean((k < B1_CLIP[0]) | (k > B1_CLIP[1])))
    if bad > B1_BAD_FRACTION:
        raise InputError(f"B1 map is outside {B1_CLIP[0]}..{B1_CLIP[1]} (zero, negative or not a relative flip "
                         f"scale) in {bad:.0%} of the object's voxels (median {float(np.median(k)):.3g}): "
                         "expected 1.0 = nominal flip")


def roi_stats(tsc: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Per label (> 0) of `labels` (int, x, y, z): mean, SD (ddof 1), median of `tsc` (mM) and voxel count."""
    t = np.asarray(tsc, dtype=np.float64)
    lab = np.asarray(labels)
    if lab.shape != t.shape:
        raise InputError(f"label image shape {lab.shape} differs from the TSC map's {t.shape}")
    if np.any(lab != np.round(lab)):
        raise InputError("label image must hold integer labels")
    lab = lab.astype(np.int64)
    rows = []
    for lab_id in np.unique(lab):
        if lab_id <= 0:
            continue
        v = t[lab == lab_id]
        rows.append({"label": int(lab_id), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                     "median": float(np.median(v)), "voxels": int(v.size)})
    return rows
