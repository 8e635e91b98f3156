#!/usr/bin/env python
"""B0 off-resonance correction through the CLI: no map, a map on the reconstruction grid, a finer map.

One simulated TPI scan of the `offres` phantom (body +25 Hz, spheres -40/-15/+10/+40 Hz; analytic
k-space with each compartment's off-resonance in closed form, no NUFFT), `simulate
--b0-map-voxel-mm` writing the true field also on a fine grid (a 1H field map's resolution), and the
same phantom with every `b0_hz` set to 0 (the on-resonance floor). For each method: `na23recon
recon` without a map, with truth_b0.nii.gz (one frequency per voxel) and with truth_b0_fine.nii.gz
(intravoxel dephasing, `recon.offres`); one global linear calibration of the compartment means
against the true concentrations; the worst compartment error, the NRMSE against the partial-volume
truth over the object, and its split into interior voxels and edge voxels (a different label within
one voxel); the segments, the voxel model and the recon's wall time from its sidecar.

    python scripts/validate_offres.py                       # matrix 64, 1 mm map, cg and cs-tv, noiseless
    python scripts/validate_offres.py --matrix 32 --snr 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from na23recon.cli import main as cli  # noqa: E402
from na23recon.core import Image  # noqa: E402
from na23recon.sim.evaluate import compartment_means, linear_calibration, nrmse  # noqa: E402
from na23recon.sim.phantom import load_phantom  # noqa: E402


def evaluate(folder: Path, image_path: Path, conc: dict[int, float]) -> dict:
    img = Image.load(image_path).array
    lab = Image.load(folder / "truth_labels.nii.gz").array.astype(int)
    truth = Image.load(folder / "truth_conc.nii.gz").array
    labs = sorted(conc)
    means = compartment_means(img, lab)
    m = np.array([means[k][0] for k in labs])
    c = np.array([conc[k] for k in labs])
    a, b, _ = linear_calibration(m, c)
    err = 100 * ((m - b) / a - c) / c
    cal = (img - b) / a
    obj = lab > 0
    edge = (ndimage.maximum_filter(lab, 3) != ndimage.minimum_filter(lab, 3)) & obj
    return {"max_err_pct": float(np.max(np.abs(err))), "err_pct": [round(float(v), 3) for v in err],
            "nrmse": nrmse(cal, truth, obj), "interior": nrmse(cal, truth, obj & ~edge), "edge": nrmse(cal, truth, edge)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--matrix", type=int, default=64)
    p.add_argument("--map-voxel-mm", type=float, default=1.0)
    p.add_argument("--snr", type=float, default=None)
    p.add_argument("--methods", default="cg,cs-tv")
    p.add_argument("--readout-ms", type=float, default=15.0)
    p.add_argument("--recon-args", default="", help="more recon options for every run, e.g. '--discrepancy 0'")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true", help="reuse the scans an earlier run with the same --out, "
                   "matrix, SNR and readout left there")
    a = p.parse_args(argv)
    conc = {c.label: c.conc_mM for c in load_phantom("offres").compartments}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(a.out or tmpd)
        d = json.loads((files("na23recon") / "data" / "offres.json").read_text())
        for c in d["compartments"]:
            c["b0_hz"] = 0.0
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "onres.json").write_text(json.dumps(d))
        sim_args = ["--traj", "tpi", "--matrix", str(a.matrix), "--readout-ms", str(a.readout_ms), "--tr-ms", "300",
                    *(["--snr", str(a.snr)] if a.snr else [])]
        if not (a.reuse and (tmp / "sim" / "truth_b0_fine.nii.gz").is_file() and (tmp / "onres" / "scan.dat").is_file()):
            assert cli(["simulate", "offres", "-o", str(tmp / "sim"), *sim_args, "--b0-map-voxel-mm",
                        str(a.map_voxel_mm)]) == 0
            assert cli(["simulate", str(tmp / "onres.json"), "-o", str(tmp / "onres"), *sim_args]) == 0
        sim = tmp / "sim"
        cases = [("on-resonance floor", tmp / "onres", []), ("no map", sim, []),
                 ("grid map", sim, ["--b0-map", str(sim / "truth_b0.nii.gz")]),
                 (f"fine map ({a.map_voxel_mm:g} mm)", sim, ["--b0-map", str(sim / "truth_b0_fine.nii.gz")])]
        print(f"TPI matrix {a.matrix}, readout {a.readout_ms} ms, SNR {a.snr or 'none'}, offres phantom "
              f"(-40..+40 Hz); one linear calibration per reconstruction; recon options {a.recon_args or 'defaults'}")
        print(f"{'method':<7} {'case':<22} {'max err %':>9} {'NRMSE':>7} {'interior':>8} {'edge':>7} {'seg':>4} "
              f"{'recon s':>8}  compartment errors %")
        res = {}
        for method in a.methods.split(","):
            for name, folder, extra in cases:
                out = tmp / f"{method}_{name.split()[0]}.nii.gz"
                t0 = time.perf_counter()
                assert cli(["recon", str(folder / "scan.dat"), "--traj", str(folder / "traj.npz"), "-o", str(out),
                            "--method", method, "--no-png", *a.recon_args.split(), *extra]) == 0
                wall = time.perf_counter() - t0
                r = evaluate(folder, out, conc)
                bm = json.loads(out.with_suffix("").with_suffix(".json").read_text())["recon"].get("b0_model", {})
                res[method, name] = r
                print(f"{method:<7} {name:<22} {r['max_err_pct']:>9.2f} {r['nrmse']:>7.4f} {r['interior']:>8.4f} "
                      f"{r['edge']:>7.4f} {bm.get('segments', '-'):>4} {wall:>8.1f}  {r['err_pct']}", flush=True)
            no, grid, fine = (res[method, n][k] for n in [c[0] for c in cases[1:]] for k in ["nrmse"])
            print(f"{method}: NRMSE lower than without a map by {100 * (1 - grid / no):.0f}% (grid map), "
                  f"{100 * (1 - fine / no):.0f}% (fine map)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
