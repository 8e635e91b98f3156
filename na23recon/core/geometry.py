"""Image geometry from the Siemens protocol: the NIfTI (RAS, mm) affine of a reconstructed volume.

Siemens stores the imaging volume in patient coordinates (PCS: Sag, Cor, Tra = DICOM LPS):
its centre `sPosition`, its normal `sNormal` and an in-plane rotation `dInPlaneRot` (rad). The
phase and read directions follow from the normal by Siemens' main-orientation rules
(syngo's fGSLClassOri / fGSLCalcPRS, as described in the IDEA documentation):

- the main orientation is the largest normal component (ties: see `main_orientation`);
- transverse:  phase = (0, n_tra, -n_cor) / |.|;  coronal: phase = (n_cor, -n_sag, 0) / |.|;
  sagittal: phase = (-n_cor, n_sag, 0) / |.|;
- Siemens' read is normal x phase; the phase axis turns by the in-plane rotation psi about the
  normal, phase' = cos(psi) phase - sin(psi) (normal x phase), and read' = normal x phase'.

The image x axis runs along -(Siemens' read) = phase x normal (what `prs_vectors` calls read, the
direction the scanner's readout quaternion `SliceData.Quaternion` gives as the negative of its
second column). Checked against the per-readout quaternion of real scans (the twix reader
compares them on every file, `io.twix.slicedata`).

Image axes (x, y, z) = (read, phase, partition/slice normal), each running along the + direction
of its vector; voxel (i, j, k) = matrix // 2 is the volume centre (the FFT/NUFFT centre), voxel
size = FOV / matrix. Patient coordinates are fixed to the patient, so the affine does not depend on
the patient position (HFS/HFP/FFS/FFP): that only relates PCS to the scanner's device axes
(`pcs_to_device`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# patient coordinates (Sag, Cor, Tra) -> device coordinates (x, y, z), by patient position
_PCS_TO_DEVICE = {
    "HFS": np.diag([1.0, -1.0, -1.0]),
    "HFP": np.diag([-1.0, 1.0, -1.0]),
    "FFS": np.diag([-1.0, -1.0, 1.0]),
    "FFP": np.diag([1.0, 1.0, 1.0]),
}

SAGITTAL, CORONAL, TRANSVERSE = 0, 1, 2


def main_orientation(normal) -> int:
    """Siemens' main orientation of a slice normal (Sag, Cor, Tra): SAGITTAL, CORONAL or TRANSVERSE."""
    s, c, t = (abs(float(v)) for v in normal)
    eq = lambda a, b: abs(a - b) <= 1e-6  # noqa: E731
    if eq(s, c) and eq(s, t):
        return TRANSVERSE
    if eq(s, c) and s > t:
        return CORONAL
    if eq(s, t) and s > c:
        return TRANSVERSE
    if eq(c, t) and c > s:
        return TRANSVERSE
    if s > c and s > t:
        return SAGITTAL
    if c > s and c > t:
        return CORONAL
    return TRANSVERSE


