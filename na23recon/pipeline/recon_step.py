"""`na23recon recon`: a twix scan and its trajectory file in, a NIfTI image with sidecar (+ PNG) out."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..core import Image, ReconOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..io.trajfile import load_traj
from ..io.twix import read_scan
from ..provenance import base_sidecar
from ..recon.scan_recon import reconstruct
from ..report.figures import montage_png
from .files import check_output_path, existing_file, nifti_stem, refuse_overwriting_inputs, step_outputs


def recon_file(scan_path: str | os.PathLike, traj_path: str | os.PathLike, out_path: str | os.PathLike,
               options: ReconOptions | None = None, png: bool = True, progress: bool | None = None) -> Path:
    """Reconstruct a twix scan with its trajectory file into `out_path` (.nii.gz) + sidecar (+ PNG).

    The image is the coil-combined magnitude, (x, y, z) or (x, y, z, echo) for several echoes, on
    the scan's geometry (`recon.scan_recon.reconstruct`). Options and the output path are checked
    before anything is read; the image and its sidecar are written atomically.
    """
    opts = options or ReconOptions()
    t0 = time.perf_counter()
    out_path = check_output_path(out_path)
    existing_file(scan_path, "scan")
    existing_file(traj_path, "trajectory file")
    folder, stem = nifti_stem(out_path)
    refuse_overwriting_inputs(step_outputs(folder, stem, (out_path.name[len(stem):], ".json", ".png")),
                              [scan_path, traj_path])
    scan = read_scan(scan_path, allow_nucleus=opts.allow_nucleus, zero_bad_samples=opts.zero_bad_samples)
    traj = load_traj(traj_path)
    image = reconstruct(scan, traj, opts, progress=progress)
    image.meta = {**base_sidecar(inputs=[scan_path, traj_path]), **image.meta}
    if scan.notes:  # what the reader repaired (zeroed samples)
        image.meta["recon"]["input_repairs"] = dict(scan.notes)
    image.meta["recon"]["seconds"] = round(time.perf_counter() - t0, 3)
    # image, sidecar and PNG appear together or not at all (a full disk leaves none of them)
    with staged_outputs(folder, stem) as tmp:
        image.save(tmp / out_path.name)
        if png:
            arr = image.array if image.array.ndim == 3 else image.array[..., 0]
            montage_png(tmp / f"{stem}.png", arr, title=f"{Path(scan_path).name}: {opts.method}")
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return out_path


def load_image(path: str | os.PathLike, what: str) -> Image:
    """An input image, with a message naming `what` when it is missing."""
    existing_file(path, what)
    return Image.load(path)
