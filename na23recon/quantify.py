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
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.atomic import staged_outputs
from .io.nifti import load_nifti, save_nifti, sidecar_path
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


#: The DESIGN.md sidecar `acquisition` fields.
ACQUISITION_FIELDS = ("nucleus", "b0_T", "te_ms", "tr_ms", "flip_deg", "dwell_us", "fov_mm", "matrix")


def complete_acquisition(acq: Mapping | None, shape: tuple[int, ...], affine: np.ndarray) -> tuple[dict, list[str]]:
    """The `acquisition` block with every DESIGN.md field present.

    Missing `matrix` and `fov_mm` come from the NIfTI header (shape, voxel size x shape); any other
    missing field is recorded as null, never left out. Returns (block, names of the fields that
    were missing).
    """
    out = dict(acq or {})
    missing = [f for f in ACQUISITION_FIELDS if out.get(f) is None]
    vox = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    if out.get("matrix") is None:
        out["matrix"] = [int(n) for n in shape[:3]]
    if out.get("fov_mm") is None:
        out["fov_mm"] = [round(float(v * n), 6) for v, n in zip(vox, shape[:3])]
    for f in ACQUISITION_FIELDS:
        out.setdefault(f, None)
    return out, missing


def _warn_filled(path, missing: list[str]) -> None:
    if missing:
        rest = [f for f in missing if f not in ("fov_mm", "matrix")]
        log.warning("%s: the sidecar lacks acquisition %s: fov_mm and matrix taken from the NIfTI header%s",
                    path, ", ".join(missing), f", {', '.join(rest)} recorded as null" if rest else "")


def _check_number(name: str, value, lo: float | None = None, lo_open: bool = True, hi: float | None = None,
                  hi_open: bool = True) -> None:
    """InputError unless `value` (None: not given) is a finite number within (lo, hi) / [lo, hi]."""
    if value is None:
        return
    try:
        v = float(value)
        ok = not isinstance(value, bool) and math.isfinite(v)
    except (TypeError, ValueError):
        ok = False
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        rng = (f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}" if hi is not None
               else (f" {'>' if lo_open else '>='} {lo}" if lo is not None else ""))
        raise InputError(f"{name} must be a finite number{rng}, got {value!r}")


