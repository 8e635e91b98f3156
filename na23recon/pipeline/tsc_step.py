"""`na23recon quantify`: an image and reference vials in; the TSC map (mM), its SD, ROI tables and
QC figures out, all or none of them."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..core import Image, QuantOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..errors import InputError
from ..provenance import base_sidecar
from ..quant.anatomy import Anatomy, label_regions, load_label_table, prepare_anatomy
from ..quant.images import METHOD, acquisition_for, quantify
from ..quant.register import rotation_angle_deg
from ..quant.roi import COLUMNS, region_table
from ..quant.tsc import as_label_image
from ..quant.vials import load_vials
from ..report.figures import calibration_png, montage_png, overlay_png, tsc_png
from .files import existing_file, nifti_inputs, nifti_stem, refuse_overwriting_inputs, step_outputs

log = logging.getLogger(__name__)


def warn_filled(path, missing: list[str]) -> None:
    """Say which acquisition fields an input's sidecar lacked (FOV/matrix come from the NIfTI)."""
    if missing:
        rest = [f for f in missing if f not in ("fov_mm", "matrix")]
        log.warning("%s: the sidecar lacks acquisition %s: fov_mm and matrix taken from the NIfTI header%s",
                    path, ", ".join(missing), f", {', '.join(rest)} recorded as null" if rest else "")


def load_relaxation_config(path: str | os.PathLike | None) -> dict | None:
    """The `relaxation` block of a JSON config ({preset: {t1_ms: ...}}), or None."""
    if path is None:
        return None
    try:
        cfg = json.loads(existing_file(path, "config").read_text())
        rel = cfg.get("relaxation")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError) as exc:
        raise InputError(f"cannot read config {path}: {type(exc).__name__}; expected {{\"relaxation\": {{...}}}}") from None
    if rel is not None and (not isinstance(rel, dict) or not all(isinstance(v, dict) for v in rel.values())):
        raise InputError(f"config {path}: 'relaxation' must be an object of presets {{name: {{t1_ms: ...}}}}, "
                         f"got {str(rel)[:60]!r}")
    return rel


