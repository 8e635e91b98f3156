"""The point-spread function of a reconstruction: the method applied to a point's k-space.

A unit point at the FOV centre (the voxel N//2 of each axis) has the k-space
y_j = d(t_j) / d(t_0) / sqrt(prod N) at every sample j, in the NUFFT's orthonormal convention, with
d the transverse decay of the tissue at the sample's time t_j from excitation and t_0 the first
sample's (the echo, where centre-out trajectories sample k = 0: the image's signal).
Reconstructing that y with the method's own operator gives the PSF on the reconstruction grid,
centred at the array centre, summing to the method's DC gain:

- adjoint: A^H W y with the trajectory's density compensation W (Jackson et al., IEEE Trans Med
  Imaging 1991): exact;
- cg: the CG-SENSE iterations (Pruessmann et al., Magn Reson Med 2001) with the options' Tikhonov
  weight, iteration count, tolerance and decay model on that y: exact for the linear operator
  (E^H W E + lam I)^-1 E^H W once CG has converged (as it has at the default weights);
- cs-tv, cs-wavelet: an estimate, the linear part: the same iterations with the regulariser
  off (lam = 0), i.e. the data-consistency iterations from E^H W y. The resolution loss or
  gain of the TV or wavelet term depends on the contrast and the noise and is not in it.

The PSF is that of one coil of uniform sensitivity: coil maps vary slowly against the PSF's width.
The T2* blur is the decay the tissue has (Boada et al., Magn Reson Med 1994 for the biexponential
decay of sodium in tissue; Rahmer et al., Magn Reson Med 2006 for the PSF of radial sampling under
it), not the reconstruction's decay model; give it as one T2*, two with a short fraction, or any
callable of the time in ms (e.g. a relaxation preset's `decay`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..core import ReconOptions, Trajectory
from ..errors import InputError
from ..traj.dcf import normalise_dcf
from .adjoint import adjoint_recon
from .decay import target_decay
from .layout import default_dcf, kspace_layout
from .operators import make_nufft
from .solvers import SenseProblem, cg_sense, cs_tv, cs_wavelet, decay_weights

__all__ = ["point_spread", "point_spread_info", "psf_fwhm_mm", "tissue_decay"]

Decay = float | Sequence[float] | Callable[[np.ndarray], np.ndarray] | None


def tissue_decay(t_ms: np.ndarray, t2s_ms: Decay, frac_short: float | None = None) -> np.ndarray:
    """Transverse decay at times `t_ms` (ms from the echo): 1 for None, exp(-t/T2*) for one
    value, f exp(-t/T2*s) + (1 - f) exp(-t/T2*l) for (short, long) with f = `frac_short`, or
    `t2s_ms(t_ms)` for a callable (such as `quant.relax.Relaxation.decay`)."""
    t = np.asarray(t_ms, np.float64)
    if t2s_ms is None:
        return np.ones_like(t)
    if callable(t2s_ms):
        d = np.broadcast_to(np.asarray(t2s_ms(t), np.float64), t.shape)
        if not np.all(np.isfinite(d)):
            raise InputError("the PSF's decay is not finite at the sample times")
        return d
    vals = [float(v) for v in np.atleast_1d(np.asarray(t2s_ms, np.float64))]
    if len(vals) not in (1, 2) or min(vals) <= 0 or not all(np.isfinite(vals)):
        raise InputError(f"the PSF's T2* must be one or two positive values (ms), got {t2s_ms}")
    if len(vals) == 1:
        return np.exp(-t / vals[0])
    if frac_short is None or not 0 <= frac_short <= 1:
        raise InputError(f"two T2* values need the short fraction in [0, 1], got {frac_short}")
    return frac_short * np.exp(-t / vals[0]) + (1 - frac_short) * np.exp(-t / vals[1])


def _prepare(traj: Trajectory, shape: tuple[int, ...], fov_mm) -> tuple[Trajectory, tuple[int, ...], str, str]:
    """The samples and DCF the reconstruction uses at `shape` (as `recon.scan_recon.reconstruct`
    chooses them): kz dropped for a 2D slice, the ball of the matrix for 3D, the default DCF."""
    fov = tuple(float(v) for v in np.broadcast_to(np.asarray(fov_mm, np.float64), (3,)))
    layout = kspace_layout(traj.coord(fov[:traj.ndim]))
    if layout == "2d":
        traj = replace(traj, k=traj.k[..., :2], design=None)
    rshape = tuple(shape[:2]) if layout == "2d" else tuple(shape)
    if traj.dcf is not None:
        source = "trajectory file"
    else:
        w, source = default_dcf(traj.coord(fov[:traj.ndim]), layout, rshape)
        traj = traj.with_dcf(w)
    if layout == "3d":
        traj, _ = traj.crop(int(shape[0]), fov)
    return traj, rshape, layout, source


def point_spread_info(traj: Trajectory, options: ReconOptions | None, shape: Sequence[int], fov_mm,
                      t2s_ms: Decay = None, frac_short: float | None = None,
                      keep_complex: bool = False) -> tuple[np.ndarray, dict]:
    """`point_spread` and a dict for the sidecar: how it was made (exact or estimate), the decay,
    the DC gain (the PSF's sum), its peak and FWHM per axis in mm."""
    opts = options or ReconOptions()
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"the PSF's grid must be (x, y, z), got {shape}")
    used, rshape, layout, dcf_source = _prepare(traj, shape, fov_mm)
    fov = np.broadcast_to(np.asarray(fov_mm, np.float64), (3,))
    coord = used.coord(tuple(fov[:used.ndim]))
    t_s = used.sample_times()
    if t2s_ms is not None and t_s is None:
        raise InputError("the PSF's T2* decay needs each sample's time: a trajectory with 't'")
    d = np.ones(coord.shape[:-1])
    if t_s is not None:  # the decay since excitation, relative to the first sample's (a biexponential
        d0 = tissue_decay(np.min(used.t) * 1e3, t2s_ms, frac_short)  # has lost more of its short part by then)
        d = np.broadcast_to(tissue_decay(used.t * 1e3, t2s_ms, frac_short) / d0, coord.shape[:-1])
    y = (d / np.sqrt(float(np.prod(rshape))))[None].astype(np.complex64)  # one coil
    method = opts.method
    info: dict = {"method": method, "coil_model": "one coil of uniform sensitivity", "dcf": dcf_source}
    op = make_nufft(coord, rshape, eps=opts.eps)
    if method == "adjoint":
        x = adjoint_recon(y, coord, used.dcf, rshape, op=op)[0]
        if dcf_source.startswith("uniform"):  # Cartesian lines: as the reconstruction scales them
            x = x / float(normalise_dcf(np.ones(coord.shape[:2]), coord).flat[0])
        info["kind"] = "exact: A^H W applied to a point's k-space"
    else:
        model = None
        if opts.t2s_model is not None:
            if t_s is None:
                raise InputError("the decay-aware model needs each sample's time: a trajectory with 't'")
            model = decay_weights(t_s, opts.t2s_model, frac_short=opts.frac_short)
        if opts.decay_map is not None and t_s is not None:  # per voxel: the point's own tissue decay is the model
            model = np.asarray(d, np.float32)
        apod = None
        target = None if model is None else target_decay(opts, float(np.min(used.t)) * 1e3,
                                                           np.asarray(t_s, np.float64) * 1e3)
        if target is not None:  # the output's target decay (`recon.decay`)
            apod = target[1](np.asarray(t_s, np.float64) * 1e3).astype(np.float32)
        problem = SenseProblem(op, coord, None, used.dcf, decay=model, apodise=apod)
        if method == "cg":
            x, lg = cg_sense(problem, y, lam=opts.lam_value, max_iter=opts.iters_value, tol=opts.tol, progress=False)
            info["kind"] = ("exact: CG-SENSE's iterations (Tikhonov weight, iterations, tolerance and decay model "
                            "of the options) on a point's k-space")
        else:
            solver = cs_tv if method == "cs-tv" else cs_wavelet
            x, lg = solver(problem, y, lam=0.0, max_iter=opts.iters_value, tol=opts.tol, progress=False)
            info["kind"] = (f"estimate: the linear part of {method} (its iterations with lam = 0) on a point's "
                            "k-space; the regulariser's contrast-dependent effect on resolution is not in it")
        info["iterations"] = int(lg.iterations)
    x = np.asarray(x).reshape(rshape)
    if layout == "2d":
        x = x[..., None]
    psf = x.astype(np.complex64) if keep_complex else np.ascontiguousarray(x.real, dtype=np.float32)
    voxel = fov / np.asarray(shape, np.float64)
    if layout == "2d":
        voxel[2] = np.nan
    fwhm = psf_fwhm_mm(psf, voxel)
    info.update({
        "decay": _decay_text(t2s_ms, frac_short), "dc_gain": round(float(np.sum(psf.real)), 6),
        "peak": round(float(np.max(psf.real)), 6), "imag_over_peak": round(float(np.max(np.abs(x.imag)) /
                                                                                max(np.max(np.abs(x)), 1e-30)), 6),
        "fwhm_mm": [None if not np.isfinite(v) else round(float(v), 4) for v in fwhm],
        "voxel_mm": [None if not np.isfinite(v) else round(float(v), 4) for v in voxel],
    })
    return psf, info



