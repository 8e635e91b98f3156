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


def _print_outputs(paths: dict, indent: int = 0) -> None:
    """One line per output: its name and path."""
    width = max((len(n) for n in paths), default=0) + 1
    for name, path in paths.items():
        print(f"{' ' * indent}{name:<{width}}{path}")


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
    _print_outputs(res, indent=2)
    return EXIT_OK


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a synthetic scan: twix + trajectory + ground truth")
    p.add_argument("phantom", nargs="?", default="brain", help="phantom name in data-sim/ or a JSON file (default: brain)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--traj", default="radial", choices=["radial", "dar", "tpi"], help="trajectory (default: %(default)s)")
    p.add_argument("--matrix", type=int, default=48, help="nominal matrix N (default: %(default)s)")
    p.add_argument("--fov-mm", type=float, default=240.0, help="field of view in mm (default: %(default)s)")
    p.add_argument("--snr", type=float, default=None, help="image SNR of the brightest compartment (default: no noise)")
    p.add_argument("--ncoil", type=int, default=1, help="receive coils; > 1: loops on a helmet (default: %(default)s)")
    p.add_argument("--undersampling", type=float, default=1.0, help="readouts = Nyquist / this (default: %(default)s)")
    p.add_argument("--b1-variation", type=float, default=0.0, help="B1+ flip scale spans 1 +- this, e.g. 0.3 (default: 0)")
    p.add_argument("--b1-model", default="birdcage", choices=["birdcage", "gradient"], help="B1+ profile (default: %(default)s)")
    p.add_argument("--receive", default="auto", choices=["auto", "uniform", "reciprocal", "helmet"],
                   help="receive sensitivity (auto: helmet when --ncoil > 1)")
    p.add_argument("--flip-deg", type=float, default=90.0, help="flip angle (default: %(default)s)")
    p.add_argument("--double-angle", action="store_true", help="also write scan_2a.dat at twice the flip angle")
    p.add_argument("--te-ms", type=float, default=0.3, help="echo time, excitation to first sample (default: %(default)s)")
    p.add_argument("--tr-ms", type=float, default=100.0, help="repetition time (default: %(default)s)")
    p.add_argument("--off-resonance-hz", type=float, default=0.0, help="global frequency offset (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the noise")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args) -> int:
    from .sim.scan import simulate_to_folder

    res = simulate_to_folder(args.out, phantom=args.phantom, matrix=args.matrix, fov_mm=args.fov_mm,
                             snr=args.snr, seed=args.seed, double_angle=args.double_angle, traj=args.traj,
                             ncoil=args.ncoil, undersampling=args.undersampling, b1_variation=args.b1_variation,
                             b1_model=args.b1_model, receive=args.receive, flip_deg=args.flip_deg,
                             te_ms=args.te_ms, tr_ms=args.tr_ms, off_resonance_hz=args.off_resonance_hz)
    _print_outputs(res)
    return EXIT_OK


def _add_recon_options(p) -> None:
    """The reconstruction options shared by `recon` and `batch`."""
    p.add_argument("--matrix", type=int, default=None, help="matrix N (default: the scan's)")
    p.add_argument("--method", default="adjoint", help="adjoint | cg | cs-tv | cs-wavelet (default: %(default)s)")
    p.add_argument("--lam", type=float, default=None,
                   help="regularisation relative to the image noise SD (cs-*: default 0.5), Tikhonov weight (cg: default 0.1)")
    p.add_argument("--iters", type=int, default=None, help="maximum iterations (default: cg 15, cs-* 30)")
    p.add_argument("--tol", type=float, default=1e-4, help="stopping tolerance (default: %(default)s)")
    p.add_argument("--coil-compress", type=int, default=None, metavar="N", help="SVD-compress to N virtual coils")
    p.add_argument("--coil-combine", default=None,
                   help="adjoint: sos | adaptive | sense (default sos); iterative methods use sense")
    p.add_argument("--maps", default="walsh", help="sensitivity maps: walsh | espirit (default: %(default)s)")
    p.add_argument("--t2s-ms", type=float, nargs="+", default=None, metavar="T2S",
                   help="decay-aware model: one T2* or short and long T2* in ms (needs 't' in the trajectory file)")
    p.add_argument("--allow-nucleus", action="store_true", help="accept a scan whose nucleus is not 23Na")
    p.add_argument("--rep", type=int, default=None,
                   help="reconstruct this repetition/average only (default: average all in k-space)")


