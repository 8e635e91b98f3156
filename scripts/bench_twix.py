"""Benchmark: read a synthetic ~300 MB twix file with na23recon vs a plain twixtools loop.

    python scripts/bench_twix.py [--mb 300] [--keep PATH]

Writes a VE file with `write_scan` (8 coils x 256 samples per readout, 2 echoes), then in this
one process measures, for each reader, wall time (best of 3, alternating, without tracing) and peak Python-allocated memory (tracemalloc,
which sees numpy buffers but not the page cache of a memory map), and prints the ratios.
Baseline: `twixtools.read_twix` + a loop over the image readouts' `mdb.data` into the same
(nrep, necho, ncoil, nreadout, nsample) array.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from na23recon.core import Acquisition, Geometry, Scan
from na23recon.io.twix import read_scan, write_scan


def _peak(fn):
    """(result, peak bytes allocated while fn ran, by tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    out = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, peak


def read_twixtools(path: str) -> np.ndarray:
    import twixtools

    with contextlib.redirect_stdout(io.StringIO()):
        tw = twixtools.read_twix(path, verbose=False, parse_pmu=False, parse_geometry=False)[-1]
    img = [m for m in tw["mdb"] if m.is_image_scan()]
    nro = max(m.cLin + 65536 * m.cPar for m in img) + 1
    necho = max(m.cEco for m in img) + 1
    nrep = max(m.cRep for m in img) + 1
    nch, ns = img[0].data.shape
    out = np.zeros((nrep, necho, nch, nro, ns), np.complex64)
    for m in img:
        out[m.cRep, m.cEco, :, m.cLin + 65536 * m.cPar, :] = m.data
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=300.0, help="size of the k-space in MB (default 300)")
    ap.add_argument("--keep", default=None, help="write the file here and keep it")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per reader, best taken (default 3)")
    args = ap.parse_args()
    ncoil, ns, necho = 8, 256, 2
    nro = int(args.mb * 1e6 / (8 * ncoil * ns * necho))
    rng = np.random.default_rng(0)
    shape = (1, necho, ncoil, nro, ns)
    data = (rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)).astype(np.complex64)
    info = Acquisition(nucleus="23Na", te_ms=(0.3, 5.0), tr_ms=100.0, coil_names=[f"Na{i}" for i in range(ncoil)],
                       geometry=Geometry(fov_mm=(240.0,) * 3, matrix=(64, 64, 64)))
    tmpdir = tempfile.TemporaryDirectory()
    path = Path(args.keep) if args.keep else Path(tmpdir.name) / "bench.dat"
    t = time.perf_counter()
    write_scan(path, Scan(data, info))
    t_write = time.perf_counter() - t
    size = os.path.getsize(path) / 1e6
    kbytes = data.nbytes
    del data
    print(f"file {size:.0f} MB, k-space {kbytes / 1e6:.0f} MB {shape}, write_scan {t_write:.2f} s")
    # warm the page cache for both readers alike
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    # alternate the readers, best of `--repeat` (the first call in a process also pays for
    # imports and fresh pages, whichever reader goes first)
    t_tw, t_us = [], []
    for _ in range(args.repeat):
        for fn, ts in ((lambda: read_twixtools(str(path)), t_tw), (lambda: read_scan(path), t_us)):
            gc.collect()
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
            del out
    t_tw, t_us = min(t_tw), min(t_us)
    ref, m_tw = _peak(lambda: read_twixtools(str(path)))
    scan, m_us = _peak(lambda: read_scan(path))
    assert np.array_equal(scan.data, ref), "readers disagree"
    del ref
    print(f"best of {args.repeat}, peak memory by tracemalloc:")
    print(f"twixtools loop : {t_tw:6.2f} s  peak {m_tw / 1e6:7.1f} MB ({m_tw / kbytes:.2f}x k-space)")
    print(f"na23recon      : {t_us:6.2f} s  peak {m_us / 1e6:7.1f} MB ({m_us / kbytes:.2f}x k-space)")
    print(f"speed-up {t_tw / t_us:.1f}x; peak memory minus k-space: {(m_us - kbytes) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
