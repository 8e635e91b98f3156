#!/usr/bin/env python
"""CS-TV benchmark: na23recon vs sigpy.mri.app.TotalVariationRecon (sigpy's own NUFFT), one run.

Data: the analytic brain phantom, k-space from the closed-form ellipsoid transform with 8 smooth
Fourier-series coil sensitivities (tests/_multicoil.py), noise at SNR 20, centre-out 3D radial at
3.5x undersampling. Both solve min 1/2 ||W^1/2 (E x - y)||^2 + lam TV(x) with the same prewhitened
data, the same sensitivity maps (ours, Walsh), the same density weights W and the same lam
(ours: isotropic TV, Toeplitz normal operator, primal-dual with a gradient step; sigpy: anisotropic
TV, PDHG with a NUFFT forward and adjoint per coil and iteration).

Prints wall time and NRMSE against the voxelised truth x receive field, and the time ratio.
Machines are noisy (+-20%): compare within one run.

    python scripts/bench_recon.py            # 64^3, 8 coils, 30 iterations
    python scripts/bench_recon.py --quick    # 32^3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32^3 instead of 64^3")
    ap.add_argument("--matrix", type=int, default=None)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--sigpy-iters", type=int, default=None, help="iterations for sigpy (default: --iters)")
    ap.add_argument("--lam", type=float, default=1.0, help="lambda relative to the image noise SD")
    ap.add_argument("--snr", type=float, default=20.0)
    ap.add_argument("--undersampling", type=float, default=3.5)
    ap.add_argument("--no-sigpy", action="store_true")
    args = ap.parse_args(argv)
    n = args.matrix or (32 if args.quick else 64)

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from _multicoil import make_case, nrmse  # the test suite's analytic multi-coil phantom

    from na23recon.recon import coils
    from na23recon.recon.adjoint import adjoint_recon
    from na23recon.recon.operators import make_nufft
    from na23recon.recon.solvers import SenseProblem, cs_tv
    from na23recon.traj.dcf import normalise_dcf

    t = time.perf_counter()
    case = make_case(n=n, snr=args.snr, undersampling=args.undersampling)
    ncoil = case.kspace.shape[0]
    print(f"data: {n}^3, {ncoil} coils, {case.coord.shape[0]} spokes x {case.coord.shape[1]} samples "
          f"({args.undersampling}x undersampled radial), SNR {args.snr:g}; simulated in {time.perf_counter() - t:.1f} s")
    ref = case.truth * case.rss
    shape = (n,) * 3

    # ours, end to end from k-space: prewhitening, plan, maps, Toeplitz kernel, solver
    t0 = time.perf_counter()
    wmat, noise_sd = coils.whitening_matrix(coils.noise_covariance(case.noise))
    y = coils.prewhiten(case.kspace, wmat)
    op = make_nufft(case.coord, shape)
    maps = coils.estimate_maps(y, case.coord, case.dcf, shape)
    t_maps = time.perf_counter() - t0
    problem = SenseProblem(op, case.coord, maps, case.dcf)
    lam = args.lam * problem.image_noise_sd(noise_sd)
    problem.lipschitz()
    t1 = time.perf_counter()
    x, log = cs_tv(problem, y, lam=lam, max_iter=args.iters, tol=0, progress=False)
    t_ours = time.perf_counter() - t0
    t_solve = time.perf_counter() - t1
    adj = coils.sum_of_squares(adjoint_recon(y, case.coord, case.dcf, shape, op=op))
    e_adj, e_ours = nrmse(adj, ref), nrmse(x, ref)
    print(f"adjoint (DCF, sum of squares):            NRMSE {e_adj:.4f}")
    print(f"na23recon cs-tv {args.iters} it:  {t_ours:7.2f} s total (maps {t_maps:.2f} s, setup "
          f"{t1 - t0 - t_maps:.2f} s, solver {t_solve:.2f} s = {1e3 * t_solve / args.iters:.0f} ms/it)  NRMSE {e_ours:.4f}")
    if args.no_sigpy:
        return 0

    import sigpy as sp
    from sigpy.mri.app import TotalVariationRecon

    it_sp = args.sigpy_iters or args.iters
    w = normalise_dcf(case.dcf, case.coord)
    t0 = time.perf_counter()
    app = TotalVariationRecon(y, maps, lam, weights=w, coord=case.coord, max_iter=it_sp, show_pbar=False)
    xs = app.run()
    t_sp = time.perf_counter() - t0
    e_sp = nrmse(np.asarray(xs), ref)
    print(f"sigpy TotalVariationRecon {it_sp} it: {t_sp:7.2f} s total ({1e3 * t_sp / it_sp:.0f} ms/it incl. setup)  "
          f"NRMSE {e_sp:.4f}")
    per_it = (t_sp / it_sp) / (t_ours / args.iters)
    print(f"ratio sigpy / na23recon (total time per iteration, setup included): {per_it:.1f}x;  "
          f"NRMSE ours/sigpy {e_ours / e_sp:.2f};  ours vs adjoint NRMSE {100 * (1 - e_ours / e_adj):.0f}% lower")
    _ = sp
    return 0


if __name__ == "__main__":
    sys.exit(main())
