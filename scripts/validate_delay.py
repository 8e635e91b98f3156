#!/usr/bin/env python
"""Gradient delays through the CLI: `simulate --gradient-delay-us` (the analytic phantom's k-space
at the delayed positions, the file holding the nominal trajectory) -> `recon` with no correction,
with the true delays (`--gradient-delay-us`) and with `--estimate-delay`, against the undelayed
scan's reconstruction (same seed, same options).

    python scripts/validate_delay.py -o OUT [--matrix 64] [--traj radial --traj dar]
        [--delay-us 2 5 8] [--method adjoint]

Prints per trajectory the estimate and its sd, the estimation time, and for each reconstruction
the largest brain-compartment change vs the undelayed one and the NRMSE; writes OUT/delay.json.
Acceptance (issue: real hardware): estimate within 0.5 us per axis, compartments within 1%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from na23recon.cli import main as cli  # noqa: E402
from na23recon.core import Image  # noqa: E402
from na23recon.sim.evaluate import compartment_means, nrmse  # noqa: E402


def _run(args) -> None:
    rc = cli([str(a) for a in args])
    if rc != 0:
        raise SystemExit(f"na23recon {' '.join(map(str, args))} exited {rc}")


def case(out: Path, traj: str, n: int, delay, method: str) -> dict:
    common = ["--traj", traj, "--matrix", n, "--te-ms", 0.3]
    _run(["simulate", "-o", out / "d", *common, "--gradient-delay-us", *delay])
    _run(["simulate", "-o", out / "r", *common])
    labels = Image.load(out / "r" / "truth_labels.nii.gz").array.astype(int)
    brain = (labels >= 1) & (labels <= 5)
    imgs, secs = {}, {}
    for name, folder, extra in (("reference", "r", []), ("uncorrected", "d", []),
                                ("given", "d", ["--gradient-delay-us", *delay]), ("estimated", "d", ["--estimate-delay"])):
        path = out / f"{name}.nii.gz"
        t0 = time.perf_counter()
        _run(["recon", out / folder / "scan.dat", "--traj", out / folder / "traj.npz", "--method", method, "-o", path,
              "--no-png", *extra])
        secs[name] = time.perf_counter() - t0
        imgs[name] = Image.load(path).array
    side = json.loads((out / "estimated.json").read_text())["recon"]["gradient_delay"]
    ref = {k: v for k, (v, _) in compartment_means(imgs["reference"], labels).items() if 1 <= k <= 5}
    row = {"traj": traj, "matrix": n, "method": method, "true_us": list(delay), "estimated_us": side["delay_us"],
           "sd_us": side["sd_us"], "estimate_s": side.get("seconds"), "short_fraction": side.get("short_fraction_fitted")}
    for name in ("uncorrected", "given", "estimated"):
        m = compartment_means(imgs[name], labels)
        err = {int(k): float(m[k][0] / ref[k] - 1) for k in ref}
        row[name] = {"worst_pct": 100 * max(abs(v) for v in err.values()),
                     "per_label_pct": {k: round(100 * v, 3) for k, v in err.items()},
                     "nrmse": float(nrmse(imgs[name], imgs["reference"], brain)), "seconds": round(secs[name], 1)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--matrix", type=int, default=64)
    p.add_argument("--traj", action="append", choices=["radial", "dar", "tpi"], default=None)
    p.add_argument("--delay-us", type=float, nargs=3, default=(2.0, 5.0, 8.0))
    p.add_argument("--method", default="adjoint")
    a = p.parse_args()
    out = Path(a.out)
    rows = []
    for traj in a.traj or ["radial", "dar"]:
        d = out / f"{traj}_{a.matrix}"
        d.mkdir(parents=True, exist_ok=True)
        r = case(d, traj, a.matrix, a.delay_us, a.method)
        rows.append(r)
        err = np.abs(np.array(r["estimated_us"]) - np.array(r["true_us"]))
        print(f"{traj} N={a.matrix} {a.method}: true {r['true_us']} us, estimated {np.round(r['estimated_us'], 2).tolist()} "
              f"sd {np.round(r['sd_us'], 3).tolist()} (max error {err.max():.2f} us; {r['estimate_s']} s; short fraction "
              f"{r['short_fraction']})")
        for name in ("uncorrected", "given", "estimated"):
            q = r[name]
            print(f"  {name:12s} worst brain compartment vs undelayed {q['worst_pct']:6.2f}%  NRMSE {q['nrmse']:.4f}  "
                  f"per label {q['per_label_pct']}  ({q['seconds']} s)")
        sys.stdout.flush()
    (out / "delay.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
