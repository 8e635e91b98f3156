"""Command-line interface: argument parsing only; every subcommand calls the library.

Exit codes (DESIGN.md): 0 success, 2 bad input or usage (one line on stderr), 1 internal fault,
3 a batch in which some scans failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from . import __version__
from .errors import InputError

log = logging.getLogger("na23recon")

EXIT_OK, EXIT_FAULT, EXIT_INPUT, EXIT_PARTIAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        sys.stderr.write(f"na23recon: error: {message} (see '{self.prog} -h')\n")
        sys.exit(EXIT_INPUT)


# --- subcommands -----------------------------------------------------------------------------
# Each `_add_X(sub)` declares one subcommand and sets `func` to a `_run_X(args) -> int`.


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole chain on a built-in simulated scan")
    p.add_argument("-o", "--out", default="na23recon-demo", help="output folder (default: %(default)s)")
    p.add_argument("--matrix", type=int, default=48, help="reconstruction matrix (default: %(default)s)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import run_demo

    res = run_demo(args.out, matrix=args.matrix)
    print(f"demo results in {args.out}:")
    for name, path in res.items():
        print(f"  {name:<12} {path}")
    return EXIT_OK


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a synthetic scan: twix + trajectory + ground truth")
    p.add_argument("phantom", nargs="?", default="brain", help="phantom name in data-sim/ or a JSON file (default: brain)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--matrix", type=int, default=48, help="nominal matrix N (default: %(default)s)")
    p.add_argument("--fov-mm", type=float, default=240.0, help="field of view in mm (default: %(default)s)")
    p.add_argument("--snr", type=float, default=None, help="image SNR of the brightest compartment (default: no noise)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the noise")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args) -> int:
    from .sim.scan import simulate_to_folder

    res = simulate_to_folder(args.out, phantom=args.phantom, matrix=args.matrix, fov_mm=args.fov_mm,
                             snr=args.snr, seed=args.seed)
    for name, path in res.items():
        print(f"{name:<12} {path}")
    return EXIT_OK


def _add_recon(sub) -> None:
    p = sub.add_parser("recon", help="reconstruct a scan with its trajectory into a NIfTI")
    p.add_argument("scan", help="Siemens twix .dat file")
    p.add_argument("--traj", required=True, help="trajectory .npz (k in 1/m, DESIGN.md) or .npy")
    p.add_argument("-o", "--out", required=True, help="output image .nii.gz")
    p.add_argument("--matrix", type=int, default=None, help="matrix N (default: the scan's)")
    p.add_argument("--method", default="adjoint", help="adjoint | cg | cs-tv | cs-wavelet (default: %(default)s)")
    p.add_argument("--lam", type=float, default=None,
                   help="regularisation relative to the image noise SD (cs-*: default 1.0), Tikhonov weight (cg: default 0)")
    p.add_argument("--iters", type=int, default=None, help="maximum iterations (default: cg 15, cs-* 30)")
    p.add_argument("--tol", type=float, default=1e-4, help="stopping tolerance (default: %(default)s)")
    p.add_argument("--coil-compress", type=int, default=None, metavar="N", help="SVD-compress to N virtual coils")
    p.add_argument("--coil-combine", default=None,
                   help="adjoint: sos | adaptive | sense (default sos); iterative methods use sense")
    p.add_argument("--maps", default="walsh", help="sensitivity maps: walsh | espirit (default: %(default)s)")
    p.add_argument("--t2s-ms", type=float, nargs="+", default=None, metavar="T2S",
                   help="decay-aware model: one T2* or short and long T2* in ms (needs 't' in the trajectory file)")
    p.add_argument("--echo", type=int, default=None, help="reconstruct only this echo (default: all)")
    p.add_argument("--allow-nucleus", action="store_true", help="accept a scan whose nucleus is not 23Na")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    p.set_defaults(func=_run_recon)


def _run_recon(args) -> int:
    from .pipeline import recon_file

    t2s = args.t2s_ms
    if t2s is not None and len(t2s) not in (1, 2):
        raise InputError(f"--t2s-ms takes one or two values (short, long), got {len(t2s)}")
    t2s = None if t2s is None else (t2s[0] if len(t2s) == 1 else tuple(t2s))
    out = recon_file(args.scan, args.traj, args.out, matrix=args.matrix, method=args.method,
                     echo=args.echo, allow_nucleus=args.allow_nucleus, png=not args.no_png, lam=args.lam,
                     iters=args.iters, tol=args.tol, coil_compress=args.coil_compress,
                     coil_combine=args.coil_combine, maps=args.maps, t2s_ms=t2s)
    print(out)
    return EXIT_OK


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="process the scans of a manifest (process pool or Dask cluster)")
    p.add_argument("manifest", help="CSV (id,scan,traj[,b1_scan_a,b1_scan_2a,vials,vial_mask,labels]) or TOML")
    p.add_argument("-o", "--out", required=True, help="output root: results in OUT/<id>/, OUT/summary.csv")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores / threads, capped by memory)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="threads in each worker (default: cores / workers)")
    p.add_argument("--dask", default=None, metavar="ADDRESS", help="'local' for a LocalCluster or tcp://HOST:PORT")
    p.add_argument("--matrix", type=int, default=None, help="reconstruction matrix (default: each scan's)")
    p.add_argument("--method", default="adjoint", choices=["adjoint"], help="reconstruction method")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_batch)


def _run_batch(args) -> int:
    from .batch import run_batch

    for name in ("workers", "threads_per_worker"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    options = {"matrix": args.matrix, "method": args.method}
    results = run_batch(args.manifest, args.out, options, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, dask=args.dask,
                        progress=False if args.no_progress else None)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed: {args.out}/summary.csv")
    for r in results:
        if r.status == "failed":
            print(f"  {r.id}: {r.message}", file=sys.stderr)
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


SUBCOMMANDS = [_add_demo, _add_simulate, _add_recon, _add_batch]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="na23recon", description="Sodium (23Na) MRI reconstruction and TSC quantification.")
    parser.add_argument("--version", action="version", version=f"na23recon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal faults")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        warnings.simplefilter("ignore")
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"na23recon {args.command}: error: {_one_line(exc)}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write(f"na23recon {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # an internal fault: say so in one line, traceback with --debug
        if args.debug or os.environ.get("NA23RECON_DEBUG"):
            raise
        sys.stderr.write(f"na23recon {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                         f"(rerun with --debug for the traceback)\n")
        return EXIT_FAULT


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
