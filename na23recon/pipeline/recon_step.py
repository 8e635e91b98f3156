"""`na23recon recon`: a twix or MRD scan and its trajectory in, a NIfTI image with sidecar (+ PNG) out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..core import Image, ReconOptions
from ..core.atomic import staged_outputs
from ..core.nifti import sidecar_path
from ..errors import InputError
from ..provenance import base_sidecar, display_name
from ..quant.relax import PRESETS
from ..recon.psf import point_spread_info, psf_options
from ..recon.scan_recon import reconstruct
from ..report.figures import delay_png, montage_png
from .files import check_output_path, existing_file, nifti_stem, refuse_overwriting_inputs, step_outputs
from .inputs import load_scan_and_trajectory


def recon_file(scan_path: str | os.PathLike, traj_path: str | os.PathLike | None, out_path: str | os.PathLike,
               options: ReconOptions | None = None, png: bool = True, progress: bool | None = None,
               psf: bool | None = None, psf_tissues: list[str] | None = None) -> Path:
    """Reconstruct a twix or MRD scan with its trajectory into `out_path` (.nii.gz) + sidecar (+ PNG).

    The trajectory: a .npz/.npy, .mat/.txt/.csv (in `options.traj_units`) or Pulseq .seq file, or
    None for an MRD file that stores one (`pipeline.inputs`); the sidecar's `recon.trajectory`
    names the source and units.

    The image is the coil-combined magnitude, (x, y, z) or (x, y, z, echo) for several echoes, on
    the scan's geometry (`recon.scan_recon.reconstruct`). Options and the output path are checked
    before anything is read; the image and its sidecar are written atomically.

    psf (default `options.psf`): also write `<stem>_psf.nii.gz`, the method's point-spread function
    under the `options.psf_tissue` preset's T2* decay (`recon.psf`), its FWHM in `recon.psf`;
    several presets (`psf_tissues`, default the comma-separated `options.psf_tissue`) give a 4D
    PSF, one volume per preset, named in the sidecar's `psf.tissues` (what partial-volume
    correction reads: each region blurred by its own T2*).
    """
    opts = options or ReconOptions()
    t0 = time.perf_counter()
    out_path = check_output_path(out_path)
    existing_file(scan_path, "scan")
    if traj_path is not None:
        existing_file(traj_path, "trajectory file")
    if opts.b0_map is not None:
        existing_file(opts.b0_map, "B0 field map (--b0-map)")
    if opts.decay_map is not None:
        existing_file(opts.decay_map, "decay label map (--decay-map)")
    folder, stem = nifti_stem(out_path)
    inputs = [p for p in (scan_path, traj_path, opts.b0_map, opts.decay_map) if p is not None]
    psf = opts.psf if psf is None else psf
    tissues = list(psf_tissues) if psf_tissues else [t.strip() for t in opts.psf_tissue.split(",") if t.strip()]
    decays = [_psf_decay(t) for t in tissues] if psf else []
    refuse_overwriting_inputs(step_outputs(folder, stem, (out_path.name[len(stem):], ".json", ".png")
                                           + (("_psf.nii.gz", "_psf.json") if psf else ())), inputs)
    scan, traj, source = load_scan_and_trajectory(scan_path, traj_path, opts)
    image = reconstruct(scan, traj, opts, progress=progress)
    image.meta = {**base_sidecar(inputs=inputs), **image.meta}
    image.meta["recon"]["trajectory"] = source
    if scan.notes:  # what the reader repaired (zeroed samples)
        image.meta["recon"]["input_repairs"] = dict(scan.notes)
    psf_image = None
    if psf:
        popts = psf_options(opts, image.meta["recon"])
        arrs, infos = zip(*(point_spread_info(traj, popts, image.array.shape[:3], scan.acquisition.geometry.fov_mm,
                                              t2s_ms=d) for d in decays))
        info = {"file": f"{stem}_psf.nii.gz", "tissue": ",".join(tissues), **infos[0]}
        if len(tissues) > 1:
            info.update(tissues=tissues, per_tissue=dict(zip(tissues, infos)))
        arr = arrs[0] if len(arrs) == 1 else np.stack(arrs, axis=-1)
        image.meta["recon"]["psf"] = info
        psf_image = Image(arr, image.affine, {**base_sidecar(inputs=inputs), "acquisition": image.meta["acquisition"],
                                              "recon": {"psf": info, "options": opts.to_dict()},
                                              **({"psf": {"tissues": tissues}} if len(tissues) > 1 else {})})
    image.meta["recon"]["seconds"] = round(time.perf_counter() - t0, 3)
    # image, sidecar and PNG appear together or not at all (a full disk leaves none of them)
    with staged_outputs(folder, stem) as tmp:
        image.save(tmp / out_path.name)
        if psf_image is not None:
            psf_image.save(tmp / f"{stem}_psf.nii.gz")
        if png:
            arr = image.array if image.array.ndim == 3 else image.array[..., 0]
            montage_png(tmp / f"{stem}.png", arr, title=f"{display_name(scan_path, 'scan')}: {opts.method}")
            if image.meta["recon"].get("gradient_delay"):
                delay_png(tmp / f"{stem}_delay.png", image.meta["recon"]["gradient_delay"])
        tmp.commit(last=[sidecar_path(out_path).name, out_path.name])
    return out_path


def _psf_decay(tissue: str):
    """The decay (a callable of ms) of relaxation preset `tissue`, None for 'none'; InputError else."""
    if tissue == "none":
        return None
    if tissue not in PRESETS:
        raise InputError(f"--psf-tissue must be 'none' or a relaxation preset ({', '.join(sorted(PRESETS))}), "
                         f"got {tissue!r}")
    return PRESETS[tissue].decay


def load_image(path: str | os.PathLike, what: str) -> Image:
    """An input image, with a message naming `what` when it is missing."""
    existing_file(path, what)
    return Image.load(path)
