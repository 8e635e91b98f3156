"""In-memory scan: k-space samples plus the acquisition parameters every later step needs.

`Scan` is what the twix reader returns (`na23recon.io.twix.read_scan`), what the simulator builds
and what `write_scan` writes. Its k-space layout is fixed here so that readers, writers and the
reconstruction agree:

    data  complex64 (nrep, necho, ncoil, nreadout, nsample)

`nreadout` is the readout (spoke / projection) index in acquisition order, which is the order of
the trajectory file's first axis; `nsample` is the ADC sample index along one readout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError


@dataclass
class ScanInfo:
    """Acquisition parameters, SI-free names carry their unit (DESIGN.md)."""

    nucleus: str = "23Na"
    b0_T: float = 3.0
    larmor_hz: float = 0.0
    te_ms: list[float] = field(default_factory=lambda: [0.3])
    tr_ms: float = 100.0
    flip_deg: float = 90.0
    dwell_us: float = 10.0
    fov_mm: tuple[float, float, float] = (240.0, 240.0, 240.0)
    matrix: tuple[int, int, int] = (64, 64, 64)
    ref_voltage: float | None = None
    patient_position: str = "HFS"
    slice_position_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Centre of the imaging volume in Siemens patient coordinates (Sag, Cor, Tra) = LPS, mm."""
    slice_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Unit normal of the volume (Sag, Cor, Tra) = LPS components."""
    inplane_rot_rad: float = 0.0
    coil_names: list[str] = field(default_factory=list)
    software_version: str = ""
    protocol_name: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict (the sidecar's `acquisition` block uses a subset of it)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def sidecar_acquisition(self) -> dict:
        """The DESIGN.md sidecar `acquisition` block."""
        return {
            "nucleus": self.nucleus,
            "b0_T": float(self.b0_T),
            "te_ms": [float(t) for t in self.te_ms],
            "tr_ms": float(self.tr_ms),
            "flip_deg": float(self.flip_deg),
            "dwell_us": float(self.dwell_us),
            "fov_mm": [float(f) for f in self.fov_mm],
            "matrix": [int(m) for m in self.matrix],
        }


@dataclass
class Scan:
    """k-space of one measurement.

    data:  complex64 (nrep, necho, ncoil, nreadout, nsample)
    noise: complex64 (ncoil, nnoise) samples of the noise-adjust scan, or None
    info:  ScanInfo
    """

    data: np.ndarray
    info: ScanInfo
    noise: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 5:
            raise InputError(
                f"scan data must be (nrep, necho, ncoil, nreadout, nsample), got shape {self.data.shape}"
            )

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
