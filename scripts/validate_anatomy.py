#!/usr/bin/env python
"""TSC per tissue and atlas label, without and with partial-volume correction, by the product's
own `quantify` (vial detection and calibration included) on a simulated scan with its tissue maps.

    na23recon simulate -o SIM --matrix 64 --snr 20 --anat ; na23recon recon SIM/scan.dat --traj SIM/traj.npz -o R/recon.nii.gz
    python scripts/validate_anatomy.py SIM R/recon.nii.gz adjoint

Writes R/recon_psf4d.nii.gz (the method's PSF per tissue, `recon.psf.point_spread` with each
preset's T2* decay) and R/tsc_<method>*; prints the bias of each region against the phantom.
"""
import csv
import sys
import time
from pathlib import Path

import numpy as np

from na23recon.core import Image, ReconOptions
from na23recon.io.trajfile import load_traj
from na23recon.pipeline.tsc_step import quantify_file
from na23recon.quant.relax import get_preset
from na23recon.recon.psf import point_spread

sim, recon, method = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
img = Image.load(recon)
traj = load_traj(sim / "traj.npz")
t0 = time.time()
names = ["gm", "wm", "csf", "agar2"]
psfs = [point_spread(traj, ReconOptions(method=method), img.shape[:3], 240.0, t2s_ms=get_preset(n).decay) for n in names]
print("psf", time.time() - t0, [float(p.sum()) for p in psfs])
psf_path = recon.parent / (recon.name.split(".")[0] + "_psf4d.nii.gz")
Image(np.stack(psfs, -1).astype(np.float32), img.affine, {"psf": {"tissues": names}}).save(psf_path)
out = recon.parent / f"tsc_{method}.nii.gz"
quantify_file(recon, out, sim / "vials.json", tissue_map_paths=[sim / f"anat_{t}.nii.gz" for t in ("gm", "wm", "csf")],
              atlas_path=sim / "anat_atlas.nii.gz", atlas_table_path=sim / "anat_atlas.tsv", psf_path=psf_path)
truth = {"gm": 42.0, "wm": 32.0, "csf": 145.0, "ventricle": 145.0, "lesion": 70.0}


def bias(r: dict, k: str, t: float) -> str:
    return f"{100 * (float(r[k]) - t) / t:+.1f}%" if r[k] else "-"


for r in csv.DictReader(open(recon.parent / f"tsc_{method}_roi.csv")):
    t = truth[r["region"]]
    print(r["kind"], r["region"], "raw", bias(r, "mean", t), "gtm", bias(r, "mean_pvc_gtm", t), "rbv",
          bias(r, "mean_pvc_rbv", t), "se", r["se"], r["se_pvc_gtm"])
