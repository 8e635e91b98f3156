"""`na23recon quantify`: an image and reference vials in; the TSC map (mM), its SD, ROI tables and
QC figures out, all or none of them."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from ..core import Image, QuantOptions, ReconOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..errors import InputError
from ..provenance import base_sidecar
from ..quant.images import METHOD, acquisition_for, quantify
from ..quant.tsc import as_label_image, roi_stats
from ..quant.vials import load_vials
from ..report.figures import calibration_png, montage_png, tsc_png
from .files import existing_file, nifti_inputs, nifti_stem, refuse_overwriting_inputs, step_outputs
from .reference import load_reference

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


def _roi_tables(rows: list[dict]) -> tuple[str, str]:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=["label", "mean", "sd", "median", "voxels"], lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue(), json.dumps({"unit": "mM", "rois": rows}, indent=2) + "\n"


def quantify_file(image_path: str | os.PathLike, out_path: str | os.PathLike, vials_path: str | os.PathLike,
                  options: QuantOptions | None = None, vial_mask_path: str | os.PathLike | None = None,
                  b1_path: str | os.PathLike | None = None, labels_path: str | os.PathLike | None = None,
                  receive_path: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None,
                  png: bool = True, reference_path: str | os.PathLike | None = None,
                  reference_traj_path: str | os.PathLike | None = None,
                  reference_recon: ReconOptions | None = None) -> dict[str, Path]:
    """TSC map (mM) `out_path`, `<stem>_sd` beside it, sidecars, with labels `<stem>_roi.csv` /
    `.json`, the detected vials when no mask is given, QC PNGs. Returns {name: path}.

    Everything is checked and computed before anything is written; the outputs are written into a
    hidden folder beside `out_path` and moved into place together, the TSC map last, so a refusal
    or a fault leaves none of them behind (batch resumption looks for the map).

    reference_path: the volume-coil reference of `options.receive` 'reference', an image or a
    scan (with `reference_traj_path`) reconstructed with `reference_recon` (default: the image's
    recorded reconstruction options; `pipeline.reference`)."""
    opts = options or QuantOptions()
    out_path = Path(out_path)
    folder, stem = nifti_stem(out_path)
    refuse_overwriting_inputs(
        step_outputs(folder, stem, (out_path.name[len(stem):], ".json", "_sd.nii.gz", "_sd.json", "_roi.csv",
                                    "_roi.json", "_vials.nii.gz", "_vials.json", ".png", "_calibration.png", "_b1.png")),
        nifti_inputs([image_path, vials_path, vial_mask_path, b1_path, labels_path, receive_path, config_path,
                      reference_path]))
    relaxation = load_relaxation_config(config_path)
    vials = load_vials(vials_path, relaxation)
    image = Image.load(existing_file(image_path, "image"))
    inputs = {"vial_mask": (vial_mask_path, "vial mask"), "b1": (b1_path, "B1 map"),
              "labels": (labels_path, "label image"), "receive": (receive_path, "receive map")}
    maps = {k: Image.load(existing_file(p, what)) for k, (p, what) in inputs.items() if p is not None}
    for k, m in maps.items():
        if m.array.ndim == 4 and m.array.shape[3] > 1:
            raise InputError(f"{inputs[k][1]} {inputs[k][0]} has {m.array.shape[3]} volumes: give one 3D volume")
    if reference_path is not None:
        maps["reference"] = load_reference(reference_path, image, reference_traj_path, reference_recon)
    res = quantify(image, vials, opts, relaxation=relaxation, **maps)
    flip, tr, te, acq = acquisition_for(image, opts)
    _, missing = image.acquisition()
    warn_filled(image_path, [f for f in missing if f not in ("flip_deg", "tr_ms", "te_ms")])
    base = base_sidecar(inputs=[p for p in (image_path, vials_path, vial_mask_path, b1_path, labels_path,
                                            receive_path, config_path, reference_path, reference_traj_path)
                                if p is not None])
    block = acq.sidecar()
    aff = image.affine
    quant_info = dict(res.info, vials=[v.__dict__ for v in vials], unit="mM", method=METHOD, options=opts.to_dict())

    def side(**extra) -> dict:
        return dict(base, acquisition=block, **extra)

    names = {"sd": f"{stem}_sd.nii.gz"}
    with staged_outputs(folder, stem) as tmp:
        Image(res.sd, aff, side(quant=dict(quant_info, map="TSC standard deviation"))).save(tmp / names["sd"])
        if "labels" in maps:
            csv_text, json_text = _roi_tables(roi_stats(res.tsc, as_label_image(maps["labels"].echo(0).array, "label image")))
            names.update(roi_csv=f"{stem}_roi.csv", roi_json=f"{stem}_roi.json")
            (tmp / names["roi_csv"]).write_text(csv_text)
            (tmp / names["roi_json"]).write_text(json_text)
        if "vial_mask" not in maps:
            names["vial_mask"] = f"{stem}_vials.nii.gz"
            Image(res.vial_mask, aff, side(quant={"map": "detected vials (labels)"})).save(tmp / names["vial_mask"])
        if png:
            lab = maps.get("labels")
            names["png"] = Path(tsc_png(tmp / f"{stem}.png", res.tsc,
                                        mask=(lab.echo(0).array > 0) if lab is not None else None)).name
            names["calibration_png"] = Path(calibration_png(tmp / f"{stem}_calibration.png", res.calibration)).name
            if "b1" in maps:
                names["b1_png"] = Path(montage_png(tmp / f"{stem}_b1.png", maps["b1"].echo(0).array,
                                                   title="B1 (relative flip)", cmap="viridis", vmax=1.5)).name
        names["tsc"] = out_path.name
        Image(res.tsc, aff, side(quant=quant_info)).save(tmp / out_path.name)
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}