def psf_options(opts: ReconOptions, recon_meta: dict) -> ReconOptions:
    """The options a reconstruction's PSF is made with: CG stopped early (the discrepancy principle,
    noise-dependent) runs the reconstruction's own iteration count (`recon_meta["solver"]`, the
    sidecar's `recon` block) on the point, not the maximum (CG's first iterate is a scaled adjoint:
    a sharper many-iteration PSF would over-correct)."""
    if opts.method != "cg":
        return opts
    n = [int(s["iterations"]) for s in recon_meta.get("solver") or [] if isinstance(s, dict) and s.get("iterations")]
    return replace(opts, iters=max(1, int(np.median(n)))) if n else opts

def point_spread(traj: Trajectory, options: ReconOptions | None, shape: Sequence[int], fov_mm,
                 t2s_ms: Decay = None, frac_short: float | None = None, keep_complex: bool = False) -> np.ndarray:
    """The PSF of `options`' method for `traj` on the grid `shape` (x, y, z) over `fov_mm`.

    Args:
        traj: the scan's trajectory (k in 1/m; its DCF, else the reconstruction's default; its
            sample times `t` for the decay).
        options: the `ReconOptions` of the reconstruction (method, lam, iters, tol, decay model, eps).
        shape: the image matrix (Nz = 1 for a 2D slice); fov_mm: one value or one per axis.
        t2s_ms: the tissue's decay during the readout (see `tissue_decay`), None for none.
        keep_complex: return the complex PSF (its imaginary part is rounding for symmetric sampling).

    Returns:
        float32 (or complex64) (x, y, z), the point at index N//2 of each axis; sum = DC gain.
    """
    return point_spread_info(traj, options, shape, fov_mm, t2s_ms, frac_short, keep_complex)[0]