def _recon_options(args) -> dict:
    """recon_file keyword arguments from the shared options."""
    t2s = args.t2s_ms
    if t2s is not None and len(t2s) not in (1, 2):
        raise InputError(f"--t2s-ms takes one or two values (short, long), got {len(t2s)}")
    t2s = None if t2s is None else (t2s[0] if len(t2s) == 1 else tuple(t2s))
    return {"matrix": args.matrix, "method": args.method, "lam": args.lam, "iters": args.iters, "tol": args.tol,
            "coil_compress": args.coil_compress, "coil_combine": args.coil_combine, "maps": args.maps,
            "t2s_ms": t2s, "allow_nucleus": args.allow_nucleus, "rep": args.rep}


def _add_recon(sub) -> None:
    p = sub.add_parser("recon", help="reconstruct a scan with its trajectory into a NIfTI")
    p.add_argument("scan", help="Siemens twix .dat file")
    p.add_argument("--traj", required=True, help="trajectory .npz (k in 1/m, DESIGN.md) or .npy")
    p.add_argument("-o", "--out", required=True, help="output image .nii.gz")
    _add_recon_options(p)
    p.add_argument("--echo", type=int, default=None, help="reconstruct only this echo (default: all)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    p.set_defaults(func=_run_recon)


def _run_recon(args) -> int:
    from .pipeline import recon_file

    out = recon_file(args.scan, args.traj, args.out, echo=args.echo, png=not args.no_png, **_recon_options(args))
    print(out)
    return EXIT_OK


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="one scan end to end from a TOML config (recon, B1, TSC, QC report)")
    p.add_argument("config", help="TOML: [input] scan, traj, b1_scan_a, b1_scan_2a, vials, vial_mask, labels; "
                                  "[recon] method, matrix; [quant] tissue, intercept; [output] dir")
    p.add_argument("-o", "--out", default=None, help="output folder (default: the config's [output] dir)")
    p.set_defaults(func=_run_run)


def _run_run(args) -> int:
    from .pipeline import load_run_config, process_scan

    job, options, outdir = load_run_config(args.config)
    outputs = process_scan(job, args.out or outdir, options)
    _print_outputs(outputs)
    return EXIT_OK


def _add_b1map(sub) -> None:
    p = sub.add_parser("b1map", help="double-angle B1 map (relative flip scale) from scans at flips a and 2a")
    p.add_argument("scan_a", help="scan at flip a: twix .dat (needs --traj) or a reconstructed .nii.gz")
    p.add_argument("scan_2a", help="scan at flip 2a, same kind as scan_a")
    p.add_argument("--traj", default=None, help="trajectory .npz for twix scans")
    p.add_argument("-o", "--out", required=True, help="output B1 map .nii.gz (1.0 = nominal flip)")
    p.add_argument("--flip-deg", type=float, default=None, help="nominal flip a (default: scan a's sidecar)")
    p.add_argument("--fit", default="poly", choices=["poly", "smooth", "none"], help="spatial regularisation")
    p.add_argument("--order", type=int, default=3, help="polynomial order for --fit poly (default: %(default)s)")
    p.add_argument("--snr-min", type=float, default=5.0, help="mask voxels below this SNR in scan a")
    p.add_argument("--matrix", type=int, default=None, help="reconstruction matrix for twix scans")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    p.set_defaults(func=_run_b1map)


def _run_b1map(args) -> int:
    from .quantify import b1map_file

    res = b1map_file(args.scan_a, args.scan_2a, args.out, traj_path=args.traj, flip_deg=args.flip_deg,
                     fit=args.fit, order=args.order, snr_min=args.snr_min, matrix=args.matrix, png=not args.no_png)
    _print_outputs(res)
    return EXIT_OK


