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
medium, their fraction maps fitted through the PSF by `quant.vialfit`, and the air around them).
Regional: the geometric transfer matrix (Rousset, Ma & Evans, J Nucl Med 1998) over the regions,
the vials and the air gives a C_r + b for every region and vial; the line through the vials' values
(not the map's calibration on vial cores, which still hold partial volume) gives C_r. The GTM is
solved for the expected magnitude (Rician, Gudbjartsson & Patz, Magn Reson Med 1995): a linear GTM
would read the noise floor of faint voxels as signal. Each region's model image is its band-limited
content at the voxel centres (`quant.bandlimit`) times W_r blurred by its PSF, the PSFs sharing
one scale (their DC gains differ with the decay, and so do the regions' images). Voxel-wise: region-based
voxel-wise correction (Thomas et al., Eur J Nucl Med Mol Imaging 2011) of y, divided by the
voxel's weight and calibrated with the same line. Both through `quant.pvc` with the reconstruction's
own PSF.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from .anatomy import Regions
from .pvc import convolve_psf, rbv
from .tsc import Calibration, TSCResult, fit_calibration
from .vialfit import VialShape, fit_vials, rician_mean, rician_slope
from .vials import Vial

log = logging.getLogger(__name__)

COLUMNS = ("region", "kind", "label", "voxels", "volume_ml", "mean", "sd", "median", "se_noise",
           "se_calibration", "se", "mean_pvc_gtm", "se_pvc_gtm", "mean_pvc_rbv")


#: Newton iterations (at most) of the GTM for the expected magnitude (`_gtm`).
RICE_ITERS = 30

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
    """Effective volume of a PSF in voxels, (sum p)^2 / sum p^2 (1 without a PSF): white noise
    filtered by p has voxel variance s^2 sum p^2 and a large region's mean s^2 (sum p)^2 / n, so
    the mean's variance is the voxel variance times this over n. (The signed sum: |p| would count
    the far, alternating ringing of a non-Cartesian PSF as correlation.)"""
    if psf is None:
        return 1.0
    p = np.asarray(_psf_for(psf, None), dtype=np.float64)
    s2 = float(np.sum(p**2))
    return max(1.0, float(np.sum(p)) ** 2 / s2) if s2 > 0 else 1.0


def _cal_se(res: TSCResult | Calibration, t: float) -> float:
    c = res.calibration if isinstance(res, TSCResult) else res
    var = (c.cov[1, 1] + t * t * c.cov[0, 0] + 2 * t * c.cov[0, 1]) / c.a**2
    return float(np.sqrt(max(var, 0.0)))


def _signal_regions(res: TSCResult, regions: Regions, vials: list[Vial], psf: PSF,
                    shapes: list[VialShape], cover: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The GTM's regions: f_r W_r for each region, then each vial (its fitted fraction map x its
    medium's weight), then, given the head's `cover` (the tissue fractions' sum), the air around
    head and vials: (R + nvial [+ 1], x, y, z); and the model image of each, (same shape): its
    band-limited content (`quant.bandlimit`; else the fractions with the box transfer divided out)
    times W blurred by the PSF of its relaxation (air: none, it reads the noise floor where it is).

    The PSFs keep their relative DC gains (one scale for all, that of the first): a tissue whose
    decay is slower during the readout has a larger gain, and the image shows it."""
    out, model = [], []
    scale = float(np.sum(_psf_for(psf, None)))
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("the PSF does not sum to a positive number")

    def add(frac, band, w, h):
        out.append(frac * w)
        src = (band if band is not None else frac) * w
        model.append(convolve_psf(src, np.asarray(h, np.float64) / scale, voxel_means=band is None))

    for r in range(len(regions)):
        preset = regions.presets[r]
        w = res.weights[preset] if preset is not None else res.weight
        add(regions.fractions[r], None if regions.band is None else regions.band[r], w, _psf_for(psf, preset))
    for v, s in zip(vials, shapes):
        add(s.fractions, s.band, res.weights[v.medium], _psf_for(psf, v.medium))
    if cover is not None:
        # the rest of the field of view: air, whose magnitude reads the noise floor (unblurred)
        air = np.clip(1.0 - cover - sum(s.fractions for s in shapes), 0.0, 1.0)
        out.append(air)
        model.append(air.astype(np.float64))
    return np.stack(out).astype(np.float64), np.stack(model)


def vial_shapes(res: TSCResult, y: np.ndarray, sets: list[Regions], vials: list[Vial], psf: PSF,
                sizes_vox: dict | None = None) -> list[VialShape]:
    """Each vial's solid fitted to y / W_medium through its medium's PSF (`quant.vialfit`), the
    regions' voxels (any fraction above 1%) left out of the fits; sizes_vox {label: semi-axes in
    voxels} fixes the listed vials' sizes."""
    head = np.zeros(y.shape, dtype=bool)
    for regions in sets:
        head |= regions.fractions.sum(axis=0) > 0.01
    med = vials[0].medium if vials else None
    w = res.weights[med] if med is not None else 1.0
    return fit_vials(y / w, res.vial_mask, [v.label for v in vials], [_psf_for(psf, v.medium) for v in vials],
                     exclude=head, noise_sd=_sd_y(res, y) / w, sizes=sizes_vox)


def _sd_y(res: TSCResult, y: np.ndarray) -> np.ndarray:
    """The Gaussian noise SD of the magnitude image per voxel in y = S / R units."""
    R = res.receive if res.receive is not None else 1.0
    return np.broadcast_to(res.info.get("noise_sd", 0.0) / R, y.shape)


def _gtm(y: np.ndarray, g: np.ndarray, spread: np.ndarray, sd_y: np.ndarray, v_psf: float,
         floor_sd: np.ndarray | None = None, iters: int = RICE_ITERS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GTM values z (R,) of every region of g (m = a C + b units), their noise SEs, and the image
    the GTM was solved on (y less its magnitude noise bias); spread: each region's model image
    (`_signal_regions`).

    floor_sd: the Gaussian noise SD of the magnitude y per voxel: the GTM is then solved for the
    expected magnitude, sum_v w_i(v) rician_mean(yhat(v)) = sum_v w_i(v) y(v) for every region i with
    yhat = sum_j z_j (g_j * h_j) (a linear GTM on a magnitude image reads its noise floor, high in
    faint voxels and absent in bright ones, as signal), by Newton's method from the linear GTM (a
    fixed-point iteration on y less the floor converges slowly where the signal is below the noise,
    a faint vial or the air, and stopped early it left the faint vials' values ~2% low at SNR 20).
    The image returned is y less the floor of the final yhat."""
    wf = g.reshape(g.shape[0], -1)
    ws = np.maximum(wf.sum(axis=1), 1e-30)
    S = spread.reshape(spread.shape[0], -1)
    G = (wf @ S.T) / ws[:, None]
    t = (wf @ y.reshape(-1)) / ws
    z = np.linalg.lstsq(G, t, rcond=None)[0]
    yc = y
    if floor_sd is not None:
        sdf = np.broadcast_to(floor_sd, y.shape).reshape(-1)
        z, yhat = _expected_magnitude(wf, ws, S, t, sdf, z, iters)
        yc = y - (rician_mean(yhat, sdf) - yhat).reshape(y.shape)
    # noise: the regional means t = G z, var(t_i) = sum w^2 sd^2 / (sum w)^2 times the PSF volume
    var_t = np.array([np.sum(w**2 * sd_y**2) / max(np.sum(w), 1e-30) ** 2 * v_psf for w in g])
    try:
        Gi = np.linalg.inv(np.asarray(G, dtype=np.float64))
        se = np.sqrt(np.maximum(np.diag(Gi @ np.diag(var_t) @ Gi.T), 0))
    except np.linalg.LinAlgError:
        se = np.full(len(z), np.nan)
    return z, se, yc


def _expected_magnitude(wf: np.ndarray, ws: np.ndarray, S: np.ndarray, t: np.ndarray, sd: np.ndarray,
                        z: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method (step halved while the residual grows) for F(z) = W rician_mean(z S) / ws - t
    = 0 from z; returns z and the final synthetic image z S (flat)."""

    def resid(zz):
        yh = zz @ S
        return (wf @ rician_mean(yh, sd)) / ws - t, yh

    f, yhat = resid(z)
    nf = float(np.linalg.norm(f))
    for _ in range(iters):
        J = ((wf * rician_slope(yhat, sd)) @ S.T) / ws[:, None]
        step = np.linalg.lstsq(J, f, rcond=1e-10)[0]
        lam = 1.0
        while lam >= 1e-3:
            zn = z - lam * step
            fn, yn = resid(zn)
            if np.all(np.isfinite(fn)) and np.linalg.norm(fn) < nf:
                break
            lam /= 2
        else:
            break
        done = np.linalg.norm(zn - z) <= 1e-9 * max(float(np.linalg.norm(zn)), 1e-30)
        z, f, yhat, nf = zn, fn, yn, float(np.linalg.norm(fn))
        if done:
            break
    return z, yhat


def pvc_calibration(res: TSCResult, vials: list[Vial], z: np.ndarray, se: np.ndarray,
                    floor_free: bool = False, shapes: list[VialShape] | None = None) -> Calibration:
    """The vial line m = a C + b through the vials' GTM values z. Their SEs: the noise `se` and
    the uncertainty of each vial's fitted volume (`shapes`), z scaling as 1 / volume.

    floor_free: the GTM modelled the magnitude noise floor (expected magnitude, an air region),
    so 0 mM reads 0: the line goes through 0 (b = 0). Otherwise the map's intercept rule (a
    noise floor keeps its value and SE)."""
    c0 = res.calibration
    conc = np.array([v.concentration_mM for v in vials], dtype=np.float64)
    se = np.where(np.isfinite(se) & (se > 0), se, np.nanmax(np.append(se, 1e-12)))
    if shapes:
        rel = np.array([s.volume_rel_sd if np.isfinite(s.volume_rel_sd) else 0.0 for s in shapes])
        se = np.hypot(se, np.abs(z) * rel)
    mode = "zero" if floor_free else c0.intercept
    cal = fit_calibration(conc, z, se, mode, floor=c0.b, floor_se=float(np.sqrt(max(c0.cov[1, 1], 0.0))))
    cal.points = [{"label": v.label, "concentration_mM": v.concentration_mM, "medium": v.medium,
                   "mean": float(zi), "se": float(si)} for v, zi, si in zip(vials, z, se)]
    return cal


def region_table(res: TSCResult, image: np.ndarray, sets: list[Regions], vials: list[Vial], voxel_ml: float,
                 psf: PSF | None = None, vial_sizes_mm: dict | None = None) -> tuple[list[dict], np.ndarray | None, dict]:
    """ROI rows (COLUMNS) of every region of `sets`, the RBV-corrected TSC map (mM; None without
    PVC) and a description of what was done.

    image: the magnitude image (x, y, z) the TSC map was made from; voxel_ml: one voxel's volume
    (mL); psf: the reconstruction's PSF (array centred at N//2 on the image's voxel size, or one per
    preset {name: array}; None: no PVC); vial_sizes_mm: {label: (3,) semi-axes mm along the image
    axes} of vials whose size is known (the rest are fitted).
    """
    img = np.asarray(image, dtype=np.float64)
    # the vials the calibration used: one not found (quantify's 'vials_missing') has no region to fit
    vials = [v for v in vials if np.any(res.vial_mask == v.label)]
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
    vox_mm = np.cbrt(voxel_ml * 1e3)
    sizes = {k: np.asarray(v, np.float64) / vox_mm for k, v in (vial_sizes_mm or {}).items()}
    shapes = vial_shapes(res, y, sets, vials, psf, sizes) if do_pvc and any(len(r) for r in sets) else []
    tissue = [r for r in sets if r.kind == "tissue"]
    cover = np.clip(tissue[0].fractions.sum(axis=0), 0.0, 1.0) if tissue and do_pvc else None
    if shapes:
        vox = np.cbrt(voxel_ml * 1e3)
        info["vial_shapes"] = [s.info([vox] * 3) for s in shapes]
    for regions in sets:
        gtm_c = gtm_se = None
        if do_pvc and len(regions):
            nreg = len(regions)
            g, spread = _signal_regions(res, regions, vials, psf, shapes, cover)
            z, z_se, yc = _gtm(y, g, spread, sd_y, v_psf, _sd_y(res, y))
            # vials and regions in one GTM; the calibration through the vials' corrected values
            nv = nreg + len(vials)
            cal_r = pvc_calibration(res, vials, z[nreg:nv], z_se[nreg:nv], floor_free=cover is not None,
                                    shapes=shapes)
            if cover is not None:
                info["air_floor"] = float(z[nv])
            gtm_c, gtm_se = (z[:nreg] - cal_r.b) / cal_r.a, z_se[:nreg] / cal_r.a
            if pvc_map is None:
                info["calibration_pvc"] = cal_r.as_dict()
                y_pvc = np.asarray(rbv(yc, g, None, values=z, spread=spread), dtype=np.float64)
                pvc_map = ((y_pvc / res.weight - cal_r.b) / cal_r.a).astype(np.float32)
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
                row["se_pvc_gtm"] = float(np.hypot(gtm_se[r], _cal_se(cal_r, float(gtm_c[r]))))
            if pvc_map is not None and n:
                row["mean_pvc_rbv"] = float(pvc_map[hard].mean())
            rows.append({k: row.get(k) for k in COLUMNS})
    return rows, pvc_map, info
