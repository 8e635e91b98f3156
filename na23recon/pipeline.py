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


def trajectory_to_coord(k_per_m: np.ndarray, fov_mm, matrix: tuple[int, int, int]) -> np.ndarray:
    """k (nreadout, nsample, 3) in 1/m -> float32 cycles/FOV for the NUFFT; refuse k far beyond kmax.

    Samples out to sqrt(3) * N/2 (the corners of the Cartesian cube) are allowed; beyond the NUFFT's
    grid would wrap, which means a trajectory in the wrong units.
    """
    fov_m = np.asarray(fov_mm, dtype=np.float64) * 1e-3
    coord = (np.asarray(k_per_m, dtype=np.float64) * fov_m).astype(np.float32)
    kmax = np.abs(coord).max(axis=(0, 1))
    half = np.asarray(matrix) / 2
    if np.any(kmax > half * 1.75):
        raise InputError(f"trajectory reaches {np.round(kmax, 1).tolist()} cycles/FOV but a matrix of "
                         f"{list(matrix)} ends at +-{half.tolist()}: is k in 1/m (DESIGN.md)?")
    if np.any(kmax > half * 1.01):
        log.warning("trajectory extends to %s cycles/FOV beyond the matrix edge %s", kmax, half)
    return coord


def recon_file(scan_path: str | os.PathLike, traj_path: str | os.PathLike, out_path: str | os.PathLike,
               matrix: int | None = None, method: str = "adjoint", echo: int | None = None,
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
    from .io.twix import read_scan
    from .traj.dcf import dcf_radial_shells

    t0 = time.perf_counter()
    out_path = Path(out_path)
    if not (out_path.name.endswith(".nii.gz") or out_path.name.endswith(".nii")):
        raise InputError(f"output must be a .nii.gz or .nii file, got {out_path.name}")
    from .recon.app import check_options

    check_options(method, coil_combine, lam, iters, coil_compress, maps, tol, t2s_ms)
    scan = read_scan(scan_path, allow_nucleus=allow_nucleus)
    traj = load_traj(traj_path)
    info = scan.info
    if (traj.k.shape[0], traj.k.shape[1]) != (scan.nreadout, scan.nsample):
        raise InputError(f"trajectory has {traj.k.shape[0]} readouts x {traj.k.shape[1]} samples but the scan "
                         f"has {scan.nreadout} readouts x {scan.nsample} samples")
    n = int(matrix) if matrix is not None else int(info.matrix[0])
    if not 8 <= n <= 512:
        raise InputError(f"matrix must be between 8 and 512, got {n}")
    shape = (n, n, n)
    coord = trajectory_to_coord(traj.k, info.fov_mm, shape)
    dcf = traj.dcf if traj.dcf is not None else dcf_radial_shells(coord)
    necho = scan.data.shape[1]
    echoes = [echo] if echo is not None else list(range(necho))
    if any(not 0 <= e < necho for e in echoes):
        raise InputError(f"echo {echo} requested but the scan has {necho} echo(es)")
    from .recon.app import reconstruct

    ksp = np.stack([scan.kspace(echo=e, rep=0) for e in echoes])
    t_s = None if getattr(traj, "t", None) is None else np.asarray(traj.t, np.float64) - np.asarray(traj.t).min()
    image, recon_info = reconstruct(ksp, coord, dcf, shape, method=method, lam=lam, iters=iters, tol=tol,
                                    coil_compress=coil_compress, coil_combine=coil_combine, maps=maps,
                                    noise=scan.noise, t_s=t_s, t2s_ms=t2s_ms, eps=eps, progress=progress)
    images = [image] if image.ndim == 3 else [image[..., i] for i in range(image.shape[-1])]
    image = images[0] if len(images) == 1 else np.stack(images, axis=-1)
    affine = affine_from_info(info, shape)
    side = base_sidecar(inputs=[scan_path, traj_path])
    acq = info.sidecar_acquisition()
    acq["te_ms"] = [acq["te_ms"][e] if e < len(acq["te_ms"]) else None for e in echoes]
    side["acquisition"] = acq
    side["recon"] = {
        "method": method, "matrix": list(shape), "eps": eps, "echoes": echoes,
        "dcf": "trajectory file" if traj.dcf is not None else "radial shell volumes (|k|^2 dk)",
        "ncoil_scan": scan.ncoil, **recon_info,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    save_nifti(out_path, image, affine, side)
    if png:
        from .qc import montage_png

        png_path = sidecar_path(out_path).with_suffix(".png")
        montage_png(png_path, image if image.ndim == 3 else image[..., 0], title=f"{Path(scan_path).name}: {method}")
    return out_path


def process_scan(job, outdir: str | os.PathLike, options: dict) -> dict[str, Path]:
    """One manifest row end to end into `outdir`: reconstruction (+ B1 map and TSC when the row
    names them). `job` has the fields of `batch.Job`; `options` holds `matrix`, `method`, `eps`.
    Returns the output paths by name."""
    outdir = Path(outdir)
    outputs: dict[str, Path] = {}
    recon = recon_file(job.scan, job.traj, outdir / "recon.nii.gz", matrix=options.get("matrix"),
                       method=options.get("method", "adjoint"), eps=options.get("eps", 1e-3),
                       allow_nucleus=bool(options.get("allow_nucleus", False)))
    outputs["recon"] = recon
    return outputs
