#!/usr/bin/env python
"""7 T scale benchmark: 32 channels at 128^3 (radial, 9359 x 358 samples), per stage wall time
and peak RSS, with FINUFFT and BART `pics` on the same data in the same run, printed as ratios.

Each stage runs in its own Python process (`--stage NAME`), so its peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is that stage's alone: loading the data is
included (a reconstruction holds its k-space), the interpreter and imports (~0.3 GB) too.

Data (synthetic, for timing; written once to --workdir as .npy): centre-out 3D radial with
spiral-ordered spokes, a uniform ellipsoid seen by 32 coils whose sensitivities are each two
plane waves (k-space: the ellipsoid's closed-form transform, shifted; never our NUFFT), complex
Gaussian noise. Stages:

    adjoint      DCF adjoint of every channel (plan included) + sum of squares
    finufft      FINUFFT type 1 of every channel, same points, eps, threads (plan included)
    recon        what `recon --method adjoint` does by default: noise whitening, automatic coil
                 compression (32 -> 8 virtual coils), adjoint, sum of squares; its NRMSE against
                 the every-channel adjoint is printed (the accuracy the default gives up)
    maps         Walsh maps for every channel from the k-space centre, expanded to 128^3
    cg           CG-SENSE 15 iterations, every channel's data (--coil-compress none), from k-space
    cstv         CS-TV 30 iterations on 8 virtual coils (--coil-compress auto), from k-space;
                 writes its compressed k-space, maps and weights for BART
    bart         `bart pics -R T:7:0:lam -i 30` on those 8 coils, maps and weights (CFL files)

    python scripts/bench_scale.py            # the 7T case: 128^3, 32 channels
    python scripts/bench_scale.py --small    # 64^3, 8 channels (a quick check)

Set NA23RECON_THREADS / OMP_NUM_THREADS to the cores to use (default: all). Loaded machines
inflate seconds; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STAGES = ("adjoint", "finufft", "recon", "maps", "cg", "cstv", "bart")


def peak_gb(pid: int | str = "self") -> float:
    """Peak RSS of a process: VmHWM of /proc/PID/status (per address space, so a child does not
    inherit its parent's peak as ru_maxrss does across fork and exec); ru_maxrss elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 2**30
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB


# ------------------------------------------------------------------------------------ data
def ellipsoid_ft(k: np.ndarray, radii_cyc: np.ndarray) -> np.ndarray:
    """FT of a unit ellipsoid (semi-axes in FOV fractions) at k (cycles/FOV): 3 (sin x - x cos x) / x^3 * volume."""
    x = 2 * np.pi * np.sqrt(np.sum((k * radii_cyc) ** 2, axis=-1))
    x = np.maximum(x, 1e-6)
    return (3 * (np.sin(x) - x * np.cos(x)) / x**3).astype(np.complex64)


def make_data(workdir: str, n: int, ncoil: int, nspoke: int, nsample: int, seed: int = 0) -> None:
    from na23recon.traj.radial import radial_3d

    rng = np.random.default_rng(seed)
    coord = radial_3d(nspoke, nsample, n / 2.0).astype(np.float32)  # cycles/FOV, edge at N/2
    r = np.sqrt(np.sum(coord.astype(np.float64) ** 2, -1))
    dcf = np.maximum(r, 0.5 / nsample * n / 2) ** 2  # radial: 1/density ~ |k|^2
    radii = np.array([0.32, 0.38, 0.30])
    y = np.empty((ncoil, nspoke, nsample), np.complex64)
    for c in range(ncoil):
        ang = 2 * np.pi * c / ncoil
        f = 1.5 * np.array([np.cos(ang), np.sin(ang), 0.4 * (-1) ** c], np.float32)  # cycles/FOV
        a = np.exp(1j * 0.7 * c)
        y[c] = a * (ellipsoid_ft(coord, radii) + 0.5 * ellipsoid_ft(coord - f, radii))
    y *= np.float32(1.0 / np.abs(y).max())
    y += (0.002 * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))).astype(np.complex64)
    noise = (0.002 * (rng.standard_normal((ncoil, 4096)) + 1j * rng.standard_normal((ncoil, 4096)))).astype(np.complex64)
    for name, arr in (("coord", coord), ("dcf", dcf.astype(np.float32)), ("kspace", y), ("noise", noise)):
        np.save(os.path.join(workdir, name + ".npy"), arr)


def load(workdir: str):
    g = {k: np.load(os.path.join(workdir, k + ".npy")) for k in ("coord", "dcf", "kspace", "noise")}
    return g["coord"], g["dcf"], g["kspace"], g["noise"]


