"""Regional TSC: per tissue, atlas label or label, without and with partial-volume correction,
with the uncertainty from image noise and from the vial calibration.

Without correction a region's TSC is the mean (SD, median) of the TSC map over the voxels it
fills at least half (`quant.anatomy.HARD_FRACTION`). Its standard error combines the noise, the
voxels' noise SD / sqrt(n_eff) (n_eff = voxels / the PSF's effective volume (sum p)^2 / sum p^2,
the number of independent resolution elements; 1 voxel each without a PSF), and the calibration,
(cov_bb + t^2 cov_aa + 2 t cov_ab) / a^2 from the covariance of the vial line m = a C + b
(`quant.tsc.Calibration`).

Partial-volume correction works on the receive-corrected signal y = S / R, which is linear in
concentration: y = sum_r PSF * (f_r W_r) (a C_r + b), f_r the region's fraction, W_r the spoiled-GRE
weight of its relaxation (the tissue preset; an atlas label takes the voxel's mix; the vials their
medium, from the vial mask). Regional: the geometric transfer matrix (Rousset, Ma & Evans, J Nucl
Med 1998) over the regions and the vials gives a C_r + b, hence C_r. Voxel-wise: region-based
voxel-wise correction (Thomas et al., Eur J Nucl Med Mol Imaging 2011) of y, divided by the
voxel's weight and calibrated as the map is. Both through `quant.pvc` with the reconstruction's
own PSF.
"""

from __future__ import annotations

import logging

import numpy as np

from .anatomy import Regions
from .pvc import gtm, rbv
from .tsc import TSCResult
from .vials import Vial

log = logging.getLogger(__name__)

COLUMNS = ("region", "kind", "label", "voxels", "volume_ml", "mean", "sd", "median", "se_noise",
           "se_calibration", "se", "mean_pvc_gtm", "se_pvc_gtm", "mean_pvc_rbv")


PSF = np.ndarray | dict
"""One PSF array for every region, or {preset: PSF} (each region blurred by its tissue's T2*
decay; regions without a preset of their own take 'gm', else the first)."""


def _psf_for(psf: PSF, preset: str | None) -> np.ndarray:
    if not isinstance(psf, dict):
        return psf
    if preset in psf:
        return psf[preset]
    return psf.get("gm", next(iter(psf.values())))


def psf_volume(psf: PSF | None) -> float:
    """Effective volume of a PSF in voxels, (sum |p|)^2 / sum p^2 (1 without a PSF)."""
    if psf is None:
        return 1.0
    p = np.abs(np.asarray(_psf_for(psf, None), dtype=np.float64))
    s2 = float(np.sum(p**2))
    return max(1.0, float(np.sum(p)) ** 2 / s2) if s2 > 0 else 1.0


def _cal_se(res: TSCResult, t: float) -> float:
    c = res.calibration
    var = (c.cov[1, 1] + t * t * c.cov[0, 0] + 2 * t * c.cov[0, 1]) / c.a**2
    return float(np.sqrt(max(var, 0.0)))


def _signal_regions(res: TSCResult, regions: Regions, vials: list[Vial], psf: PSF) -> tuple[np.ndarray, list]:
    """f_r W_r for each region, then each vial (mask x its medium's weight): (R + nvial, x, y, z),
    and the PSF of each."""
    out, psfs = [], []
    for r in range(len(regions)):
        preset = regions.presets[r]
        w = res.weights[preset] if preset is not None else res.weight
        out.append(regions.fractions[r] * w)
        psfs.append(_psf_for(psf, preset))
    for v in vials:
        out.append((res.vial_mask == v.label) * res.weights[v.medium])
        psfs.append(_psf_for(psf, v.medium))
    return np.stack(out).astype(np.float64), psfs


