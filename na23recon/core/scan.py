"""In-memory scan: k-space samples plus the acquisition parameters every later step needs.

`Scan` is what the twix and MRD readers return, what the simulator builds and what the twix
writer writes. Its k-space layout is fixed here so that readers, writers and the
reconstruction agree:

    data  complex64 (nrep, necho, ncoil, nreadout, nsample)

`nreadout` is the readout (spoke / projection) index in acquisition order, which is the order of
the trajectory file's first axis; `nsample` is the ADC sample index along one readout.
A multi-slice 2D scan (`Geometry.slice_positions_mm`, twix `Sli` counter) folds its slices into
the readout axis, slice-major: readout r of slice s is index s * (nreadout // nslices) + r, and
its trajectory is one slice's (nreadout // nslices, nsample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .acquisition import Acquisition


@dataclass
class Scan:
    """k-space of one measurement.

    data:  complex64 (nrep, necho, ncoil, nreadout, nsample)
    acquisition: the protocol (`Acquisition`)
    noise: complex64 (ncoil, nnoise) samples of the noise-adjust scan, or None
    notes: what the reader repaired (e.g. {'bad_samples_zeroed': 3}), copied into the sidecar
    """

    data: np.ndarray
    acquisition: Acquisition
    noise: np.ndarray | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != 5:
            raise InputError(
                f"scan data must be (nrep, necho, ncoil, nreadout, nsample), got shape {self.data.shape}"
            )
        if not isinstance(self.acquisition, Acquisition):
            raise InputError(f"scan acquisition must be an Acquisition, got {type(self.acquisition).__name__}")

    @property
    def ncoil(self) -> int:
        return self.data.shape[2]

    @property
    def nreadout(self) -> int:
        return self.data.shape[3]

    @property
    def nsample(self) -> int:
        return self.data.shape[4]

    def kspace(self, echo: int = 0, rep: int = 0) -> np.ndarray:
        """k-space of one echo and repetition: complex64 (ncoil, nreadout, nsample)."""
        return self.data[rep, echo]

    @property
    def nrep(self) -> int:
        return self.data.shape[0]

    @property
    def necho(self) -> int:
        return self.data.shape[1]

    @property
    def nslices(self) -> int:
        """Number of 2D slices folded into the readout axis (1 unless the geometry lists several)."""
        geo = self.acquisition.geometry
        return 1 if geo is None else geo.nslices

    def check_trajectory(self, traj) -> None:
        """InputError unless `traj` (a `Trajectory`) has this scan's (nreadout, nsample), per slice."""
        nsl = self.nslices
        if nsl > 1:
            if self.nreadout % nsl or traj.shape != (self.nreadout // nsl, self.nsample):
                raise InputError(f"trajectory has {traj.shape[0]} readouts x {traj.shape[1]} samples but the scan has "
                                 f"{self.nslices} slices of {self.nreadout / nsl:g} readouts x {self.nsample} samples")
            return
        if traj.shape != (self.nreadout, self.nsample):
            raise InputError(f"trajectory has {traj.shape[0]} readouts x {traj.shape[1]} samples but the scan has "
                             f"{self.nreadout} readouts x {self.nsample} samples")
