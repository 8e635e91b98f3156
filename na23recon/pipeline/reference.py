"""The volume-coil reference of the receive correction (`quantify --receive-reference`, a run
config's or manifest's `receive_reference`): a reconstructed image, or a raw scan reconstructed
here with the array image's own reconstruction options, so both images share grid, matrix,
method and filter and their ratio holds only the receive fields."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from ..core import Image, ReconOptions
from ..errors import InputError
from ..recon.scan_recon import reconstruct
from .files import existing_file
from .inputs import load_scan_and_trajectory

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz")


def recon_options_of(image: Image) -> ReconOptions:
    """The reconstruction options recorded in `image`'s sidecar (`recon.options`); InputError
    when the image does not say how it was made."""
    recorded = (image.meta.get("recon") or {}).get("options")
    if not isinstance(recorded, dict):
        raise InputError("the image's sidecar does not record its reconstruction options (recon.options): "
                         "give the receive reference as a reconstructed image")
    return ReconOptions.from_mapping(recorded, "the image's recorded reconstruction options")


def load_reference(path: str | os.PathLike, image: Image, traj_path: str | os.PathLike | None = None,
                   recon: ReconOptions | None = None) -> Image:
    """The volume-coil image on `image`'s grid: a NIfTI as is, or a twix/MRD scan (with its
    trajectory `traj_path`) reconstructed with `recon` (default: `image`'s recorded options;
    coil compression, which a one-channel scan cannot take, is dropped)."""
    path = existing_file(path, "receive reference")
    if path.name.lower().endswith(IMAGE_SUFFIXES):
        return Image.load(path)
    opts = recon if recon is not None else recon_options_of(image)
    scan, traj, source = load_scan_and_trajectory(path, traj_path, opts)
    if opts.coil_compress not in ("auto", "none") and int(opts.coil_compress) > scan.ncoil:
        opts = replace(opts, coil_compress="none")
    if scan.ncoil > 1:
        log.warning("receive reference %s has %d channels: a volume-coil reference has one (the ratio then holds "
                    "both arrays' shading)", Path(path).name, scan.ncoil)
    ref = reconstruct(scan, traj, opts)
    ref.meta["recon"]["trajectory"] = source
    return ref
