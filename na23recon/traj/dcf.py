"""Density compensation functions (DCF) for 3D non-Cartesian trajectories.

Scale: every DCF here is the k-space volume a sample stands for, in cells of the Cartesian grid
(units (cycles/FOV)^3 when k is given in cycles per FOV, or (1/m)^3 when given in 1/m), so that
sum_j w_j f(k_j) ~ integral f(k) d^3k. With k in cycles per FOV the weights of a trajectory
covering the sphere of radius N/2 add up to ~ (4/3) pi (N/2)^3.

- `dcf_radial_shells`: exact volume of the spherical shell each sample of a radial-type readout
  (straight spokes) stands for; equals |k|^2 dk (plus the centre sphere's share at k = 0) and so
  is the analytic |k|^2 DCF of radial, the constant k0^2 dk0 of density-adapted radial (Nagel
  et al. 2009, MRM 62:1565), and it follows ramp sampling too.
- `dcf_analytic`: the closed forms of REFERENCES.md: radial |k|^2 with a centre floor, DA-radial
  and TPI (Boada et al. 1997, MRM 38:1022) |k|^2 below k0 and k0^2 above, each scaled to the
  sampled volume.
- `dcf_pipe_menon`: iterative w <- w / (C (C^T w)) (Pipe & Menon 1999, MRM 41:179) with the
  NUFFT's own gridding kernel.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import InputError

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
        in any unit (the DCF is in that unit cubed).
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
    s = np.sign(np.einsum("rsd,rd->rs", k, far)) * r
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
    vol = 4.0 / 3.0 * math.pi * kmax ** 3 if k.shape[-1] == 3 else math.pi * kmax ** 2
    return w * (vol / w.sum())
