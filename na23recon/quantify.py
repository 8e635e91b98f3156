"""File-level B1 mapping and TSC quantification: NIfTI (or twix) in, NIfTI + sidecar + QC out.

The `b1map` and `quantify` subcommands call these (DESIGN.md contracts); the numerics live in
quant/. Acquisition parameters come from the input image's sidecar (`acquisition`), overridden
by explicit arguments.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import InputError
from .io.atomic import write_text_atomic
from .io.nifti import load_nifti, save_nifti
from .provenance import base_sidecar

log = logging.getLogger(__name__)


def _stem(path: Path) -> tuple[Path, str]:
    """('/d/TSC.nii.gz') -> (Path('/d'), 'TSC'); refuses names that are not NIfTI."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return path.parent, name[: -len(ext)]
    raise InputError(f"output must be a .nii.gz or .nii file, got {name}")


def _is_nifti(p: str | os.PathLike) -> bool:
    return str(p).endswith((".nii", ".nii.gz"))


def acquisition_params(sidecar: Mapping, te_ms: float | None = None, tr_ms: float | None = None,
                       flip_deg: float | None = None, echo: int = 0) -> tuple[float, float, float]:
    """(flip_deg, tr_ms, te_ms) from a sidecar's `acquisition`, each overridden when given.

    `te_ms` in the sidecar may be a list (one per echo): `echo` picks one. Missing -> InputError
    that names the option to give.
    """
    acq = dict(sidecar.get("acquisition") or {})
    te_s = acq.get("te_ms")
    if isinstance(te_s, (list, tuple)):
        te_s = te_s[echo] if echo < len(te_s) else None
    vals = {"--flip-deg": flip_deg if flip_deg is not None else acq.get("flip_deg"),
            "--tr-ms": tr_ms if tr_ms is not None else acq.get("tr_ms"),
            "--te-ms": te_ms if te_ms is not None else te_s}
    missing = [k for k, v in vals.items() if v is None]
    if missing:
        raise InputError(f"acquisition parameter(s) not in the image's sidecar: give {', '.join(missing)}")
    try:
        flip, tr, te = (float(vals[k]) for k in ("--flip-deg", "--tr-ms", "--te-ms"))
    except (TypeError, ValueError):
        raise InputError(f"acquisition parameters must be numbers, got {vals}") from None
    return flip, tr, te


def _load_3d(path: str | os.PathLike, what: str, echo: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    arr, aff, side = load_nifti(path)
    if arr.ndim == 4:
        if not 0 <= echo < arr.shape[3]:
            raise InputError(f"{what} {path} has {arr.shape[3]} echoes, echo {echo} requested")
        arr = arr[..., echo]
    if arr.ndim != 3:
        raise InputError(f"{what} {path} must be a 3D image (x, y, z), got shape {arr.shape}")
    return arr, aff, side


def _same_grid(ref: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray], what: str) -> None:
    (a, aff_a), (b, aff_b) = ref, other
    if a.shape != b.shape:
        raise InputError(f"{what} has shape {b.shape} but the image {a.shape}")
    if not np.allclose(aff_a, aff_b, atol=1e-3, rtol=1e-5):
        raise InputError(f"{what} has a different affine (geometry) from the image: resample it onto the image grid")