def _existing_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if not p.is_file():
        raise InputError(f"{what} {p} is not a file")
    return p


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
    `<stem>_roi.csv` / `.json`, QC PNGs. Returns {name: path}. See quant/tsc.py `quantify`.

    Everything is checked and computed before anything is written; the outputs are written into a
    hidden folder beside `out_path` and moved into place together, the TSC map last, so a refusal
    or a fault leaves none of them behind."""
    from .quant.relax import check_acquisition
    from .quant.tsc import as_label_image, quantify, roi_stats
    from .quant.vials import load_vials

    out_path = Path(out_path)
    folder, stem = _stem(out_path)
    if isinstance(echo, bool) or not isinstance(echo, (int, np.integer)) or echo < 0:
        raise InputError(f"echo must be an integer >= 0, got {echo!r}")
    _check_number("--noise-sd", noise_sd, lo=0.0)
    _check_number("--vial-threshold", vial_threshold, lo=0.0)
    _check_number("--flip-deg", flip_deg, lo=0.0, hi=180.0)
    _check_number("--tr-ms", tr_ms, lo=0.0)
    _check_number("--te-ms", te_ms, lo=0.0, lo_open=False)
    config = None
    if config_path is not None:
        try:
            config = json.loads(_existing_file(config_path, "config").read_text()).get("relaxation")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise InputError(f"cannot read config {config_path}: {exc}; expected {{\"relaxation\": {{...}}}}") from None
    vials = load_vials(vials_path, config)
    img, aff, side = _load_3d(image_path, "image", echo)
    flip, tr, te = acquisition_params(side, te_ms, tr_ms, flip_deg, echo)
    check_acquisition(flip, tr, te)
    extra = {}
    for key, p, what in (("vial_mask", vial_mask_path, "vial mask"), ("b1", b1_path, "B1 map"),
                         ("labels", labels_path, "label image"), ("receive", receive_path, "receive map")):
        if p is not None:
            arr, aff_p, _ = _load_3d(p, what)
            _same_grid((img, aff), (arr, aff_p), f"{what} {p}")
            extra[key] = arr
    for key in ("vial_mask", "labels"):
        if key in extra:
            extra[key] = as_label_image(extra[key], key.replace("_", " "))
    res = quantify(img, vials, flip, tr, te, vial_mask=extra.get("vial_mask"), b1=extra.get("b1"),
                   receive=extra.get("receive"), reciprocity=reciprocity, tissue=tissue,
                   labels=extra.get("labels"), label_tissue=label_tissue, noise_sd=noise_sd,
                   intercept=intercept, config=config, vial_threshold=vial_threshold)
    roi_text = None
    if labels_path is not None:
        rows = roi_stats(res.tsc, extra["labels"])
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=["label", "mean", "sd", "median", "voxels"], lineterminator="\n")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        roi_text = (buf.getvalue(), json.dumps({"unit": "mM", "rois": rows}, indent=2) + "\n")
    inputs = [p for p in (image_path, vials_path, vial_mask_path, b1_path, labels_path, receive_path, config_path)
              if p is not None]
    base = base_sidecar(inputs=inputs)
    acq, missing = complete_acquisition(side.get("acquisition"), img.shape, aff)
    acq.update(flip_deg=flip, tr_ms=tr, te_ms=[te])
    _warn_filled(image_path, [f for f in missing if f not in ("flip_deg", "tr_ms", "te_ms")])
    quant_info = dict(res.info, vials=[v.__dict__ for v in vials], unit="mM",
                      method="external vial calibration (Christensen 1996, Thulborn 1999), B1 transmit/receive "
                             "and relaxation corrected (Insko & Bolinger 1993, Boada 1994)")
    names = {"sd": f"{stem}_sd.nii.gz"}
    with staged_outputs(folder, stem) as stage:
        save_nifti(stage / names["sd"], res.sd, aff,
                   dict(base, acquisition=acq, quant=dict(quant_info, map="TSC standard deviation")))
        if roi_text is not None:
            names.update(roi_csv=f"{stem}_roi.csv", roi_json=f"{stem}_roi.json")
            (stage / names["roi_csv"]).write_text(roi_text[0])
            (stage / names["roi_json"]).write_text(roi_text[1])
        if extra.get("vial_mask") is None:
            names["vial_mask"] = f"{stem}_vials.nii.gz"
            save_nifti(stage / names["vial_mask"], res.vial_mask, aff,
                       dict(base, acquisition=acq, quant={"map": "detected vials (labels)"}))
        if png:
            from .report.figures import calibration_png, montage_png, tsc_png

            names["png"] = Path(tsc_png(stage / f"{stem}.png", res.tsc,
                                        mask=(extra["labels"] > 0) if "labels" in extra else None)).name
            names["calibration_png"] = Path(calibration_png(stage / f"{stem}_calibration.png", res.calibration)).name
            if "b1" in extra:
                names["b1_png"] = Path(montage_png(stage / f"{stem}_b1.png", extra["b1"], title="B1 (relative flip)",
                                                   cmap="viridis", vmax=1.5)).name
        names["tsc"] = out_path.name
        save_nifti(stage / out_path.name, res.tsc, aff, dict(base, acquisition=acq, quant=quant_info))
        # The TSC map last: it is what batch resumption looks for.
        stage.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}


def _scan_acquisition(path: Path, traj_path, what: str) -> tuple[dict, bool]:
    """(acquisition block, is_nifti) of a b1map input, read without reconstructing: a NIfTI's
    sidecar, or a twix file's protocol header."""
    _existing_file(path, what)
    if _is_nifti(path):
        sc = sidecar_path(path)
        if not sc.is_file():
            return {}, True
        try:
            return dict(json.loads(sc.read_text()).get("acquisition") or {}), True
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise InputError(f"cannot read the sidecar {sc} of {what}: {exc}") from None
    if traj_path is None:
        raise InputError(f"{what} {path} is not a NIfTI image: give --traj to reconstruct it")
    from .io.twix import info_from_header, read_header

    return info_from_header(read_header(path)).sidecar_acquisition(), False


