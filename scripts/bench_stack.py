"""Stack of stars: the 2D-NUFFT-per-partition + DFT-along-z operator (`recon.stack.StackNufft`)
against the 3D NUFFT of the same points, in one process.

Full-diameter 2D radial spokes on Nz Cartesian kz partitions; times plan, adjoint and forward
(median of --repeat runs after one warm-up, a batch of --coils), and prints the ratios stack / 3D
with the NRMSE between the two adjoints.

    python scripts/bench_stack.py [--matrix 128] [--partitions 32] [--spokes 200] [--coils 4] [--eps 1e-3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from na23recon.nufft import Nufft
from na23recon.recon.stack import StackNufft


def _timed(fn, repeat: int):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", type=int, default=128)
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--spokes", type=int, default=200)
    ap.add_argument("--coils", type=int, default=4)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    n, nz = a.matrix, a.partitions
    r = np.arange(n) - n / 2
    phi = np.pi * np.arange(a.spokes) / a.spokes
    c2 = np.stack([np.cos(phi)[:, None] * r, np.sin(phi)[:, None] * r], axis=-1)
    coord = np.concatenate([np.concatenate([c2, np.full(c2.shape[:2] + (1,), z)], axis=-1)
                            for z in np.arange(nz) - nz // 2])
    rng = np.random.default_rng(0)
    y = (rng.standard_normal((a.coils,) + coord.shape[:2])
         + 1j * rng.standard_normal((a.coils,) + coord.shape[:2])).astype(np.complex64)
    res = {}
    for name, make in (("3d", lambda: Nufft(coord, (n, n, nz), eps=a.eps)),
                       ("stack", lambda: StackNufft(coord, (n, n, nz), eps=a.eps))):
        t = time.perf_counter()
        op = make()
        tp = time.perf_counter() - t
        ta, x = _timed(lambda op=op: op.adjoint(y), a.repeat)
        tf, _ = _timed(lambda op=op, x=x: op.forward(x), a.repeat)
        res[name] = (tp, ta, tf, x)
        print(f"{name:>5}: plan {tp:.3f} s, adjoint {ta:.3f} s, forward {tf:.3f} s")
    s, d = res["stack"], res["3d"]
    err = float(np.linalg.norm(s[3] - d[3]) / np.linalg.norm(d[3]))
    print(f"stack / 3D: plan {s[0] / d[0]:.2f}, adjoint {s[1] / d[1]:.2f}, forward {s[2] / d[2]:.2f}; "
          f"adjoint NRMSE {err:.2e} ({n}x{n}x{nz}, {a.spokes} spokes x {nz} partitions, {a.coils} coils, eps {a.eps:g})")


if __name__ == "__main__":
    main()