def _add_traj(sub) -> None:
    p = sub.add_parser("traj", help="generate a trajectory (radial, dar, tpi) as .npz + PNG")
    p.add_argument("kind", choices=["radial", "dar", "tpi"], help="3D radial, density-adapted radial (Nagel 2009) "
                   "or twisted projection imaging (Boada 1997)")
    p.add_argument("-o", "--out", required=True, help="output trajectory .npz (k in 1/m, dcf, t; a PNG beside it)")
    p.add_argument("--matrix", type=int, default=64, help="nominal matrix N (default: %(default)s)")
    p.add_argument("--fov-mm", type=float, default=240.0, help="field of view in mm (default: %(default)s)")
    p.add_argument("--gmax-mT-m", type=float, default=40.0, help="gradient limit (default: %(default)s)")
    p.add_argument("--slew-T-m-s", type=float, default=150.0, help="slew-rate limit (default: %(default)s)")
    p.add_argument("--dwell-us", type=float, default=10.0, help="ADC dwell time (default: %(default)s)")
    p.add_argument("--raster-us", type=float, default=10.0, help="gradient raster time (default: %(default)s)")
    p.add_argument("--p", type=float, default=None, help="k0 / kmax for dar (default 0.25) and tpi (default 0.4)")
    p.add_argument("--g-mT-m", type=float, default=None,
                   help="readout gradient of dar (G0) / tpi (default: the largest within the limits)")
    p.add_argument("--undersampling", type=float, default=1.0, help="radial/dar: spokes = pi N^2 / this")
    p.add_argument("--ordering", choices=["spiral", "golden"], default="spiral", help="radial/dar spoke order")
    p.add_argument("--full-diameter", action="store_true", help="radial: full-diameter spokes (default centre-out)")
    p.add_argument("--te-ms", type=float, default=0.0, help="time from excitation to the readout start (for t)")
    p.add_argument("--max-readout-ms", type=float, default=None, help="tpi: refuse longer readouts")
    p.add_argument("--dcf", choices=["analytic", "pipe-menon", "none"], default="analytic",
                   help="density compensation stored in the file (default: %(default)s)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG figure")
    p.set_defaults(func=_run_traj)


def _run_traj(args) -> int:
    from .traj.make import generate, trajectory_dcf, write_trajectory

    opts = dict(gmax_mT_m=args.gmax_mT_m, slew_T_m_s=args.slew_T_m_s, dwell_us=args.dwell_us,
                raster_us=args.raster_us, te_ms=args.te_ms)
    if args.kind == "radial":
        opts.update(undersampling=args.undersampling, ordering=args.ordering, centre_out=not args.full_diameter)
    elif args.kind == "dar":
        opts.update(undersampling=args.undersampling, ordering=args.ordering, p=args.p, g0_mT_m=args.g_mT_m)
    else:
        opts.update(p=args.p, g_mT_m=args.g_mT_m, max_readout_ms=args.max_readout_ms)
    if not args.out.endswith(".npz"):
        raise InputError(f"output must be a .npz file, got {args.out}")
    tr = generate(args.kind, args.matrix, args.fov_mm, **opts)
    tr = tr.with_dcf(trajectory_dcf(tr, args.dcf))
    paths = write_trajectory(args.out, tr, png=not args.no_png)
    print(f"{tr.kind}: {tr.nreadout} readouts x {tr.nsample} samples; {tr.design.report.summary()}")
    _print_outputs(paths)
    return EXIT_OK


