"""The slice orientation the scanner wrote into every readout header, checked against the protocol.

Each readout's MDH carries `SliceData`: the slice position (Sag, Cor, Tra, mm) and a unit
quaternion (w, x, y, z) whose rotation matrix has the columns (phase, -read, slice) in patient
coordinates (LPS), with read and phase as `core.geometry.prs_vectors` defines them (image x =
read, y = phase). The protocol header gives the same axes through `sNormal` + `dInPlaneRot` and
Siemens' rule (`core.geometry`); the two must agree to `ORIENTATION_TOL` (largest difference of
any axis component). When they do not, the quaternion wins: the scanner used it to place the
gradients, while the header's rule is our reading of it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ...core.acquisition import Acquisition
from ...core.geometry import ORIENTATION_TOL, Geometry

log = logging.getLogger(__name__)


def quaternion_to_matrix(q) -> np.ndarray:
    """3x3 float64 rotation of a (w, x, y, z) quaternion (normalised first; scalar first, as the MDH)."""
    q = np.asarray(q, dtype=np.float64)  # the MDH stores float32: normalise in float64
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def mdh_axes(img_mdh: np.ndarray) -> np.ndarray | None:
    """Image axes (columns read, phase, slice; LPS) of the first image readout of slice 0, from its
    quaternion; None when the readouts carry no quaternion (all zero, as files without a slice)."""
    if img_mdh.size == 0 or "SliceData" not in img_mdh.dtype.names:
        return None
    sli = img_mdh["Counter"]["Sli"]
    first = img_mdh[sli == sli.min()][0]
    q = np.asarray(first["SliceData"]["Quaternion"], dtype=np.float64)
    if not np.all(np.isfinite(q)) or abs(np.linalg.norm(q) - 1.0) > 1e-3:
        return None
    m = quaternion_to_matrix(q)
    return np.stack([-m[:, 1], m[:, 0], m[:, 2]], axis=1)


def axes_difference(geometry: Geometry, axes: np.ndarray) -> float:
    """Largest absolute difference of any component of the geometry's image axes and `axes`."""
    return float(np.max(np.abs(geometry.rotation_lps() - axes)))


def checked_acquisition(acq: Acquisition, img_mdh: np.ndarray, where: str = "") -> Acquisition:
    """`acq` with its geometry checked against the readouts' quaternion (module docstring).

    Agreement: the header geometry, orientation_source 'header+mdh'. Disagreement: one warning
    and the geometry rebuilt from the quaternion (FOV, matrix, position and patient position from
    the header), orientation_source 'mdh'. No quaternion: orientation_source 'header'.
    """
    geo = acq.geometry
    if geo is None:
        return acq
    axes = mdh_axes(img_mdh)
    if axes is None:
        return acq.with_(geometry=replace(geo, orientation_source="header"))
    diff = axes_difference(geo, axes)
    if diff <= ORIENTATION_TOL:
        return acq.with_(geometry=replace(geo, orientation_source="header+mdh"))
    log.warning("twix: the header's slice orientation (sNormal, dInPlaneRot) differs from the readouts' "
                "quaternion by up to %.2g (tolerance %g); using the quaternion%s", diff, ORIENTATION_TOL,
                f": {where}" if where else "")
    return acq.with_(geometry=Geometry.from_rotation(
        axes, fov_mm=geo.fov_mm, matrix=geo.matrix, position_mm=geo.position_mm,
        patient_position=geo.patient_position, orientation_source="mdh",
        slice_positions_mm=geo.slice_positions_mm))