def quantify_file(image_path: str | os.PathLike, out_path: str | os.PathLike, vials_path: str | os.PathLike,
                  vial_mask_path: str | os.PathLike | None = None, b1_path: str | os.PathLike | None = None,
                  labels_path: str | os.PathLike | None = None, receive_path: str | os.PathLike | None = None,
                  te_ms: float | None = None, tr_ms: float | None = None, flip_deg: float | None = None,
                  echo: int = 0, tissue: str = "gm", label_tissue: Mapping[int, str] | None = None,
                  intercept: str = "fit", reciprocity: bool = True, noise_sd: float | None = None,
                  config_path: str | os.PathLike | None = None, vial_threshold: float | None = None,
                  png: bool = True) -> dict[str, Path]:
    """`na23recon quantify`: TSC map (mM) `out_path`, `<stem>_sd` beside it, sidecars, with labels
    `<stem>_roi.csv` / `.json`, QC PNGs. Returns {name: path}. See quant/tsc.py `quantify`."""
    from .quant.tsc import quantify, roi_stats
    from .quant.vials import load_vials

    out_path = Path(out_path)
    folder, stem = _stem(out_path)
    config = None
    if config_path is not None:
        try:
            config = json.loads(Path(config_path).read_text()).get("relaxation")
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            raise InputError(f"cannot read config {config_path}: {exc}; expected {{\"relaxation\": {{...}}}}") from None
    vials = load_vials(vials_path, config)
    img, aff, side = _load_3d(image_path, "image", echo)
    flip, tr, te = acquisition_params(side, te_ms, tr_ms, flip_deg, echo)
    extra = {}
    for key, p, what in (("vial_mask", vial_mask_path, "vial mask"), ("b1", b1_path, "B1 map"),
                         ("labels", labels_path, "label image"), ("receive", receive_path, "receive map")):
        if p is not None:
            arr, aff_p, _ = _load_3d(p, what)
            _same_grid((img, aff), (arr, aff_p), f"{what} {p}")
            extra[key] = arr
    for key in ("vial_mask", "labels"):
        if key in extra:
            if np.any(extra[key] != np.round(extra[key])):
                raise InputError(f"{key.replace('_', ' ')} must hold integer labels")
            extra[key] = np.round(extra[key]).astype(np.int32)
    res = quantify(img, vials, flip, tr, te, vial_mask=extra.get("vial_mask"), b1=extra.get("b1"),
                   receive=extra.get("receive"), reciprocity=reciprocity, tissue=tissue,
                   labels=extra.get("labels"), label_tissue=label_tissue, noise_sd=noise_sd,
                   intercept=intercept, config=config, vial_threshold=vial_threshold)
    inputs = [p for p in (image_path, vials_path, vial_mask_path, b1_path, labels_path, receive_path, config_path)
              if p is not None]
    base = base_sidecar(inputs=inputs)
    acq = dict(side.get("acquisition") or {})
    acq.update(flip_deg=flip, tr_ms=tr, te_ms=[te])
    quant_info = dict(res.info, vials=[v.__dict__ for v in vials], unit="mM",
                      method="external vial calibration (Christensen 1996, Thulborn 1999), B1 transmit/receive "
                             "and relaxation corrected (Insko & Bolinger 1993, Boada 1994)")
    out = {}
    sd_path = folder / f"{stem}_sd.nii.gz"
    save_nifti(sd_path, res.sd, aff, dict(base, acquisition=acq, quant=dict(quant_info, map="TSC standard deviation")))
    if labels_path is not None:
        rows = roi_stats(res.tsc, extra["labels"])
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=["label", "mean", "sd", "median", "voxels"], lineterminator="\n")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        out["roi_csv"] = folder / f"{stem}_roi.csv"
        out["roi_json"] = folder / f"{stem}_roi.json"
        write_text_atomic(out["roi_csv"], buf.getvalue())
        write_text_atomic(out["roi_json"], json.dumps({"unit": "mM", "rois": rows}, indent=2) + "\n")
    if extra.get("vial_mask") is None:
        out["vial_mask"] = folder / f"{stem}_vials.nii.gz"
        save_nifti(out["vial_mask"], res.vial_mask, aff, dict(base, quant={"map": "detected vials (labels)"}))
    if png:
        from .qc import montage_png
        from .quant.figures import calibration_png, tsc_png

        out["png"] = Path(tsc_png(folder / f"{stem}.png", res.tsc,
                                  mask=(extra["labels"] > 0) if "labels" in extra else None))
        out["calibration_png"] = Path(calibration_png(folder / f"{stem}_calibration.png", res.calibration))
        if "b1" in extra:
            out["b1_png"] = Path(montage_png(folder / f"{stem}_b1.png", extra["b1"], title="B1 (relative flip)",
                                             cmap="viridis", vmax=1.5))
    out["sd"] = sd_path
    # The TSC map last: it is what batch resumption looks for.
    out["tsc"] = save_nifti(out_path, res.tsc, aff, dict(base, acquisition=acq, quant=quant_info))
    return out


def b1map_file(scan_a: str | os.PathLike, scan_2a: str | os.PathLike, out_path: str | os.PathLike,
               traj_path: str | os.PathLike | None = None, flip_deg: float | None = None,
               fit: str = "poly", order: int = 3, snr_min: float = 5.0, matrix: int | None = None,
               png: bool = True) -> dict[str, Path]:
    """`na23recon b1map`: double-angle B1 map (relative flip scale, 1.0 nominal) from two scans at
    flips a and 2a. Twix scans are reconstructed with `pipeline.recon_file` (written beside the
    output as `<stem>_a.nii.gz`, `<stem>_2a.nii.gz`); NIfTI images are used as they are.
    The nominal flip a comes from scan A's sidecar unless `flip_deg` is given; the scans' flips
    must be a and 2a (5%). Returns {name: path}."""
    from .quant.b1 import double_angle

    out_path = Path(out_path)
    folder, stem = _stem(out_path)
    paths = []
    for tag, p in (("a", scan_a), ("2a", scan_2a)):
        if _is_nifti(p):
            paths.append(Path(p))
            continue
        if traj_path is None:
            raise InputError(f"scan {p} is not a NIfTI image: give --traj to reconstruct it")
        from .pipeline import recon_file

        paths.append(recon_file(p, traj_path, folder / f"{stem}_{tag}.nii.gz", matrix=matrix, png=False))
    sa, aff, side_a = _load_3d(paths[0], "scan a")
    s2a, aff2, side_2a = _load_3d(paths[1], "scan 2a")
    _same_grid((sa, aff), (s2a, aff2), f"scan 2a {paths[1]}")
    fa = (side_a.get("acquisition") or {}).get("flip_deg")
    f2a = (side_2a.get("acquisition") or {}).get("flip_deg")
    if flip_deg is None:
        if fa is None:
            raise InputError("scan a's flip angle is not in its sidecar: give --flip-deg")
        flip_deg = float(fa)
    if fa is not None and f2a is not None and abs(float(f2a) - 2 * float(fa)) > 0.05 * 2 * float(fa):
        raise InputError(f"the scans' flips are {fa} and {f2a} deg: the double-angle method needs a and 2a")
    tr = (side_a.get("acquisition") or {}).get("tr_ms")
    if tr is not None and float(tr) < 150.0:
        log.warning("TR %.0f ms is not >> T1 of sodium (20-60 ms): the double-angle map is biased", float(tr))
    m = double_angle(sa, s2a, float(flip_deg), snr_min=snr_min, fit=fit, order=order)
    side = base_sidecar(inputs=[scan_a, scan_2a] + ([traj_path] if traj_path is not None else []))
    side["acquisition"] = side_a.get("acquisition", {})
    side["b1"] = dict(m.info, map="relative flip scale k_B1 (1.0 = nominal)")
    out = {}
    if png:
        from .qc import montage_png

        out["png"] = Path(montage_png(folder / f"{stem}.png", m.b1, title="B1 (relative flip scale)",
                                      cmap="viridis", vmax=1.5))
    out["b1"] = save_nifti(out_path, m.b1, aff, side)
    return out