def _roi_tables(rows: list[dict], info: dict) -> tuple[str, str]:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: (f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    return buf.getvalue(), json.dumps({"unit": "mM", "volume_unit": "mL", **info, "rois": rows}, indent=2) + "\n"


def default_psf(image_path: str | os.PathLike) -> Path | None:
    """The reconstruction's PSF beside the image (`<stem>_psf.nii.gz`), if it wrote one."""
    folder, stem = nifti_stem(Path(image_path))
    p = folder / f"{stem}_psf.nii.gz"
    return p if p.is_file() else None


def load_anatomy(image: Image, options: QuantOptions, tissue_paths, atlas_path, table_path,
                 anat_path) -> Anatomy | None:
    """Tissue maps / atlas (+ table, + 1H image) resampled into the sodium image's space (None when neither given)."""
    if options.register and tissue_paths is None and atlas_path is None:
        raise InputError("--register needs the 1H anatomy: --tissue-maps GM WM CSF and/or --atlas")
    if tissue_paths is None and atlas_path is None:
        if anat_path is not None or table_path is not None:
            raise InputError("--anat and --atlas-table go with --tissue-maps or --atlas")
        return None
    if table_path is not None and atlas_path is None:
        raise InputError("--atlas-table needs --atlas")
    tissue = None
    if tissue_paths is not None:
        if len(tissue_paths) != 3:
            raise InputError(f"--tissue-maps takes three maps (GM WM CSF), got {len(tissue_paths)}")
        tissue = [Image.load(existing_file(p, f"{t} map")) for p, t in zip(tissue_paths, ("GM", "WM", "CSF"))]
    atlas = Image.load(existing_file(atlas_path, "atlas")) if atlas_path is not None else None
    anat = Image.load(existing_file(anat_path, "1H image")) if anat_path is not None else None
    table = load_label_table(table_path) if table_path is not None else None
    return prepare_anatomy(image.echo(options.echo), tissue, atlas, table, anat, register=options.register)


def load_psf(psf_path, image: Image) -> np.ndarray | dict | None:
    """The PSF array (its voxel size must be the image's), or {preset: array} for a 4D PSF whose
    sidecar's `psf.tissues` names each volume's relaxation preset."""
    if psf_path is None:
        return None
    psf = Image.load(existing_file(psf_path, "PSF"))
    if not np.allclose(psf.voxel_mm, image.voxel_mm, rtol=1e-3):
        raise InputError(f"PSF {Path(psf_path).name} has voxels {psf.voxel_mm} mm, the image {image.voxel_mm} mm")
    if psf.array.ndim == 3:
        return psf.array
    names = (psf.meta.get("psf") or {}).get("tissues")
    if not isinstance(names, list) or len(names) != psf.array.shape[3]:
        raise InputError(f"PSF {Path(psf_path).name} has {psf.array.shape[3]} volumes but its sidecar does not "
                         "name their tissues (psf.tissues)")
    return {str(n): psf.array[..., i] for i, n in enumerate(names)}


def quantify_file(image_path: str | os.PathLike, out_path: str | os.PathLike, vials_path: str | os.PathLike,
                  options: QuantOptions | None = None, vial_mask_path: str | os.PathLike | None = None,
                  b1_path: str | os.PathLike | None = None, labels_path: str | os.PathLike | None = None,
                  receive_path: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None,
                  png: bool = True, tissue_map_paths: list | tuple | None = None,
                  atlas_path: str | os.PathLike | None = None, atlas_table_path: str | os.PathLike | None = None,
                  anat_path: str | os.PathLike | None = None, psf_path: str | os.PathLike | None = None
                  ) -> dict[str, Path]:
    """TSC map (mM) `out_path`, `<stem>_sd` beside it, sidecars, with labels, tissue maps or an
    atlas `<stem>_roi.csv` / `.json` (per region: mean, SD, median, voxels, volume, SEs, and with
    the reconstruction's PSF the partial-volume corrected values; `<stem>_pvc.nii.gz` the RBV
    map), the detected vials when no mask is given, QC PNGs (regions over the map, the 1H edges
    over the sodium image). Returns {name: path}.

    tissue_map_paths: GM, WM, CSF probability maps (any grid, scanner coordinates); atlas_path /
    atlas_table_path: label image and its table; anat_path: the 1H image for `options.register`;
    psf_path: the reconstruction's PSF (default: `<image stem>_psf.nii.gz` beside the image).

    Everything is checked and computed before anything is written; the outputs are written into a
    hidden folder beside `out_path` and moved into place together, the TSC map last, so a refusal
    or a fault leaves none of them behind (batch resumption looks for the map)."""
    opts = options or QuantOptions()
    out_path = Path(out_path)
    folder, stem = nifti_stem(out_path)
    refuse_overwriting_inputs(
        step_outputs(folder, stem, (out_path.name[len(stem):], ".json", "_sd.nii.gz", "_sd.json", "_roi.csv",
                                    "_roi.json", "_vials.nii.gz", "_vials.json", ".png", "_calibration.png", "_b1.png",
                                    "_pvc.nii.gz", "_pvc.json", "_regions.png", "_registration.png")),
        nifti_inputs([image_path, vials_path, vial_mask_path, b1_path, labels_path, receive_path, config_path,
                      *(tissue_map_paths or ()), atlas_path, atlas_table_path, anat_path, psf_path]))
    relaxation = load_relaxation_config(config_path)
    vials = load_vials(vials_path, relaxation)
    image = Image.load(existing_file(image_path, "image"))
    inputs = {"vial_mask": (vial_mask_path, "vial mask"), "b1": (b1_path, "B1 map"),
              "labels": (labels_path, "label image"), "receive": (receive_path, "receive map")}
    maps = {k: Image.load(existing_file(p, what)) for k, (p, what) in inputs.items() if p is not None}
    for k, m in maps.items():
        if m.array.ndim == 4 and m.array.shape[3] > 1:
            raise InputError(f"{inputs[k][1]} {inputs[k][0]} has {m.array.shape[3]} volumes: give one 3D volume")
    psf_path = psf_path if psf_path is not None else default_psf(image_path)
    psf = load_psf(psf_path, image)
    anatomy = load_anatomy(image, opts, tissue_map_paths, atlas_path, atlas_table_path, anat_path)
    fractions = None
    if anatomy is not None and anatomy.tissue is not None:
        fractions = {n: anatomy.tissue.fractions[i] for i, n in enumerate(anatomy.tissue.presets)}
    res = quantify(image, vials, opts, relaxation=relaxation, tissue_fractions=fractions, **maps)
    sets = [r for r in (anatomy.tissue, anatomy.atlas) if r is not None] if anatomy is not None else []
    if "labels" in maps:
        sets.append(label_regions(as_label_image(maps["labels"].echo(0).array, "label image")))
    rows, pvc_map, roi_info = region_table(res, image.echo(opts.echo).array, sets, vials,
                                           float(np.prod(image.voxel_mm)) / 1e3,
                                           psf) if sets else ([], None, {})
    flip, tr, te, acq = acquisition_for(image, opts)
    _, missing = image.acquisition()
    warn_filled(image_path, [f for f in missing if f not in ("flip_deg", "tr_ms", "te_ms")])
    base = base_sidecar(inputs=[p for p in (image_path, vials_path, vial_mask_path, b1_path, labels_path,
                                            receive_path, config_path, *(tissue_map_paths or ()), atlas_path,
                                            atlas_table_path, anat_path, psf_path) if p is not None])
    block = acq.sidecar()
    aff = image.affine
    quant_info = dict(res.info, vials=[v.__dict__ for v in vials], unit="mM", method=METHOD, options=opts.to_dict())
    if anatomy is not None:
        quant_info["anatomy"] = anatomy.info
    if sets:
        quant_info["roi"] = roi_info

    def side(**extra) -> dict:
        return dict(base, acquisition=block, **extra)

    names = {"sd": f"{stem}_sd.nii.gz"}
    with staged_outputs(folder, stem) as tmp:
        Image(res.sd, aff, side(quant=dict(quant_info, map="TSC standard deviation"))).save(tmp / names["sd"])
        if sets:
            csv_text, json_text = _roi_tables(rows, roi_info)
            names.update(roi_csv=f"{stem}_roi.csv", roi_json=f"{stem}_roi.json")
            (tmp / names["roi_csv"]).write_text(csv_text)
            (tmp / names["roi_json"]).write_text(json_text)
        if pvc_map is not None:
            names["pvc"] = f"{stem}_pvc.nii.gz"
            Image(pvc_map, aff, side(quant=dict(quant_info, map="TSC, partial-volume corrected (RBV)"))).save(
                tmp / names["pvc"])
        if "vial_mask" not in maps:
            names["vial_mask"] = f"{stem}_vials.nii.gz"
            Image(res.vial_mask, aff, side(quant={"map": "detected vials (labels)"})).save(tmp / names["vial_mask"])
        if png:
            lab = maps.get("labels")
            names["png"] = Path(tsc_png(tmp / f"{stem}.png", res.tsc,
                                        mask=(lab.echo(0).array > 0) if lab is not None else None)).name
            names["calibration_png"] = Path(calibration_png(tmp / f"{stem}_calibration.png", res.calibration)).name
            if anatomy is not None:
                names.update(_anatomy_pngs(tmp, stem, image.echo(opts.echo).array, res.tsc, anatomy))
            if "b1" in maps:
                names["b1_png"] = Path(montage_png(tmp / f"{stem}_b1.png", maps["b1"].echo(0).array,
                                                   title="B1 (relative flip)", cmap="viridis", vmax=1.5)).name
        names["tsc"] = out_path.name
        Image(res.tsc, aff, side(quant=quant_info)).save(tmp / out_path.name)
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}


