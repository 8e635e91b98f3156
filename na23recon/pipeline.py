"""One scan end to end: read, reconstruct, write the NIfTI with its sidecar and QC figure."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.nifti import save_nifti, sidecar_path
from .provenance import base_sidecar

log = logging.getLogger(__name__)


def trajectory_to_coord(k_per_m: np.ndarray, fov_mm, base_matrix: int) -> np.ndarray:
    """k (nreadout, nsample, 3) in 1/m -> float32 cycles/FOV for the NUFFT, checked against the
    protocol's base resolution N (`ScanInfo.matrix[0]`): its kmax is N/2 cycles/FOV along every
    axis of these isotropic 3D acquisitions. A trajectory reaching far beyond N/2 (more than the
    sqrt(3) of the cube's corners), or not even to half of it, is in the wrong units (cycles/FOV
    or 1/mm instead of 1/m, or normalised to kmax)."""
    from .traj.radial import to_cycles_per_fov

    coord = to_cycles_per_fov(k_per_m, np.asarray(fov_mm, dtype=np.float64) * 1e-3)
    reach = float(np.sqrt(np.max(np.sum(coord.astype(np.float64) ** 2, axis=-1))))
    half = float(base_matrix) / 2
    if not 0.5 * half <= reach <= 1.75 * half:
        raise InputError(f"trajectory reaches |k| = {reach:.3g} cycles/FOV but the protocol's matrix {int(base_matrix)} "
                         f"ends at {half:g}: is k in 1/m (DESIGN.md)?")
    if reach > half * 1.02:
        log.warning("trajectory extends to %.3g cycles/FOV, beyond the matrix edge %g", reach, half)
    return coord


def crop_to_matrix(coord: np.ndarray, n: int) -> tuple[slice, ...] | np.ndarray | None:
    """Which samples to keep for a reconstruction at a lower matrix n than acquired: those inside
    the ball |k| <= n/2 (cycles/FOV). None when every sample fits.

    Centre-out readouts that share one radial profile (radial, DA-radial, TPI) are cut at one
    sample index, keeping the (nreadout, nsample) layout: returns an index tuple. Otherwise a
    boolean mask over coord.shape[:-1] (the caller flattens the kept samples into one list).
    """
    r = np.sqrt(np.sum(np.asarray(coord, dtype=np.float64) ** 2, axis=-1))
    if r.max() <= n / 2 * 1.02:
        return None
    if r.ndim == 2 and np.all(np.diff(r, axis=1) >= -1e-6) and np.ptp(r, axis=0).max() < 1e-3 * r.max():
        s = int(np.searchsorted(r.max(axis=0), n / 2, side="right"))
        log.info("matrix %d: keeping the first %d of %d samples of each readout", n, s, r.shape[1])
        return (slice(None), slice(0, s))
    keep = r <= n / 2
    log.info("matrix %d: keeping %d of %d samples inside |k| <= %g cycles/FOV", n, keep.sum(), keep.size, n / 2)
    return keep


def _select(a: np.ndarray, keep, lead: int = 0) -> np.ndarray:
    """Apply `crop_to_matrix`'s selection to the sample axes of `a` (after `lead` leading axes);
    a boolean mask gives one "readout" (1, M) holding every kept sample."""
    if keep is None:
        return a
    idx = (slice(None),) * lead
    if isinstance(keep, tuple):
        return a[idx + keep]
    return a[idx + (keep,)][idx + (None,)]


RECON_OPTIONS = ("matrix", "method", "eps", "lam", "iters", "tol", "coil_compress", "coil_combine", "maps",
                 "t2s_ms", "allow_nucleus", "rep")


def check_recon_options(opts: dict) -> None:
    """Refuse bad `recon_file` options (InputError) before any work: `opts` holds RECON_OPTIONS keys."""
    from .recon.app import check_options

    unknown = set(opts) - set(RECON_OPTIONS)
    if unknown:
        raise InputError(f"unknown reconstruction option(s) {sorted(unknown)}; known: {list(RECON_OPTIONS)}")
    for key in ("matrix", "iters", "coil_compress", "rep"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise InputError(f"{key} must be a whole number, got {v!r}")
    for key in ("lam", "tol", "eps"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(f"{key} must be a number, got {v!r}")
    m = opts.get("matrix")
    if m is not None and not 8 <= m <= 512:
        raise InputError(f"matrix must be between 8 and 512, got {m}")
    eps = opts.get("eps")
    if eps is not None and not 1e-7 <= eps <= 0.1:
        raise InputError(f"NUFFT tolerance eps must be between 1e-7 and 0.1, got {eps}")
    if opts.get("rep") is not None and opts["rep"] < 0:
        raise InputError(f"repetition must be >= 0, got {opts['rep']}")
    check_options(opts.get("method", "adjoint"), opts.get("coil_combine"), opts.get("lam"), opts.get("iters"),
                  opts.get("coil_compress"), opts.get("maps", "walsh"), opts.get("tol", 1e-4), opts.get("t2s_ms"))


def check_output_path(path: Path, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse, before any work, an output whose name or folder cannot be used (InputError)."""
    from .io.atomic import ensure_writable_dir

    if suffixes and not any(path.name.endswith(s) for s in suffixes):
        raise InputError(f"output must end in {' or '.join(suffixes)}, got {path.name}")
    if path.is_dir():
        raise InputError(f"output {path} is a folder, expected a file name")
    ensure_writable_dir(path.parent)


