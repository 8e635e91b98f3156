"""One scan end to end: reconstruction, the double-angle B1 map when the job names a pair, the
TSC map when it names vials, then the HTML QC report."""

from __future__ import annotations

import os
from pathlib import Path

from ..report.html import html_report
from .b1_step import b1map_file
from .config import Job, RunOptions
from .recon_step import recon_file
from .tsc_step import quantify_file


def process_scan(job: Job, outdir: str | os.PathLike, options: RunOptions | None = None,
                 progress: bool | None = None) -> dict[str, Path]:
    """Run every step `job` has inputs for into `outdir` with `options`; returns output paths by
    name (recon, b1, tsc, ..., report). The B1 map's scans are reconstructed with the same
    reconstruction options as the scan, and the TSC step takes every quantification option, so
    `run` and `batch` give what `recon`, `b1map` and `quantify` give one after another."""
    opts = options or RunOptions()
    job.check()
    outdir = Path(outdir)
    outputs: dict[str, Path] = {"recon": recon_file(job.scan, job.traj, outdir / "recon.nii.gz", opts.recon,
                                                    progress=progress)}
    b1 = None
    if job.b1_scan_a:
        res = b1map_file(job.b1_scan_a, job.b1_scan_2a, outdir / "b1.nii.gz", traj_path=job.traj,
                         options=opts.b1, recon=opts.recon)
        b1 = res["b1"]
        outputs.update({f"b1_{k}" if not k.startswith("b1") else k: Path(v) for k, v in res.items()})
    if job.vials:
        res = quantify_file(outputs["recon"], outdir / "tsc.nii.gz", job.vials, opts.quant,
                            vial_mask_path=job.vial_mask, b1_path=b1, labels_path=job.labels)
        outputs.update({f"tsc_{k}" if not k.startswith("tsc") else k: Path(v) for k, v in res.items()})
    outputs["report"] = html_report(outdir / "report.html", f"na23recon: {Path(job.scan).name}", outputs)
    return outputs