def prs_vectors(normal, inplane_rot_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit (phase, read, slice) direction vectors in patient coordinates (Sag, Cor, Tra), float64 (3,)."""
    n = np.asarray(normal, dtype=np.float64)
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm < 1e-6:
        raise InputError(f"slice normal {tuple(n)} is not a direction")
    n = n / norm
    ori = main_orientation(n)
    if ori == TRANSVERSE:
        p = np.array([0.0, n[2], -n[1]])
    elif ori == CORONAL:
        p = np.array([n[1], -n[0], 0.0])
    else:
        p = np.array([-n[1], n[0], 0.0])
    p /= np.linalg.norm(p)
    psi = float(inplane_rot_rad)
    if psi:
        # Siemens turns phase towards -(normal x phase), which is our +read (= phase x normal)
        p = np.cos(psi) * p + np.sin(psi) * np.cross(p, n)
    return p, np.cross(p, n), n


def inplane_rotation(normal, phase) -> float:
    """The in-plane rotation (rad, in (-pi, pi]) that turns the Siemens phase axis of `normal` onto
    `phase` (a direction in the slice plane): the inverse of `prs_vectors`. Used to build a
    `Geometry` from the axes a scanner wrote (a readout quaternion, an MRD readout's directions)."""
    p0, r0, _ = prs_vectors(normal, 0.0)
    ph = np.asarray(phase, dtype=np.float64)
    return float(math.atan2(float(ph @ r0), float(ph @ p0)))


PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP")
ORIENTATION_TOL = 1e-5
"""Largest difference of any image-axis component between the header's geometry and the scanner's
readout quaternion that counts as agreement."""
MAX_FOV_MM = 5000.0
"""A field of view (or slab) beyond 5 m is not a scanner's; below 0.01 mm not one either."""
MIN_FOV_MM = 0.01


def _triple(value, what: str, kind=float) -> tuple:
    try:
        vals = tuple(kind(v) for v in (value if np.ndim(value) else (value,) * 3))
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be three numbers, got {value!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{what} must be three finite numbers, got {value!r}")
    return vals


@dataclass(frozen=True)
class Geometry:
    """Where a Siemens imaging volume sits: the one source of every image affine.

    fov_mm: (read, phase, partition/slab) field of view, mm.
    matrix: (read, phase, partition) base matrix of the protocol.
    position_mm: volume centre in patient coordinates (Sag, Cor, Tra) = DICOM LPS, mm.
    normal: unit normal of the volume in LPS (the partition axis).
    inplane_rot_rad: Siemens' in-plane rotation about the normal, rad.
    patient_position: HFS, HFP, FFS or FFP (relates patient to device axes only).
    orientation_source: where the axes came from, for the record (not compared): 'header'
        (sNormal + dInPlaneRot, nothing to check them against), 'header+mdh' (the header, equal
        to the readouts' MDH quaternion within `ORIENTATION_TOL`), 'mdh' (the readouts'
        quaternion, which the header disagreed with); None for a geometry made in code.
    slice_positions_mm: the centre (LPS, mm) of each slice of a multi-slice 2D acquisition, in
        the order of the twix `Sli` counter (Siemens sSliceArray.asSlice[i].sPosition); empty for
        one slice or a 3D slab. The image stacks them along z in their order along the normal.

    Invalid values (non-finite, FOV outside 0.01-5000 mm, matrix < 1, no normal direction,
    unknown patient position) raise InputError when the object is made, so no affine with a
    zero or infinite voxel size can exist.
    """

    fov_mm: tuple[float, float, float]
    matrix: tuple[int, int, int]
    position_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    inplane_rot_rad: float = 0.0
    patient_position: str = "HFS"
    orientation_source: str | None = field(default=None, compare=False)
    slice_positions_mm: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        fov = _triple(self.fov_mm, "FOV (mm)")
        if not all(MIN_FOV_MM <= f <= MAX_FOV_MM for f in fov):
            raise InputError(f"FOV must be between {MIN_FOV_MM} and {MAX_FOV_MM:g} mm along each axis, got {fov}")
        mat = _triple(self.matrix, "matrix")
        if not all(float(m).is_integer() and 1 <= m <= 4096 for m in mat):
            raise InputError(f"matrix must be whole numbers between 1 and 4096, got {mat}")
        pos = _triple(self.position_mm, "volume position (mm)")
        if max(abs(v) for v in pos) > MAX_FOV_MM:
            raise InputError(f"volume position {pos} mm is outside any scanner")
        nrm = _triple(self.normal, "slice normal")
        if math.hypot(*nrm) < 1e-6:
            raise InputError(f"slice normal {nrm} is not a direction")
        rot = float(self.inplane_rot_rad)
        if not math.isfinite(rot) or abs(rot) > 4 * math.pi:
            raise InputError(f"in-plane rotation must be a finite angle in rad, got {self.inplane_rot_rad!r}")
        if self.patient_position not in PATIENT_POSITIONS:
            raise InputError(f"unknown patient position {self.patient_position!r} (expected HFS, HFP, FFS or FFP)")
        object.__setattr__(self, "fov_mm", fov)
        object.__setattr__(self, "matrix", tuple(int(m) for m in mat))
        object.__setattr__(self, "position_mm", pos)
        object.__setattr__(self, "normal", nrm)
        object.__setattr__(self, "inplane_rot_rad", rot)
        slices = tuple(_triple(p, "slice position (mm)") for p in self.slice_positions_mm)
        object.__setattr__(self, "slice_positions_mm", slices if len(slices) > 1 else ())

    @property
    def nslices(self) -> int:
        """Number of 2D slices (1 for a single slice or a 3D slab)."""
        return max(1, len(self.slice_positions_mm))

    def slice_order(self) -> np.ndarray:
        """Indices of the slices (Sli counter values) in their order along the normal: image z."""
        if not self.slice_positions_mm:
            return np.zeros(1, dtype=np.int64)
        n = np.asarray(self.normal, dtype=np.float64)
        d = np.asarray(self.slice_positions_mm) @ (n / np.linalg.norm(n))
        return np.argsort(d, kind="stable")

    def slice_step_mm(self) -> np.ndarray:
        """LPS vector from one slice to the next along image z (multi-slice only; InputError unless
        the slices are equally spaced on one line)."""
        pos = np.asarray(self.slice_positions_mm, dtype=np.float64)[self.slice_order()]
        steps = np.diff(pos, axis=0)
        step = steps.mean(axis=0)
        if np.max(np.abs(steps - step)) > 1e-3 * max(1.0, float(np.linalg.norm(step))) or np.linalg.norm(step) < 1e-6:
            raise InputError("multi-slice scan: the slices are not equally spaced on one line "
                             f"(positions {pos.round(3).tolist()} mm); a NIfTI volume cannot hold them")
        return step

    def rotation_lps(self) -> np.ndarray:
        """3x3 float64 matrix whose columns are the image axes (read, phase, slice) in LPS."""
        p, r, s = prs_vectors(self.normal, self.inplane_rot_rad)
        return np.stack([r, p, s], axis=1)

    def affine(self, matrix: tuple[int, ...] | int | None = None) -> np.ndarray:
        """4x4 float64 affine from voxel indices (x, y, z) = (read, phase, partition) to RAS mm.

        matrix: the reconstructed matrix (default `self.matrix`; an int means isotropic). Voxel
        size is fov_mm / matrix; voxel matrix // 2 (the FFT/NUFFT centre) lies at position_mm.
        Multi-slice (matrix z = nslices > 1): the third column is the step between slice centres
        (`slice_step_mm`) and voxel (mx // 2, my // 2, 0) lies at the first slice's centre.
        """
        if matrix is None:
            matrix = self.matrix
        m = np.asarray(_triple(matrix, "matrix", int), dtype=np.float64)
        if (m < 1).any():
            raise InputError(f"matrix must be positive, got {tuple(m)}")
        fov = np.asarray(self.fov_mm, dtype=np.float64)
        rot = LPS_TO_RAS @ self.rotation_lps() * (fov / m)
        centre = LPS_TO_RAS @ np.asarray(self.position_mm, dtype=np.float64)
        aff = np.eye(4)
        aff[:3, :3] = rot
        aff[:3, 3] = centre - rot @ np.floor(m / 2)
        if self.nslices > 1 and int(m[2]) == self.nslices:
            first = np.asarray(self.slice_positions_mm[int(self.slice_order()[0])], dtype=np.float64)
            aff[:3, 2] = LPS_TO_RAS @ self.slice_step_mm()
            aff[:3, 3] = LPS_TO_RAS @ first - rot[:, :2] @ np.floor(m[:2] / 2)
        return aff

    @classmethod
    def from_rotation(cls, rotation_lps, **fields) -> Geometry:
        """The Geometry whose image axes (read, phase, slice) are the columns of the proper rotation
        `rotation_lps` (3x3, LPS; `rotation_lps()` gives it back to rounding); `fields` are the
        other Geometry fields (fov_mm, matrix, position_mm, patient_position, source)."""
        m = np.asarray(rotation_lps, dtype=np.float64)
        if m.shape != (3, 3) or not np.allclose(m.T @ m, np.eye(3), atol=1e-4) or np.linalg.det(m) < 0:
            raise InputError("image axes must form a proper rotation (3x3, orthonormal, det +1)")
        normal = m[:, 2] / np.linalg.norm(m[:, 2])
        return cls(normal=tuple(float(v) for v in normal), inplane_rot_rad=inplane_rotation(normal, m[:, 1]),
                   **fields)

    def quaternion(self) -> list[float]:
        """The readout header's SliceData quaternion (w, x, y, z) of this geometry.

        Siemens' quaternion rotates to the columns (phase, -read, slice) in patient coordinates
        (what twixtools' `prs2sct_mdb` reads back as (-phase, read, slice) after its sign flip).
        """
        p, r, s = prs_vectors(self.normal, self.inplane_rot_rad)
        return _mat_to_quat(np.stack([p, -r, s], axis=1))

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return {"fov_mm": list(self.fov_mm), "matrix": list(self.matrix), "position_mm": list(self.position_mm),
                "normal": list(self.normal), "inplane_rot_rad": self.inplane_rot_rad,
                "patient_position": self.patient_position, "orientation_source": self.orientation_source,
                **({"slice_positions_mm": [list(p) for p in self.slice_positions_mm]}
                   if self.slice_positions_mm else {})}


def pcs_to_device(patient_position: str) -> np.ndarray:
    """3x3 matrix from patient (Sag, Cor, Tra) to device (x, y, z) coordinates."""
    try:
        return _PCS_TO_DEVICE[patient_position].copy()
    except KeyError:
        raise InputError(f"unknown patient position {patient_position!r} (expected HFS, HFP, FFS or FFP)") from None


def _mat_to_quat(m: np.ndarray) -> list[float]:
    tr = np.trace(m)
    if tr > 0:
        w = np.sqrt(1.0 + tr) * 2
        q = [0.25 * w, (m[2, 1] - m[1, 2]) / w, (m[0, 2] - m[2, 0]) / w, (m[1, 0] - m[0, 1]) / w]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        w = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / w, 0.25 * w, (m[0, 1] + m[1, 0]) / w, (m[0, 2] + m[2, 0]) / w]
    elif m[1, 1] > m[2, 2]:
        w = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / w, (m[0, 1] + m[1, 0]) / w, 0.25 * w, (m[1, 2] + m[2, 1]) / w]
    else:
        w = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / w, (m[0, 2] + m[2, 0]) / w, (m[1, 2] + m[2, 1]) / w, 0.25 * w]
    return [float(v) for v in q]
