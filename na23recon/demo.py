"""`na23recon demo`: the whole chain on a built-in simulated scan, with no other input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.nifti import load_nifti
from .pipeline import recon_file
from .sim.evaluate import compartment_means, linear_calibration
from .sim.phantom import load_phantom
from .sim.scan import simulate_to_folder


MIN_VOXELS = 4
"""Compartments with fewer voxels inside their eroded mask are too small to compare at this matrix."""


def run_demo(out: str | os.PathLike, matrix: int = 48, snr: float = 40.0) -> dict[str, Path]:
    """Simulate the brain phantom, write it as twix + trajectory, reconstruct it and compare the
    compartment means with the known concentrations. Returns the paths of what it wrote."""
    if not 32 <= matrix <= 128:
        raise InputError(f"the demo runs at --matrix 32 to 128 (its compartments need the resolution), got {matrix}")
    out = Path(out)
    sim = simulate_to_folder(out / "sim", phantom="brain", matrix=matrix, snr=snr)
    recon = recon_file(sim["scan"], sim["traj"], out / "recon.nii.gz")
    image, _, _ = load_nifti(recon)
    labels, _, _ = load_nifti(sim["labels"])
    ph = load_phantom("brain")
    conc = {c.label: c.conc_mM for c in ph.compartments}
    means = compartment_means(image, labels.astype(int), erode=1)
    small = sorted(lab for lab in means if means[lab][1] < MIN_VOXELS)
    labs = sorted(lab for lab in means if means[lab][1] >= MIN_VOXELS)
    if len(labs) < 3:
        raise InputError(f"matrix {matrix} leaves fewer than 3 compartments with {MIN_VOXELS} voxels inside "
                         "their eroded masks: use --matrix 40 or more")
    a, b, r2 = linear_calibration(np.array([means[l][0] for l in labs]), np.array([conc[l] for l in labs]))
    names = {lab: "/".join(n) for lab, n in ph.labels.items()}
    print(f"{'compartment':<26}{'true mM':>9}{'calibrated mM':>15}{'voxels':>8}")
    for lab in labs:
        print(f"{names[lab]:<26}{conc[lab]:>9.1f}{(means[lab][0] - b) / a:>15.1f}{means[lab][1]:>8d}")
    print(f"linear calibration over {len(labs)} compartments: R^2 = {r2:.4f}"
          + (f" ({len(small)} left out: under {MIN_VOXELS} voxels after erosion)" if small else ""))
    return {"recon": recon, "png": recon.with_name("recon.png"), "sidecar": recon.with_name("recon.json"),
            **{f"sim_{k}": v for k, v in sim.items()}}