def _parse_label_tissue(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        lab, sep, name = item.partition("=")
        if not sep or not lab.strip().lstrip("-").isdigit() or not name.strip():
            raise InputError(f"--label-tissue expects LABEL=PRESET[,LABEL=PRESET...], got {text!r}")
        out[int(lab)] = name.strip()
    return out


def _add_quantify(sub) -> None:
    p = sub.add_parser("quantify", help="calibrated TSC map (mM) from an image and reference vials")
    p.add_argument("image", help="reconstructed sodium image .nii.gz (with its JSON sidecar)")
    p.add_argument("--vials", required=True, help="vials JSON (label, concentration_mM, medium)")
    p.add_argument("--vial-mask", default=None, help="vial label mask .nii.gz (default: detect the vials)")
    p.add_argument("--b1", default=None, help="B1 map .nii.gz (relative flip scale, from b1map)")
    p.add_argument("--receive", default=None, help="relative receive map .nii.gz (default with --b1: reciprocity)")
    p.add_argument("--no-reciprocity", action="store_true", help="do not use the B1 map as receive sensitivity")
    p.add_argument("--labels", default=None, help="label image .nii.gz: ROI table <out>_roi.csv/.json")
    p.add_argument("-o", "--out", required=True, help="output TSC map .nii.gz (mM)")
    p.add_argument("--te-ms", type=float, default=None, help="echo time (default: the image's sidecar)")
    p.add_argument("--tr-ms", type=float, default=None, help="repetition time (default: the image's sidecar)")
    p.add_argument("--flip-deg", type=float, default=None, help="nominal flip (default: the image's sidecar)")
    p.add_argument("--echo", type=int, default=0, help="echo of a multi-echo image (default: %(default)s)")
    p.add_argument("--tissue", default="gm", help="relaxation preset for tissue voxels (default: %(default)s)")
    p.add_argument("--label-tissue", default=None, help="per-label presets with --labels, e.g. 1=csf,2=gm,3=wm")
    p.add_argument("--intercept", default="fit", choices=["fit", "zero", "noise-floor"], help="calibration line")
    p.add_argument("--noise-sd", type=float, default=None, help="image noise SD (default: from the background)")
    p.add_argument("--vial-threshold", type=float, default=None, help="least smoothed peak of a detected vial (corrected units; default: 6 background SDs)")
    p.add_argument("--config", default=None, help='JSON {"relaxation": {preset: {t1_ms: ..}}} overrides')
    p.add_argument("--no-png", action="store_true", help="do not write the QC figures")
    p.set_defaults(func=_run_quantify)


def _run_quantify(args) -> int:
    from .quantify import quantify_file

    res = quantify_file(args.image, args.out, args.vials, vial_mask_path=args.vial_mask, b1_path=args.b1,
                        labels_path=args.labels, receive_path=args.receive, te_ms=args.te_ms, tr_ms=args.tr_ms,
                        flip_deg=args.flip_deg, echo=args.echo, tissue=args.tissue,
                        label_tissue=_parse_label_tissue(args.label_tissue), intercept=args.intercept,
                        reciprocity=not args.no_reciprocity, noise_sd=args.noise_sd, config_path=args.config,
                        vial_threshold=args.vial_threshold, png=not args.no_png)
    _print_outputs(res)
    return EXIT_OK


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="process the scans of a manifest (process pool or Dask cluster)")
    p.add_argument("manifest", help="CSV (id,scan,traj[,b1_scan_a,b1_scan_2a,vials,vial_mask,labels]) or TOML")
    p.add_argument("-o", "--out", required=True, help="output root: results in OUT/<id>/, OUT/summary.csv")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores / threads, capped by memory)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="threads in each worker (default: cores / workers)")
    p.add_argument("--dask", default=None, metavar="ADDRESS", help="'local' for a LocalCluster or tcp://HOST:PORT")
    _add_recon_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_batch)


def _run_batch(args) -> int:
    from .batch import run_batch

    for name in ("workers", "threads_per_worker"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    from .pipeline import check_recon_options

    options = _recon_options(args)
    check_recon_options({k: v for k, v in options.items() if k != "allow_nucleus"})
    results = run_batch(args.manifest, args.out, options, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, dask=args.dask,
                        progress=False if args.no_progress else None)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed: {args.out}/summary.csv")
    for r in results:
        if r.status == "failed":
            print(f"  {r.id}: {r.message}", file=sys.stderr)
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise a Siemens twix file (measurements, nucleus, dimensions, ...)")
    p.add_argument("scan", help="Siemens twix .dat file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    import json

    from .io.twix import describe, format_description

    d = describe(args.scan)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return EXIT_OK


SUBCOMMANDS = [_add_demo, _add_simulate, _add_traj, _add_recon, _add_info, _add_b1map, _add_quantify,
               _add_run, _add_batch]


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
    from .provenance import set_command

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    set_command(["na23recon", *argv])
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