def _gtm_values(res: TSCResult, y: np.ndarray, g: np.ndarray, nreg: int, psf: list,
                sd_y: np.ndarray, v_psf: float) -> tuple[np.ndarray, np.ndarray]:
    """(C (nreg,) mM, noise SE (nreg,) mM) by the GTM over the regions g (the first nreg) and vials."""
    z, G = gtm(y, g, psf)
    z = np.asarray(z, dtype=np.float64)
    c = res.calibration
    conc = (z[:nreg] - c.b) / c.a
    # noise: the regional means t = G z, var(t_i) = sum w^2 sd^2 / (sum w)^2 times the PSF volume
    var_t = np.array([np.sum(w**2 * sd_y**2) / max(np.sum(w), 1e-30) ** 2 * v_psf for w in g])
    try:
        Gi = np.linalg.inv(np.asarray(G, dtype=np.float64))
        se = np.sqrt(np.maximum(np.diag(Gi @ np.diag(var_t) @ Gi.T), 0))[:nreg] / c.a
    except np.linalg.LinAlgError:
        se = np.full(nreg, np.nan)
    return conc, se


def region_table(res: TSCResult, image: np.ndarray, sets: list[Regions], vials: list[Vial], voxel_ml: float,
                 psf: PSF | None = None) -> tuple[list[dict], np.ndarray | None, dict]:
    """ROI rows (COLUMNS) of every region of `sets`, the RBV-corrected TSC map (mM; None without
    PVC) and a description of what was done.

    image: the magnitude image (x, y, z) the TSC map was made from; voxel_ml: one voxel's volume
    (mL); psf: the reconstruction's PSF (array centred at N//2 on the image's voxel size, or one per
    preset {name: array}; None: no PVC).
    """
    img = np.asarray(image, dtype=np.float64)
    R = res.receive if res.receive is not None else np.ones_like(img)
    y = img / R
    cal = res.calibration
    v_psf = psf_volume(psf)
    do_pvc = psf is not None
    info: dict = {"hard_fraction": 0.5, "psf_volume_vox": v_psf,
                  "pvc": "GTM (Rousset 1998) and RBV (Thomas 2011) with the reconstruction's PSF" if do_pvc else None}
    # noise SD of y per voxel, from the TSC noise map: sd_tsc = sd_y / (W a)
    sd_tsc = res.sd_noise if res.sd_noise is not None else np.zeros_like(img)
    sd_y = sd_tsc * res.weight * cal.a if res.weight is not None else sd_tsc * cal.a
    rows, pvc_map = [], None
    for regions in sets:
        gtm_c = gtm_se = None
        if do_pvc and len(regions):
            g, psfs = _signal_regions(res, regions, vials, psf)
            gtm_c, gtm_se = _gtm_values(res, y, g, len(regions), psfs, sd_y, v_psf)
            if pvc_map is None:
                y_pvc = np.asarray(rbv(y, g, psfs), dtype=np.float64)
                pvc_map = ((y_pvc / res.weight - cal.b) / cal.a).astype(np.float32)
                info["rbv_regions"] = regions.kind
        for r in range(len(regions)):
            hard = regions.hard(r)
            n = int(hard.sum())
            vals = res.tsc[hard].astype(np.float64)
            row = {"region": regions.names[r], "kind": regions.kind, "label": regions.ids[r], "voxels": n,
                   "volume_ml": float(regions.fractions[r].sum() * voxel_ml)}
            if n:
                mean = float(vals.mean())
                se_noise = float(np.sqrt(np.mean(sd_tsc[hard].astype(np.float64) ** 2) * v_psf / n))
                se_cal = _cal_se(res, mean)
                row.update(mean=mean, sd=float(vals.std(ddof=1)) if n > 1 else 0.0, median=float(np.median(vals)),
                           se_noise=se_noise, se_calibration=se_cal, se=float(np.hypot(se_noise, se_cal)))
            if gtm_c is not None:
                row["mean_pvc_gtm"] = float(gtm_c[r])
                row["se_pvc_gtm"] = float(np.hypot(gtm_se[r], _cal_se(res, float(gtm_c[r]))))
            if pvc_map is not None and n:
                row["mean_pvc_rbv"] = float(pvc_map[hard].mean())
            rows.append({k: row.get(k) for k in COLUMNS})
    return rows, pvc_map, info