# ---------------------------------------------------------------------------------- stages
def stage(name: str, workdir: str, n: int, eps: float) -> dict:
    from na23recon.core import ReconOptions
    from na23recon.recon import coils
    from na23recon.recon.adjoint import adjoint_recon
    from na23recon.recon.app import reconstruct_arrays
    from na23recon.recon.maps import expand_maps
    from na23recon.threads import default_threads

    from na23recon.nufft import Nufft

    Nufft(np.zeros((8, 3)), (16,) * 3, eps=eps).adjoint(np.ones(8, np.complex64))  # numba cache, not timed
    coord, dcf, y, noise = load(workdir)
    shape = (n,) * 3
    out: dict = {"stage": name, "rss_loaded_gb": round(peak_gb(), 3)}
    t0 = time.perf_counter()
    if name == "adjoint":
        op = Nufft(coord, shape, eps=eps)
        out["plan_s"] = round(time.perf_counter() - t0, 2)
        out["plan"] = repr(op)
        img = coils.sum_of_squares(adjoint_recon(y, coord, dcf, shape, op=op))
        out["check"] = float(img.max())
    elif name == "finufft":
        import finufft

        pts = [np.ascontiguousarray(2 * np.pi * coord[..., a].ravel() / n, dtype=np.float32) for a in range(3)]
        plan = finufft.Plan(1, shape, n_trans=1, eps=eps, dtype="complex64", nthreads=default_threads())
        plan.setpts(*pts)
        out["plan_s"] = round(time.perf_counter() - t0, 2)
        w = (dcf / dcf.sum()).ravel().astype(np.float32)
        imgs = np.empty((y.shape[0],) + shape, np.complex64)
        for c in range(y.shape[0]):
            imgs[c] = plan.execute((y[c].ravel() * w).astype(np.complex64))
        out["check"] = float(coils.sum_of_squares(imgs).max())
    elif name == "recon":
        img, info = reconstruct_arrays(y, coord, dcf, shape, ReconOptions(method="adjoint", eps=eps), noise=noise,
                                       progress=False)
        out["coil_compression"] = info.get("coil_compression")
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["peak_rss_gb"] = round(peak_gb(), 3)
        full, _ = reconstruct_arrays(y, coord, dcf, shape,  # every channel, same whitening; not timed
                                     ReconOptions(method="adjoint", eps=eps, coil_compress="none"), noise=noise,
                                     progress=False)
        out["nrmse_vs_all_channels"] = float(np.linalg.norm(img - full) / np.linalg.norm(full))
        return out
    elif name == "maps":  # what the solvers use (factored), then expanded to every channel
        basis, vm = coils.estimate_map_factors(y, coord, dcf, shape, rank=coils.maps_rank(y.shape[0]))
        out["factored_s"] = round(time.perf_counter() - t0, 2)
        maps = vm if basis is None else expand_maps(basis, vm)
        out["maps_shape"] = list(maps.shape)
        out["rank"] = coils.maps_rank(y.shape[0])
    elif name in ("cg", "cstv"):
        method, cc, iters = ("cg", "none", 15) if name == "cg" else ("cs-tv", "auto", 30)
        extra = {"discrepancy": 0.0} if name == "cg" else {}  # all 15 iterations, no early stop
        opts = ReconOptions(method=method, coil_compress=cc, iters=iters, tol=0.0, eps=eps, **extra)
        img, info = reconstruct_arrays(y, coord, dcf, shape, opts, noise=noise, progress=False)
        sol = info["solver"][0]
        out.update(solver_s=sol["seconds"], iterations=sol["iterations"], ncoil=info["ncoil"],
                   coil_compression=info.get("coil_compression"), maps_rank=info.get("maps_rank", {}).get("rank"))
        if name == "cstv":  # the same 8 coils, maps and weights for BART (outside the timing)
            out["seconds"] = round(time.perf_counter() - t0, 2)
            _export_for_bart(workdir, y, coord, dcf, noise, shape, opts, info)
            out["lambda"] = sol["lambda"]
            out["peak_rss_gb"] = round(peak_gb(), 3)
            return out
    elif name == "bart":
        return bart_stage(workdir, out)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_gb"] = round(peak_gb(), 3)
    return out


def _export_for_bart(workdir, y, coord, dcf, noise, shape, opts, info) -> None:
    """What the cstv stage solved: whitened, compressed k-space, its maps and the DCF."""
    from na23recon.recon import coils
    from na23recon.traj.dcf import normalise_dcf

    est = coils.estimate_noise(y, coord, noise=noise)
    if est.psi is not None:
        y = coils.prewhiten(y, coils.whitening_matrix(est.psi)[0])
    nv, _ = coils.compression_plan(y.shape[0], opts.coil_compress)
    y, _ = coils.coil_compress(y, ncoil=nv)
    maps = coils.estimate_maps(y, coord, dcf, shape)
    np.save(os.path.join(workdir, "bart_kspace.npy"), y)
    np.save(os.path.join(workdir, "bart_maps.npy"), maps)
    np.save(os.path.join(workdir, "bart_w.npy"), normalise_dcf(dcf, coord))
    with open(os.path.join(workdir, "bart_lambda.json"), "w") as fh:
        json.dump({"lambda": info["solver"][0]["lambda"]}, fh)


