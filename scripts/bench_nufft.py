#!/usr/bin/env python
"""Benchmark the na23recon NUFFT against sigpy and FINUFFT: same process, same data.

Centre-out 3D radial samples (Saff-Kuijlaars spoke directions), complex64 image. For every size
and eps: ms per forward / adjoint (min over --repeat runs, ours and FINUFFT interleaved), errors
against the exact NUDFT on a subset (forward: random samples, adjoint: random voxels), the
Toeplitz normal operator against one forward+inverse FFT pair of the 2N grid (scipy.fft), and
the ratios. sigpy has no tolerance knob: it runs once per size at its defaults (slow: ~5 s/call).

    python scripts/bench_nufft.py            # 64^3 x 1.28 M and 128^3 x 4.1 M, eps 1e-3 and 1e-6
    python scripts/bench_nufft.py --quick    # 32^3 x 160 k, a few seconds
    python scripts/bench_nufft.py --json     # machine-readable
    python scripts/bench_nufft.py --large    # 224^3 and 256^3, eps 1e-5 / 1e-6, default plan vs FINUFFT
    python scripts/bench_nufft.py --orders   # radial / TPI / random / shuffled point orders vs FINUFFT

--orders: per case (point order, matrix, eps) in one process: our plan time and forward+adjoint
time over FINUFFT's (same points, eps and threads; min of --repeat interleaved runs; FINUFFT's
automatic upsampling), and both libraries' errors against the exact NUDFT (float64; 256 samples,
32 voxels). Orders: radial (centre-out spokes, as acquired), tpi (na23recon's TPI generator, as
acquired), random (uniform in the k-space cube), shuffled (the radial samples in random order).

--large: radial points (--large-points, default 2.05 M: 16000 spokes x 128), errors against the
exact NUDFT in float64 on --subset points (forward) and voxels (adjoint), s for one forward +
one adjoint of the automatic plan (which upsampling / width / precision it took) and of FINUFFT.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import scipy.fft

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from na23recon.nufft import Nufft  # noqa: E402

SIZES = {32: (2500, 64), 64: (10000, 128), 128: (16000, 256)}



def finufft_plans(kf, n: int, shape, eps: float, threads: int):
    """FINUFFT type-2 (forward, isign -1) and type-1 (adjoint, isign +1) complex64 plans at the
    points kf (M, 3) in cycles/FOV of a matrix n (FINUFFT takes radians in [-pi, pi))."""
    import finufft

    pts = [(2 * np.pi * kf[:, a] / n).astype(np.float32) for a in range(3)]
    p2 = finufft.Plan(2, shape, eps=eps, isign=-1, nthreads=threads, dtype="complex64")
    p2.setpts(*pts)
    p1 = finufft.Plan(1, shape, eps=eps, isign=1, nthreads=threads, dtype="complex64")
    p1.setpts(*pts)
    return p2, p1

def radial(n: int, nspoke: int, nsamp: int) -> np.ndarray:
    """(nspoke, nsamp, 3) float32 centre-out spokes to |k| < n/2, in cycles/FOV."""
    i = np.arange(nspoke) + 0.5
    z = 1 - 2 * i / nspoke
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    d = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    return (d[:, None, :] * (np.arange(nsamp) / nsamp * n / 2)[None, :, None]).astype(np.float32)


def exact_forward(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Exact NUDFT at points k (P, 3), separable contraction, complex128."""
    n = x.shape
    e = [np.exp(-2j * np.pi * np.multiply.outer(k[:, a], np.arange(n[a]) - n[a] // 2) / n[a]) for a in range(3)]
    t = np.tensordot(e[0], x.astype(np.complex128), (1, 0))
    return np.einsum("pjk,pj,pk->p", t, e[1], e[2]) / np.sqrt(np.prod(n))


def exact_forward_chunked(x: np.ndarray, k: np.ndarray, chunk: int = 64) -> np.ndarray:
    """exact_forward in chunks of points (the contraction holds chunk * N^2 complex128)."""
    return np.concatenate([exact_forward(x, k[i:i + chunk]) for i in range(0, len(k), chunk)])


def exact_adjoint_chunked(y: np.ndarray, k: np.ndarray, shape, vox: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """exact_adjoint over all points, accumulated in chunks of points (V x chunk phases at a time)."""
    out = np.zeros(len(vox), np.complex128)
    d = (vox - np.array(shape) // 2) / np.array(shape, np.float64)
    for i in range(0, len(k), chunk):
        ph = d @ k[i:i + chunk].astype(np.float64).T
        out += np.exp(2j * np.pi * ph) @ y[i:i + chunk].astype(np.complex128)
    return out / np.sqrt(np.prod(shape))


def random_case(rng: np.random.Generator, kf: np.ndarray, shape) -> tuple:
    """Random complex64 image x and samples y for points kf (M, 3), with the exact NUDFT references
    the errors are measured against: (x, y, sub, vi, forward at the 256 points kf[sub], adjoint at
    32 voxels vi)."""
    m, n = len(kf), shape[0]
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    y = (rng.standard_normal(m) + 1j * rng.standard_normal(m)).astype(np.complex64)
    sub = rng.choice(m, 256, replace=False)
    vox = rng.integers(0, n, (32, 3))
    return (x, y, sub, tuple(vox.T), exact_forward(x, kf[sub].astype(np.float64)),
            exact_adjoint_chunked(y, kf, shape, vox))


def large(args) -> int:
    """The --large table: default plans at 224^3 / 256^3, eps 1e-5 / 1e-6, against the exact NUDFT."""
    try:
        import finufft
    except ImportError:
        finufft = None
    rng = np.random.default_rng(0)
    nsamp = 128
    nspoke = max(1, args.large_points // nsamp)
    print(f"threads={args.threads}, complex64, {nspoke * nsamp} radial points; errors vs exact NUDFT (float64) on "
          f"{args.subset} points / {args.subset} voxels; s = one forward + one adjoint")
    print(f"{'size':>5} {'eps':>6} {'lib':>8} {'plan':>30} {'plan_s':>7} {'fwd_s':>7} {'adj_s':>7} {'fwd_err':>8} "
          f"{'adj_err':>8} {'limit':>8} ok")
    for n in args.large_sizes:
        shape = (n, n, n)
        kf = radial(n, nspoke, nsamp).reshape(-1, 3)
        m = kf.shape[0]
        x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        y = (rng.standard_normal(m) + 1j * rng.standard_normal(m)).astype(np.complex64)
        sub = rng.choice(m, args.subset, replace=False)
        vox = rng.integers(0, n, (args.subset, 3))
        ref_f = exact_forward_chunked(x, kf[sub].astype(np.float64))
        ref_a = exact_adjoint_chunked(y, kf, shape, vox)
        vi = tuple(vox.T)
        for eps in args.eps:
            limit = max(1.5 * eps, 5e-6)
            t = time.perf_counter()
            op = Nufft(kf, shape, eps=eps, threads=args.threads)
            plan_s = time.perf_counter() - t
            work = getattr(op, "work_dtype", np.dtype(np.complex64))
            warm = Nufft(kf[:2000] * (32 / n), (32,) * 3, eps=eps, upsampling=op.upsampling, threads=1)
            warm.adjoint(warm.forward(np.ones((32,) * 3, np.complex64)))  # numba cache load, not timed
            del warm
            desc = f"{op.upsampling:g}/w{op.width}/{'double' if work == np.complex128 else 'single'}"
            t = time.perf_counter(); yo = op.forward(x); fs = time.perf_counter() - t
            t = time.perf_counter(); xo = op.adjoint(y); as_ = time.perf_counter() - t
            ef, ea = rel(yo[sub], ref_f), rel(xo[vi], ref_a)
            print(f"{n:>4}^3 {eps:6.0e} {'ours':>8} {desc:>30} {plan_s:7.1f} {fs:7.1f} {as_:7.1f} {ef:8.1e} {ea:8.1e} "
                  f"{limit:8.1e} {'yes' if max(ef, ea) <= limit else 'NO'}", flush=True)
            del op, yo, xo
            if finufft is not None and n in args.finufft_sizes:
                t = time.perf_counter()
                p2, p1 = finufft_plans(kf, n, shape, eps, args.threads)
                plan_s = time.perf_counter() - t
                scale = np.float32(1 / np.sqrt(np.prod(shape)))
                t = time.perf_counter(); yf = p2.execute(x); fs = time.perf_counter() - t
                t = time.perf_counter(); xf = p1.execute(y); as_ = time.perf_counter() - t
                ef, ea = rel(yf[sub] * scale, ref_f), rel(xf[vi] * scale, ref_a)
                print(f"{n:>4}^3 {eps:6.0e} {'finufft':>8} {'default':>30} {plan_s:7.1f} {fs:7.1f} {as_:7.1f} {ef:8.1e} "
                      f"{ea:8.1e} {limit:8.1e} {'yes' if max(ef, ea) <= limit else 'NO'}", flush=True)
                del p1, p2, yf, xf
    return 0


ORDER_CASES = ["radial:64:1e-6", "radial:128:1e-6", "tpi:64:1e-3", "tpi:64:1e-6", "random:64:1e-3",
               "random:64:1e-6", "shuffled:64:1e-3", "shuffled:64:1e-6"]


def order_points(kind: str, n: int) -> np.ndarray:
    """(M, 3) float32 points in cycles/FOV for a point order at matrix n (see --orders)."""
    rng = np.random.default_rng(1)
    nspoke, nsamp = SIZES[n]
    if kind == "radial":
        return radial(n, nspoke, nsamp).reshape(-1, 3)
    if kind == "shuffled":
        k = radial(n, nspoke, nsamp).reshape(-1, 3)
        return k[rng.permutation(len(k))]
    if kind == "random":
        return ((rng.random((nspoke * nsamp, 3)) - 0.5) * n).astype(np.float32)
    if kind == "tpi":
        from na23recon.traj.tpi import tpi_3d
        return tpi_3d(n, 220.0).coord(220.0).reshape(-1, 3).astype(np.float32)
    raise SystemExit(f"unknown point order {kind!r}")


def orders(args) -> int:
    """The --orders table: ours over FINUFFT per point order, matrix and eps."""
    import finufft  # noqa: F401  (required here)

    rng = np.random.default_rng(0)
    print(f"threads={args.threads}, complex64; ms = min of {args.repeat} interleaved runs; ratio = ours / FINUFFT; "
          "errors vs exact NUDFT (256 samples / 32 voxels)")
    hdr = (f"{'order':>8} {'size':>5} {'points':>8} {'eps':>6} {'ours plan':>15} {'plan_ms':>8} {'fwd_ms':>8} {'adj_ms':>8} "
           f"{'fin plan_ms':>11} {'fwd_ms':>8} {'adj_ms':>8} {'fwd+adj':>7} {'plan':>6} {'err ours f/a':>17} {'err fin f/a':>17}")
    print(hdr)
    print("-" * len(hdr))
    for case in args.cases:
        kind, n, eps = case.split(":")
        n, eps = int(n), float(eps)
        kf = order_points(kind, n)
        m, shape = len(kf), (n, n, n)
        x, y, sub, vi, ref_f, ref_a = random_case(rng, kf, shape)
        # warm both libraries (numba cache load, FFTW plans) on a small problem, not timed
        w = Nufft(kf[:5000] * (16 / n), (16,) * 3, eps=eps, threads=args.threads)
        w.adjoint(w.forward(np.ones((16,) * 3, np.complex64)))
        w2, w1 = finufft_plans(kf[:5000] * (16 / n), 16, (16,) * 3, eps, args.threads)
        w2.execute(np.ones((16,) * 3, np.complex64)), w1.execute(np.ones(5000, np.complex64))
        t = time.perf_counter()
        op = Nufft(kf, shape, eps=eps, threads=args.threads)
        ours_plan = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        p2, p1 = finufft_plans(kf, n, shape, eps, args.threads)
        fin_plan = (time.perf_counter() - t) * 1e3
        op.forward(x), op.adjoint(y), p2.execute(x), p1.execute(y)
        fo, ad, ff, fa = [], [], [], []
        for _ in range(args.repeat):
            t_, yo = timeit(lambda: op.forward(x), 1); fo.append(t_)
            t_, yf = timeit(lambda: p2.execute(x), 1); ff.append(t_)
            t_, xo = timeit(lambda: op.adjoint(y), 1); ad.append(t_)
            t_, xf = timeit(lambda: p1.execute(y), 1); fa.append(t_)
        scale = np.float32(1 / np.sqrt(np.prod(shape)))
        eo = (rel(yo[sub], ref_f), rel(xo[vi], ref_a))
        ef = (rel(yf[sub] * scale, ref_f), rel(xf[vi] * scale, ref_a))
        desc = f"{op.upsampling:g}/{op.kernel}{op.width}/{'f64' if op.work_dtype == np.complex128 else 'f32'}"
        ratio = (min(fo) + min(ad)) / (min(ff) + min(fa))
        print(f"{kind:>8} {n:>4}^3 {m:>8} {eps:6.0e} {desc:>15} {ours_plan:8.0f} {min(fo):8.0f} {min(ad):8.0f} "
              f"{fin_plan:11.0f} {min(ff):8.0f} {min(fa):8.0f} {ratio:6.2f}x {ours_plan / fin_plan:5.2f}x "
              f"{eo[0]:8.1e} {eo[1]:8.1e} {ef[0]:8.1e} {ef[1]:8.1e}", flush=True)
        del op, p1, p2
    return 0


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def timeit(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small size (32^3 x 160 k)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="matrix sizes (32, 64, 128)")
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-6])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sigpy", action="store_true")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--large", action="store_true", help="224^3 / 256^3 accuracy and time of the default plan")
    ap.add_argument("--large-sizes", type=int, nargs="+", default=[224, 256])
    ap.add_argument("--large-points", type=int, default=2_048_000)
    ap.add_argument("--finufft-sizes", type=int, nargs="+", default=[256], help="--large: sizes FINUFFT runs at")
    ap.add_argument("--subset", type=int, default=300, help="--large: points / voxels checked exactly")
    ap.add_argument("--orders", action="store_true", help="point orders (radial, TPI, random, shuffled) vs FINUFFT")
    ap.add_argument("--cases", nargs="+", default=ORDER_CASES, help="--orders: order:matrix:eps cases")
    args = ap.parse_args(argv)
    if args.orders:
        return orders(args)
    if args.large:
        if args.eps == [1e-3, 1e-6]:
            args.eps = [1e-5, 1e-6]
        return large(args)
    sizes = args.sizes or ([32] if args.quick else [64, 128])
    try:
        import finufft
    except ImportError:
        finufft = None
    try:
        import sigpy
    except ImportError:
        sigpy = None
    if args.no_sigpy:
        sigpy = None

    rows, summary = [], []
    rng = np.random.default_rng(0)
    for n in sizes:
        nspoke, nsamp = SIZES[n]
        shape = (n, n, n)
        k = radial(n, nspoke, nsamp)
        kf = k.reshape(-1, 3)
        m = kf.shape[0]
        x, y, sub, vi, ref_f, ref_a = random_case(rng, kf, shape)

        big = tuple(2 * s for s in shape)
        g = np.zeros(big, np.complex64)

        def fft_pair():
            return scipy.fft.ifftn(scipy.fft.fftn(g, workers=args.threads), workers=args.threads)

        for eps in args.eps:
            t = time.perf_counter()
            op = Nufft(k, shape, eps=eps, threads=args.threads)
            plan_ms = (time.perf_counter() - t) * 1e3
            op.forward(x), op.adjoint(y.reshape(k.shape[:-1]))  # warm (numba cache load / compile)
            res = {"ours": {"plan_ms": plan_ms}, "finufft": {}}
            if finufft is not None:
                t = time.perf_counter()
                p2, p1 = finufft_plans(kf, n, shape, eps, args.threads)
                res["finufft"]["plan_ms"] = (time.perf_counter() - t) * 1e3
                scale = np.float32(1 / np.sqrt(np.prod(shape)))
            fo, ad, ff, fa = [], [], [], []
            for _ in range(args.repeat):
                t_, yo = timeit(lambda: op.forward(x), 1); fo.append(t_)
                if finufft is not None:
                    t_, yf = timeit(lambda: p2.execute(x), 1); ff.append(t_)
                t_, xo = timeit(lambda: op.adjoint(y.reshape(k.shape[:-1])), 1); ad.append(t_)
                if finufft is not None:
                    t_, xf = timeit(lambda: p1.execute(y), 1); fa.append(t_)
            res["ours"].update(fwd_ms=min(fo), adj_ms=min(ad), fwd_err=rel(yo.reshape(-1)[sub], ref_f),
                               adj_err=rel(xo[vi], ref_a))
            if n == sizes[0] and eps == args.eps[0]:
                res["ours"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            t = time.perf_counter()
            op.normal(x)
            res["ours"]["toeplitz_build_ms"] = (time.perf_counter() - t) * 1e3
            nm, pair = [], []
            for _ in range(args.repeat):  # interleaved with the FFT pair it is compared against
                nm.append(timeit(lambda: op.normal(x), 1)[0])
                pair.append(timeit(fft_pair, 1)[0])
            res["ours"]["normal_ms"] = min(nm)
            fft_ms = min(pair)
            if finufft is not None:
                res["finufft"].update(fwd_ms=min(ff), adj_ms=min(fa), fwd_err=rel(yf[sub] * scale, ref_f),
                                      adj_err=rel(xf[vi] * scale, ref_a))
                del p1, p2
            else:
                del res["finufft"]
            for lib, r in res.items():
                rows.append(dict(size=n, points=m, eps=eps, lib=lib, **r))
            s = dict(size=n, points=m, eps=eps, upsampling=op.upsampling, width=op.width,
                     fft_pair_2n_ms=fft_ms, toeplitz_build_ms=res["ours"]["toeplitz_build_ms"], normal_over_fft_pair=res["ours"]["normal_ms"] / fft_ms)
            if "finufft" in res:
                s["ours_over_finufft_fwd_adj"] = ((res["ours"]["fwd_ms"] + res["ours"]["adj_ms"])
                                                  / (res["finufft"]["fwd_ms"] + res["finufft"]["adj_ms"]))
            summary.append(s)
            del op
        if sigpy is not None:
            sigpy.nufft(np.ones((4, 4, 4), np.complex64), kf[:10] * (4 / n))  # warm its numba jit
            sigpy.nufft_adjoint(np.ones(10, np.complex64), kf[:10] * (4 / n), oshape=(4, 4, 4))
            t = time.perf_counter(); ys = sigpy.nufft(x, k); fs = (time.perf_counter() - t) * 1e3
            t = time.perf_counter(); xs = sigpy.nufft_adjoint(y.reshape(k.shape[:-1]), k, oshape=shape)
            as_ = (time.perf_counter() - t) * 1e3
            rows.append(dict(size=n, points=m, eps=None, lib="sigpy", fwd_ms=fs, adj_ms=as_,
                             fwd_err=rel(ys.reshape(-1)[sub], ref_f), adj_err=rel(xs[vi], ref_a)))
            for s in summary:
                if s["size"] == n:
                    ours = next(r for r in rows if r["size"] == n and r["eps"] == s["eps"] and r["lib"] == "ours")
                    s["sigpy_over_ours_fwd_adj"] = (fs + as_) / (ours["fwd_ms"] + ours["adj_ms"])

    if args.json:
        print(json.dumps({"threads": args.threads, "rows": rows, "summary": summary}, indent=1))
        return 0
    print(f"threads={args.threads}, complex64, centre-out 3D radial; ms = min of {args.repeat}; "
          "errors vs exact NUDFT (256 samples / 32 voxels)")
    hdr = f"{'size':>5} {'points':>9} {'eps':>7} {'lib':>8} {'plan':>8} {'fwd':>8} {'adj':>8} {'normal':>8} {'fwd_err':>9} {'adj_err':>9}"
    print(hdr)
    print("-" * len(hdr))

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for r in rows:
        print(f"{r['size']:>4}^3 {r['points']:>9} {f(r['eps'], '7.0e'):>7} {r['lib']:>8} "
              f"{f(r.get('plan_ms'), '8.1f'):>8} {r['fwd_ms']:8.1f} {r['adj_ms']:8.1f} "
              f"{f(r.get('normal_ms'), '8.1f'):>8} {r['fwd_err']:9.1e} {r['adj_err']:9.1e}")
    print()
    for s in summary:
        line = (f"{s['size']:>4}^3 eps {s['eps']:.0e} (upsampling {s['upsampling']:g}, width {s['width']}): ")
        if "ours_over_finufft_fwd_adj" in s:
            line += f"ours/FINUFFT fwd+adj {s['ours_over_finufft_fwd_adj']:.2f}x; "
        if "sigpy_over_ours_fwd_adj" in s:
            line += f"sigpy/ours fwd+adj {s['sigpy_over_ours_fwd_adj']:.1f}x; "
        line += (f"normal / FFT pair of 2N grid ({s['fft_pair_2n_ms']:.1f} ms) {s['normal_over_fft_pair']:.2f}x"
                 f" (Toeplitz build {s['toeplitz_build_ms']:.0f} ms)")
        print(line)
    peak = next((r["peak_rss_mb"] for r in rows if "peak_rss_mb" in r), None)
    if peak is not None:
        print(f"peak RSS after our plan+forward+adjoint at {sizes[0]}^3: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