#: Contour colours of the tissue classes in the figures.
TISSUE_COLOURS = {"gm": "tab:orange", "wm": "tab:cyan", "csf": "tab:purple"}


def _anatomy_pngs(tmp: Path, stem: str, image, tsc, anatomy: Anatomy) -> dict[str, str]:
    """The regions over the TSC map and the 1H image's edges over the sodium image."""
    out = {}
    if anatomy.tissue is not None:
        contours = [(anatomy.tissue.fractions[i], TISSUE_COLOURS.get(n, "w"), n.upper())
                    for i, n in enumerate(anatomy.tissue.names)]
    else:
        contours = [((anatomy.atlas.fractions.sum(axis=0)), "tab:orange", "atlas")]
    out["regions_png"] = Path(overlay_png(tmp / f"{stem}_regions.png", tsc, contours, vmax=160.0, unit="mM",
                                          title="regions (fraction 0.5) over the TSC map")).name
    reg = anatomy.registration
    title = ("1H edges over the sodium image: " + (
        f"registered (rotation {rotation_angle_deg(reg.matrix):.1f} deg, shift "
        f"{float(np.linalg.norm(reg.translation_mm)):.1f} mm)" if reg is not None else "affines only"))
    out["registration_png"] = Path(overlay_png(tmp / f"{stem}_registration.png", image, [],
                                               edges=anatomy.anat_on_grid, title=title)).name
    return out
