"""One multi-coil, multi-echo reconstruction behind one call (the sigpy `App` idea).

noise prewhitening -> optional coil compression -> (iterative methods) sensitivity maps from the
k-space centre -> the SENSE problem, built once -> adjoint / CG-SENSE / CS-TV / CS-wavelet for
each echo -> magnitude image. Everything it chose goes into the returned `recon` dict (sidecar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from ..core import ReconOptions
from ..errors import InputError
from . import coils
from .adjoint import adjoint_recon
from .decay import DecayClasses, DecayNufft
from .offres import OffResNufft
from .operators import make_nufft
from .solvers import SenseProblem, cg_sense, cs_tv, cs_wavelet, decay_weights
from .stack import StackNufft

log = logging.getLogger(__name__)

def reconstruct_arrays(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: Sequence[int],
                       options: ReconOptions | None = None, noise: np.ndarray | None = None,
                       t_s: np.ndarray | None = None, progress: bool | None = None,
                       b0_hz: np.ndarray | None = None, decay_classes: DecayClasses | None = None,
                       decay_target=None) -> tuple[np.ndarray, dict]:
    """Reconstruct echoes of multi-coil k-space into magnitude images (arrays in, arrays out).

    Args:
        kspace: complex (necho, ncoil, nreadout, nsample) or (ncoil, nreadout, nsample).
        coord: float (nreadout, nsample, ndim), cycles/FOV (edge of the matrix at +-N/2).
        dcf: (nreadout, nsample) density compensation, any scale.
        shape: image matrix (x, y, z).
        options: `ReconOptions`: method 'adjoint' (DCF gridding), 'cg' (CG-SENSE, Pruessmann et
            al., MRM 2001), 'cs-tv' (3D TV, Block et al., MRM 2007, primal-dual) or 'cs-wavelet'
            (L1 Daubechies wavelets, Lustig et al., MRM 2007, FISTA); lam relative to the image
            noise SD (CS) or the Tikhonov weight relative to ||E^H W E|| ~ 1 (cg); coil
            compression, combination ('adaptive': Walsh et al., MRM 2000) and maps ('espirit':
            Uecker et al., MRM 2014); T2* of the decay-aware model; NUFFT tolerance eps.
        noise: (ncoil, n) noise-adjust samples; None: `coils.estimate_noise` from the outer k-space,
            checked for signal (no whitening when it holds signal).
        t_s: (nsample,) or (nreadout, nsample) sample times in s from the echo (decay and B0 models).
        b0_hz: the field map on the image grid (Hz at 23Na): the off-resonance model (`recon.offres`,
            time segmentation, Sutton et al., IEEE TMI 2003) in the encoding of the iterative
            methods, the conjugate-phase adjoint for 'adjoint'; the decay model joins it.
        decay_classes: a per-voxel decay model (`recon.decay`; replaces the global --t2s-ms decay,
            which becomes its default class), joined with the B0 model into one operator.
        decay_target: the target decay tau (a callable of the ms from the readout start) of a decay
            model: the data are apodised by tau(t) and fitted with the model (`recon.decay`), so every
            voxel comes out as if it had decayed with tau.

    Returns:
        (float32 image (*shape) or (*shape, necho), dict for the sidecar's `recon` block).
    """
    opts = options or ReconOptions()
    method, coil_combine, maps, eps = opts.method, opts.coil_combine, opts.maps, opts.eps
    t0 = time.perf_counter()
    ksp = np.asarray(kspace)
    single = ksp.ndim == 3
    if single:
        ksp = ksp[None]
    if ksp.ndim != 4:
        raise InputError(f"k-space must be (necho, ncoil, nreadout, nsample), got shape {ksp.shape}")
    shape = tuple(int(s) for s in shape)
    info: dict = {"method": method, "ncoil_in": int(ksp.shape[1])}

    # noise and prewhitening (one matrix for all echoes), only from samples that hold noise
    est = coils.estimate_noise(ksp[0], coord, noise=noise)
    noise_sd = est.sd
    mix = None  # whitening and compression as one coil-mixing matrix: one new copy of the data
    if est.psi is not None:
        mix, noise_sd = coils.whitening_matrix(est.psi)
    info["noise"] = est.sidecar()
    nv, cc_info = coils.compression_plan(int(ksp.shape[1]), opts.coil_compress)
    if nv is not None:
        flat = ksp[0].reshape(ksp.shape[1], -1)
        cov = (flat @ flat.conj().T).astype(np.complex128)
        if mix is not None:
            cov = mix @ cov @ mix.conj().T
        cmat, kept = coils.compression_matrix(cov, ncoil=nv)
        cc_info["energy_kept"] = round(kept, 6)
        mix = cmat if mix is None else cmat @ mix.astype(np.complex64)
    if mix is not None:  # into one new array (no per-echo temporaries and stacked copy)
        mixed = np.empty((ksp.shape[0], mix.shape[0]) + ksp.shape[2:], np.complex64)
        m64 = np.asarray(mix, np.complex64)
        for e in range(ksp.shape[0]):
            np.matmul(m64, ksp[e].reshape(ksp.shape[1], -1).astype(np.complex64, copy=False),
                      out=mixed[e].reshape(m64.shape[0], -1))
        ksp = mixed
    info["coil_compression"] = cc_info
    info["ncoil"] = int(ksp.shape[1])

    op = make_nufft(coord, shape, eps=eps)
    info["nufft"] = ("2D NUFFT per kz partition + DFT along z" if isinstance(op, StackNufft)
                     else f"{len(shape)}D NUFFT")
    decay = None
    t2s = opts.t2s_model
    if t2s is not None:
        if t_s is None:
            raise InputError("the decay-aware model needs each sample's time: a trajectory file with 't'")
        decay = decay_weights(t_s, t2s, frac_short=opts.frac_short)
        info["decay_model"] = {"t2s_ms": t2s, "frac_short": opts.frac_short if isinstance(t2s, tuple) else None}
    apodise = None
    if decay_target is not None and (t2s is not None or decay_classes is not None):
        if t_s is None:
            raise InputError("--decay-target needs each sample's time: a trajectory file with 't'")
        apodise = np.asarray(decay_target(np.asarray(t_s, np.float64) * 1e3), np.float32)
        info.setdefault("decay_model", {})["target"] = opts.decay_target
    if decay_classes is not None:  # per-voxel decay, with the B0 model's segments when there is a map
        if t_s is None:
            raise InputError("the per-voxel decay model (--decay-map) needs each sample's time: a trajectory with 't'")
        base = op if b0_hz is None else OffResNufft(op, coord, b0_hz, t_s, nseg=opts.b0_segments)
        op = DecayNufft(base, coord, decay_classes, t_s)
        decay = None
        info["decay_model"] = {**info.get("decay_model", {}), "per_voxel": op.describe(),
                               "labels": {str(k): v for k, v in opts.decay_labels.items()},
                               "target": opts.decay_target}
        if b0_hz is not None:
            info["b0_model"] = {**base.describe(), "map_range_hz": [float(np.min(b0_hz)), float(np.max(b0_hz))],
                                "with_decay": True}
    elif b0_hz is not None:  # one operator for off-resonance and decay: d(t) multiplies the temporal basis
        if t_s is None:
            raise InputError("the off-resonance model (--b0-map) needs each sample's time: a trajectory file with 't'")
        op = OffResNufft(op, coord, b0_hz, t_s, decay=decay, nseg=opts.b0_segments)
        decay = None
        info["b0_model"] = {**op.describe(), "map_range_hz": [float(np.min(b0_hz)), float(np.max(b0_hz))],
                            "with_decay": t2s is not None}
    images = []
    if method == "adjoint":

        combine = coil_combine or "sos"
        mp = None
        if combine == "sense":
            mp = coils.estimate_maps(ksp[0], coord, dcf, shape, method=maps, eps=eps,
                                     rank=coils.maps_rank(int(ksp.shape[1])))
            info["maps"] = maps
        for k in ksp:
            imgs = adjoint_recon(k, coord, dcf, shape, op=op)
            images.append(np.abs(coils.combine(imgs, combine, maps=mp)) if imgs.shape[0] > 1 else np.abs(imgs[0]))
        info["coil_combine"] = combine if ksp.shape[1] > 1 else "magnitude"
    else:
        basis, mp = None, None
        if ksp.shape[1] > 1:
            rank = coils.maps_rank(int(ksp.shape[1]))
            basis, mp = coils.estimate_map_factors(ksp[0], coord, dcf, shape, method=maps, eps=eps, rank=rank)
        info["maps"] = maps if mp is not None else "single coil"
        if basis is not None:
            info["maps_rank"] = {"rank": int(basis.shape[1]), "ncoil": int(basis.shape[0]),
                                 "note": "maps in the span of the calibration images' leading singular vectors; "
                                         "the SENSE problem over every channel runs exactly on that many virtual coils"}
        info["coil_combine"] = "sense"
        problem = SenseProblem(op, coord, mp, dcf, decay=decay, basis=basis, apodise=apodise)
        lam_rel, max_iter, tol = opts.lam_value, opts.iters_value, opts.tol
        sd_img = problem.image_noise_sd(noise_sd)
        info["image_noise_sd"] = sd_img
        logs = []
        discrepancy = opts.discrepancy or None
        if method == "cg" and discrepancy and decay_classes is not None:
            # with decay classes CG's first iterates are not estimates of the object: the first is
            # E^H W a y, each class blurred by its own decay twice and one scale for all, so the rule
            # (met after 1 iteration on noisy data) would stop there (brain phantom, TPI 15 ms, matrix
            # 64, SNR 20: GM/WM/ventricles +17/+22/+30% against -4/+0/-3% run to the iterations)
            discrepancy = None
            info["discrepancy_rule"] = "off: the per-voxel decay model needs CG's iterations to separate its classes"
            log.info("CG's discrepancy rule is off with the per-voxel decay model (runs to %d iterations)", max_iter)
        for e, k in enumerate(ksp):
            if method == "cg":
                x, lg = cg_sense(problem, k, lam=lam_rel, max_iter=max_iter, tol=tol, progress=progress,
                                 noise_sd=noise_sd, discrepancy=discrepancy)
            elif method == "cs-tv":
                x, lg = cs_tv(problem, k, lam=lam_rel * sd_img, max_iter=max_iter, tol=tol, progress=progress)
            else:
                x, lg = cs_wavelet(problem, k, lam=lam_rel * sd_img, max_iter=max_iter, tol=tol, progress=progress)
            lg.lam_relative = lam_rel
            logs.append(lg.as_dict())
            images.append(np.abs(x))
            log.info("echo %d: %s %d iterations in %.1f s", e, method, lg.iterations, lg.seconds)
        info["solver"] = logs
    image = images[0] if len(images) == 1 else np.stack(images, axis=-1)
    info["seconds_recon"] = round(time.perf_counter() - t0, 3)
    return image.astype(np.float32), info
