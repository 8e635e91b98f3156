"""`na23recon b0map`: a B0 field map (Hz at the sodium frequency) from a multi-echo sodium scan, or from
two scans of the same protocol at different echo times, with sidecar and PNG; the map `--b0-map` reads."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import ReconOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..errors import InputError
from ..provenance import base_sidecar
from ..recon.b0 import b0_from_scans
from ..report.figures import montage_png
from .files import check_output_path, existing_file, nifti_stem, refuse_overwriting_inputs, step_outputs
from .inputs import load_scan_and_trajectory


def b0map_file(scan_paths: list[str | os.PathLike], traj_path: str | os.PathLike | None, out_path: str | os.PathLike,
               threshold: float = 0.15, smooth_vox: float = 1.0, recon: ReconOptions | None = None,
               png: bool = True) -> dict[str, Path]:
    """Field map from one multi-echo scan or two single-echo scans into `out_path` (+ sidecar, PNG).

    The first two echoes are used (`recon.b0.b0_from_scans`); outputs appear together or not at all.
    """
    if not 1 <= len(scan_paths) <= 2:
        raise InputError(f"b0map takes one multi-echo scan or two scans at different TE, got {len(scan_paths)}")
    if not 0 < threshold < 1:
        raise InputError(f"--threshold must be in (0, 1), got {threshold:g}")
    if not 0 <= smooth_vox <= 10:
        raise InputError(f"--smooth must be in [0, 10] voxels, got {smooth_vox:g}")
    opts = recon or ReconOptions()
    out_path = check_output_path(out_path)
    for p in scan_paths:
        existing_file(p, "scan")
    inputs = list(scan_paths) + ([traj_path] if traj_path is not None else [])
    folder, stem = nifti_stem(out_path)
    refuse_overwriting_inputs(step_outputs(folder, stem, (out_path.name[len(stem):], ".json", ".png")), inputs)
    loaded = [load_scan_and_trajectory(p, traj_path, opts) for p in scan_paths]
    image = b0_from_scans([s for s, _, _ in loaded], loaded[0][1], threshold=threshold, smooth_vox=smooth_vox,
                          eps=opts.eps)
    image.meta = {**base_sidecar(inputs=inputs), **image.meta}
    with staged_outputs(folder, stem) as tmp:
        names = {}
        if png:
            names["png"] = Path(montage_png(tmp / f"{stem}.png", abs(image.array), title="|B0| (Hz at 23Na)",
                                            cmap="viridis")).name
        names["b0"] = out_path.name
        image.save(tmp / out_path.name)
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}