def b1map_file(scan_a: str | os.PathLike, scan_2a: str | os.PathLike, out_path: str | os.PathLike,
               traj_path: str | os.PathLike | None = None, flip_deg: float | None = None,
               fit: str = "poly", order: int = 3, snr_min: float = 5.0, matrix: int | None = None,
               png: bool = True) -> dict[str, Path]:
    """`na23recon b1map`: double-angle B1 map (relative flip scale, 1.0 nominal) from two scans at
    flips a and 2a. Twix scans are reconstructed with `pipeline.recon_file` (written beside the
    output as `<stem>_a.nii.gz`, `<stem>_2a.nii.gz`); NIfTI images are used as they are.
    The nominal flip a comes from scan A's sidecar (or twix header) unless `flip_deg` is given; the
    scans' flips must be a and 2a (5%). Every option and the flips are checked before anything is
    reconstructed or written; the outputs appear together, the B1 map last, or not at all.
    Returns {name: path}."""
    from .quant.b1 import B1_FITS, MAX_POLY_ORDER, double_angle

    out_path = Path(out_path)
    folder, stem = _stem(out_path)
    if fit not in B1_FITS:
        raise InputError(f"unknown B1 fit {fit!r}; expected {', '.join(B1_FITS)}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= MAX_POLY_ORDER:
        raise InputError(f"B1 polynomial order must be an integer 0..{MAX_POLY_ORDER}, got {order!r}")
    _check_number("--snr-min", snr_min, lo=0.0, lo_open=False)
    _check_number("--flip-deg", flip_deg, lo=0.0, hi=90.0)
    if matrix is not None and (isinstance(matrix, bool) or not isinstance(matrix, (int, np.integer))
                               or not 8 <= matrix <= 512):
        raise InputError(f"matrix must be an integer between 8 and 512, got {matrix!r}")
    if traj_path is not None:
        _existing_file(traj_path, "trajectory file")
    acq_a, nii_a = _scan_acquisition(Path(scan_a), traj_path, "scan a")
    acq_2a, nii_2a = _scan_acquisition(Path(scan_2a), traj_path, "scan 2a")
    fa, f2a = acq_a.get("flip_deg"), acq_2a.get("flip_deg")
    try:
        fa = None if fa is None else float(fa)
        f2a = None if f2a is None else float(f2a)
    except (TypeError, ValueError):
        raise InputError(f"the scans' flip angles must be numbers, got {fa!r} and {f2a!r}") from None
    if flip_deg is None:
        if fa is None:
            raise InputError("scan a's flip angle is not in its sidecar: give --flip-deg")
        flip_deg = fa
    flip_deg = float(flip_deg)
    if not 0 < flip_deg < 90:
        raise InputError(f"nominal flip a must be in (0, 90) deg for the double-angle method, got {flip_deg}")
    a_ref = fa if fa is not None else flip_deg
    if f2a is not None and abs(f2a - 2 * a_ref) > 0.05 * 2 * a_ref:
        raise InputError(f"the scans' flips are {a_ref:g} and {f2a:g} deg: the double-angle method needs a and 2a")

    with staged_outputs(folder, stem) as stage:
        paths = []
        for tag, p, is_nii in (("a", scan_a, nii_a), ("2a", scan_2a, nii_2a)):
            if is_nii:
                paths.append(Path(p))
                continue
            from .pipeline import recon_file

            paths.append(recon_file(p, traj_path, stage / f"{stem}_{tag}.nii.gz", matrix=matrix, png=False))
        sa, aff, side_a = _load_3d(paths[0], "scan a")
        s2a, aff2, _ = _load_3d(paths[1], "scan 2a")
        _same_grid((sa, aff), (s2a, aff2), f"scan 2a {Path(scan_2a)}")
        m = double_angle(sa, s2a, flip_deg, snr_min=snr_min, fit=fit, order=order)
        tr = (side_a.get("acquisition") or {}).get("tr_ms")
        if isinstance(tr, (int, float)) and float(tr) < 150.0:
            log.warning("TR %.0f ms is not >> T1 of sodium (20-60 ms): the double-angle map is biased", float(tr))
        side = base_sidecar(inputs=[scan_a, scan_2a] + ([traj_path] if traj_path is not None else []))
        acq, missing = complete_acquisition(side_a.get("acquisition"), sa.shape, aff)
        if acq.get("flip_deg") is None:
            acq["flip_deg"] = flip_deg
            missing = [f for f in missing if f != "flip_deg"]
        _warn_filled(scan_a, missing)
        side["acquisition"] = acq
        side["b1"] = dict(m.info, map="relative flip scale k_B1 (1.0 = nominal)")
        names = {}
        if png:
            from .report.figures import montage_png

            names["png"] = Path(montage_png(stage / f"{stem}.png", m.b1, title="B1 (relative flip scale)",
                                            cmap="viridis", vmax=1.5)).name
        names["b1"] = out_path.name
        save_nifti(stage / out_path.name, m.b1, aff, side)
        stage.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}
