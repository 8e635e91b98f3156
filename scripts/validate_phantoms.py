#!/usr/bin/env python
"""Validate the whole chain on simulated phantoms and write a Markdown report.

For every trajectory x reconstruction method x SNR of the grid:

    na23recon simulate (analytic k-space, twix + traj.npz + truth)  ->  pipeline.recon_file
      ->  TSC by the product's quantification, `na23recon.quant.tsc.quantify`, with the truth's
          vial mask, each label's relaxation preset and (with B1 variation) the true B1 map: this
          isolates the reconstruction  ->  NRMSE, SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE
          Trans Image Process 2004; scikit-image) against the partial-volume truth, bias and SD
          per compartment; PNG figures (truth, reconstruction, error).

The noiseless k-space of each trajectory is computed once and reused across SNRs (only the
noise differs). Methods are discovered at run time: a method the pipeline does not know
(InputError 'unknown method') is skipped with a note in the report.

    python scripts/validate_phantoms.py -o data-sim/out/validation            # full size
    python scripts/validate_phantoms.py -o /tmp/v --quick                      # CI size
    python scripts/validate_phantoms.py -o OUT --anatomy [--traj ..] [--method ..] [--snr ..]

`--anatomy` runs instead the tissue-class validation of scripts/validate_anatomy.py: the product's
own `recon_file` + `quantify_file` (automatic vial detection, the vial and PVC calibrations, the
simulated 1H tissue maps, the per-tissue PSF) and GM/WM/CSF TSC with and without PVC.

Outputs: OUT/report.md, OUT/results.json, OUT/fig_<traj>_<method>_snr<snr>.png, and the
simulated scans and reconstructions under OUT/runs/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from na23recon import __version__  # noqa: E402
from na23recon.core import ReconOptions  # noqa: E402
from na23recon.core.nifti import load_nifti  # noqa: E402
from na23recon.errors import InputError  # noqa: E402
from na23recon.pipeline.recon_step import recon_file  # noqa: E402
from na23recon.quant.tsc import quantify  # noqa: E402
from na23recon.quant.vials import load_vials  # noqa: E402
from na23recon.sim.evaluate import compartment_stats, nrmse, ssim  # noqa: E402
from na23recon.sim.phantom import load_phantom  # noqa: E402
from na23recon.sim.scan import simulate_to_folder  # noqa: E402

METHODS = ("adjoint", "cg", "cs-tv", "cs-wavelet")
FULL = dict(matrix=64, snrs=(10.0, 20.0, 40.0), trajs=("radial", "dar", "tpi"))
QUICK = dict(matrix=32, snrs=(30.0,), trajs=("radial", "dar", "tpi"))
ACQ = dict(te_ms=0.3, tr_ms=100.0, flip_deg=90.0)
REPORT_LABELS = ("gm", "wm", "ventricle_r", "lesion")  # the CSF shell erodes away at these matrices
SHOW = {"ventricle_r": "ventricles"}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _figure(path: Path, truth: np.ndarray, tsc: np.ndarray, title: str, vmax: float) -> None:
    from na23recon.report.figures import new_figure, save_png

    z = truth.shape[2] // 2
    err = tsc - truth
    fig = new_figure((10.5, 3.6))
    ax = fig.subplots(1, 3)
    for a, img, name, kw in [(ax[0], truth, "truth (mM)", dict(cmap="gray", vmin=0, vmax=vmax)),
                             (ax[1], tsc, "reconstruction, TSC (mM)", dict(cmap="gray", vmin=0, vmax=vmax)),
                             (ax[2], err, "error (mM)", dict(cmap="RdBu_r", vmin=-vmax / 3, vmax=vmax / 3))]:
        im = a.imshow(img[:, :, z].T, origin="lower", **kw)
        a.set_title(name, fontsize=9)
        a.axis("off")
        fig.colorbar(im, ax=a, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=90)


def evaluate_run(sim: dict[str, Path], recon: Path, phantom, acq: dict, b1_variation: float) -> dict:
    """Numbers of one reconstruction against its truth.

    TSC by `quantify` (free-intercept weighted fit over the vials): with the truth's vials eroded
    by a voxel as the vial mask, every label's own relaxation preset (tissue and vials) and, with B1
    variation, the true flip-scale map (the simulated coil receives uniformly: no reciprocity).
    Uncorrected: the same calibration with every voxel taken as the vials' common medium and no B1,
    i.e. a plain vial calibration."""
    from scipy import ndimage

    img, _, _ = load_nifti(recon)
    labels = load_nifti(sim["labels"])[0].astype(int)
    truth = load_nifti(sim["truth"])[0]
    b1 = load_nifti(sim["b1"])[0] if b1_variation else None
    vials = load_vials(sim["vials"])
    # each vial's truth mask eroded by one voxel where that leaves voxels (as the compartment statistics
    # are): at matrix 32 a 20 mm vial is under 3 voxels across and its rim is mostly partial volume
    vial_mask = np.zeros(labels.shape, dtype=np.int32)
    for v in vials:
        m = labels == v.label
        core = ndimage.binary_erosion(m, iterations=1)
        vial_mask[core if core.any() else m] = v.label
    conc, names, presets = {}, {}, {}
    for c in phantom.compartments:
        conc.setdefault(c.label, c.conc_mM)
        names.setdefault(c.label, c.name)
        if c.relaxation is not None:
            presets.setdefault(c.label, c.relaxation)
    common = max(sorted({v.medium for v in vials}), key=lambda m: sum(v.medium == m for v in vials))
    acq_args = (acq["flip_deg"], acq["tr_ms"], acq["te_ms"])
    res = quantify(img, vials, *acq_args, vial_mask=vial_mask, b1=b1, reciprocity=False, tissue=common,
                   labels=labels, label_tissue=presets)
    raw = quantify(img, vials, *acq_args, vial_mask=vial_mask, tissue=common)
    tsc, tsc_raw = res.tsc.astype(np.float64), raw.tsc.astype(np.float64)
    head = labels > 0
    region = ndimage.binary_dilation(head, iterations=2)
    stats = compartment_stats(tsc, labels, conc)
    raw_stats = compartment_stats(tsc_raw, labels, conc)
    cal = res.calibration
    return {
        "nrmse": nrmse(tsc, truth, head), "ssim": ssim(tsc, truth, data_range=float(truth.max()), mask=region),
        "calibration": {"a": cal.a, "b": cal.b, "r2": cal.r2},
        "compartments": {names[lab]: s for lab, s in stats.items()},
        "compartments_uncorrected": {names[lab]: s for lab, s in raw_stats.items()},
        "_tsc": tsc, "_truth": truth,
    }


def sim_extra(traj: str, matrix: int, readout_ms: float | None, decay_truth: bool) -> dict:
    """`simulate_to_folder` arguments beyond the grid's: the TPI readout, and with decay_truth the
    truth labels on a 3x finer grid (as a 1H segmentation gives them)."""
    out = {"labels_voxel_mm": 240.0 / (3 * matrix)} if decay_truth else {}
    if traj == "tpi" and readout_ms:
        out["readout_ms"] = readout_ms
    return out


def decay_truth_options(sim: dict[str, Path], phantom) -> dict:
    """`ReconOptions` fields of the per-voxel decay model from the simulation's truth: the fine
    label map (`--decay-map`) and each label's relaxation preset (`--decay-labels`)."""
    labels = {c.label: c.relaxation for c in phantom.compartments if c.relaxation is not None}
    return {"decay_map": str(sim["labels_fine"]), "decay_labels": labels}