def write_cfl(base: str, arr: np.ndarray, dims: tuple) -> None:
    """BART's CFL: a .hdr with the dimensions and column-major complex64 data. `arr` is written
    in C order, so its axes are given reversed: a C array (nc, nro, ns) is BART's (1, ns, nro, nc)."""
    with open(base + ".hdr", "w") as fh:
        fh.write("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.ascontiguousarray(arr, dtype=np.complex64).tofile(base + ".cfl")


def bart_stage(workdir: str, out: dict) -> dict:
    bart = shutil.which("bart")
    if bart is None:
        out["skipped"] = "bart not on PATH"
        return out
    coord = np.load(os.path.join(workdir, "coord.npy"))
    y = np.load(os.path.join(workdir, "bart_kspace.npy"))
    maps = np.load(os.path.join(workdir, "bart_maps.npy"))
    w = np.load(os.path.join(workdir, "bart_w.npy"))
    lam = json.load(open(os.path.join(workdir, "bart_lambda.json")))["lambda"]
    nro, ns = coord.shape[:2]
    d = os.path.join(workdir, "cfl")
    os.makedirs(d, exist_ok=True)
    nc, n = maps.shape[0], maps.shape[1]
    write_cfl(os.path.join(d, "traj"), coord, (3, ns, nro))              # C (nro, ns, 3)
    write_cfl(os.path.join(d, "ksp"), y, (1, ns, nro, nc))               # C (nc, nro, ns)
    write_cfl(os.path.join(d, "w"), np.sqrt(w), (1, ns, nro))            # C (nro, ns)
    write_cfl(os.path.join(d, "maps"), maps.transpose(0, 3, 2, 1), (n, n, n, nc))  # C (nc, z, y, x)
    del y, maps
    cmd = [bart, "pics", "-i", "30", "-R", f"T:7:0:{lam:g}", "-t", os.path.join(d, "traj"), "-p",
           os.path.join(d, "w"), os.path.join(d, "ksp"), os.path.join(d, "maps"), os.path.join(d, "out")]
    out["command"] = " ".join(os.path.basename(c) if os.sep in c else c for c in cmd)
    t0 = time.perf_counter()
    limit = float(os.environ.get("BART_TIMEOUT", 3600))
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0.0
        while proc.poll() is None:  # BART's own peak: its VmHWM, read until it exits
            peak = max(peak, peak_gb(proc.pid))
            if time.perf_counter() - t0 > limit:
                proc.kill()
                out["timed_out"] = limit
            time.sleep(0.2)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["returncode"] = proc.returncode
        out["peak_rss_gb"] = round(peak, 3)
        if proc.returncode:
            err.seek(0)
            out["stderr"] = err.read()[-400:]
    return out


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="64^3, 8 channels, 2000 spokes x 96 samples")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--workdir", default=None, help="keep the data here (default: a temporary folder)")
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n, ncoil, nspoke, nsample = (64, 8, 2000, 96) if args.small else (128, 32, 9359, 358)
    if args.stage:  # child: one stage, JSON on the last line
        print(json.dumps(stage(args.stage, args.workdir, args.n, args.eps)))
        return 0
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_scale_")
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(os.path.join(workdir, "kspace.npy")):
        t = time.perf_counter()
        make_data(workdir, n, ncoil, nspoke, nsample)
        print(f"data: {n}^3, {ncoil} channels, {nspoke} x {nsample} samples, written in {time.perf_counter() - t:.0f} s")
    print(f"threads: NA23RECON_THREADS={os.environ.get('NA23RECON_THREADS', '(all)')} of {os.cpu_count()} cores")
    res = {}
    for name in [s for s in args.stages.split(",") if s]:
        cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--workdir", workdir, "--n", str(n),
               "--eps", str(args.eps)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(f"{name}: failed\n{r.stderr[-2000:]}")
            continue
        res[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{name:8s} {json.dumps(res[name])}", flush=True)
    print()
    print(f"{'stage':10s} {'seconds':>9s} {'peak RSS GB':>12s}")
    for name, v in res.items():
        print(f"{name:10s} {v.get('seconds', float('nan')):9.2f} {v.get('peak_rss_gb', float('nan')):12.2f}")

    def ratio(a, b, what):
        if a in res and b in res and res[b].get("seconds"):
            print(f"{what}: {res[a]['seconds'] / res[b]['seconds']:.2f}")

    ratio("adjoint", "finufft", "adjoint / FINUFFT adjoint (same points, eps, threads; plans included)")
    ratio("cstv", "bart", "CS-TV 30 it, 8 virtual coils / BART pics (same coils, maps, weights, TV, iterations)")
    if "cstv" in res and "bart" in res and res["bart"].get("seconds"):
        print(f"BART pics / na23recon CS-TV: {res['bart']['seconds'] / res['cstv']['seconds']:.2f}x")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
