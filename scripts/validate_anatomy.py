#!/usr/bin/env python
"""TSC per tissue class (GM, WM, CSF) without and with partial-volume correction, by the product's
own steps on simulated scans with their 1H tissue maps: `pipeline.recon_file` (writing the
method's PSF per tissue and vial medium, as `run` does with anatomy) -> `pipeline.tsc_step.
quantify_file` (automatic vial detection, the vial calibration and the PVC calibration included,
nothing calibrated here) -> the ROI table's tissue rows against the phantom's truth.

    python scripts/validate_anatomy.py -o OUT [--matrix 64] [--traj radial --traj dar] [--method adjoint]
        [--snr 20] [--offset-mm 3 -4 0 --rot-deg 2.9 -2.9 2.9 --register]

Truth of a class: the volume-weighted concentration of the phantom compartments in it (a
lesion counts as white matter, as the simulated segmentation puts it). Acceptance bounds (the
GTM value): 3% for adjoint and cg, 5% for cs-*. Prints one Markdown row per case as it finishes
and writes OUT/anatomy.md and OUT/anatomy.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from na23recon.core import QuantOptions, ReconOptions  # noqa: E402
from na23recon.pipeline.recon_step import recon_file  # noqa: E402
from na23recon.pipeline.tsc_step import quantify_file  # noqa: E402
from na23recon.quant.register import rotation_angle_deg  # noqa: E402
from na23recon.sim.anatomy import TISSUE_OF, TISSUES  # noqa: E402
from na23recon.sim.phantom import load_phantom  # noqa: E402
from na23recon.sim.scan import simulate_to_folder  # noqa: E402

ACQ = dict(te_ms=0.3, tr_ms=100.0, flip_deg=90.0)
BOUND = {"adjoint": 3.0, "cg": 3.0}  # %, cs-* 5


def class_truth(phantom) -> dict[str, float]:
    """Volume-weighted concentration of each tissue class (compartment volume less its children's)."""
    comps = phantom.compartments
    vol = [4 / 3 * np.pi * np.prod(c.semi_axes_mm) if c.shape == "ellipsoid" else
           np.pi * c.semi_axes_mm[0] * c.semi_axes_mm[1] * 2 * c.semi_axes_mm[2] for c in comps]
    own = list(vol)
    for j, p in enumerate(phantom.parents):
        if p is not None:
            own[p] -= vol[j]
    num, den = {}, {}
    for c, v in zip(comps, own):
        t = TISSUE_OF.get(c.relaxation) if c.medium is None else None
        if t is not None:
            num[t] = num.get(t, 0.0) + v * c.conc_mM
            den[t] = den.get(t, 0.0) + v
    return {t: num[t] / den[t] for t in num}


def run_case(out: Path, sim: dict, method: str, truth: dict, register: bool, motion, decay_truth: bool = False,
             iters: int | None = None) -> dict:
    """One reconstruction + quantification with PVC. decay_truth: the per-voxel decay model (--decay-map
    from the simulation's labels on a 3x finer grid, each label's relaxation preset; default target) in
    the reconstruction."""
    t0 = time.perf_counter()
    media = sorted({v["medium"] for v in json.loads(Path(sim["vials"]).read_text())["vials"]})
    tag = f"{method}_decay" if decay_truth else method
    recon = out / f"recon_{tag}.nii.gz"
    extra = {}
    if decay_truth:
        ph = load_phantom("brain")
        extra = dict(decay_map=str(sim["labels_fine"]),
                     decay_labels={c.label: c.relaxation for c in ph.compartments if c.relaxation is not None})
    recon_file(sim["scan"], sim["traj"], recon, ReconOptions(method=method, iters=iters, **extra), png=False, psf=True,
               psf_tissues=[*TISSUES, *media])
    t_rec = time.perf_counter() - t0
    tsc = out / f"tsc_{tag}.nii.gz"
    quantify_file(recon, tsc, sim["vials"], QuantOptions(register=register), png=False,
                  tissue_map_paths=[sim[f"anat_{t}"] for t in TISSUES])
    t_q = time.perf_counter() - t0 - t_rec
    rows = {r["region"]: r for r in csv.DictReader(open(out / f"tsc_{tag}_roi.csv"))
            if r["kind"] == "tissue"}
    res = {"method": method, "seconds_recon": round(t_rec, 1), "seconds_quantify": round(t_q, 1), "tissue": {}}
    for t in TISSUES:
        r = rows[t]
        res["tissue"][t] = {"truth": truth[t], **{k: (100 * (float(r[c]) - truth[t]) / truth[t] if r[c] else None)
                                                  for k, c in (("raw", "mean"), ("gtm", "mean_pvc_gtm"),
                                                               ("rbv", "mean_pvc_rbv"))},
                            "se_gtm": float(r["se_pvc_gtm"]) if r["se_pvc_gtm"] else None}
    side = json.loads((out / f"tsc_{tag}.json").read_text())["quant"]
    if register and motion is not None:
        E = np.array(side["anatomy"]["registration"]["matrix"])
        head = np.array([[x, y, z, 1.0] for x in (-78, 78) for y in (-94, 94) for z in (-72, 72)]).T
        res["registration"] = {"rotation_error_deg": rotation_angle_deg(E[:3, :3].T @ motion[:3, :3]),
                               "max_displacement_error_mm": float(np.abs(((E - motion) @ head)[:3]).max())}
    return res


def row_md(traj: str, snr: float, r: dict) -> str:
    bound = BOUND.get(r["method"], 5.0)
    cells = [traj, r["method"], f"{snr:g}"]
    ok = True
    for t in TISSUES:
        d = r["tissue"][t]
        cells.append(f"{d['raw']:+.1f}")
        cells.append(f"{d['gtm']:+.1f}" if d["gtm"] is not None else "n/a")
        cells.append(f"{d['rbv']:+.1f}" if d["rbv"] is not None else "n/a")
        ok &= d["gtm"] is not None and abs(d["gtm"]) <= bound
    if "registration" in r:
        g = r["registration"]
        cells.append(f"{g['rotation_error_deg']:.2f} deg / {g['max_displacement_error_mm']:.2f} mm")
    cells.append(f"{'yes' if ok else 'NO'} ({bound:g}%)")
    cells.append(f"{r['seconds_recon']:.0f}+{r['seconds_quantify']:.0f}")
    return "| " + " | ".join(cells) + " |"


def header(register: bool) -> str:
    h = ["trajectory", "method", "SNR"] + [f"{t.upper()} {k}" for t in TISSUES for k in ("no PVC", "GTM", "RBV")]
    h += (["registration error"] if register else []) + ["GTM within bound", "s recon+quant"]
    return "| " + " | ".join(h) + " |\n|" + "---|" * len(h)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--matrix", type=int, default=64)
    p.add_argument("--traj", action="append", choices=["radial", "dar", "tpi"], default=None)
    p.add_argument("--method", action="append", default=None)
    p.add_argument("--snr", type=float, action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offset-mm", type=float, nargs=3, default=(0.0, 0.0, 0.0))
    p.add_argument("--rot-deg", type=float, nargs=3, default=(0.0, 0.0, 0.0))
    p.add_argument("--register", action="store_true")
    p.add_argument("--anat-voxel-mm", type=float, default=1.0, help="voxel of the simulated 1H maps (mm)")
    p.add_argument("--readout-ms", type=float, default=None, help="TPI readout duration (default: the fastest)")
    p.add_argument("--iters", type=int, default=None, help="iterations of the iterative methods (default: each's)")
    p.add_argument("--decay-truth", action="store_true", help="per-voxel decay model from the truth labels (each "
                   "label's relaxation preset, default target) in the iterative reconstructions; adjoint left out")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = class_truth(load_phantom("brain"))
    print("truth (mM):", {k: round(v, 2) for k, v in truth.items()}, flush=True)
    print(header(a.register), flush=True)
    results, cache, lines = [], {}, []
    for traj in a.traj or ["radial", "dar", "tpi"]:
        for snr in a.snr or [20.0, 40.0]:
            d = out / f"{traj}_snr{snr:g}"
            sim = simulate_to_folder(d, matrix=a.matrix, snr=snr, seed=a.seed, traj=traj, anat=True, anat_voxel_mm=a.anat_voxel_mm,
                                     anat_offset_mm=a.offset_mm, anat_rot_deg=a.rot_deg, cache=cache, **ACQ,
                                     **({"readout_ms": a.readout_ms} if traj == "tpi" and a.readout_ms else {}),
                                     **({"labels_voxel_mm": 240.0 / (3 * a.matrix)} if a.decay_truth else {}))
            motion = np.array(json.loads(Path(sim["anat_motion"]).read_text())["matrix"])
            for method in a.method or ["adjoint", "cg", "cs-tv"]:
                if a.decay_truth and method == "adjoint":
                    continue
                r = run_case(d, sim, method, truth, a.register, motion, a.decay_truth, a.iters)
                r.update(traj=traj, snr=snr)
                results.append(r)
                lines.append(row_md(traj, snr, r))
                print(lines[-1], flush=True)
                (out / "anatomy.json").write_text(json.dumps({"matrix": a.matrix, "truth": truth, "rows": results},
                                                             indent=2, default=float) + "\n")
    (out / "anatomy.md").write_text(f"Matrix {a.matrix}, truth {truth}; % bias against truth\n\n"
                                    + header(a.register) + "\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
