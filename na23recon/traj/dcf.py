"""Density compensation functions (DCF) for 3D non-Cartesian trajectories.

Scale: every DCF here is the k-space volume a sample stands for, in cells of the Cartesian grid
(units (cycles/FOV)^3 when k is given in cycles per FOV, or (1/m)^3 when given in 1/m), so that
sum_j w_j f(k_j) ~ integral f(k) d^3k. With k in cycles per FOV the weights of a trajectory
covering the sphere of radius N/2 add up to ~ (4/3) pi (N/2)^3.

- `dcf_radial_shells`: exact volume of the spherical shell each sample of a radial-type readout
  (straight spokes) stands for; equals |k|^2 dk (plus the centre sphere's share at k = 0) and so
  is the analytic |k|^2 DCF of radial, the constant k0^2 dk0 of density-adapted radial (Nagel
  et al. 2009, MRM 62:1565), and it follows ramp sampling too.
- `dcf_analytic`: the closed forms: radial |k|^2 with a centre floor, DA-radial (Nagel et al.
  2009, MRM 62:1565) and TPI (Boada et al. 1997, MRM 38:1022) |k|^2 below k0 and k0^2 above, each scaled to the
  sampled volume.
- `dcf_pipe_menon`: iterative w <- w / (C (C^T w)) (Pipe & Menon 1999, MRM 41:179) with the
  NUFFT's own gridding kernel.
- `normalise_dcf`: rescale weights of any scale to absolute k-space volumes in (cycles/FOV)^ndim
  (what the reconstructions take), their sum the volume the samples cover (`covered_volume`).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import InputError
from ..nufft import Nufft

log = logging.getLogger(__name__)


def _check_k(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 3 or k.shape[-1] not in (2, 3):
        raise InputError(f"k must have shape (nreadout, nsample, 2 or 3), found {k.shape}")
    return k


def dcf_radial_shells(k: np.ndarray) -> np.ndarray:
    """DCF (nreadout, nsample) of straight-spoke trajectories: each sample's share of its k-space shell.

    k : (nreadout, nsample, 3) positions along straight lines through the origin (centre-out or
        full-diameter, any spacing along the spoke, e.g. ramp sampling or density adaptation),
        in any unit (the DCF is in that unit cubed). Readouts that are not straight (TPI) fall
        back to `dcf_shells` with equal solid angles (centre-out, |k| increasing).
    Along a spoke, sample j owns the signed interval [b_lo, b_hi] between the midpoints to its
    neighbours (half a spacing beyond the ends, from the centre for a sample at k = 0); its share
    of the shell volume is 4 pi (b_hi^3 - b_lo^3) / 3 divided by the number of half-spokes that
    cross each radius (nreadout for centre-out, 2 nreadout for full-diameter). For equal spacing
    dk this is 4 pi |k|^2 dk / nhalf (the classical |k|^2 DCF) with the centre sample's floor
    pi dk^3 / 6 / nhalf.
    """
    k = _check_k(k)
    nread, ns, ndim = k.shape
    if ns < 2:
        raise InputError(f"a spoke needs at least 2 samples, found {ns}")
    r = np.linalg.norm(k, axis=-1)
    # signed position along each spoke: the sign of the projection on the spoke's far end
    far = k[np.arange(nread), np.argmax(r, axis=1)]
    proj = np.einsum("rsd,rd->rs", k, far) / np.maximum(np.linalg.norm(far, axis=-1), 1e-300)[:, None]
    if ndim == 3 and np.any(np.abs(np.abs(proj) - r) > 1e-6 * r.max()):
        # twisted readouts (TPI, a file without its own DCF): not straight spokes; per-readout
        # shells with equal solid angles are the closest closed form
        log.info("readouts are not straight spokes: using dcf_shells with equal solid angles")
        return dcf_shells(k)
    s = np.sign(proj) * r
    centre_out = bool(np.all(s >= -1e-9 * r.max()))
    mid = 0.5 * (s[:, 1:] + s[:, :-1])
    lo = np.concatenate([2 * s[:, :1] - mid[:, :1], mid], axis=1)
    hi = np.concatenate([mid, 2 * s[:, -1:] - mid[:, -1:]], axis=1)
    if centre_out:
        lo = np.maximum(lo, 0.0)
    if ndim == 3:
        vol = 4.0 * math.pi * (hi ** 3 - lo ** 3) / 3.0
    else:
        vol = math.pi * (hi * np.abs(hi) - lo * np.abs(lo))
    nhalf = nread if centre_out else 2 * nread
    return np.abs(vol) / nhalf


def dcf_analytic(k: np.ndarray, kind: str = "radial", k0: float = 0.0, kmax: float | None = None,
                 floor_frac: float | None = None) -> np.ndarray:
    """Closed-form DCF (nreadout, nsample), scaled so the weights add up to the sampled volume.

    kind 'radial': w ~ |k|^2 with a floor at the centre (default floor |k| >= half the median
        spacing between samples of a spoke over sqrt(6): the centre sphere's share);
    kind 'dar' (Nagel 2009) and 'tpi' (Boada 1997): w ~ |k|^2 below k0 and k0^2 above (the
        sampling density is ~1/|k|^2 inside k0 and uniform outside).
    k in any unit; k0 and kmax (default max |k|) in the same unit; the result is scaled so that
    sum w = (4/3) pi kmax^3 (pi kmax^2 in 2D), the volume the trajectory covers.
    """
    k = _check_k(k)
    r = np.linalg.norm(k, axis=-1)
    kmax = float(r.max()) if kmax is None else float(kmax)
    if kind == "radial":
        if floor_frac is None:
            dk = np.median(np.abs(np.diff(r, axis=1)))
            floor = dk / (2 * math.sqrt(6.0))
        else:
            floor = floor_frac * kmax
        w = np.maximum(r, floor) ** (k.shape[-1] - 1)
    elif kind in ("dar", "tpi"):
        if not 0 < k0 <= kmax:
            raise InputError(f"{kind} DCF needs 0 < k0 <= kmax, found k0 = {k0}, kmax = {kmax}")
        floor = np.median(np.abs(np.diff(r, axis=1))) / (2 * math.sqrt(6.0))
        w = np.minimum(np.maximum(r, floor), k0) ** (k.shape[-1] - 1)
    else:
        raise InputError(f"DCF kind must be 'radial', 'dar' or 'tpi', found {kind!r}")
    # The closed forms assume a constant radial step wherever they use |k|^2: inside k0 (and
    # everywhere for plain radial). Samples on the gradient ramp (ultra-short-TE ramp sampling)
    # are closer together; weight them by their step relative to the plateau's, else the first
    # samples of every readout are weighted up to tens of times too much.
    step = _radial_step(r)
    ramp = step / np.maximum(step.max(axis=1, keepdims=True), 1e-30)
    if floor_frac is None:  # the centre sample's floor from its own step (its ball: step^3 / 24)
        rr = np.maximum(r, step / (2 * math.sqrt(6.0)))
        w = (rr if kind == "radial" else np.minimum(rr, k0)) ** (k.shape[-1] - 1)
    if kind != "radial":
        ramp = np.where(r < k0, ramp, 1.0)
    w = w * ramp
    vol = 4.0 / 3.0 * math.pi * kmax ** 3 if k.shape[-1] == 3 else math.pi * kmax ** 2
    return w * (vol / w.sum())


def _radial_step(r: np.ndarray) -> np.ndarray:
    """Centred difference of |k| along each readout (nreadout, nsample): the local radial step."""
    d = np.abs(np.diff(r, axis=1))
    step = np.empty_like(r)
    step[:, 0] = d[:, 0]
    step[:, -1] = d[:, -1]
    step[:, 1:-1] = 0.5 * (d[:, 1:] + d[:, :-1])
    return step


def dcf_shells(k: np.ndarray, solid_angle: np.ndarray | None = None) -> np.ndarray:
    """Analytic DCF (nreadout, nsample) of centre-out readouts whose |k| grows monotonically.

    Each sample stands for the solid angle of its readout (`solid_angle` (nreadout,) sr; default
    4 pi / nreadout, uniformly spread readouts) times the radial interval between the midpoints
    to its neighbours: w = Omega (b_hi^3 - b_lo^3) / 3 (in k's unit cubed). For TPI (Boada 1997)
    and DA-radial (Nagel 2009) this is |k|^2 dk Omega, i.e. ~|k|^2 inside k0 and the constant
    k0^2 dk0 Omega beyond it, including the ramp samples near the centre; for straight spokes it
    equals `dcf_radial_shells`. Solid angles per cone make it exact for TPI's cone-wise
    projection counts (ceil(2 pi R p sin theta) is not exactly proportional to sin theta).
    """
    k = _check_k(k)
    if k.shape[-1] != 3:
        raise InputError(f"dcf_shells needs 3D k (nreadout, nsample, 3), found {k.shape}")
    nread = k.shape[0]
    r = np.linalg.norm(k, axis=-1)
    mid = 0.5 * (r[:, 1:] + r[:, :-1])
    lo = np.concatenate([np.zeros((nread, 1)), mid], axis=1)
    hi = np.concatenate([mid, r[:, -1:] + (r[:, -1:] - mid[:, -1:])], axis=1)
    if solid_angle is None:
        solid_angle = np.full(nread, 4.0 * math.pi / nread)
    solid_angle = np.asarray(solid_angle, dtype=np.float64)
    if solid_angle.shape != (nread,):
        raise InputError(f"solid_angle must have shape ({nread},), found {solid_angle.shape}")
    return np.abs(hi ** 3 - lo ** 3) / 3.0 * solid_angle[:, None]


def dcf_for(traj) -> np.ndarray:
    """Analytic DCF (nreadout, nsample) in (1/m)^3 for a `core.Trajectory` of any kind.

    Radial: `dcf_radial_shells`; DA-radial and TPI: `dcf_shells` with the readouts' solid angles
    from the trajectory's `GradientDesign` (equal solid angles without one).
    Multiply by FOV^3 (m^3) for (cycles/FOV)^3.
    """
    if traj.kind == "radial":
        return dcf_radial_shells(traj.k)
    solid = getattr(traj.design, "readout_solid_angle", None)
    return dcf_shells(traj.k, solid)


def dcf_pipe_menon(coord: np.ndarray, shape: tuple[int, ...], n_iter: int = 20, eps: float = 1e-4,
                   pad: int | None = None, w0: np.ndarray | None = None, op=None,
                   tol: float = 1e-3) -> np.ndarray:
    """Iterative DCF (Pipe & Menon 1999, MRM 41:179): w <- w / (C (C^T w)), C the gridding kernel.

    C^T is `Nufft.spread` (values -> oversampled grid) and C is `Nufft.interp` (grid -> values),
    the NUFFT's own ES kernel, so C C^T convolves with the kernel's autocorrelation (Zwart, Johnson
    & Pipe 2012, MRM 67:701 for the grid-based form). At the fixed point the density-weighted
    kernel sum is 1 at every sample: gridding all-ones data gives a flat response.

    Parameters
    ----------
    coord : float (nreadout, nsample, ndim) in cycles per FOV (edge of a matrix N at +-N/2).
    shape : image shape N (ndim ints) of the reconstruction.
    n_iter : maximum iterations; stops early once max |C C^T w - 1| < tol.
    eps : NUFFT tolerance: sets the kernel width (1e-4 gives ~7 taps at upsampling 2, a smooth
        density estimate at Nyquist-spaced spokes).
    pad : k-space margin (cycles/FOV) added to each side of the grid so that samples at the edge
        do not wrap around onto the opposite edge of the periodic grid;
        default the kernel's half-width + 2.
    w0 : starting weights (nreadout, nsample); default 1 (an analytic DCF converges faster).
    op : an existing `Nufft` plan on the padded shape to reuse (advanced).

    Returns float64 (nreadout, nsample), scaled to absolute k-space volumes in (cycles/FOV)^ndim:
    the weights add up to the volume of the ball (disc) of radius max |coord|.
    """
    coord = np.asarray(coord, dtype=np.float64)
    ndim = coord.shape[-1]
    if len(shape) != ndim:
        raise InputError(f"shape {tuple(shape)} does not match coord's {ndim} dimensions")
    if op is None:
        if pad is None:
            # half-width of the kernel in cycles/FOV at upsampling 2 is <= 4 for eps >= 1e-6
            pad = 6
        padded = tuple(int(n) + 2 * int(pad) for n in shape)
        op = Nufft(coord, padded, eps=eps, upsampling=2.0, dtype=np.complex128)
    w = np.ones(coord.shape[:-1]) if w0 is None else np.asarray(w0, dtype=np.float64).copy()
    for it in range(n_iter):
        d = op.interp(op.spread(w.astype(np.complex128))).real
        d = np.maximum(d, 1e-12 * d.max())
        err = float(np.max(np.abs(d - 1.0)))
        log.info("Pipe-Menon iteration %d: max |C C^T w - 1| = %.2e", it, err)
        if err < tol:
            break
        w = w / d
    r = np.sqrt(np.sum(coord ** 2, axis=-1))
    kmax = float(r.max())
    vol = 4.0 / 3.0 * math.pi * kmax ** 3 if ndim == 3 else math.pi * kmax ** 2
    return w * (vol / w.sum())


def gridded_response(coord: np.ndarray, dcf: np.ndarray, shape: tuple[int, ...], eps: float = 1e-4,
                     pad: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Grid all-ones data with `dcf` (the PSF's k-space view): returns (response, |k| of each cell).

    response : float (*grid_shape) = sum_j w_j phi(u_j - g), normalised to its median inside half
        the sampled radius; radius : same shape, |k| of each grid cell in cycles/FOV.
    Used to check a DCF: a good one gives a flat response inside the sampled ball.
    """
    coord = np.asarray(coord, dtype=np.float64)
    padded = tuple(int(n) + 2 * pad for n in shape)
    op = Nufft(coord, padded, eps=eps, upsampling=2.0, dtype=np.complex128)
    grid = op.spread(np.asarray(dcf, dtype=np.complex128)).real
    axes = [(np.arange(g) - g // 2) * (n / g) for g, n in zip(op.grid_shape, padded)]
    mesh = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt(sum(m ** 2 for m in mesh))
    kmax = float(np.sqrt(np.max(np.sum(coord ** 2, axis=-1))))
    grid = grid / np.median(grid[radius < 0.5 * kmax])
    return grid, radius


def covered_volume(coord: np.ndarray) -> float:
    """The k-space volume (area in 2D) the samples cover, in coord's unit to the power ndim.

    coord: (nreadout, nsample, ndim), or a flat (M, ndim) list. Each readout owns the interval to
    the midpoints between it and its neighbours, so it reaches half its last radial step beyond
    its outermost sample. Readouts from the centre (every first sample at k = 0: radial,
    DA-radial, TPI) or through it (every readout's ends nearly opposite: full-diameter spokes)
    cover the star-shaped region whose radius R(n) in the direction n of each half-readout is
    that reach; with the half-readouts spread evenly over the directions its volume is
    (4/3) pi mean(R^3) (pi mean(R^2) in 2D), the mean over half-readouts. For nominal readouts
    that all end at kmax this is the ball of radius kmax + step/2. Gradient delays shorten the
    spokes by different amounts in different directions (k_i(t - d_i): by gamma G (n . d n) on a
    constant-gradient spoke), and the ball of the longest spoke would overstate the volume by
    3 gamma G (mean(d) - min(d)) / kmax, a global gain of +1.4% at matrix 64 for delays 2/5/8 us.
    Other readouts (Cartesian lines, stacks) and flat lists: the ball of the largest radius
    (plus the median last step for readouts).
    """
    coord = np.asarray(coord, dtype=np.float64)
    ndim = coord.shape[-1]
    unit = 4.0 / 3.0 * np.pi if ndim == 3 else np.pi
    r = np.sqrt(np.sum(coord ** 2, axis=-1))
    rmax = float(r.max())
    if coord.ndim != 3 or coord.shape[1] < 2:
        return unit * rmax ** ndim
    rows = np.arange(r.shape[0])
    end = np.argmax(r, axis=1)  # the outermost sample of each readout and its inner neighbour
    step = np.abs(r[rows, end] - r[rows, np.where(end > 0, end - 1, 1)])
    reach = r[rows, end] + 0.5 * step
    if np.all(r[:, 0] <= 1e-6 * max(rmax, 1e-300)):  # centre-out: one half-readout each
        return unit * float(np.mean(reach ** ndim))
    first, last = coord[:, 0], coord[:, -1]
    cos = np.sum(first * last, axis=-1) / np.maximum(r[:, 0] * r[:, -1], 1e-300)
    if np.all(cos < -0.99):  # through the centre: two half-readouts each
        out = r[:, 0] + 0.5 * np.abs(r[:, 0] - r[:, 1])
        inn = r[:, -1] + 0.5 * np.abs(r[:, -1] - r[:, -2])
        return unit * float(np.mean(np.concatenate([out, inn]) ** ndim))
    return unit * (rmax + 0.5 * float(np.median(step))) ** ndim


def normalise_dcf(dcf: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Scale density weights of any scale to absolute k-space volumes in (cycles/FOV)^ndim.

    coord: (nreadout, nsample, ndim) in cycles/FOV, or a flat (M, ndim) list; dcf: coord.shape[:-1].
    The weights are scaled to add up to the volume the samples cover (`covered_volume`): the ball
    (disc in 2D) of radius max |k| plus half the radial step of the readouts' last samples (each
    sample owns the interval to the midpoints between it and its neighbours) when every readout
    reaches the same radius; for readouts from or through the centre that end at different radii
    (gradient delays) the star-shaped region they reach; max |k| for a flat list.
    """
    dcf = np.asarray(dcf, dtype=np.float64)
    coord = np.asarray(coord)
    if dcf.shape != coord.shape[:-1]:
        raise InputError(f"density compensation has shape {dcf.shape} but the trajectory {coord.shape[:-1]}")
    if not np.all(np.isfinite(dcf)) or np.any(dcf < 0) or dcf.sum() <= 0:
        raise InputError("density compensation weights must be finite, non-negative and not all zero")
    return (dcf * (covered_volume(coord) / dcf.sum())).astype(np.float32)
