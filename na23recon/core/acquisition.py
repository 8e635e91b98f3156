"""Acquisition parameters of one measurement: what every later step needs to know of the protocol.

One type for the twix and MRD readers, the simulator and the sidecar's `acquisition` block.
Unknown values are None, never 0: a reader that cannot find the TR says so, and a step that
needs it asks for it (`require`). Units are in the names (ms, us, deg, T, Hz).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError
from .geometry import Geometry

#: The sidecar `acquisition` block's fields (the file contract).
SIDECAR_FIELDS = ("nucleus", "b0_T", "te_ms", "tr_ms", "flip_deg", "dwell_us", "fov_mm", "matrix")

# (lowest, highest, lowest included) of each number a protocol can hold; outside: InputError.
_NAMES = {"b0_T": "field strength (b0_T)", "larmor_hz": "frequency (larmor_hz)", "tr_ms": "TR (tr_ms)",
          "flip_deg": "flip angle (flip_deg)", "dwell_us": "dwell time (dwell_us)", "ref_voltage": "reference voltage"}
_RANGES = {
    "b0_T": (0.0, 30.0, False),
    "larmor_hz": (0.0, 2e9, False),
    "tr_ms": (0.0, 1e5, False),
    "flip_deg": (0.0, 180.0, False),
    "dwell_us": (0.0, 1e5, False),
    "ref_voltage": (0.0, 1e4, True),
}
MAX_TE_MS = 1e4


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"acquisition {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise InputError(f"acquisition {name} must be a finite number, got {value!r}")
    lo, hi, closed = _RANGES[name]
    if not ((v >= lo) if closed else (v > lo)) or v > hi:
        raise InputError(f"acquisition {_NAMES[name]} = {v:g} is impossible: expected "
                         f"{'[' if closed else '('}{lo:g}, {hi:g}]")
    return v


@dataclass(frozen=True)
class Acquisition:
    """Protocol of one measurement.

    nucleus: '23Na', '1H', ... (None: unknown).
    b0_T, larmor_hz: field strength (T) and the nucleus' transmit frequency (Hz).
    te_ms: one echo time per echo, excitation to the first sample (ms).
    tr_ms, flip_deg, dwell_us: repetition time, nominal flip angle, ADC dwell time.
    geometry: where the volume sits (`Geometry`), None when the header lacks it.
    ref_voltage, coil_names, software_version, protocol_name: informational.

    Values are range-checked when the object is made (InputError): a TE of 1e305 ms or a dwell
    of 0 never reaches a reconstruction.
    """

    nucleus: str | None = None
    b0_T: float | None = None
    larmor_hz: float | None = None
    te_ms: tuple[float, ...] | None = None
    tr_ms: float | None = None
    flip_deg: float | None = None
    dwell_us: float | None = None
    geometry: Geometry | None = None
    ref_voltage: float | None = None
    coil_names: tuple[str, ...] = field(default_factory=tuple)
    software_version: str | None = None
    protocol_name: str | None = None

    def __post_init__(self) -> None:
        for name in _RANGES:
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        te = self.te_ms
        if te is not None:
            vals = tuple(np.atleast_1d(np.asarray(te, dtype=object)).tolist())
            out = []
            for v in vals:
                try:
                    f = float(v)
                except (TypeError, ValueError, OverflowError):
                    raise InputError(f"acquisition te_ms must be numbers, got {te!r}") from None
                if isinstance(v, bool) or not math.isfinite(f) or not 0.0 <= f <= MAX_TE_MS:
                    raise InputError(f"acquisition TE {v!r} ms is impossible: expected [0, {MAX_TE_MS:g}] ms")
                out.append(f)
            object.__setattr__(self, "te_ms", tuple(out) if out else None)
        if self.geometry is not None and not isinstance(self.geometry, Geometry):
            raise InputError(f"acquisition geometry must be a Geometry, got {type(self.geometry).__name__}")
        object.__setattr__(self, "coil_names", tuple(str(c) for c in self.coil_names))

    # --- derived values --------------------------------------------------------------------
    @property
    def fov_mm(self) -> tuple[float, float, float] | None:
        return None if self.geometry is None else self.geometry.fov_mm

    @property
    def matrix(self) -> tuple[int, int, int] | None:
        return None if self.geometry is None else self.geometry.matrix

    def te_for(self, echo: int = 0) -> float | None:
        """TE of one echo in ms, None when unknown."""
        if self.te_ms is None or not 0 <= echo < len(self.te_ms):
            return None
        return self.te_ms[echo]

    def require(self, *names: str, what: str = "this step") -> None:
        """InputError naming every field in `names` that is unknown."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise InputError(f"{what} needs the acquisition's {', '.join(missing)}, which the input does not give")

    def with_(self, **changes: Any) -> Acquisition:
        """A copy with some fields replaced (checked again)."""
        return replace(self, **changes)

    # --- sidecars --------------------------------------------------------------------------
    def sidecar(self, echoes: list[int] | None = None) -> dict:
        """The sidecar `acquisition` block (SIDECAR_FIELDS; unknown values null), plus, when known,
        where the image axes came from (`orientation_source`: 'header+mdh', 'mdh' or 'header').

        echoes: keep only these echoes' TEs (a reconstruction of some echoes).
        """
        te = list(self.te_ms) if self.te_ms is not None else None
        if te is not None and echoes is not None:
            te = [te[e] if e < len(te) else None for e in echoes]
        block = {"nucleus": self.nucleus, "b0_T": self.b0_T, "te_ms": te, "tr_ms": self.tr_ms,
                 "flip_deg": self.flip_deg, "dwell_us": self.dwell_us,
                 "fov_mm": None if self.fov_mm is None else list(self.fov_mm),
                 "matrix": None if self.matrix is None else list(self.matrix)}
        if self.geometry is not None and self.geometry.orientation_source is not None:
            block["orientation_source"] = self.geometry.orientation_source
        return block

    def to_dict(self) -> dict:
        """Every field, JSON-ready (geometry as a dict)."""
        d = asdict(self)
        d["geometry"] = None if self.geometry is None else self.geometry.to_dict()
        d["te_ms"] = None if self.te_ms is None else list(self.te_ms)
        d["coil_names"] = list(self.coil_names)
        return d

    @classmethod
    def from_sidecar(cls, block: Mapping | None, shape: tuple[int, ...] | None = None,
                     affine: np.ndarray | None = None) -> tuple[Acquisition, list[str]]:
        """An Acquisition from a sidecar's `acquisition` block.

        A missing `matrix` / `fov_mm` comes from the image (shape, voxel size x shape) when
        `shape` and `affine` are given. Returns (acquisition, names of the SIDECAR_FIELDS the block
        lacked). Only the sidecar fields are read: the geometry made here carries FOV and matrix,
        with the volume position left at the origin (the image's affine holds the real one).
        """
        if block is not None and not isinstance(block, Mapping):
            raise InputError(f"the sidecar's acquisition must be an object, got {type(block).__name__}")
        b = dict(block or {})
        missing = [f for f in SIDECAR_FIELDS if b.get(f) is None]
        fov, mat = b.get("fov_mm"), b.get("matrix")
        if shape is not None and affine is not None:
            vox = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
            if mat is None:
                mat = [int(n) for n in shape[:3]]
            if fov is None:
                fov = [round(float(v * n), 6) for v, n in zip(vox, shape[:3])]
        geometry = None
        if fov is not None and mat is not None:
            if np.ndim(fov) == 0:
                fov = [fov] * 3
            if np.ndim(mat) == 0:
                mat = [mat] * 3
            geometry = Geometry(fov_mm=tuple(fov), matrix=tuple(mat))
        te = b.get("te_ms")
        if te is not None and np.ndim(te) == 0:
            te = [te]
        if te is not None and any(t is None for t in te):
            te = None if all(t is None for t in te) else te
            if te is not None:
                raise InputError(f"sidecar te_ms {b.get('te_ms')!r} mixes known and unknown echoes")
        acq = cls(nucleus=b.get("nucleus"), b0_T=b.get("b0_T"), te_ms=te, tr_ms=b.get("tr_ms"),
                  flip_deg=b.get("flip_deg"), dwell_us=b.get("dwell_us"), geometry=geometry)
        return acq, missing