def recon_file(scan_path: str | os.PathLike, traj_path: str | os.PathLike, out_path: str | os.PathLike,
               matrix: int | None = None, method: str = "adjoint", echo: int | None = None, rep: int | None = None,
               allow_nucleus: bool = False, png: bool = True, eps: float = 1e-3, lam: float | None = None,
               iters: int | None = None, tol: float = 1e-4, coil_compress: int | None = None,
               coil_combine: str | None = None, maps: str = "walsh", t2s_ms=None,
               progress: bool | None = None) -> Path:
    """Reconstruct a twix scan with its trajectory file into `out_path` (.nii.gz) + sidecar (+ PNG).

    The image is the coil-combined magnitude, (x, y, z) or (x, y, z, echo) for several echoes, on
    the scan's FOV with `matrix`^3 voxels (default: the protocol's matrix). `method` is adjoint,
    cg, cs-tv or cs-wavelet; the other options go to `recon.app.reconstruct` (noise prewhitening
    from the scan's noise-adjust samples, coil compression, maps, lambda relative to the noise).
    """
    from .io.geometry import affine_from_info
    from .io.trajfile import load_traj
    from .io.twix import check_traj_matches, read_scan
    from .traj.dcf import dcf_radial_shells

    t0 = time.perf_counter()
    out_path = Path(out_path)
    check_recon_options({"matrix": matrix, "method": method, "eps": eps, "lam": lam, "iters": iters, "tol": tol,
                         "coil_compress": coil_compress, "coil_combine": coil_combine, "maps": maps,
                         "t2s_ms": t2s_ms, "rep": rep})
    check_output_path(out_path, (".nii.gz", ".nii"))
    scan = read_scan(scan_path, allow_nucleus=allow_nucleus)
    traj = load_traj(traj_path)
    info = scan.info
    check_traj_matches(scan, traj.k)
    n = int(matrix) if matrix is not None else int(info.matrix[0])
    if not 8 <= n <= 512:
        raise InputError(f"matrix must be between 8 and 512, got {n}")
    shape = (n, n, n)
    coord = trajectory_to_coord(traj.k, info.fov_mm, info.matrix[0])
    dcf = traj.dcf if traj.dcf is not None else dcf_radial_shells(coord)
    keep = crop_to_matrix(coord, n)  # lower resolution than acquired: the samples inside the new kmax
    coord, dcf = _select(coord, keep), _select(np.asarray(dcf), keep)
    necho = scan.data.shape[1]
    echoes = [echo] if echo is not None else list(range(necho))
    if any(not 0 <= e < necho for e in echoes):
        raise InputError(f"echo {echo} requested but the scan has {necho} echo(es)")
    from .recon.app import reconstruct

    nrep = scan.data.shape[0]
    if rep is not None and not 0 <= rep < nrep:
        raise InputError(f"repetition {rep} requested but the scan has {nrep} repetition(s)/average(s)")

    def _echo_kspace(e: int) -> np.ndarray:
        # repetitions and averages (twix Rep x Ave) are averaged in k-space unless one is chosen
        k = scan.data[rep, e] if rep is not None else (scan.data[0, e] if nrep == 1 else scan.data[:, e].mean(axis=0))
        return _select(k, keep, lead=1)

    if rep is None and nrep > 1:
        log.info("averaging %d repetitions/averages in k-space", nrep)
    ksp = np.stack([_echo_kspace(e) for e in echoes])
    t_s = None
    if getattr(traj, "t", None) is not None:  # sample times from the first sample (the echo)
        t_s = np.asarray(traj.t, np.float64) - float(np.min(traj.t))
        if keep is not None:
            t_s = _select(np.broadcast_to(t_s, (scan.nreadout, scan.nsample)), keep)
    image, recon_info = reconstruct(ksp, coord, dcf, shape, method=method, lam=lam, iters=iters, tol=tol,
                                    coil_compress=coil_compress, coil_combine=coil_combine, maps=maps,
                                    noise=scan.noise, t_s=t_s, t2s_ms=t2s_ms, eps=eps, progress=progress)
    affine = affine_from_info(info, shape)
    side = base_sidecar(inputs=[scan_path, traj_path])
    acq = info.sidecar_acquisition()
    acq["te_ms"] = [acq["te_ms"][e] if e < len(acq["te_ms"]) else None for e in echoes]
    side["acquisition"] = acq
    side["recon"] = {
        "method": method, "matrix": list(shape), "eps": eps, "echoes": echoes,
        "samples_used": int(coord.size // coord.shape[-1]),
        "dcf": "trajectory file" if traj.dcf is not None else "radial shell volumes (|k|^2 dk)",
        "ncoil_scan": scan.ncoil, **recon_info,
        "repetitions": {"in_scan": nrep, "used": [rep] if rep is not None else list(range(nrep)),
                        "combined": "single" if rep is not None or nrep == 1 else "k-space mean"},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    save_nifti(out_path, image, affine, side)
    if png:
        from .report.figures import montage_png

        png_path = sidecar_path(out_path).with_suffix(".png")
        montage_png(png_path, image if image.ndim == 3 else image[..., 0], title=f"{Path(scan_path).name}: {method}")
    return out_path


def process_scan(job, outdir: str | os.PathLike, options: dict) -> dict[str, Path]:
    """One scan end to end into `outdir`: reconstruction, then the double-angle B1 map when the job
    names a scan pair, then the TSC map when it names vials, then `report.html`.

    job: an object with the fields of `batch.Job` (scan, traj, b1_scan_a, b1_scan_2a, vials,
    vial_mask, labels; absolute paths or None). options: `recon_file` keywords (matrix, method,
    eps, lam, iters, tol, coil_compress, coil_combine, maps, t2s_ms, allow_nucleus) and for
    quantification `tissue`, `intercept`. Returns output paths by name.
    """
    if bool(job.b1_scan_a) != bool(job.b1_scan_2a):
        raise InputError("a B1 map needs both b1_scan_a and b1_scan_2a")
    if (job.vial_mask or job.labels) and not job.vials:
        raise InputError("vial_mask and labels need a vials file to quantify TSC")
    outdir = Path(outdir)
    outputs: dict[str, Path] = {}
    matrix = options.get("matrix")
    rec = {k: v for k, v in options.items() if k in RECON_OPTIONS and v is not None}
    outputs["recon"] = recon_file(job.scan, job.traj, outdir / "recon.nii.gz", **rec)
    b1 = None
    if job.b1_scan_a:
        from .quantify import b1map_file

        res = b1map_file(job.b1_scan_a, job.b1_scan_2a, outdir / "b1.nii.gz", traj_path=job.traj, matrix=matrix)
        b1 = outdir / "b1.nii.gz"
        outputs.update({f"b1_{k}" if not k.startswith("b1") else k: Path(v) for k, v in res.items()})
    if job.vials:
        from .quantify import quantify_file

        res = quantify_file(outputs["recon"], outdir / "tsc.nii.gz", job.vials, vial_mask_path=job.vial_mask,
                            b1_path=b1, labels_path=job.labels, tissue=options.get("tissue", "gm"),
                            intercept=options.get("intercept", "fit"))
        outputs.update({f"tsc_{k}" if not k.startswith("tsc") else k: Path(v) for k, v in res.items()})
    from .report.html import html_report

    outputs["report"] = html_report(outdir / "report.html", f"na23recon: {Path(job.scan).name}", outputs)
    return outputs


def load_run_config(path: str | os.PathLike):
    """Read a `na23recon run` TOML config: [input] (scan, traj, b1_scan_a, b1_scan_2a, vials,
    vial_mask, labels; relative to the config file), [recon] (method, matrix, eps, allow_nucleus),
    [quant] (tissue, intercept), [output] (dir). Returns (job, options, outdir)."""
    from .jobs import PATH_FIELDS, Job, load_toml

    path = Path(path)
    cfg = load_toml(path, "config")
    known = {"input": PATH_FIELDS, "recon": RECON_OPTIONS, "quant": ("tissue", "intercept"), "output": ("dir",)}
    for sec, val in cfg.items():
        if sec not in known:
            raise InputError(f"config {path.name}: unknown section [{sec}]; known: {sorted(known)}")
        if not isinstance(val, dict):
            raise InputError(f"config {path.name}: [{sec}] must be a table of keys")
        bad = set(val) - set(known[sec])
        if bad:
            raise InputError(f"config {path.name} [{sec}]: unknown key(s) {sorted(bad)}; known: {list(known[sec])}")
    inp = cfg.get("input", {})
    if not inp.get("scan") or not inp.get("traj"):
        raise InputError(f"config {path.name} [input] needs scan and traj")
    for f, v in inp.items():
        if not isinstance(v, str):
            raise InputError(f"config {path.name} [input]: {f} must be a path string, got {v!r}")
    paths = {f: str((path.parent / str(inp[f])).resolve()) if inp.get(f) else None for f in PATH_FIELDS}
    for f, p in paths.items():
        if p and not Path(p).is_file():
            raise InputError(f"config {path.name}: {f} not found: {p}")
    job = Job(id=path.stem, **paths)
    rec, qua = cfg.get("recon", {}), cfg.get("quant", {})
    if qua.get("intercept", "fit") not in ("fit", "zero", "noise-floor"):
        raise InputError(f"config {path.name} [quant]: intercept must be fit, zero or noise-floor, got {qua['intercept']!r}")
    if not isinstance(qua.get("tissue", "gm"), str):
        raise InputError(f"config {path.name} [quant]: tissue must be a preset name, got {qua['tissue']!r}")
    from .recon.app import check_options

    if isinstance(rec.get("t2s_ms"), list):  # TOML arrays: (short, long) T2* in ms
        rec["t2s_ms"] = tuple(rec["t2s_ms"]) if len(rec["t2s_ms"]) == 2 else rec["t2s_ms"][0]
    check_recon_options(rec)
    options = {**rec, "tissue": qua.get("tissue", "gm"), "intercept": qua.get("intercept", "fit")}
    check_options(rec.get("method", "adjoint"), rec.get("coil_combine"), rec.get("lam"), rec.get("iters"),
                  rec.get("coil_compress"), rec.get("maps", "walsh"), rec.get("tol", 1e-4), rec.get("t2s_ms"))
    outdir = path.parent / cfg.get("output", {}).get("dir", path.stem + "-out")
    return job, options, outdir
