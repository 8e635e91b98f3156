"""`na23recon demo`: the whole chain on built-in simulated scans, with no other input.

Simulates the sodium brain phantom (with four reference vials and a transmit field that varies
by +-20%) as two Siemens twix scans at flips a and 2a, then runs what a user runs on a real
visit: reconstruction, the double-angle B1 map, the TSC map calibrated on the vials with
per-tissue relaxation, and the HTML report; finally it compares the TSC of each compartment with
the concentration the phantom was made with. Like the scripts and tests, and unlike the library,
it may use the simulator.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .core import Image, QuantOptions, ReconOptions
from .errors import InputError
from .pipeline.config import Job, RunOptions
from .pipeline.run import process_scan
from .sim.evaluate import compartment_means
from .sim.phantom import load_phantom
from .sim.scan import simulate_to_folder

MIN_VOXELS = 4
"""Compartments with fewer voxels inside their eroded mask are too small to compare at this matrix."""
TISSUE_PRESET = {"csf": "csf", "gm": "gm", "wm": "wm", "ventricle": "csf", "lesion": "lesion"}
"""Relaxation preset of each brain compartment (by name prefix), as a 1H segmentation would give."""


def run_demo(out: str | os.PathLike, matrix: int = 48, snr: float = 40.0) -> dict[str, Path]:
    """Simulate, reconstruct, map B1, quantify TSC and report into `out`; print TSC per
    compartment against the truth. Returns the paths of what it wrote."""
    if not 32 <= matrix <= 128:
        raise InputError(f"the demo runs at --matrix 32 to 128 (its compartments need the resolution), got {matrix}")
    out = Path(out)
    sim = simulate_to_folder(out / "sim", phantom="brain", matrix=matrix, snr=snr, double_angle=True,
                             flip_deg=45.0, tr_ms=150.0, b1_variation=0.2)
    ph = load_phantom("brain")
    presets = {}
    for c in ph.compartments:
        preset = next((p for prefix, p in TISSUE_PRESET.items() if c.name.startswith(prefix)), None)
        if preset is not None:
            presets[c.label] = preset
    job = Job(id="demo", scan=str(sim["scan"]), traj=str(sim["traj"]), b1_scan_a=str(sim["scan"]),
              b1_scan_2a=str(sim["scan_2a"]), vials=str(sim["vials"]), labels=str(sim["labels"]))
    options = RunOptions(recon=ReconOptions(), quant=QuantOptions(label_tissue=presets))
    outputs = process_scan(job, out / "results", options)
    tsc = Image.load(outputs["tsc"]).array
    labels = Image.load(sim["labels"]).array.astype(int)
    means = compartment_means(tsc, labels, erode=1)
    conc = {c.label: c.conc_mM for c in ph.compartments}
    names = {lab: "/".join(n) for lab, n in ph.labels.items()}
    shown = [lab for lab in sorted(means) if means[lab][1] >= MIN_VOXELS and lab in presets]
    if not shown:
        raise InputError(f"matrix {matrix} leaves no compartment with {MIN_VOXELS} voxels inside its eroded mask")
    print(f"{'compartment':<26}{'true mM':>9}{'TSC mM':>9}{'error':>8}{'voxels':>8}")
    for lab in shown:
        m, nvox = means[lab]
        print(f"{names[lab]:<26}{conc[lab]:>9.1f}{m:>9.1f}{100 * (m - conc[lab]) / conc[lab]:>+7.1f}%{nvox:>8d}")
    errs = np.array([abs(means[lab][0] - conc[lab]) / conc[lab] for lab in shown])
    print(f"TSC within {100 * errs.max():.1f}% of the truth in {len(shown)} compartments (eroded by one voxel); "
          f"report: {outputs['report']}")
    return {**outputs, **{f"sim_{k}": v for k, v in sim.items()}}
