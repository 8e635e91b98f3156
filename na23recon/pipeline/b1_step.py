"""`na23recon b1map`: a double-angle pair (twix scans with their trajectory, or reconstructed
images) in, the relative flip-scale map (1.0 = nominal) with sidecar and PNG out."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core import Acquisition, B1Options, Image, ReconOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..errors import InputError
from ..io.mrd import is_mrd
from ..io.scan_file import read_scan_file
from ..io.twix import acquisition_from_header, read_header
from ..provenance import base_sidecar
from ..quant.images import b1_map, double_angle_flip
from ..report.figures import montage_png
from .files import existing_file, is_nifti, nifti_inputs, nifti_stem, refuse_overwriting_inputs, step_outputs
from .recon_step import recon_file
from .tsc_step import warn_filled


def scan_acquisition(path: Path, traj_path, what: str) -> tuple[Acquisition, bool]:
    """(acquisition, is_nifti) of a b1map input, read without reconstructing: a NIfTI's sidecar,
    or a twix file's protocol header."""
    existing_file(path, what)
    if is_nifti(path):
        sc = sidecar_path(path)
        if not sc.is_file():
            return Acquisition(), True
        try:
            block = json.loads(sc.read_text()).get("acquisition")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise InputError(f"cannot read the sidecar {sc} of {what}: {exc}") from None
        return Acquisition.from_sidecar(block)[0], True
    if is_mrd(path):
        scan, stored, _ = read_scan_file(path, allow_nucleus=True)
        if traj_path is None and stored is None:
            raise InputError(f"{what} {path} stores no trajectory: give --traj to reconstruct it")
        return scan.acquisition, False
    if traj_path is None:
        raise InputError(f"{what} {path} is not a NIfTI image: give --traj to reconstruct it")
    return acquisition_from_header(read_header(path)), False


def b1map_file(scan_a: str | os.PathLike, scan_2a: str | os.PathLike, out_path: str | os.PathLike,
               traj_path: str | os.PathLike | None = None, options: B1Options | None = None,
               recon: ReconOptions | None = None, png: bool = True) -> dict[str, Path]:
    """Double-angle B1 map from two scans at flips a and 2a into `out_path` (+ sidecar, PNG).

    Twix scans are reconstructed with `recon` options (written beside the output as
    `<stem>_a.nii.gz`, `<stem>_2a.nii.gz`); NIfTI images are used as they are. The flips are
    checked before anything is reconstructed or written; the outputs appear together, the map
    last, or not at all. Returns {name: path}.
    """
    opts = options or B1Options()
    out_path = Path(out_path)
    folder, stem = nifti_stem(out_path)
    refuse_overwriting_inputs(
        step_outputs(folder, stem, (out_path.name[len(stem):], ".json", ".png", "_a.nii.gz", "_a.json",
                                    "_2a.nii.gz", "_2a.json")),
        nifti_inputs([scan_a, scan_2a, traj_path]))
    if traj_path is not None:
        existing_file(traj_path, "trajectory file")
    acq_a, nii_a = scan_acquisition(Path(scan_a), traj_path, "scan a")
    acq_2a, nii_2a = scan_acquisition(Path(scan_2a), traj_path, "scan 2a")
    double_angle_flip(opts.flip_deg, acq_a, acq_2a)  # refuse a pair that is not a and 2a before any work
    with staged_outputs(folder, stem) as tmp:
        images = []
        for tag, p, is_nii in (("a", scan_a, nii_a), ("2a", scan_2a, nii_2a)):
            path = Path(p) if is_nii else recon_file(p, traj_path, tmp / f"{stem}_{tag}.nii.gz", recon, png=False,
                                                                 psf=False)
            images.append(Image.load(path))
        m = b1_map(images[0], images[1], opts)
        _, missing = images[0].acquisition()
        warn_filled(scan_a, [f for f in missing if f != "flip_deg"])
        m.meta = {**base_sidecar(inputs=[scan_a, scan_2a] + ([traj_path] if traj_path is not None else [])),
                  **m.meta}
        m.meta["b1"]["options"] = opts.to_dict()
        names = {}
        if png:
            names["png"] = Path(montage_png(tmp / f"{stem}.png", m.array, title="B1 (relative flip scale)",
                                            cmap="viridis", vmax=1.5)).name
        names["b1"] = out_path.name
        m.save(tmp / out_path.name)
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return {k: folder / n for k, n in names.items()}
