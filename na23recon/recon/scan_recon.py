"""Reconstruct a `Scan` with its `Trajectory` into an `Image`: the reconstruction's public entry.

Chooses the data (echoes, one repetition or the k-space mean of all), the matrix (below the
acquired one, the samples beyond the new k-space edge are dropped; above it, the image is
interpolated: a logged warning and `recon.interpolated` in the sidecar), the density compensation
(the trajectory's, else the radial shell volumes), runs `recon.app.reconstruct_arrays` and puts
the result on the scan's geometry with a sidecar that says what was done.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..core import Image, ReconOptions, Scan, Trajectory
from ..errors import InputError
from ..traj.dcf import dcf_radial_shells
from .app import reconstruct_arrays

log = logging.getLogger(__name__)

MIN_MATRIX, MAX_MATRIX = 8, 512


def reconstruct(scan: Scan, traj: Trajectory, options: ReconOptions | None = None,
                progress: bool | None = None) -> Image:
    """Reconstruct the coil-combined magnitude image of `scan`.

    Args:
        scan: k-space (nrep, necho, ncoil, nreadout, nsample) with its Acquisition (geometry needed).
        traj: the scan's trajectory, k in 1/m, (nreadout, nsample, 3).
        options: `ReconOptions` (default: adjoint at the protocol's matrix).

    Returns:
        Image float32 (N, N, N) or (N, N, N, necho) on the scan's RAS affine; `meta` holds the
        sidecar blocks `acquisition` and `recon` (method, matrix, DCF, noise, coils, solver log).
        Provenance (version, command, input checksums) is the caller's: it knows the files.

    Raises InputError when the trajectory does not fit the scan, the units are wrong, or an option
    does not fit the data (echo, repetition, coil count).
    """
    opts = options or ReconOptions()
    t0 = time.perf_counter()
    acq = scan.acquisition
    if acq.geometry is None:
        raise InputError("the scan's header gives no field of view / matrix: cannot place the image")
    scan.check_trajectory(traj)
    geom = acq.geometry
    base = int(geom.matrix[0])
    n = int(opts.matrix) if opts.matrix is not None else base
    if not MIN_MATRIX <= n <= MAX_MATRIX:
        raise InputError(f"matrix must be between {MIN_MATRIX} and {MAX_MATRIX}, got {n}")
    shape = (n, n, n)
    traj.check_reach(geom.fov_mm, base)
    interpolated = None
    if n > base:  # no sample lies beyond the acquired edge: a finer grid interpolates, it does not resolve
        interpolated = {"acquired_matrix": base, "factor": round(n / base, 4),
                        "note": "matrix above the acquired resolution: k-space zero-filled beyond its edge "
                                "(sinc interpolation), voxels smaller than the resolution"}
        log.warning("--matrix %d is above the acquired matrix %d: the image is interpolated (%.2fx), not finer",
                    n, base, n / base)
    dcf_source = "trajectory file" if traj.dcf is not None else "radial shell volumes (|k|^2 dk)"
    if traj.dcf is None:
        traj = traj.with_dcf(dcf_radial_shells(traj.coord(geom.fov_mm)))
    used, sel = traj.crop(n, geom.fov_mm)
    necho, nrep = scan.necho, scan.nrep
    echoes = [opts.echo] if opts.echo is not None else list(range(necho))
    if any(not 0 <= e < necho for e in echoes):
        raise InputError(f"echo {opts.echo} requested but the scan has {necho} echo(es)")
    if opts.rep is not None and not 0 <= opts.rep < nrep:
        raise InputError(f"repetition {opts.rep} requested but the scan has {nrep} repetition(s)/average(s)")
    if opts.rep is None and nrep > 1:
        log.info("averaging %d repetitions/averages in k-space", nrep)

    def echo_kspace(e: int) -> np.ndarray:
        # repetitions and averages (twix Rep x Ave) are averaged in k-space unless one is chosen
        k = scan.data[opts.rep, e] if opts.rep is not None else (
            scan.data[0, e] if nrep == 1 else scan.data[:, e].mean(axis=0))
        return k if sel is None else sel.apply(k, lead=1)

    ksp = np.stack([echo_kspace(e) for e in echoes])
    coord = used.coord(geom.fov_mm)
    image, info = reconstruct_arrays(ksp, coord, used.dcf, shape, opts, noise=scan.noise,
                                     t_s=used.sample_times(), progress=progress)
    meta = {
        "acquisition": acq.sidecar(echoes=echoes),
        "recon": {
            **info, "matrix": list(shape), "eps": opts.eps, "echoes": echoes,
            "samples_used": int(coord.size // coord.shape[-1]), "dcf": dcf_source, "ncoil_scan": scan.ncoil,
            "repetitions": {"in_scan": nrep, "used": [opts.rep] if opts.rep is not None else list(range(nrep)),
                            "combined": "single" if opts.rep is not None or nrep == 1 else "k-space mean"},
            **({"interpolated": interpolated} if interpolated else {}),
            "options": opts.to_dict(),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    }
    return Image(image, geom.affine(shape), meta)
