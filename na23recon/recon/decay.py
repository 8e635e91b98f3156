"""Per-voxel T2* decay in the encoding (decay classes) and the target decay of the output's PSF.

Signal of a sample at time t (s from the first sample of the readout) and position k:

    y(k, t) = sum_v h_v(t) x(v) exp(-2 pi i k.r_v),   h_v(t) = sum_c f_c(v) d_c(t)

with f_c(v) the fraction of voxel v in decay class c (a tissue or a vial medium; the fractions of a
voxel sum to 1, the remainder going to a default class), d_c the class's biexponential decay,
normalised to 1 at the readout start (Boada, Christensen, Huang-Hellinger, Reese & Thulborn, Magn
Reson Med 1994 for the biexponential decay of sodium). The target decay tau(t) apodises the data:
the problem fits tau(t) y with the model, so every voxel comes out as if it had decayed with tau
(the normal operator is that of the plain decay model; putting tau into the model instead, d/tau,
would weight the late samples up to ~3x).

Why a target: without one the decay is fully deconvolved and the reconstruction has the PSF of the
sharp k-space support, side lobes included. The centre of a small object (a 20 mm reference vial,
4 voxels) then rises ~20-40% against a large one (the overshoot of a spherical cut-off, which does
not fade at the centre of a ball in 3D: Pinsky, Stanton & Trapa, J Funct Anal 1993), and the vial
calibration scales tissue down: brain phantom, TPI 15 ms, CG to convergence, matrix 32, noiseless,
GM/WM TSC bias -50/-21% without a model, -81/-44% with one biexponential T2* for the whole object,
-51/-39% with each label's own decay, -16/-14% with each label's own decay and the vials' medium as
target; CG weight 0.1 (with --decay-map and no --decay-target the target is the slowest-decaying class:
`target_decay`). With a target every voxel gets one smooth PSF (that of the uncorrected
reconstruction of a medium decaying with tau; Rahmer, Boernert, Groen & Bos, Magn Reson Med 2006
for the PSF of radial sampling under T2* decay), so vials and tissue are blurred alike.

The class decays span few functions of time: the SVD of the (C, T) matrix gives

    d_c(t) ~ sum_r u_r(t) V[c, r],             h_v(t) ~ sum_r u_r(t) c_r(v),   c_r(v) = sum_c f_c(v) V[c, r],

the time-segmentation form (temporal u_r times spatial c_r) of the off-resonance model
(`recon.offres`; Sutton, Noll & Fessler, IEEE TMI 2003), so the same operator carries it (R NUFFTs
per transform, per-pair Toeplitz kernels for the normal operator). With a B0 map the two factorisations
multiply (L x R terms: b_l(t) u_r(t) and c_l(v) c_r(v)).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from importlib.resources import files

import numpy as np

from ..core.image import Image
from ..errors import InputError
from .offres import KERNEL_RANK_TOL, OffResNufft

log = logging.getLogger(__name__)

__all__ = ["DECAY_RANK_TOL", "DecayClasses", "decay_factors", "DecayNufft", "label_fractions", "preset_decays",
           "biexp", "named_decay", "sample_labels", "classes_from_options", "target_decay"]

DECAY_RANK_TOL = 1e-3
"""Relative RMS error of the low-rank factorisation of the class decays (worst class) that is accepted."""

Decay = Callable[[np.ndarray], np.ndarray]
"""A decay: a callable of the time in ms since the readout start (1 at 0), e.g. `quant.relax.Relaxation.decay`."""


class DecayClasses:
    """Voxel fractions per decay class and the decay of each class.

    Args:
        fractions: (C, *shape) fraction of each voxel in class c (sum over c <= 1).
        decays: C callables of the time in ms (1 at t = 0).
        names: C names (sidecar).
        default: the decay of the remainder 1 - sum_c f_c (None: no decay).
        default_name: the remainder's name in the sidecar.
    """

    def __init__(self, fractions: np.ndarray, decays: list[Decay], names: list[str], default: Decay | None = None,
                 default_name: str = "other") -> None:
        f = np.asarray(fractions, np.float64)
        if f.shape[0] != len(decays) or len(names) != len(decays):
            raise ValueError(f"{f.shape[0]} fraction maps for {len(decays)} decays and {len(names)} names")
        rest = 1.0 - f.sum(axis=0)
        if np.min(rest) < -1e-6:
            raise ValueError("decay-class fractions sum above 1")
        self.fractions = np.concatenate([f, np.clip(rest, 0, None)[None]])
        self.decays = list(decays) + [default if default is not None else (lambda t: np.ones_like(t))]
        self.names = list(names) + [default_name if default is not None else "other (no decay)"]

    def matrix(self, t_ms: np.ndarray) -> np.ndarray:
        """(C + 1, T): each class's decay over the times."""
        t = np.asarray(t_ms, np.float64)
        return np.stack([np.broadcast_to(np.asarray(d(t), np.float64), t.shape) for d in self.decays])


