"""Batch throughput: the same 8 simulated scans with 1 and with 2 worker processes.

Each worker runs single-threaded (--threads-per-worker 1) so the ratio measures how the process
pool scales; the wall time of a whole batch includes process start, twix reading, the
reconstruction (CS-TV by default, the method a study would use) and writing NIfTIs, sidecars and
PNGs. Prints seconds per run and the throughput ratio.

    python scripts/bench_batch.py [--scans 8] [--matrix 64] [--method cs-tv] [--dask local] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from na23recon.core import ReconOptions
from na23recon.pipeline.batch import run_batch
from na23recon.pipeline.config import RunOptions
from na23recon.sim.scan import simulate_to_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--matrix", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--method", default="cs-tv", help="reconstruction method (default: %(default)s)")
    ap.add_argument("--iters", type=int, default=None, help="iterations for iterative methods (default: the method's)")
    ap.add_argument("--dask", default=None, help="also time this Dask address ('local') at the largest worker count")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="na23-bench-batch-"))
    try:
        rows = ["id,scan,traj"]
        t0 = time.perf_counter()
        for i in range(a.scans):
            simulate_to_folder(tmp / f"s{i}", matrix=a.matrix, snr=30.0, seed=i)
            rows.append(f"sub{i:02d},s{i}/scan.dat,s{i}/traj.npz")
        (tmp / "m.csv").write_text("\n".join(rows) + "\n")
        sim_s = time.perf_counter() - t0
        # warm the numba cache once so neither run pays for compilation
        opts = RunOptions(recon=ReconOptions(matrix=a.matrix, method=a.method, iters=a.iters))
        run_batch(tmp / "m.csv", tmp / "warm", opts, workers=1, threads_per_worker=1, progress=False)
        res = {}
        runs = [(w, None) for w in a.workers] + ([(max(a.workers), a.dask)] if a.dask else [])
        for w, dask in runs:
            out = tmp / f"out_{w}_{dask or 'pool'}"
            t0 = time.perf_counter()
            r = run_batch(tmp / "m.csv", out, opts, workers=w, threads_per_worker=1,
                          dask=dask, progress=False)
            secs = time.perf_counter() - t0
            assert all(x.status == "ok" for x in r), [x for x in r if x.status != "ok"]
            res[f"{w} worker(s){' dask ' + dask if dask else ''}"] = secs
        base = res[f"{a.workers[0]} worker(s)"]
        if a.json:
            print(json.dumps({"scans": a.scans, "matrix": a.matrix, "method": a.method, "seconds": res,
                              "throughput_ratio": {k: base / v for k, v in res.items()}}, indent=2))
        else:
            print(f"{a.scans} scans, matrix {a.matrix}^3, {a.method}"
                  f"{'' if a.iters is None else f' {a.iters} iterations'}, 1 thread per worker "
                  f"(simulation took {sim_s:.1f} s)")
            print(f"{'runner':<24}{'seconds':>10}{'scans/min':>11}{'throughput vs first':>21}")
            for k, v in res.items():
                print(f"{k:<24}{v:>10.2f}{a.scans / v * 60:>11.1f}{base / v:>20.2f}x")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
