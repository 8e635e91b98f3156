"""The subcommands: each `add_X(sub)` declares one and sets `func` to a `run_X(args) -> int`.

Options of the reconstruction, B1 and TSC steps are generated from `ReconOptions`, `B1Options` and
`QuantOptions` (cli.options), so `recon`, `b1map`, `quantify`, `run` and `batch` offer the same
options with the same defaults and help, and the dataclasses validate them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..core import B1Options, QuantOptions, ReconOptions
from ..core.options import OutputOptions
from ..demo import run_demo
from ..errors import InputError
from ..export import export_dicom, identity_for
from ..export.deid import find_scan
from ..io.scan_file import describe_scan_file, format_scan_description
from ..pipeline.b0_step import b0map_file
from ..pipeline.b1_step import b1map_file
from ..pipeline.batch import run_batch
from ..pipeline.config import RunOptions, load_run_config
from ..pipeline.recon_step import recon_file
from ..pipeline.run import process_scan
from ..pipeline.tsc_step import quantify_file
from ..provenance import reduced_paths, sha256_file
from ..sim.scan import simulate_to_folder
from ..traj.make import generate, trajectory_dcf, write_trajectory
from ..traj.pulseq import write_seq
from .options import add_options, from_args, given

EXIT_OK, EXIT_FAULT, EXIT_INPUT, EXIT_PARTIAL = 0, 1, 2, 3
TRAJ_HELP = ("trajectory: .npz/.npy (k in 1/m), .mat/.txt/.csv (units: --traj-units) or a Pulseq .seq "
             "(k at every ADC sample, checked against the scan)")


def _print_outputs(paths: dict, indent: int = 0) -> None:
    """One line per output: its name and path."""
    width = max((len(n) for n in paths), default=0) + 1
    for name, path in paths.items():
        print(f"{' ' * indent}{name:<{width}}{path}")


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole chain on built-in simulated scans")
    p.add_argument("-o", "--out", default="na23recon-demo", help="output folder (default: %(default)s)")
    p.add_argument("--matrix", type=int, default=48, help="reconstruction matrix (default: %(default)s)")
    p.set_defaults(func=run_demo_cmd)


def run_demo_cmd(args) -> int:
    res = run_demo(args.out, matrix=args.matrix)
    print(f"demo results in {args.out}:")
    _print_outputs(res, indent=2)
    return EXIT_OK


def add_simulate(sub) -> None:
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
    p.add_argument("--receive-reference", action="store_true", help="also write scan_ref.dat: the same scan "
                   "received by the volume coil (for quantify --receive reference)")
    p.add_argument("--te-ms", type=float, default=0.3, help="echo time, excitation to first sample (default: %(default)s)")
    p.add_argument("--tr-ms", type=float, default=100.0, help="repetition time (default: %(default)s)")
    p.add_argument("--off-resonance-hz", type=float, default=0.0, help="global frequency offset (default: 0)")
    p.add_argument("--readout-ms", type=float, default=None,
                   help="TPI readout duration, ms (default: the fastest within the gradient limits)")
    p.add_argument("--gradient-delay-us", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("DX", "DY", "DZ"),
                   help="gradient delays along read, phase, partition (us): k-space at the delayed positions, "
                        "the trajectory file nominal (default: 0 0 0)")
    p.add_argument("--b0-map-voxel-mm", type=float, default=None, metavar="MM",
                   help="also write truth_b0_fine.nii.gz: the field map at this voxel size (a 1H map's resolution)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the noise")
    p.add_argument("--anat", action="store_true", help="also write the phantom's GM/WM/CSF probability maps and "
                   "atlas as a 1H scan sees them (anat_*.nii.gz, scanner coordinates)")
    p.add_argument("--anat-voxel-mm", type=float, default=1.0, help="voxel of the --anat maps (default: %(default)s)")
    p.add_argument("--anat-offset-mm", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"),
                   help="head shift (RAS mm) between the sodium and the 1H scan (implies --anat)")
    p.add_argument("--anat-rot-deg", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("A", "B", "C"),
                   help="head rotation (deg about RAS x, y, z, about the head centre) between the scans (implies --anat)")
    p.set_defaults(func=run_simulate)


def run_simulate(args) -> int:
    res = simulate_to_folder(args.out, phantom=args.phantom, matrix=args.matrix, fov_mm=args.fov_mm,
                             snr=args.snr, seed=args.seed, double_angle=args.double_angle,
                             receive_reference=args.receive_reference, traj=args.traj,
                             ncoil=args.ncoil, undersampling=args.undersampling, b1_variation=args.b1_variation,
                             b1_model=args.b1_model, receive=args.receive, flip_deg=args.flip_deg,
                             te_ms=args.te_ms, tr_ms=args.tr_ms, off_resonance_hz=args.off_resonance_hz,
                             anat=args.anat or any(args.anat_offset_mm) or any(args.anat_rot_deg),
                             anat_voxel_mm=args.anat_voxel_mm, anat_offset_mm=tuple(args.anat_offset_mm),
                             anat_rot_deg=tuple(args.anat_rot_deg), readout_ms=args.readout_ms,
                             gradient_delay_us=tuple(args.gradient_delay_us), b0_map_voxel_mm=args.b0_map_voxel_mm)
    _print_outputs(res)
    return EXIT_OK


def add_recon(sub) -> None:
    p = sub.add_parser("recon", help="reconstruct a scan with its trajectory into a NIfTI")
    p.add_argument("scan", help="Siemens twix .dat or ISMRMRD .h5 file")
    p.add_argument("--traj", default=None, help=TRAJ_HELP + " (may be left out for an .h5 that stores one)")
    p.add_argument("-o", "--out", required=True, help="output image .nii.gz")
    add_options(p, ReconOptions, title="reconstruction")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    _add_output_options(p)
    p.set_defaults(func=run_recon)


def run_recon(args) -> int:
    with reduced_paths(from_args(OutputOptions, args).reduce_paths):
        print(recon_file(args.scan, args.traj, args.out, from_args(ReconOptions, args), png=not args.no_png))
    return EXIT_OK


def add_b1map(sub) -> None:
    p = sub.add_parser("b1map", help="double-angle B1 map (relative flip scale) from scans at flips a and 2a")
    p.add_argument("scan_a", help="scan at flip a: twix .dat (needs --traj) or a reconstructed .nii.gz")
    p.add_argument("scan_2a", help="scan at flip 2a, same kind as scan_a")
    p.add_argument("--traj", default=None, help=TRAJ_HELP + " for scans to reconstruct")
    p.add_argument("-o", "--out", required=True, help="output B1 map .nii.gz (1.0 = nominal flip)")
    add_options(p, B1Options, title="B1 map")
    add_options(p, ReconOptions, title="reconstruction of twix scans")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    _add_output_options(p)
    p.set_defaults(func=run_b1map)


def run_b1map(args) -> int:
    with reduced_paths(from_args(OutputOptions, args).reduce_paths):
        res = b1map_file(args.scan_a, args.scan_2a, args.out, traj_path=args.traj, options=from_args(B1Options, args),
                         recon=from_args(ReconOptions, args), png=not args.no_png)
    _print_outputs(res)
    return EXIT_OK


def add_b0map(sub) -> None:
    p = sub.add_parser("b0map", help="B0 field map (Hz at 23Na) from a multi-echo scan or two scans at different TE")
    p.add_argument("scans", nargs="+", metavar="SCAN", help="one multi-echo scan, or two scans of the same protocol at "
                   "two echo times (twix or MRD)")
    p.add_argument("--traj", default=None, help=TRAJ_HELP + " (its k; the echo times come from the scans)")
    p.add_argument("-o", "--out", required=True, help="output field map .nii.gz (Hz at the sodium frequency)")
    p.add_argument("--threshold", type=float, default=0.15,
                   help="mask voxels below this fraction of the 99th percentile magnitude (default: %(default)s)")
    p.add_argument("--smooth", type=float, default=1.0, help="Gaussian SD of the masked smoothing, voxels (default: 1)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG montage")
    p.set_defaults(func=run_b0map)


def run_b0map(args) -> int:
    res = b0map_file(args.scans, args.traj, args.out, threshold=args.threshold, smooth_vox=args.smooth,
                     png=not args.no_png)
    _print_outputs(res)
    return EXIT_OK


def add_traj(sub) -> None:
    p = sub.add_parser("traj", help="generate a trajectory (radial, dar, tpi) as .npz + PNG")
    p.add_argument("kind", choices=["radial", "dar", "tpi"], help="3D radial, density-adapted radial (Nagel 2009) "
                   "or twisted projection imaging (Boada 1997)")
    p.add_argument("-o", "--out", required=True, help="output trajectory .npz (k in 1/m, dcf, t; a PNG beside it)")
    p.add_argument("--seq", default=None, metavar="OUT.seq", help="also write the design as a runnable Pulseq "
                   "sequence (hard pulse, readout gradients, ADC, spoiler; 23Na gamma)")
    p.add_argument("--seq-tr-ms", type=float, default=None, help="TR of the .seq (default: the shortest)")
    p.add_argument("--seq-flip-deg", type=float, default=90.0, help="flip angle of the .seq (default: %(default)s)")
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
    p.set_defaults(func=run_traj)


def run_traj(args) -> int:
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
    if args.seq is not None and not args.seq.endswith(".seq"):
        raise InputError(f"--seq must name a .seq file, got {args.seq}")
    tr = generate(args.kind, args.matrix, args.fov_mm, **opts)
    tr = tr.with_dcf(trajectory_dcf(tr, args.dcf))
    paths = write_trajectory(args.out, tr, png=not args.no_png)
    if args.seq is not None:
        info = write_seq(args.seq, tr, args.fov_mm, flip_deg=args.seq_flip_deg, tr_ms=args.seq_tr_ms,
                         gmax_mT_m=args.gmax_mT_m, slew_T_m_s=args.slew_T_m_s)
        paths["seq"] = info["path"]
        print(f"Pulseq: TR {info['tr_s'] * 1e3:.3f} ms, first sample {info['te_s'] * 1e3:.3f} ms after the pulse "
              f"centre, {info['duration_s']:.1f} s")
    print(f"{tr.kind}: {tr.nreadout} readouts x {tr.nsample} samples; {tr.design.report.summary()}")
    _print_outputs(paths)
    return EXIT_OK


def add_quantify(sub) -> None:
    p = sub.add_parser("quantify", help="calibrated TSC map (mM) from an image and reference vials")
    p.add_argument("image", help="reconstructed sodium image .nii.gz (with its JSON sidecar)")
    p.add_argument("--vials", required=True, help="vials JSON (label, concentration_mM, medium)")
    p.add_argument("--vial-mask", default=None, help="vial label mask .nii.gz (default: detect the vials)")
    p.add_argument("--b1", default=None, help="B1 map .nii.gz (relative flip scale, from b1map)")
    p.add_argument("--receive-map", default=None, help="relative receive map .nii.gz, used as is (instead of "
                   "--receive)")
    p.add_argument("--receive-reference", default=None, metavar="SCAN_OR_IMAGE",
                   help="the same object received by the volume coil: a reconstructed .nii.gz, or a twix/MRD scan "
                   "(with --reference-traj) reconstructed with the image's recorded options (--receive reference)")
    p.add_argument("--reference-traj", default=None, help="trajectory of a --receive-reference scan")
    p.add_argument("--labels", default=None, help="label image .nii.gz: ROI table <out>_roi.csv/.json")
    p.add_argument("--tissue-maps", nargs=3, default=None, metavar=("GM", "WM", "CSF"),
                   help="GM, WM, CSF probability maps from the 1H scan (any resolution, scanner coordinates): "
                        "per-voxel relaxation mix, per-tissue ROI table with partial-volume correction")
    p.add_argument("--atlas", default=None, help="atlas label image from the 1H scan (any resolution): ROI table "
                                                 "per label")
    p.add_argument("--atlas-table", default=None, help="label names of --atlas: TSV/CSV id,name or a FreeSurfer LUT")
    p.add_argument("--anat", default=None, help="the 1H image (T1w) the maps come from, for --register")
    p.add_argument("--psf", default=None, help="the reconstruction's PSF .nii.gz for partial-volume correction "
                                               "(default: <image>_psf.nii.gz beside the image)")
    p.add_argument("--config", default=None, help='JSON {"relaxation": {preset: {t1_ms: ..}}} overrides')
    p.add_argument("-o", "--out", required=True, help="output TSC map .nii.gz (mM)")
    add_options(p, QuantOptions, title="quantification")
    p.add_argument("--no-png", action="store_true", help="do not write the QC figures")
    _add_output_options(p)
    p.set_defaults(func=run_quantify)


def run_quantify(args) -> int:
    with reduced_paths(from_args(OutputOptions, args).reduce_paths):
        res = quantify_file(args.image, args.out, args.vials, from_args(QuantOptions, args),
                            vial_mask_path=args.vial_mask, b1_path=args.b1, labels_path=args.labels,
                            receive_path=args.receive_map, config_path=args.config, png=not args.no_png,
                            tissue_map_paths=args.tissue_maps, atlas_path=args.atlas, atlas_table_path=args.atlas_table,
                            anat_path=args.anat, psf_path=args.psf,
                            reference_path=args.receive_reference, reference_traj_path=args.reference_traj)
    _print_outputs(res)
    return EXIT_OK


#: The TSC step of run/batch quantifies the image the reconstruction made (its --echo): no echo of its own.
QUANT_EXCLUDED = ("echo",)
#: Output options of the commands that write NIfTI only (no DICOM of their own: `dicom` makes it).
NIFTI_ONLY = ("dicom", "reference_dicom")


def _add_output_options(p, exclude: tuple[str, ...] = NIFTI_ONLY, suppress: bool = False) -> None:
    add_options(p, OutputOptions, exclude=exclude, title="outputs", suppress=suppress)


def _add_step_options(p, suppress: bool = False) -> None:
    """Every option of the reconstruction, B1 (prefixed b1-) and TSC steps, for run and batch."""
    add_options(p, ReconOptions, title="reconstruction", suppress=suppress)
    add_options(p, B1Options, prefix="b1-", title="B1 map (double-angle pair)", suppress=suppress)
    add_options(p, QuantOptions, exclude=QUANT_EXCLUDED, title="quantification (with vials)", suppress=suppress)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="one scan end to end from a TOML/JSON config (recon, B1, TSC, QC report)")
    p.add_argument("config", help="TOML or JSON: [input] scan, traj, b1_scan_a, b1_scan_2a, vials, vial_mask, "
                                  "labels, tissue_gm, tissue_wm, tissue_csf, atlas, atlas_table, anat; [recon], "
                                  "[b1], [quant] options (as the command-line options, "
                                  "with '_' for '-'); [output] dir")
    p.add_argument("-o", "--out", default=None, help="output folder (default: the config's [output] dir)")
    _add_step_options(p, suppress=True)
    _add_output_options(p, exclude=(), suppress=True)
    p.set_defaults(func=run_run)


def run_run(args) -> int:
    job, options, outdir = load_run_config(args.config)
    # options given on the command line override the config's
    options = RunOptions(recon=replace(options.recon, **given(ReconOptions, args)),
                         quant=replace(options.quant, **given(QuantOptions, args, exclude=QUANT_EXCLUDED)),
                         b1=replace(options.b1, **given(B1Options, args, prefix="b1-")),
                         output=replace(options.output, **given(OutputOptions, args)))
    _print_outputs(process_scan(job, args.out or outdir, options))
    return EXIT_OK


def add_batch(sub) -> None:
    p = sub.add_parser("batch", help="process the scans of a manifest (process pool or Dask cluster)")
    p.add_argument("manifest", help="CSV (id,scan,traj[,b1_scan_a,b1_scan_2a,vials,vial_mask,labels,tissue_gm,"
                                    "tissue_wm,tissue_csf,atlas,atlas_table,anat]), TOML or JSON; "
                                    "scan: twix or ISMRMRD .h5; traj: " + TRAJ_HELP.split(": ", 1)[1])
    p.add_argument("-o", "--out", required=True, help="output root: results in OUT/<id>/, OUT/summary.csv")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores / threads, capped by memory)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="threads in each worker (default: cores / workers)")
    p.add_argument("--dask", default=None, metavar="ADDRESS", help="'local' for a LocalCluster or tcp://HOST:PORT")
    _add_step_options(p)
    _add_output_options(p, exclude=("reference_dicom",))
    p.add_argument("--layout", choices=["flat", "bids"], default="flat",
                   help="flat: OUT/<id>/; bids: BIDS-style derivatives OUT/sub-<id>[/ses-<ses>]/anat/ "
                        "(manifest columns subject, session) (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_batch_cmd)


def run_batch_cmd(args) -> int:
    for name in ("workers", "threads_per_worker"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    options = RunOptions(recon=from_args(ReconOptions, args), quant=from_args(QuantOptions, args, exclude=QUANT_EXCLUDED),
                         b1=from_args(B1Options, args, prefix="b1-"), output=from_args(OutputOptions, args))
    results = run_batch(args.manifest, args.out, options, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, dask=args.dask,
                        progress=False if args.no_progress else None, layout=args.layout)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed: {args.out}/summary.csv")
    for r in results:
        if r.status == "failed":
            print(f"  {r.id}: {r.message}", file=sys.stderr)
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


def add_dicom(sub) -> None:
    p = sub.add_parser("dicom", help="DICOM series of result images (TSC, its SD, B1, sodium) for a PACS")
    p.add_argument("images", nargs="+", help="result images .nii.gz with their sidecars (one study)")
    p.add_argument("-o", "--out", required=True, help="output folder: one subfolder of DICOM files per image")
    p.add_argument("--scan", default=None, help="the twix scan: patient, study and frame of reference "
                                                "(default: found through the sidecars' inputs)")
    _add_output_options(p, exclude=("dicom",))
    p.set_defaults(func=run_dicom)


def run_dicom(args) -> int:
    out = from_args(OutputOptions, args)
    scan = args.scan or find_scan(args.images[0])
    if args.scan is not None and not Path(args.scan).is_file():
        raise InputError(f"scan not found: {args.scan}")
    for p in args.images:
        if not Path(p).is_file():
            raise InputError(f"image not found: {p}")
    seed = sha256_file(scan) if scan is not None else sha256_file(args.images[0])
    ident = identity_for(scan, out.reference_dicom, out.deidentify, out.subject_id, seed=seed)
    for p in args.images:
        res = export_dicom(p, args.out, ident, burned_in=not out.reduce_paths)
        _print_outputs({f"{Path(p).name} {k}": v for k, v in res.items()})
    return EXIT_OK


def add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise a twix or ISMRMRD file (measurements, nucleus, dimensions, ...)")
    p.add_argument("scan", help="Siemens twix .dat or ISMRMRD .h5 file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run_info)


def run_info(args) -> int:
    d = describe_scan_file(args.scan)
    print(json.dumps(d, indent=2) if args.json else format_scan_description(d))
    return EXIT_OK


SUBCOMMANDS = [add_demo, add_simulate, add_traj, add_recon, add_info, add_b1map, add_b0map, add_quantify, add_run, add_batch,
               add_dicom]
