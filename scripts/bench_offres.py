#!/usr/bin/env python
"""Cost of the B0 off-resonance and T2* decay models: time per iteration of CG-SENSE and CS-TV.

One process, one simulated TPI scan of the `offres` phantom (compartments at -40..+40 Hz, a 15 ms
readout), one coil; the SENSE problem (`recon.solvers.SenseProblem`) built with the plain NUFFT, the
decay model (mono-exponential T2*), the B0 model (`recon.offres.OffResNufft`, time segmentation with
per-segment-pair Toeplitz kernels from the low-rank basis of the pair weights), B0 + biexponential
decay in one operator, the B0 model from a 1 mm map with intravoxel dephasing (the mean response of
the sub-voxel frequencies in each voxel: other spatial factors, the same cost per iteration), the B0
model with one PSF NUFFT per segment pair (full rank: the set-up before
the low-rank basis) and with the NUFFT pair instead of the Toeplitz kernels. Each runs a fixed
number of iterations (tol 0) after a one-iteration warm-up; the script prints seconds per
iteration, the PSF NUFFTs and set-up (kernels), and the ratio to the plain model's iteration
measured in the same process.

    python scripts/bench_offres.py                 # matrix 48
    python scripts/bench_offres.py --matrix 64 --iters 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from na23recon.core import Image  # noqa: E402
from na23recon.io.trajfile import load_traj  # noqa: E402
from na23recon.io.twix import read_scan  # noqa: E402
from na23recon.recon.b0 import load_b0_map  # noqa: E402
from na23recon.recon.offres import OffResNufft  # noqa: E402
from na23recon.recon.operators import make_nufft  # noqa: E402
from na23recon.recon.solvers import SenseProblem, cg_sense, cs_tv, decay_weights  # noqa: E402
from na23recon.sim.scan import simulate_to_folder  # noqa: E402


def _full_rank(op: OffResNufft) -> OffResNufft:
    op.rank_tol = 0.0  # one PSF NUFFT per segment pair, L(L+1)/2 (the low-rank basis takes ~2L-1)
    return op


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--matrix", type=int, default=48)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--readout-ms", type=float, default=15.0)
    p.add_argument("--only", default=None, help="';'-separated case names: run only these and the "
                   "plain model (e.g. 'B0;B0, 1 mm map')")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate_to_folder(tmp, phantom="offres", matrix=a.matrix, traj="tpi", readout_ms=a.readout_ms,
                                 tr_ms=300.0, snr=50.0, b0_map_voxel_mm=1.0)
        scan = read_scan(sim["scan"])
        traj = load_traj(sim["traj"])
        fmap = Image.load(sim["b0"]).array
        aff = Image.load(sim["b0"]).affine
        fsub = load_b0_map(sim["b0_fine"], aff, (a.matrix,) * 3, subvoxel=True)
    fov = scan.acquisition.geometry.fov_mm
    coord = traj.coord(fov)
    shape = (a.matrix,) * 3
    t = traj.sample_times()
    y = scan.data[0, 0]
    print(f"TPI matrix {a.matrix}, {coord.shape[0]} x {coord.shape[1]} samples, readout {t.max() * 1e3:.1f} ms, "
          f"field {fmap.min():.0f}..{fmap.max():.0f} Hz, {a.iters} iterations each; the 1 mm map gives "
          f"{fsub.shape[-1]} sub-voxel frequencies per voxel")
    op = make_nufft(coord, shape)
    mono = decay_weights(t, 20.0)
    biexp = decay_weights(t, (3.9, 26.3), frac_short=0.6)
    cases = {
        "plain": lambda: SenseProblem(op, coord, None, traj.dcf),
        "decay (T2* 20 ms)": lambda: SenseProblem(op, coord, None, traj.dcf, decay=mono),
        "B0": lambda: SenseProblem(OffResNufft(op, coord, fmap, t), coord, None, traj.dcf),
        "B0, 1 mm map": lambda: SenseProblem(OffResNufft(op, coord, fsub, t), coord, None,
                                                                    traj.dcf),
        "B0 + biexp decay": lambda: SenseProblem(OffResNufft(op, coord, fmap, t, decay=biexp), coord, None, traj.dcf),
        "B0, full-rank kernels": lambda: SenseProblem(_full_rank(OffResNufft(op, coord, fmap, t)), coord, None,
                                                      traj.dcf),
        "B0, NUFFT pair": lambda: SenseProblem(OffResNufft(op, coord, fmap, t, toeplitz=False), coord, None,
                                               traj.dcf),
    }
    base = {}
    print(f"{'model':<26} {'segments':>8} {'PSFs':>5} {'setup s':>8} {'CG s/it':>8} {'ratio':>6} {'CS-TV s/it':>10} {'ratio':>6}")
    if a.only:
        names = [w.strip() for w in a.only.split(";")]
        cases = {k: v for k, v in cases.items() if k == "plain" or k in names}
    for name, make in cases.items():
        t0 = time.perf_counter()
        prob = make()
        prob.N(np.zeros(shape, np.complex64))  # builds the Toeplitz kernels
        prob.lipschitz()
        setup = time.perf_counter() - t0
        cg_sense(prob, y, lam=0.1, max_iter=1, tol=0.0, progress=False)  # warm-up: compiled kernels, caches
        _, lg = cg_sense(prob, y, lam=0.1, max_iter=a.iters, tol=0.0, progress=False)
        cg = lg.seconds / max(lg.iterations, 1)
        _, lt = cs_tv(prob, y, lam=1e-3, max_iter=a.iters, tol=0.0, progress=False)
        tv = lt.seconds / max(lt.iterations, 1)
        if name == "plain":
            base = {"cg": cg, "tv": tv}
        nseg = prob.op.nseg if isinstance(prob.op, OffResNufft) else 1
        npsf = prob.op.kernel_nuffts if isinstance(prob.op, OffResNufft) else 0
        print(f"{name:<26} {nseg:>8d} {npsf:>5d} {setup:>8.2f} {cg:>8.3f} {cg / base['cg']:>6.1f} {tv:>10.3f} "
              f"{tv / base['tv']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
