"""A k-space trajectory: sample positions in 1/m, their times and density compensation.

One type for the trajectory file, the generators, the simulator and the reconstruction. k is
stored in cycles per metre (1/m); the NUFFT's unit, cycles per FOV (the edge of a matrix N at
+-N/2, sigpy's convention), is made in one place: `Trajectory.coord(fov_mm)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: A trajectory may reach beyond the matrix edge by this fraction before a warning (ramp samples).
KMAX_TOLERANCE = 0.02


@dataclass(frozen=True)
class SampleSelection:
    """Which samples a lower-resolution reconstruction keeps (`Trajectory.crop`).

    `index`: an index tuple over (nreadout, nsample) that keeps the layout (centre-out readouts
    sharing one radial profile are cut at one sample), or a boolean mask over (nreadout, nsample)
    whose kept samples become one "readout" (1, M).
    """

    index: tuple | np.ndarray

    def apply(self, a: np.ndarray, lead: int = 0) -> np.ndarray:
        """Select the sample axes of `a` (after `lead` leading axes): (..., nreadout, nsample, ...)."""
        idx = (slice(None),) * lead
        if isinstance(self.index, tuple):
            return a[idx + self.index]
        return a[idx + (self.index,)][idx + (None,)]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Sample positions of a non-Cartesian acquisition.

    k: float64 (nreadout, nsample, ndim) in 1/m; k[..., i] runs along image axis i (the scan's
        logical read, phase, partition axes).
    t: float64 (nsample,) or (nreadout, nsample) seconds from excitation, or None.
    dcf: float64 (nreadout, nsample) density compensation (any scale), or None.
    kind: 'radial', 'dar', 'tpi', ... or None when unknown.
    meta: scalar metadata stored with a file (design parameters).
    design: the gradient design of a generated trajectory (`traj.gradients.GradientDesign`), or None.

    Made with invalid arrays (shape, NaN/inf, negative DCF) it raises InputError.
    """

    k: np.ndarray
    t: np.ndarray | None = None
    dcf: np.ndarray | None = None
    kind: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    design: Any = None

    def __post_init__(self) -> None:
        k = np.asarray(self.k)
        if k.dtype.kind not in "fiu":
            raise InputError(f"trajectory k must be a real float array, found dtype {k.dtype}")
        if k.ndim != 3 or k.shape[-1] not in (2, 3) or k.shape[0] < 1 or k.shape[1] < 1:
            raise InputError(f"trajectory k must have shape (nreadout, nsample, 3), found {k.shape}")
        k = k.astype(np.float64, copy=False)
        if not np.all(np.isfinite(k)):
            raise InputError(f"trajectory k must be finite, found {int(np.sum(~np.isfinite(k)))} NaN/inf value(s)")
        object.__setattr__(self, "k", k)
        if self.dcf is not None:
            dcf = np.asarray(self.dcf)
            if dcf.shape != k.shape[:2]:
                raise InputError(f"trajectory dcf must have shape {k.shape[:2]} (nreadout, nsample), found {dcf.shape}")
            if dcf.dtype.kind not in "fiu":
                raise InputError(f"trajectory dcf must be real numbers, found dtype {dcf.dtype}")
            dcf = dcf.astype(np.float64, copy=False)
            if not np.all(np.isfinite(dcf)) or np.any(dcf < 0):
                raise InputError("trajectory dcf must be finite and >= 0, found NaN/inf or negative values")
            object.__setattr__(self, "dcf", dcf)
        if self.t is not None:
            t = np.asarray(self.t)
            if t.shape not in ((k.shape[1],), k.shape[:2]):
                raise InputError(f"trajectory t must have shape ({k.shape[1]},) (nsample,), found {t.shape}")
            if t.dtype.kind not in "fiu":
                raise InputError(f"trajectory t must be real numbers, found dtype {t.dtype}")
            t = t.astype(np.float64, copy=False)
            if not np.all(np.isfinite(t)):
                raise InputError("trajectory t must be finite, found NaN/inf values")
            object.__setattr__(self, "t", t)

    # --- shape --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(nreadout, nsample)."""
        return self.k.shape[0], self.k.shape[1]

    @property
    def nreadout(self) -> int:
        return self.k.shape[0]

    @property
    def nsample(self) -> int:
        return self.k.shape[1]

    @property
    def ndim(self) -> int:
        return self.k.shape[2]

    def kmax_per_m(self) -> float:
        """Largest |k| of any sample, 1/m."""
        return float(np.sqrt(np.max(np.sum(self.k ** 2, axis=-1))))

    # --- units ---------------------------------------------------------------------------------
    def coord(self, fov_mm: float | tuple[float, ...] | np.ndarray) -> np.ndarray:
        """k in cycles per FOV, float32 (nreadout, nsample, ndim): k[1/m] * FOV[m].

        The one unit rule of the toolkit: a matrix N spans -N/2..N/2 (sigpy's convention).
        fov_mm: a scalar or one FOV per axis (ndim,).
        """
        return (self.k * _fov_m(fov_mm, self.ndim)).astype(np.float32)

    @classmethod
    def from_coord(cls, coord: np.ndarray, fov_mm: float | tuple[float, ...] | np.ndarray,
                   **fields: Any) -> Trajectory:
        """The inverse of `coord`: a Trajectory from k in cycles per FOV (matrix N at +-N/2).

        `fields`: the other fields (t, dcf, kind, meta, design).
        """
        coord = np.asarray(coord)
        if coord.dtype.kind not in "fiu":
            raise InputError(f"trajectory k must be a real float array, found dtype {coord.dtype}")
        ndim = coord.shape[-1] if coord.ndim else 0
        return cls(k=coord.astype(np.float64) / _fov_m(fov_mm, ndim), **fields)

    def check_reach(self, fov_mm, base_matrix: int) -> None:
        """InputError unless the trajectory reaches the protocol's matrix edge N/2 cycles/FOV.

        Reaching far beyond N/2 (more than sqrt(3) of the cube's corners) or not half of it means
        k is in the wrong units (cycles/FOV, 1/mm, or normalised to kmax instead of 1/m). Beyond
        N/2 by more than KMAX_TOLERANCE warns.
        """
        coord = self.coord(fov_mm).astype(np.float64)
        reach = float(np.sqrt(np.max(np.sum(coord ** 2, axis=-1))))
        half = float(base_matrix) / 2
        if not 0.5 * half <= reach <= 1.75 * half:
            raise InputError(f"trajectory reaches |k| = {reach:.3g} cycles/FOV but the protocol's matrix "
                             f"{int(base_matrix)} ends at {half:g}: is k in 1/m?")
        if reach > half * (1 + KMAX_TOLERANCE):
            log.warning("trajectory extends to %.3g cycles/FOV, beyond the matrix edge %g", reach, half)

    # --- selections ------------------------------------------------------------------------------
    def crop(self, matrix: int, fov_mm) -> tuple[Trajectory, SampleSelection | None]:
        """The samples a reconstruction at matrix `matrix` (below the acquired one) can use: those
        inside the ball |k| <= matrix/2 cycles/FOV. Returns (trajectory, selection to apply to the
        k-space data); (self, None) when every sample fits.

        Centre-out readouts sharing one radial profile (radial, DA-radial, TPI) are cut at one
        sample index and keep their (nreadout, nsample) layout; other trajectories become one
        readout holding every kept sample.
        """
        r = np.sqrt(np.sum(self.coord(fov_mm).astype(np.float64) ** 2, axis=-1))
        n = float(matrix)
        if r.max() <= n / 2 * (1 + KMAX_TOLERANCE):
            return self, None
        if np.all(np.diff(r, axis=1) >= -1e-6) and np.ptp(r, axis=0).max() < 1e-3 * r.max():
            s = int(np.searchsorted(r.max(axis=0), n / 2, side="right"))
            log.info("matrix %d: keeping the first %d of %d samples of each readout", matrix, s, r.shape[1])
            sel = SampleSelection((slice(None), slice(0, s)))
        else:
            keep = r <= n / 2
            log.info("matrix %d: keeping %d of %d samples inside |k| <= %g cycles/FOV", matrix, keep.sum(),
                     keep.size, n / 2)
            sel = SampleSelection(keep)
        return self.select(sel), sel

    def select(self, sel: SampleSelection) -> Trajectory:
        """The trajectory of the selected samples (k, dcf and t alike)."""
        t = self.t
        if t is not None:
            if t.ndim == 1 and isinstance(sel.index, tuple) and len(sel.index) == 2 \
                    and isinstance(sel.index[1], slice):
                t = t[sel.index[1]]  # whole readouts keep one (nsample,) time axis, as the file stores it
            else:
                t = sel.apply(np.broadcast_to(t, self.shape))
        return replace(self, k=sel.apply(self.k), dcf=None if self.dcf is None else sel.apply(self.dcf), t=t,
                       design=None)

    def with_dcf(self, dcf: np.ndarray | None) -> Trajectory:
        """A copy with another density compensation."""
        return replace(self, dcf=dcf)

    def sample_times(self) -> np.ndarray | None:
        """(nreadout, nsample) or (nsample,) times in s from the first sample (the echo), or None."""
        if self.t is None:
            return None
        return self.t - float(np.min(self.t))


def _fov_m(fov_mm, ndim: int) -> np.ndarray:
    """FOV in m, a scalar or one per axis (the first `ndim` of a longer tuple); InputError unless > 0."""
    fov_m = np.asarray(fov_mm, dtype=np.float64) * 1e-3
    if fov_m.ndim and fov_m.shape[0] != ndim:
        fov_m = fov_m[:ndim]
    bad_shape = fov_m.ndim > 1 or (fov_m.ndim == 1 and fov_m.shape[0] != ndim)
    if bad_shape or not np.all(np.isfinite(fov_m)) or np.any(fov_m <= 0):
        raise InputError(f"FOV must be positive, one value or one per axis of k ({ndim}), to convert k between "
                         f"1/m and cycles/FOV; got {fov_mm}")
    return fov_m
