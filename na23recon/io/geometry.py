"""Image geometry from the Siemens protocol: the NIfTI (RAS, mm) affine of a reconstructed volume.

Siemens stores the imaging volume in patient coordinates (PCS: Sag, Cor, Tra = DICOM LPS):
its centre `sPosition`, its normal `sNormal` and an in-plane rotation `dInPlaneRot` (rad). The
phase and read directions follow from the normal by Siemens' main-orientation rules
(syngo's fGSLClassOri / fGSLCalcPRS, as described in the IDEA documentation):

- the main orientation is the largest normal component (ties: see `main_orientation`);
- transverse:  phase = (0, n_tra, -n_cor) / |.|;  coronal: phase = (n_cor, -n_sag, 0) / |.|;
  sagittal: phase = (-n_cor, n_sag, 0) / |.|;
- read = phase x normal; then both turn by the in-plane rotation psi about the normal:
  phase' = cos(psi) phase - sin(psi) read,  read' = sin(psi) phase + cos(psi) read.

Image axes (x, y, z) = (read, phase, partition/slice normal), each running along the + direction
of its vector; voxel (i, j, k) = matrix // 2 is the volume centre (the FFT/NUFFT centre), voxel
size = FOV / matrix. Patient coordinates are fixed to the patient, so the affine does not depend on
the patient position (HFS/HFP/FFS/FFP): that only relates PCS to the scanner's device axes
(`pcs_to_device`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .scan import ScanInfo

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
    r = np.cross(p, n)
    psi = float(inplane_rot_rad)
    if psi:
        p, r = np.cos(psi) * p - np.sin(psi) * r, np.sin(psi) * p + np.cos(psi) * r
    return p, r, n


def rotation_lps(info: ScanInfo) -> np.ndarray:
    """3x3 matrix whose columns are the image axes (read, phase, slice) in LPS, float64."""
    p, r, s = prs_vectors(info.slice_normal, info.inplane_rot_rad)
    return np.stack([r, p, s], axis=1)


def affine_from_info(info: ScanInfo, matrix: tuple[int, int, int] | int | None = None) -> np.ndarray:
    """4x4 affine (float64) from voxel indices (x, y, z) = (read, phase, partition) to RAS mm.

    matrix: the reconstructed matrix (default info.matrix; an int means isotropic). Voxel size is
    info.fov_mm / matrix; voxel matrix // 2 lies at info.slice_position_mm.
    """
    if matrix is None:
        matrix = info.matrix
    if np.isscalar(matrix):
        matrix = (int(matrix),) * 3
    m = np.asarray(matrix, dtype=np.float64)
    fov = np.asarray(info.fov_mm, dtype=np.float64)
    if m.shape != (3,) or (m < 1).any() or fov.shape != (3,) or not (fov > 0).all():
        raise InputError(f"geometry needs a positive FOV and matrix, got fov_mm={tuple(fov)} matrix={tuple(m)}")
    if info.patient_position not in _PCS_TO_DEVICE:
        raise InputError(f"unknown patient position {info.patient_position!r} (expected HFS, HFP, FFS or FFP)")
    rot = LPS_TO_RAS @ rotation_lps(info) * (fov / m)
    centre = LPS_TO_RAS @ np.asarray(info.slice_position_mm, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = rot
    aff[:3, 3] = centre - rot @ np.floor(m / 2)
    return aff


def pcs_to_device(patient_position: str) -> np.ndarray:
    """3x3 matrix from patient (Sag, Cor, Tra) to device (x, y, z) coordinates."""
    try:
        return _PCS_TO_DEVICE[patient_position].copy()
    except KeyError:
        raise InputError(f"unknown patient position {patient_position!r} (expected HFS, HFP, FFS or FFP)") from None


def quaternion_from_info(info: ScanInfo) -> list[float]:
    """The readout header's SliceData quaternion (w, x, y, z) for this geometry.

    Siemens' quaternion rotates to the columns (phase, -read, slice) in patient coordinates
    (what twixtools' `prs2sct_mdb` reads back as (-phase, read, slice) after its sign flip).
    """
    p, r, s = prs_vectors(info.slice_normal, info.inplane_rot_rad)
    return _mat_to_quat(np.stack([p, -r, s], axis=1))


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