def decay_factors(classes: DecayClasses, t_s: np.ndarray, tol: float = DECAY_RANK_TOL
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The low-rank factors of h_v(t): (u (R, *t.shape) float32, c (R, *shape) float32, info).

    R is the fewest left singular vectors of the class-by-time matrix whose worst class keeps a
    relative RMS error below `tol` over the readout's sample times."""
    t = np.asarray(t_s, np.float64)
    tu, inv = np.unique(np.round(t.ravel(), 12), return_inverse=True)
    present = np.array([np.any(fr > 0) for fr in classes.fractions])
    D = classes.matrix(tu * 1e3)[present]                            # (C', T)
    U, s, Vt = np.linalg.svd(D, full_matrices=False)                  # D = U s Vt
    norms = np.sqrt(np.mean(D ** 2, axis=1))
    for R in range(1, len(s) + 1):
        approx = (U[:, :R] * s[:R]) @ Vt[:R]
        err = float(np.max(np.sqrt(np.mean((approx - D) ** 2, axis=1)) / norms))
        if err <= tol:
            break
    V = U[:, :R] * s[:R]                                              # (C', R): class weights of each u_r
    u = Vt[:R][:, inv].reshape((R,) + t.shape).astype(np.float32)
    c = np.tensordot(V.T, classes.fractions[present], axes=1).astype(np.float32)  # (R, *shape)
    info = {"classes": [n for n, p in zip(classes.names, present) if p], "rank": int(R),
            "factor_error": float(f"{err:.3g}")}
    return u, c, info


class DecayNufft(OffResNufft):
    """The NUFFT with a per-voxel decay (and optionally the B0 model of `base`): the plan's interface
    (shape, coord_shape, forward, adjoint, normal, normal_linop), Toeplitz normal per factor pair.

    Args:
        op: the plain NUFFT plan of coord, or an `OffResNufft` (built without a decay) to combine with.
        coord: (nreadout, nsample, ndim) cycles/FOV.
        classes: the decay classes on the image grid op.shape.
        t_s: (nsample,) or (nreadout, nsample) sample times from the readout start, s.
        toeplitz: False: `normal` applies forward then adjoint.
    """

    def __init__(self, op, coord: np.ndarray, classes: DecayClasses, t_s: np.ndarray, toeplitz: bool = True,
                 tol: float = DECAY_RANK_TOL) -> None:
        base = op if isinstance(op, OffResNufft) else None
        self.op = base.op if base is not None else op
        self.coord = np.asarray(coord)
        self.shape = tuple(self.op.shape)
        self.coord_shape = tuple(self.op.coord_shape)
        if classes.fractions.shape[1:] != self.shape:
            raise ValueError(f"decay classes have shape {classes.fractions.shape[1:]} but the image is {self.shape}")
        u, c, self.info = decay_factors(classes, t_s, tol=tol)
        u = np.broadcast_to(u.reshape(u.shape[:1] + (1,) * (len(self.coord_shape) + 1 - u.ndim) + u.shape[1:]),
                            (u.shape[0],) + self.coord_shape)
        if base is None:
            b, cs = u.astype(np.complex64), c.astype(np.complex64)
        else:  # the product of the two factorisations
            b = (base.b[:, None] * u[None]).reshape((-1,) + self.coord_shape)
            cs = (base.c[:, None] * c[None]).reshape((-1,) + self.shape)
            self.info["b0_segments"] = base.nseg
        self.b = np.ascontiguousarray(b, np.complex64)
        self.c = np.ascontiguousarray(cs, np.complex64)
        self.basis = base.basis if base is not None else None
        self.toeplitz = bool(toeplitz)
        self._kernels = None
        self.kernel_nuffts = 0
        self.rank_tol = KERNEL_RANK_TOL
        log.info("decay model: %d classes (%s), rank %d, factor error %.2g%s", len(self.info["classes"]),
                 ", ".join(self.info["classes"]), self.info["rank"], self.info["factor_error"],
                 f", x {base.nseg} B0 segments" if base is not None else "")

    @property
    def nseg(self) -> int:
        return int(self.b.shape[0])

    def describe(self) -> dict:
        return {**self.info, "terms": self.nseg,
                "normal": "toeplitz (per factor pair)" if self.toeplitz else "nufft pair"}


def label_fractions(labels_on_subpoints: np.ndarray, table: Mapping[int, object]) -> tuple[np.ndarray, list]:
    """Class fractions from labels sampled at S sub-points per voxel: (S, *shape) integer labels ->
    ((C, *shape) fractions of the distinct values of `table` (labels sharing a value are one class),
    the class values in order)."""
    lab = np.asarray(labels_on_subpoints)
    values = list(dict.fromkeys(table.values()))
    out = np.zeros((len(values),) + lab.shape[1:], np.float32)
    for k, v in table.items():
        out[values.index(v)] += np.mean(lab == int(k), axis=0)
    return out, values


# ------------------------------------------------------------------------ from the options and files
REMAINDER_T_MS = np.linspace(0.0, 30.0, 61)
"""Times (ms from the readout start) over which the fastest-decaying class is chosen (the remainder's decay)."""
SUBPOINTS = 3
"""Label-map samples per voxel and axis when a label map is turned into class fractions."""


def preset_decays() -> dict[str, tuple[float, float, float]]:
    """{preset: (T2*short ms, T2*long ms, short fraction)} from the relaxation presets' package data file
    (na23recon/data/relaxation.json, the table `quant.relax` reads; the recon layer cannot import quant)."""
    d = json.loads((files("na23recon") / "data" / "relaxation.json").read_text(encoding="utf-8"))
    return {k: (float(v["t2s_short_ms"]), float(v["t2s_long_ms"]), float(v.get("frac_short", 0.0)))
            for block in ("tissues", "media") for k, v in d[block].items()}


def biexp(t2s_short_ms: float, t2s_long_ms: float, frac_short: float, te_ms: float = 0.0) -> Decay:
    """The decay f exp(-t/T2*s) + (1 - f) exp(-t/T2*l) from the readout start TE, normalised to 1 there."""
    def raw(t_ms):
        t = np.asarray(t_ms, np.float64) + te_ms
        return frac_short * np.exp(-t / t2s_short_ms) + (1 - frac_short) * np.exp(-t / t2s_long_ms)
    norm = float(raw(0.0))
    return lambda t_ms: raw(t_ms) / norm


def named_decay(spec: str, te_ms: float, what: str) -> Decay:
    """A relaxation preset's decay, or a mono-exponential T2* in ms given as a number; InputError otherwise."""
    table = preset_decays()
    s = str(spec).strip()
    if s in table:
        return biexp(*table[s], te_ms=te_ms)
    try:
        v = float(s)
    except ValueError:
        raise InputError(f"{what} {spec!r} is neither a relaxation preset ({', '.join(sorted(table))}) nor a "
                         "T2* in ms") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{what} T2* must be a positive number of ms, got {spec!r}")
    return biexp(v, v, 0.0, te_ms=te_ms)


def sample_labels(labels: Image, affine: np.ndarray, shape: tuple[int, ...], sub: int = SUBPOINTS) -> np.ndarray:
    """Integer labels of `labels` (any grid in scanner coordinates) at sub^3 points per voxel of the grid
    (affine, shape): (sub^3, *shape); points outside the label map's grid are 0."""
    arr = np.asarray(labels.array)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(f"--decay-map must be one 3D label volume, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr - np.round(arr)) > 1e-3):
        raise InputError("--decay-map must hold integer labels")
    arr = np.round(arr).astype(np.int64)
    off = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    inv = np.linalg.inv(labels.affine)
    out = np.zeros((sub ** 3, int(np.prod(shape))), np.int64)
    for i, (a, b, c) in enumerate((a, b, c) for a in off for b in off for c in off):
        pts = grid + np.array([[a], [b], [c]])
        world = affine[:3, :3] @ pts + affine[:3, 3:4]
        vox = np.rint(inv[:3, :3] @ world + inv[:3, 3:4]).astype(np.int64)
        ok = np.all((vox >= 0) & (vox < np.array(arr.shape)[:, None]), axis=0)
        out[i, ok] = arr[vox[0, ok], vox[1, ok], vox[2, ok]]
    return out.reshape((sub ** 3,) + tuple(shape))


def classes_from_options(opts, affine: np.ndarray, shape: tuple[int, ...], te_ms: float | None
                         ) -> DecayClasses | None:
    """The decay classes of `ReconOptions` opts on the grid (affine, shape): None without --decay-map.

    Classes: the presets of --decay-labels over the label map's voxels (as fractions of sub-voxel
    points), the remainder (voxels of no listed label: air, scalp) with the --t2s-ms model, else with
    the fastest-decaying class. Why the fastest: under the Tikhonov term a remainder that decays
    slower than a neighbouring class can take up that class's late, high-k signal at less cost than
    the class's own voxels, and sharpens the class's edges beyond the target PSF. The reference
    vials (agar in air) then read 3.5% above their PSF's prediction and every tissue value calibrated
    on them low: brain phantom, TPI 15 ms, matrix 64, noiseless, CG (weight 0.1), csf target, labels from a 3x
    finer map: vial cores 936 / large WM 900 (x 1e-3 of concentration times weight) with an undecaying
    remainder, 933 with the target's (csf) decay, 921 with agar's, 912 with GM's, 910 with WM's (the
    fastest), against 908 from the target's PSF (`recon.psf` of a CSF point)."""
    if opts.decay_map is None:
        return None
    te = float(te_ms or 0.0)
    if not os.path.isfile(opts.decay_map):
        raise InputError(f"--decay-map: file not found: {opts.decay_map}")
    labs = sample_labels(Image.load(opts.decay_map), affine, shape)
    fr, names = label_fractions(labs, opts.decay_labels)
    if not np.any(fr > 0):
        raise InputError(f"--decay-map holds none of the labels of --decay-labels ({sorted(opts.decay_labels)}) "
                         "inside the field of view")
    decays = [named_decay(n, te, "--decay-labels") for n in names]
    default, rest = _t2s_decay(opts, te), "other (--t2s-ms)"
    if default is None:
        i = int(np.argmin([float(np.mean(d(REMAINDER_T_MS))) for d in decays]))
        default, rest = decays[i], f"other (as {names[i]}, the fastest class)"
    return DecayClasses(fr, decays, names, default=default, default_name=rest)


def _t2s_decay(opts, te_ms: float) -> Decay | None:
    """The --t2s-ms model's decay (mono- or biexponential with --frac-short), None without it."""
    t2s = opts.t2s_model
    if t2s is None:
        return None
    return biexp(t2s, t2s, 0.0, te_ms) if not isinstance(t2s, tuple) else biexp(t2s[0], t2s[1], opts.frac_short, te_ms)


def target_decay(opts, te_ms: float, t_ms: np.ndarray) -> tuple[str, Decay] | None:
    """The target decay of `ReconOptions` opts' decay model, with its name for the sidecar.

    --decay-target when given. Else, for the per-voxel model (--decay-map), the slowest-decaying of
    its classes (the presets of --decay-labels and the --t2s-ms remainder; slowest: the largest mean
    decay over the sample times t_ms, ms from the readout start): every class then gets the PSF of
    the sharpest class (no compartment is blurred more than without a model), while the k-space
    window keeps that class's roll-off, which tames the overshoot of a sharp cut at small objects
    such as the reference vials (brain phantom, TPI 15 ms, matrix 64, CS-TV, SNR 10/20/40: GM/WM
    bias +10.1/+17.6, +6.4/+13.5, +3.7/+10.2% without a model; +17.3/+21.3, +11.2/+15.3, +7.7/+11.3%
    with the vials' agar as target, whose wider PSF spreads the bright CSF into the tissue; +6.9/+12.0,
    +1.2/+5.9, -2.3/+1.4% with the slowest class, CSF, labels from a 3x finer map and an undecaying
    remainder; +10.3/+16.2, +3.5/+8.6, +0.2/+4.2% with the remainder decaying as the fastest class,
    `classes_from_options`). None for the global model without a target (its one decay is deconvolved)."""
    if opts.decay_target is not None:
        return str(opts.decay_target), named_decay(opts.decay_target, te_ms, "--decay-target")
    if opts.decay_map is None:
        return None
    cands = {str(n): named_decay(n, te_ms, "--decay-labels") for n in dict.fromkeys(opts.decay_labels.values())}
    if opts.t2s_model is not None:
        cands["--t2s-ms"] = _t2s_decay(opts, te_ms)
    t = np.unique(np.asarray(t_ms, np.float64).ravel())
    name = max(cands, key=lambda k: float(np.mean(cands[k](t))))
    return f"{name} (slowest class)", cands[name]