def run(out: Path, quick: bool = False, phantom: str = "brain", methods=METHODS, trajs=None, snrs=None,
        matrix: int | None = None, b1_variation: float = 0.0, seed: int = 0, figures: bool = True,
        recon_extra: dict | None = None, readout_ms: float | None = None, decay_truth: bool = False) -> dict:
    """Run the grid; write OUT/report.md and OUT/results.json. Returns the results dict.

    recon_extra: further `ReconOptions` fields for every method (e.g. t2s_ms, frac_short, lam; with
    t2s_ms the adjoint, which has no decay model, is left out). readout_ms: the TPI readout.
    decay_truth: the per-voxel decay model (`--decay-map`) with the simulation's truth labels on a 3x
    finer grid (as a 1H segmentation gives them; sampled into sub-voxel class fractions) and each
    label's relaxation preset (tissue and vial medium)."""
    recon_extra = dict(recon_extra or {})
    if recon_extra.get("t2s_ms") is not None or decay_truth:
        methods = [m for m in methods if m != "adjoint"]
    cfg = dict(QUICK if quick else FULL)
    trajs = tuple(trajs or cfg["trajs"])
    snrs = tuple(snrs or cfg["snrs"])
    matrix = int(matrix or cfg["matrix"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ph = load_phantom(phantom)
    t_start = time.perf_counter()
    rows, skipped, sims_info = [], {}, {}
    available = list(methods)
    cache: dict = {}
    for traj in trajs:
        for snr in snrs:
            tag = f"{traj}_snr{snr:g}"
            t0 = time.perf_counter()
            sim = simulate_to_folder(out / "runs" / tag, phantom=phantom, matrix=matrix, snr=snr, seed=seed,
                                     traj=traj, b1_variation=b1_variation, cache=cache, **ACQ,
                                     **sim_extra(traj, matrix, readout_ms, decay_truth))
            t_sim = time.perf_counter() - t0
            sims_info[traj] = json.loads(Path(sim["phantom"]).read_text())["simulation"]["scan"]
            for method in list(available):
                t0 = time.perf_counter()
                recon_path = out / "runs" / tag / f"recon_{method}.nii.gz"
                try:
                    per_voxel = decay_truth_options(sim, ph) if decay_truth else {}
                    recon_file(sim["scan"], sim["traj"], recon_path,
                               ReconOptions(method=method, **recon_extra, **per_voxel), png=False)
                except InputError as exc:
                    if "unknown method" in str(exc):
                        skipped[method] = str(exc)
                        available.remove(method)
                        continue
                    raise
                t_rec = time.perf_counter() - t0
                res = evaluate_run(sim, recon_path, ph, ACQ, b1_variation)
                fig = None
                if figures:
                    fig = f"fig_{traj}_{method}_snr{snr:g}.png"
                    _figure(out / fig, res["_truth"], res["_tsc"], f"{phantom}: {traj}, {method}, SNR {snr:g}",
                            vmax=float(res["_truth"].max()))
                rows.append({"traj": traj, "method": method, "snr": snr, "nrmse": res["nrmse"], "ssim": res["ssim"],
                             "calibration": res["calibration"], "compartments": res["compartments"],
                             "compartments_uncorrected": res["compartments_uncorrected"],
                             "seconds_sim": round(t_sim, 2), "seconds_recon": round(t_rec, 2), "figure": fig})
    results = {"phantom": phantom, "matrix": matrix, "fov_mm": 240.0, "acquisition": ACQ, "b1_variation": b1_variation,
               "trajectories": list(trajs), "snrs": list(snrs), "methods_run": available, "methods_skipped": skipped,
               "seed": seed, "quick": quick, "rows": rows, "simulation": sims_info,
               "recon_options": recon_extra, "tpi_readout_ms": readout_ms, "decay_truth_labels": decay_truth,
               "version": __version__, "commit": _git_commit(), "seconds": round(time.perf_counter() - t_start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "report.md").write_text(markdown_report(results))
    return results


def main_table(results: dict) -> str:
    """The report's main table: one row per trajectory x method x SNR."""
    head = ["trajectory", "method", "SNR", "NRMSE", "SSIM"] + [f"{SHOW.get(c, c)} bias % (SD mM)" for c in REPORT_LABELS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["traj"], r["method"], f"{r['snr']:g}", f"{r['nrmse']:.3f}", f"{r['ssim']:.3f}"]
        for c in REPORT_LABELS:
            s = r["compartments"].get(c)
            cells.append(f"{s['bias_pct']:+.1f} ({s['sd']:.1f})" if s else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict) -> str:
    r0 = results["rows"]
    L = [f"# na23recon phantom validation ({results['phantom']}, matrix {results['matrix']})", "",
         f"na23recon {results['version']} (commit {results['commit']}), Python {platform.python_version()}, "
         f"{results['seconds']} s. Reproduce: `python scripts/validate_phantoms.py -o OUT"
         f"{' --quick' if results['quick'] else ''}"
         f"{' --b1-variation ' + str(results['b1_variation']) if results['b1_variation'] else ''}` "
         f"(seed {results['seed']}).", "",
         "Chain: analytic k-space (closed-form ellipsoid/cylinder transforms with each sample's biexponential "
         "T2* decay; no NUFFT in the simulator) -> twix + traj.npz -> `pipeline.recon_file` -> TSC by the "
         "product's `quant.tsc.quantify` (weighted linear fit over the reference vials, each voxel divided "
         "by the spoiled-GRE weight of its label's relaxation preset; vial mask: the truth's vials eroded by "
         "one voxel"
         + (", B1 from truth_b1" if results["b1_variation"] else "") + "). "
         "So the numbers measure the reconstruction (resolution, T2* blurring, noise), not the relaxation model.",
         "",
         f"Acquisition: TE {results['acquisition']['te_ms']} ms, TR {results['acquisition']['tr_ms']} ms, flip "
         f"{results['acquisition']['flip_deg']} deg, FOV {results['fov_mm']} mm, one coil; SNR = image SNR of the "
         "brightest compartment for an adjoint reconstruction.", "",
         "NRMSE: ||TSC - truth|| / ||truth|| over the phantom (truth: partial-volume concentration, 27 points "
         "per voxel). SSIM: Wang, Bovik, Sheikh & Simoncelli, IEEE Trans Image Process 2004 (scikit-image), "
         "Gaussian window sigma 1.5 voxels, L = max truth, mean over the phantom dilated by 2 voxels. Bias and SD per compartment over its mask eroded by one voxel.", "",
         "## Main table", "", main_table(results), ""]
    if results["methods_skipped"]:
        L += ["Methods skipped (not available in this build):", ""]
        L += [f"- `{m}`: {msg}" for m, msg in results["methods_skipped"].items()]
        L += [""]
    L += ["## Without relaxation correction (vial calibration only)", "",
          "Tissue relaxes differently from the agar vials, so a plain vial calibration is biased (Boada et al., "
          "Magn Reson Med 1994); the quantification step (quant/) corrects for it. Here `quantify` takes every "
          "voxel as the vials' medium and no B1 map.", ""]
    head = ["trajectory", "method", "SNR"] + [f"{SHOW.get(c, c)} bias %" for c in REPORT_LABELS]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in r0:
        cells = [r["traj"], r["method"], f"{r['snr']:g}"]
        cells += [f"{r['compartments_uncorrected'][c]['bias_pct']:+.1f}" if c in r["compartments_uncorrected"]
                  else "n/a" for c in REPORT_LABELS]
        L.append("| " + " | ".join(cells) + " |")
    L += ["", "## All compartments (relaxation-corrected TSC, mM)", ""]
    for r in r0:
        L += [f"**{r['traj']}, {r['method']}, SNR {r['snr']:g}** (vial fit a = {r['calibration']['a']:.4g}, "
              f"b = {r['calibration']['b']:.3g}, R^2 = {r['calibration']['r2']:.4f}; simulate "
              f"{r['seconds_sim']} s, recon {r['seconds_recon']} s)", "",
              "| compartment | true | mean | SD | bias % | voxels |", "|---|---|---|---|---|---|"]
        for name, s in r["compartments"].items():
            L.append(f"| {name} | {s['true']:g} | {s['mean']:.1f} | {s['sd']:.1f} | {s['bias_pct']:+.1f} | {s['voxels']} |")
        L += [""]
    L += ["## Simulation details", ""]
    for traj, info in results["simulation"].items():
        L.append(f"- {traj}: field series {info['field_series']}, fit residual "
                 f"{max(info['field_fit_residual'].values()):.2g} (worst compartment), noise sigma "
                 f"{info.get('noise', {}).get('sigma', 0):.3g}")
    L += ["", "## Figures (central axial slice)", ""]
    for r in r0:
        if r["figure"]:
            L += [f"![{r['traj']} {r['method']} SNR {r['snr']:g}]({r['figure']})", ""]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--out", default=str(ROOT / "data-sim" / "out" / "validation"), help="output folder")
    p.add_argument("--quick", action="store_true", help="CI size: matrix 32, one SNR")
    p.add_argument("--phantom", default="brain")
    p.add_argument("--matrix", type=int, default=None)
    p.add_argument("--snr", type=float, action="append", default=None, help="repeat for several")
    p.add_argument("--traj", action="append", choices=["radial", "dar", "tpi"], default=None, help="repeat for several")
    p.add_argument("--method", action="append", default=None, help="repeat for several (default: all known)")
    p.add_argument("--b1-variation", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anatomy", action="store_true", help="GM/WM/CSF TSC with and without PVC through quantify "
                   "(scripts/validate_anatomy.py; matrix 64 unless --matrix)")
    p.add_argument("--t2s-ms", type=float, nargs="+", default=None, help="decay model of the iterative methods: "
                   "one T2* or short and long (ms); leaves out the adjoint")
    p.add_argument("--frac-short", type=float, default=None, help="short fraction with two T2* values")
    p.add_argument("--lam", type=float, default=None, help="regularisation (default: each method's)")
    p.add_argument("--readout-ms", type=float, default=None, help="TPI readout duration (default: the fastest)")
    p.add_argument("--decay-truth", action="store_true", help="per-voxel decay model (--decay-map) from the truth "
                   "labels, each label's relaxation preset; leaves out the adjoint")
    p.add_argument("--decay-target", default=None, help="the decay model's target decay (preset or T2* ms)")
    p.add_argument("--discrepancy", type=float, default=None, help="CG's discrepancy stopping (0: off, run to the "
                   "tolerance; at SNR 30 the rule stops CG after 1-2 iterations for some noise seeds, 15 for others)")
    a = p.parse_args(argv)
    if a.anatomy:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import validate_anatomy

        args = ["-o", a.out, "--matrix", str(a.matrix or 64), "--seed", str(a.seed)]
        for flag, vals in (("--traj", a.traj), ("--method", a.method), ("--snr", a.snr)):
            for v in vals or ():
                args += [flag, str(v)]
        return validate_anatomy.main(args)
    res = run(Path(a.out), quick=a.quick, phantom=a.phantom, methods=a.method or METHODS, trajs=a.traj,
              snrs=a.snr, matrix=a.matrix, b1_variation=a.b1_variation, seed=a.seed, readout_ms=a.readout_ms,
              recon_extra={k: v for k, v in (("t2s_ms", a.t2s_ms), ("frac_short", a.frac_short), ("lam", a.lam),
                                             ("decay_target", a.decay_target), ("discrepancy", a.discrepancy))
                           if v is not None},
              decay_truth=a.decay_truth)
    print(main_table(res))
    if res["methods_skipped"]:
        print("skipped: " + ", ".join(res["methods_skipped"]))
    print(f"report: {Path(a.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
