#!/usr/bin/env python
"""Sweep each iterative method's regularisation against the adjoint: the evidence for DEFAULT_LAM.

For every trajectory (radial, DA-radial, TPI) x SNR (10, 20, 40) the single-coil brain phantom
is simulated once (`scripts/validate_phantoms.py`'s chain: analytic k-space -> twix + traj.npz,
no NUFFT in the simulator), reconstructed with the adjoint and with every method x lambda of the
grid (`pipeline.recon_file`), and turned into TSC by the product's quantification with the
truth's vial mask (`validate_phantoms.evaluate_run`). Printed: one row per reconstruction (NRMSE
of TSC over the head, its difference to the adjoint's, and the TSC bias of GM, WM, lesion and
ventricles), then per method x lambda the worst NRMSE difference to the adjoint over the grid
(<= 0: never worse than the adjoint) and the largest GM/WM bias.

    python scripts/sweep_defaults.py                         # matrix 48, the full grid
    python scripts/sweep_defaults.py --matrix 32 --snr 20    # quick look
    python scripts/sweep_defaults.py --defaults              # check the defaults in force

Lambda is the `ReconOptions.lam` the CLI takes: relative to the image noise SD for CS-TV and
CS-wavelet, the Tikhonov weight relative to ||E^H W E|| ~ 1 for CG.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import validate_phantoms as vp  # noqa: E402

from na23recon.core import ReconOptions  # noqa: E402
from na23recon.core.nifti import sidecar_path  # noqa: E402
from na23recon.core.options import DEFAULT_ITERS, DEFAULT_LAM  # noqa: E402
from na23recon.pipeline.recon_step import recon_file  # noqa: E402
from na23recon.sim.phantom import load_phantom  # noqa: E402
from na23recon.sim.scan import simulate_to_folder  # noqa: E402

GRID = {"cg": (0.1, 0.3, 1.0, 3.0), "cs-tv": (0.25, 0.5, 1.0, 2.0), "cs-wavelet": (0.5, 1.0, 2.0, 4.0)}
LABELS = ("gm", "wm", "lesion", "ventricle_r")


def sweep(out: Path, matrix: int = 48, snrs=(10.0, 20.0, 40.0), trajs=("radial", "dar", "tpi"),
          grid: dict | None = None, iters: dict | None = None, seed: int = 0, undersampling: float = 1.0,
          decay_truth: bool = False, readout_ms: float | None = None) -> list[dict]:
    """All rows (dicts) of the sweep; writes OUT/sweep.json. decay_truth: every iterative method with
    the per-voxel decay model from the truth labels (`validate_phantoms.decay_truth_options`), so
    the lambdas swept are those of DEFAULT_LAM's `method+decay` entries; readout_ms: TPI's readout."""
    grid = grid or GRID
    ph = load_phantom("brain")
    rows, cache = [], {}
    for traj in trajs:
        for snr in snrs:
            tag = f"{traj}_snr{snr:g}"
            sim = simulate_to_folder(out / tag, phantom="brain", matrix=matrix, snr=snr, seed=seed, traj=traj,
                                     cache=cache, undersampling=undersampling, **vp.ACQ,
                                     **vp.sim_extra(traj, matrix, readout_ms, decay_truth))
            runs = [("adjoint", None)] + [(m, lam) for m, lams in grid.items() for lam in lams]
            for method, lam in runs:
                it = (iters or {}).get(method)
                model = vp.decay_truth_options(sim, ph) if decay_truth and method != "adjoint" else {}
                opts = ReconOptions(method=method, lam=lam, iters=it, **model)
                path = out / tag / f"{method}_{lam}.nii.gz"
                t0 = time.perf_counter()
                recon_file(sim["scan"], sim["traj"], path, opts, png=False)
                sec = time.perf_counter() - t0
                res = vp.evaluate_run(sim, path, ph, vp.ACQ, 0.0)
                solver = json.loads(sidecar_path(path).read_text())["recon"].get("solver") or [{}]
                ran = solver[0].get("iterations")
                bias = {c: res["compartments"][c]["bias_pct"] for c in LABELS if c in res["compartments"]}
                rows.append({"traj": traj, "snr": snr, "method": method + ("+decay" if model else ""), "lam": lam,
                             "iters": opts.iters_value, "ran": ran, "nrmse": res["nrmse"], "bias": bias,
                             "seconds": round(sec, 1)})
                path.unlink(missing_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    adj = {(r["traj"], r["snr"]): r["nrmse"] for r in rows if r["method"] == "adjoint"}
    head = ["traj", "SNR", "method", "lam", "iters (ran)", "NRMSE", "vs adj"] + [f"{c} bias %" for c in LABELS] + ["s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r["nrmse"] - adj[(r["traj"], r["snr"])]
        mark = " *" if r["method"] != "adjoint" and r["lam"] == DEFAULT_LAM.get(r["method"]) else ""
        cells = [r["traj"], f"{r['snr']:g}", r["method"], "-" if r["lam"] is None else f"{r['lam']:g}{mark}",
                 f"{r['iters']} ({r.get('ran')})" if r["method"] != "adjoint" else "-", f"{r['nrmse']:.4f}", f"{d:+.4f}"]
        cells += [f"{r['bias'][c]:+.1f}" if c in r["bias"] else "n/a" for c in LABELS] + [f"{r['seconds']:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per method x lambda over the whole grid: worst NRMSE - adjoint NRMSE, mean NRMSE, largest |bias|."""
    adj = {(r["traj"], r["snr"]): r["nrmse"] for r in rows if r["method"] == "adjoint"}
    keys = sorted({(r["method"], r["lam"]) for r in rows}, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    head = ["method", "lam", "worst NRMSE - adjoint", "mean NRMSE", "max |GM|,|WM| bias %", "max |lesion| bias %",
            "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, lam in keys:
        rs = [r for r in rows if r["method"] == m and r["lam"] == lam]
        worst = max(r["nrmse"] - adj[(r["traj"], r["snr"])] for r in rs)
        mean = sum(r["nrmse"] for r in rs) / len(rs)
        gw = max(max(abs(r["bias"].get("gm", 0)), abs(r["bias"].get("wm", 0))) for r in rs)
        les = max(abs(r["bias"].get("lesion", 0)) for r in rs)
        mark = " (default)" if m != "adjoint" and lam == DEFAULT_LAM.get(m) else ""
        lines.append(f"| {m} | {'-' if lam is None else f'{lam:g}'}{mark} | {worst:+.4f} | {mean:.4f} | {gw:.1f} | "
                     f"{les:.1f} | {len(rs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--out", default="/tmp/na23recon_sweep", help="work folder (scans, sweep.json)")
    p.add_argument("--matrix", type=int, default=48)
    p.add_argument("--snr", type=float, action="append", default=None, help="repeat (default 10, 20, 40)")
    p.add_argument("--traj", action="append", choices=["radial", "dar", "tpi"], default=None)
    p.add_argument("--method", action="append", choices=sorted(GRID), default=None)
    p.add_argument("--lam", type=float, action="append", default=None, help="override the grid's lambdas")
    p.add_argument("--iters", type=int, default=None, help="override every method's iterations")
    p.add_argument("--defaults", action="store_true", help="only each method's default lambda and iterations")
    p.add_argument("--undersampling", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decay-truth", action="store_true", help="iterative methods with the per-voxel decay model "
                   "from the truth labels (sweeps DEFAULT_LAM's method+decay entries)")
    p.add_argument("--readout-ms", type=float, default=None, help="TPI readout duration (default: the fastest)")
    a = p.parse_args(argv)
    methods = a.method or sorted(GRID)
    key = (lambda m: f"{m}+decay" if a.decay_truth and f"{m}+decay" in DEFAULT_LAM else m)
    grid = {m: (DEFAULT_LAM[key(m)],) if a.defaults else tuple(a.lam) if a.lam else GRID[m] for m in methods}
    iters = {m: a.iters for m in methods} if a.iters else None
    t0 = time.perf_counter()
    rows = sweep(Path(a.out), matrix=a.matrix, snrs=tuple(a.snr or (10.0, 20.0, 40.0)),
                 trajs=tuple(a.traj or ("radial", "dar", "tpi")), grid=grid, iters=iters, seed=a.seed,
                 undersampling=a.undersampling, decay_truth=a.decay_truth, readout_ms=a.readout_ms)
    model = f", decay model from the truth labels, TPI readout {a.readout_ms or 'fastest'} ms" if a.decay_truth else ""
    print(f"brain phantom, one coil, matrix {a.matrix}, undersampling {a.undersampling:g}, seed {a.seed}{model}; "
          f"defaults now: lam {DEFAULT_LAM}, iters {DEFAULT_ITERS}; {time.perf_counter() - t0:.0f} s\n")
    print(table(rows))
    print()
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
