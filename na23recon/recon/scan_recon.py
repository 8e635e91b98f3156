"""Reconstruct a `Scan` with its `Trajectory` into an `Image`: the reconstruction's public entry.

Chooses the data (echoes, one repetition or the k-space mean of all), the layout (`recon.layout`:
a 2D slice when kz = 0, a stack of planes when kz sits on Cartesian partitions, else 3D), the
matrix per axis from the protocol (below the acquired one, the samples beyond the new k-space
edge are dropped; above it, the image is interpolated: a logged warning and `recon.interpolated`
in the sidecar), the density compensation (the trajectory's, else `layout.default_dcf`), runs
`recon.app.reconstruct_arrays` and puts the result on the scan's geometry with a sidecar that
says what was done.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from ..core import Image, ReconOptions, Scan, Trajectory
from ..errors import InputError
from ..traj.dcf import normalise_dcf
from .app import reconstruct_arrays
from .b0 import load_b0_map
from .decay import classes_from_options, named_decay, target_decay
from .delay import gradient_delay_step
from .layout import default_dcf, kspace_layout

log = logging.getLogger(__name__)

MIN_MATRIX, MAX_MATRIX = 8, 512
LAYOUT_TEXT = {"2d": "2D slice (kz = 0)", "stack": "stack of 2D planes on Cartesian partitions (kz on the grid)",
               "3d": "3D"}


def reconstruct(scan: Scan, traj: Trajectory, options: ReconOptions | None = None,
                progress: bool | None = None) -> Image:
    """Reconstruct the coil-combined magnitude image of `scan`.

    Args:
        scan: k-space (nrep, necho, ncoil, nreadout, nsample) with its Acquisition (geometry needed).
        traj: the scan's trajectory, k in 1/m, (nreadout, nsample, 3).
        options: `ReconOptions` (default: adjoint at the protocol's matrix).

    Returns:
        Image float32 (Nx, Ny, Nz) or (Nx, Ny, Nz, necho) on the scan's RAS affine (Nz = 1 for a
        2D slice, the number of slices for a multi-slice 2D scan, each reconstructed on its own and
        stacked in their order along the normal, the protocol's partitions for a stack of stars); `meta` holds the
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
    if scan.nslices > 1 and traj.nreadout == scan.nreadout:
        traj = _one_slice(traj, scan.nslices)
    scan.check_trajectory(traj)
    geom = acq.geometry
    base = int(geom.matrix[0])
    n = int(opts.matrix) if opts.matrix is not None else base
    if not MIN_MATRIX <= n <= MAX_MATRIX:
        raise InputError(f"matrix must be between {MIN_MATRIX} and {MAX_MATRIX}, got {n}")
    traj.check_reach(geom.fov_mm, base)
    interpolated = None
    if n > base:  # no sample lies beyond the acquired edge: a finer grid interpolates, it does not resolve
        interpolated = {"acquired_matrix": base, "factor": round(n / base, 4),
                        "note": "matrix above the acquired resolution: k-space zero-filled beyond its edge "
                                "(sinc interpolation), voxels smaller than the resolution"}
        log.warning("--matrix %d is above the acquired matrix %d: the image is interpolated (%.2fx), not finer",
                    n, base, n / base)
    layout = kspace_layout(traj.coord(geom.fov_mm))
    nsl = scan.nslices
    if nsl > 1 and layout != "2d":
        raise InputError(f"the scan lists {nsl} slices but its trajectory is {LAYOUT_TEXT[layout]}: multi-slab 3D "
                         "is not supported (reconstruct one slab per file)")
    # the protocol's matrix per axis; --matrix sets the read axis and scales the other in-plane one
    nx, ny = n, max(1, int(round(geom.matrix[1] * n / base)))
    nz = nsl if layout == "2d" else (int(geom.matrix[2]) if layout == "stack"
                                   else max(1, int(round(geom.matrix[2] * n / base))))
    shape = (nx, ny, nz)
    if layout == "2d":
        traj = replace(traj, k=traj.k[..., :2], design=None)
    rshape = shape[:2] if layout == "2d" else shape
    if traj.dcf is not None:
        dcf_source = "trajectory file"
    else:
        w, dcf_source = default_dcf(traj.coord(geom.fov_mm), layout, rshape)
        traj = traj.with_dcf(w)

    def delay_kspace() -> np.ndarray:  # one echo (the chosen or the first), repetitions averaged, slice 0
        data = scan.data[..., :scan.nreadout // nsl, :]
        e = opts.echo or 0
        return data[opts.rep, e] if opts.rep is not None else data[:, e].mean(axis=0)

    traj, delay_info = gradient_delay_step(traj, delay_kspace, opts, geom.fov_mm,
                                           None if acq.dwell_us is None else acq.dwell_us * 1e-6)
    if layout == "3d":
        used, sel = traj.crop(n, geom.fov_mm)
    elif n < base:  # the in-plane disc of the smaller matrix; partitions stay
        _, sel = replace(traj, k=traj.k[..., :2], design=None).crop(n, geom.fov_mm[:2])
        used = traj if sel is None else traj.select(sel)
    else:  # in-plane samples beyond the disc (Cartesian corners) are kept
        used, sel = traj, None
    necho, nrep = scan.necho, scan.nrep
    echoes = [opts.echo] if opts.echo is not None else list(range(necho))
    if any(not 0 <= e < necho for e in echoes):
        raise InputError(f"echo {opts.echo} requested but the scan has {necho} echo(es)")
    if opts.rep is not None and not 0 <= opts.rep < nrep:
        raise InputError(f"repetition {opts.rep} requested but the scan has {nrep} repetition(s)/average(s)")
    if opts.rep is None and nrep > 1:
        log.info("averaging %d repetitions/averages in k-space", nrep)

    nro = scan.nreadout // nsl

    def echo_kspace(e: int, s: int) -> np.ndarray:
        # repetitions and averages (twix Rep x Ave) are averaged in k-space unless one is chosen
        data = scan.data[..., s * nro:(s + 1) * nro, :] if nsl > 1 else scan.data
        k = data[opts.rep, e] if opts.rep is not None else (
            data[0, e] if nrep == 1 else data[:, e].mean(axis=0))
        return k if sel is None else sel.apply(k, lead=1)

    coord = used.coord(geom.fov_mm)
    # the field map on this grid (Hz at 23Na), resampled through the affines; a finer map: sub-voxel
    # frequencies (*shape, S) for the intravoxel-dephasing model
    b0 = None if opts.b0_map is None else load_b0_map(opts.b0_map, geom.affine(shape), shape, opts.b0_map_nucleus,
                                                      subvoxel=True)
    te0 = float(acq.te_ms[echoes[0]]) if acq.te_ms and len(acq.te_ms) > echoes[0] else 0.0
    classes = classes_from_options(opts, geom.affine(shape), shape, te0)  # per-voxel decay (--decay-map)
    t_used = used.sample_times()
    named = None if t_used is None else target_decay(opts, te0, t_used * 1e3)
    if named is None and opts.decay_target is not None:  # no sample times: reconstruct_arrays says so
        named = (opts.decay_target, named_decay(opts.decay_target, te0, "--decay-target"))
    target = None if named is None else named[1]
    if classes is not None and layout == "2d":
        raise InputError("--decay-map needs a 3D acquisition (this scan is reconstructed as 2D slices)")
    images = []
    for i, s in enumerate(geom.slice_order().tolist()):  # multi-slice 2D: one in-plane reconstruction per slice
        ksp = np.stack([echo_kspace(e, s) for e in echoes])
        image, info = reconstruct_arrays(ksp, coord, used.dcf, rshape, opts, noise=scan.noise,
                                         t_s=used.sample_times(), progress=progress,
                                         b0_hz=None if b0 is None else (b0[:, :, i] if layout == "2d" else b0),
                                         decay_classes=classes, decay_target=target)
        if named is not None and "decay_model" in info:
            info["decay_model"]["target"] = named[0]
        images.append(image)
    image = images[0] if layout != "2d" else np.stack(images, axis=2)
    if nsl > 1:
        info["slices"] = {"count": nsl, "spacing_mm": float(np.linalg.norm(geom.slice_step_mm())),
                          "counter_order": geom.slice_order().tolist()}
    bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
    if bad:  # never hand on (or write) an image that is not a number
        raise InputError(f"the reconstructed image has {bad} non-finite voxel(s) of {np.size(image)}: "
                         f"check the scan's samples and the trajectory")
    if dcf_source.startswith("uniform") and opts.method == "adjoint":
        # the adjoint scales weights to the disc the samples reach; Cartesian lines fill a square of
        # one cell per sample: undo that, so the image equals the FFT's
        image = image / float(normalise_dcf(np.ones(coord.shape[:2]), coord).flat[0])
    meta = {
        "acquisition": acq.sidecar(echoes=echoes),
        "recon": {
            **info, "matrix": list(shape), "layout": LAYOUT_TEXT[layout], "eps": opts.eps, "echoes": echoes,
            "samples_used": int(coord.size // coord.shape[-1]), "dcf": dcf_source, "ncoil_scan": scan.ncoil,
            "repetitions": {"in_scan": nrep, "used": [opts.rep] if opts.rep is not None else list(range(nrep)),
                            "combined": "single" if opts.rep is not None or nrep == 1 else "k-space mean"},
            **({"interpolated": interpolated} if interpolated else {}),
            **({"gradient_delay": delay_info} if delay_info else {}),
            "options": opts.to_dict(),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    }
    return Image(image, geom.affine(shape), meta)


def _one_slice(traj: Trajectory, nsl: int) -> Trajectory:
    """The first slice's part of a trajectory given for every slice of a multi-slice scan (a .seq
    lists every slice's readouts); InputError unless every slice has the same k."""
    n = traj.nreadout // nsl
    k = traj.k.reshape(nsl, n, *traj.k.shape[1:])
    if traj.nreadout % nsl or np.max(np.abs(k - k[:1])) > 1e-6 * max(float(np.abs(k).max()), 1e-12):
        raise InputError(f"the trajectory lists {traj.nreadout} readouts for {nsl} slices, which do not all "
                         "have the same k: give one slice's trajectory")

    def cut(a):
        return a[:n] if a is not None and a.ndim == 2 and a.shape[0] == traj.nreadout else a

    return replace(traj, k=traj.k[:n], t=cut(traj.t), dcf=cut(traj.dcf), design=None)
