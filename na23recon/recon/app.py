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
from .operators import make_nufft
from .solvers import SenseProblem, cg_sense, cs_tv, cs_wavelet, decay_weights
from .stack import StackNufft

log = logging.getLogger(__name__)

def reconstruct_arrays(kspace: np.ndarray, coord: np.ndarray, dcf: np.ndarray, shape: Sequence[int],
                       options: ReconOptions | None = None, noise: np.ndarray | None = None,
                       t_s: np.ndarray | None = None, progress: bool | None = None) -> tuple[np.ndarray, dict]:
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
        t_s: (nsample,) or (nreadout, nsample) sample times in s from the echo (decay model).

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
    if est.psi is not None:
        wmat, noise_sd = coils.whitening_matrix(est.psi)
        ksp = np.stack([coils.prewhiten(k, wmat) for k in ksp])
    info["noise"] = est.sidecar()
    if opts.coil_compress is not None:
        if opts.coil_compress > ksp.shape[1]:
            raise InputError(f"--coil-compress {opts.coil_compress} but the scan has {ksp.shape[1]} coils")
        _, cmat = coils.coil_compress(ksp[0], ncoil=opts.coil_compress)
        ksp = np.stack([coils.prewhiten(k, cmat) for k in ksp])
    info["ncoil"] = int(ksp.shape[1])

    op = make_nufft(coord, shape, eps=eps)
    info["nufft"] = ("2D NUFFT per kz partition + DFT along z" if isinstance(op, StackNufft)
                     else f"{len(shape)}D NUFFT")
    images = []
    if method == "adjoint":

        combine = coil_combine or "sos"
        mp = None
        if combine == "sense":
            mp = coils.estimate_maps(ksp[0], coord, dcf, shape, method=maps, eps=eps)
            info["maps"] = maps
        for k in ksp:
            imgs = adjoint_recon(k, coord, dcf, shape, op=op)
            images.append(np.abs(coils.combine(imgs, combine, maps=mp)) if imgs.shape[0] > 1 else np.abs(imgs[0]))
        info["coil_combine"] = combine if ksp.shape[1] > 1 else "magnitude"
    else:
        mp = coils.estimate_maps(ksp[0], coord, dcf, shape, method=maps, eps=eps) if ksp.shape[1] > 1 else None
        info["maps"] = maps if mp is not None else "single coil"
        info["coil_combine"] = "sense"
        decay = None
        t2s = opts.t2s_model
        if t2s is not None:
            if t_s is None:
                raise InputError("the decay-aware model needs each sample's time: a trajectory file with 't'")
            decay = decay_weights(t_s, t2s, frac_short=opts.frac_short)
            info["decay_model"] = {"t2s_ms": t2s, "frac_short": opts.frac_short if isinstance(t2s, tuple) else None}
        problem = SenseProblem(op, coord, mp, dcf, decay=decay)
        lam_rel, max_iter, tol = opts.lam_value, opts.iters_value, opts.tol
        sd_img = problem.image_noise_sd(noise_sd)
        info["image_noise_sd"] = sd_img
        logs = []
        for e, k in enumerate(ksp):
            if method == "cg":
                x, lg = cg_sense(problem, k, lam=lam_rel, max_iter=max_iter, tol=tol, progress=progress,
                                 noise_sd=noise_sd, discrepancy=opts.discrepancy or None)
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
