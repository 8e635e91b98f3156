"""One scan end to end: reconstruction, the double-angle B1 map when the job names a pair, the
TSC map when it names vials, then the HTML QC report; on request DICOM series of the results and
BIDS-style names (`export`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..export import bids_prefix, export_dicom, identity_for
from ..export.bids import bids_rename, figures_dir
from ..provenance import reduced_paths, sha256_file
from ..report.html import html_report
from .b1_step import b1map_file
from .config import Job, RunOptions
from .recon_step import recon_file
from .tsc_step import quantify_file

#: The outputs that get DICOM series (`--dicom`).
DICOM_OUTPUTS = ("recon", "b1", "tsc", "tsc_sd")


def process_scan(job: Job, outdir: str | os.PathLike, options: RunOptions | None = None,
                 progress: bool | None = None, layout: str = "flat",
                 dicom_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Run every step `job` has inputs for into `outdir` with `options`; returns output paths by
    name (recon, b1, tsc, ..., report). The B1 map's scans are reconstructed with the same
    reconstruction options as the scan, and the TSC step takes every quantification option, so
    `run` and `batch` give what `recon`, `b1map` and `quantify` give one after another.

    layout 'bids': `outdir` is the scan's `sub-<id>[/ses-<ses>]/anat` folder and the outputs take
    BIDS names (`export.bids`). With `options.output.dicom` the DICOM series go to `dicom_dir`
    (default `outdir/dicom`). With `options.output.deidentify` the outputs name inputs by file name
    only and the DICOM carry the pseudonym (`export.deid`)."""
    opts = options or RunOptions()
    job.check()
    outdir = Path(outdir)
    out = opts.output
    with reduced_paths(out.reduce_paths):
        outputs = _steps(job, outdir, opts, progress)
        title = f"na23recon: {job.id}" if out.reduce_paths else f"na23recon: {Path(job.scan).name}"
        outputs["report"] = Path(html_report(outdir / "report.html", title, outputs))
        if layout == "bids":
            outputs = bids_rename(outputs, outdir, bids_prefix(job.subject or job.id, job.session))
        if out.dicom:
            ident = identity_for(job.scan, out.reference_dicom, out.deidentify, out.subject_id or job.subject,
                                 seed=sha256_file(job.scan))
            ddir = Path(dicom_dir) if dicom_dir is not None else outdir / "dicom"
            for name in DICOM_OUTPUTS:
                if name in outputs:
                    img = Path(outputs[name])
                    png = figures_dir(img.parent) / (img.name.split(".")[0] + ".png") if layout == "bids" else None
                    outputs[f"dicom_{name}"] = export_dicom(img, ddir, ident, png=png,
                                                            burned_in=not out.reduce_paths)["mr"]
    return outputs


def _steps(job: Job, outdir: Path, opts: RunOptions, progress: bool | None) -> dict[str, Path]:
    # quantification follows: the PSF goes with the image (partial-volume correction needs it)
    outputs: dict[str, Path] = {"recon": recon_file(job.scan, job.traj, outdir / "recon.nii.gz", opts.recon,
                                                    progress=progress, psf=opts.recon.psf or bool(job.vials))}
    b1 = None
    if job.b1_scan_a:
        res = b1map_file(job.b1_scan_a, job.b1_scan_2a, outdir / "b1.nii.gz", traj_path=job.traj,
                         options=opts.b1, recon=opts.recon)
        b1 = res["b1"]
        outputs.update({f"b1_{k}" if not k.startswith("b1") else k: Path(v) for k, v in res.items()})
    if job.vials:
        res = quantify_file(outputs["recon"], outdir / "tsc.nii.gz", job.vials, opts.quant,
                            vial_mask_path=job.vial_mask, b1_path=b1, labels_path=job.labels,
                            tissue_map_paths=job.tissue_maps, atlas_path=job.atlas, atlas_table_path=job.atlas_table,
                            anat_path=job.anat, psf_path=outputs.get("psf"))
        outputs.update({f"tsc_{k}" if not k.startswith("tsc") else k: Path(v) for k, v in res.items()})
    return outputs