def _decay_text(t2s_ms: Decay, frac_short: float | None) -> dict | None:
    if t2s_ms is None:
        return None
    if callable(t2s_ms):
        owner = getattr(t2s_ms, "__self__", None)
        if owner is not None and hasattr(owner, "t2s_short_ms"):
            return {"t2s_ms": [owner.t2s_short_ms, owner.t2s_long_ms], "frac_short": owner.frac_short}
        return {"t2s_ms": "callable"}
    vals = [float(v) for v in np.atleast_1d(np.asarray(t2s_ms, np.float64))]
    return {"t2s_ms": vals, "frac_short": frac_short if len(vals) == 2 else None}


def psf_fwhm_mm(psf: np.ndarray, voxel_mm, upsample: int = 16) -> tuple[float, float, float]:
    """Full width at half maximum of `psf` along each axis through its peak, in mm.

    The profile (magnitude of a complex PSF, else the values) is interpolated `upsample` times by
    zero-padding its discrete Fourier transform (exact for the band-limited PSF of a
    reconstruction, up to the periodic wrap of its tails) and the half-maximum crossings nearest
    the peak are found by linear interpolation; `upsample` 1 interpolates the samples linearly (for
    a magnitude image on a grid finer than its resolution). An axis of length 1 gives nan.
    """
    p = np.asarray(psf)
    p = np.abs(p) if np.iscomplexobj(p) else p.astype(np.float64)
    if p.ndim != 3:
        raise InputError(f"the PSF must be (x, y, z), got shape {p.shape}")
    vox = np.broadcast_to(np.asarray(voxel_mm, np.float64), (3,))
    peak = np.unravel_index(int(np.argmax(p)), p.shape)
    out = []
    for a in range(3):
        n = p.shape[a]
        if n < 3:
            out.append(float("nan"))
            continue
        idx = list(peak)
        idx[a] = slice(None)
        prof = p[tuple(idx)]
        out.append(_fwhm_1d(prof, int(peak[a]), upsample) * float(vox[a]))
    return tuple(out)


def _fwhm_1d(prof: np.ndarray, i0: int, up: int) -> float:
    """FWHM in samples of a 1D profile peaking at i0 (Fourier interpolation by `up`)."""
    n = prof.size
    if up == 1:
        fine, m, j0 = prof.astype(np.float64), n, i0
    else:
        fine, m, j0 = _fourier_upsample(prof, up), n * up, i0 * up
        lo, hi = max(0, j0 - up), min(m, j0 + up + 1)
        j0 = lo + int(np.argmax(fine[lo:hi]))
    half = fine[j0] / 2
    if half <= 0:
        return float("nan")

    def cross(step: int) -> float:
        j = j0
        while 0 <= j + step < m and fine[j + step] > half:
            j += step
        if not 0 <= j + step < m:
            return float("nan")
        a, b = fine[j], fine[j + step]
        return j + step * (a - half) / (a - b)

    return (cross(1) - cross(-1)) / up


def _fourier_upsample(prof: np.ndarray, up: int) -> np.ndarray:
    """`prof` interpolated `up` times by zero-padding its DFT (the Nyquist bin split in two)."""
    n = prof.size
    f = np.fft.fft(prof)
    m = n * up
    g = np.zeros(m, complex)
    h = (n + 1) // 2
    g[:h] = f[:h]
    g[m - (n - h):] = f[h:]
    if n % 2 == 0:  # split the Nyquist bin between +-n/2
        g[n // 2] = f[n // 2] / 2
        g[m - n // 2] = f[n // 2] / 2
    return np.real(np.fft.ifft(g)) * up
