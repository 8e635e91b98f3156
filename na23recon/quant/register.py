"""Rigid registration of the 1H anatomy to the sodium image (SimpleITK).

When the subject moved between the 1H and the sodium scan, the affines alone misplace the tissue
maps. `rigid_register` estimates the rigid transform (3 rotations, 3 translations) that best
aligns them by Mattes mutual information (Mattes et al., IEEE Trans Med Imaging 2003; mutual
information for multi-modal registration: Wells et al., Med Image Anal 1996; Maes et al., IEEE
Trans Med Imaging 1997), which needs no common contrast between a T1w (or tissue maps) and a
sodium image. It starts from the identity in scanner coordinates (the NIfTI affines' alignment),
with a two-level pyramid, regular-step gradient descent and physical-shift parameter scales, the
metric restricted to the head (the anatomy's support, dilated) so that the reference vials, which
the 1H maps lack, do not pull it. The 1H image is first blurred to the sodium resolution.

SimpleITK (the ITK registration framework, wheels on PyPI for every platform) is used rather
than ANTsPy: a ~50 MB pip wheel without a compiler or ANTs build, long-term maintained by the ITK
project, with the Mattes MI metric and Euler transforms directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core import Image
from ..errors import InputError

log = logging.getLogger(__name__)

#: RAS <-> LPS (ITK's physical space is LPS).
FLIP = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Registration:
    """matrix: 4x4 mapping sodium RAS mm to 1H RAS mm; rotation_deg: Euler angles about the RAS
    x, y, z axes (R = Rz Rx Ry, ITK's Euler3DTransform order); translation_mm: the shift of the
    rotation centre centre_mm (RAS);
    metric: final Mattes MI; iterations and the optimiser's stop condition."""

    matrix: np.ndarray
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    metric: float
    iterations: int
    stop: str

    def as_dict(self) -> dict:
        return {"method": "rigid, Mattes mutual information (SimpleITK)", "direction": "sodium RAS mm -> 1H RAS mm",
                "matrix": np.round(self.matrix, 6).tolist(), "rotation_deg": list(self.rotation_deg),
                "translation_mm": list(self.translation_mm), "centre_mm": list(self.centre_mm),
                "metric": self.metric, "iterations": self.iterations, "stop": self.stop}


def to_sitk(arr: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS physical space) of an (x, y, z) array with its RAS affine."""
    lps = FLIP @ np.asarray(affine, dtype=np.float64)[:3]
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr, dtype=np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return img


def rotation_angle_deg(R: np.ndarray) -> float:
    """The angle (deg) of a 3x3 rotation."""
    c = (np.trace(np.asarray(R)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def rigid_register(moving: Image, fixed: Image, mask: np.ndarray | None = None,
                   iterations: int = 500) -> Registration:
    """The rigid transform from `fixed` (the sodium image) to `moving` (the 1H image: a T1w or a
    sodium-like image of the tissue maps), both in scanner coordinates through their affines.

    mask: bool (x, y, z) on the fixed grid where the metric is evaluated (default: everywhere).
    Returns `Registration` (its matrix maps sodium RAS mm to 1H RAS mm)."""
    f_arr = np.asarray(fixed.echo(0).array, dtype=np.float32)
    m_arr = np.asarray(moving.echo(0).array, dtype=np.float32)
    if not (np.all(np.isfinite(f_arr)) and np.all(np.isfinite(m_arr))):
        raise InputError("registration needs finite images (NaN/inf in the sodium or the 1H image)")
    if np.ptp(m_arr) == 0 or np.ptp(f_arr) == 0:
        raise InputError("registration needs images with contrast (one of them is constant)")
    fimg = to_sitk(f_arr, fixed.affine)
    mimg = to_sitk(m_arr, moving.affine)
    sod_vox = float(np.min(fixed.voxel_mm))
    mimg = sitk.SmoothingRecursiveGaussian(mimg, sod_vox / 2.355)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.NONE)
    if mask is not None:
        reg.SetMetricFixedMask(sitk.Cast(to_sitk(mask.astype(np.float32), fixed.affine), sitk.sitkUInt8))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                 relaxationFactor=0.8, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    tx = sitk.Euler3DTransform()
    # rotate about the centre of the head (the mask's centroid), which decouples rotation and shift
    sel = mask if mask is not None and mask.any() else f_arr > np.percentile(f_arr, 75)
    c_vox = np.array(ndimage.center_of_mass(sel))
    c_ras = fixed.affine[:3, :3] @ c_vox + fixed.affine[:3, 3]
    tx.SetCenter([float(v) for v in FLIP @ c_ras])
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        reg.Execute(fimg, mimg)
    except RuntimeError as exc:
        raise InputError(f"registration failed: {' '.join(str(exc).split())[:200]}") from None
    R_lps = np.array(tx.GetMatrix()).reshape(3, 3)
    t_lps = np.array(tx.GetTranslation())
    c_lps = np.array(tx.GetCenter())
    # ITK: x_moving = R (x_fixed - c) + c + t in LPS
    M = np.eye(4)
    M[:3, :3] = FLIP @ R_lps @ FLIP
    M[:3, 3] = FLIP @ (c_lps + t_lps - R_lps @ c_lps)
    # FLIP Rz(c) Rx(a) Ry(b) FLIP = Rz(c) Rx(-a) Ry(-b): the same Euler angles about RAS axes, x and y negated
    rot = tuple(float(np.degrees(a)) for a in (-tx.GetAngleX(), -tx.GetAngleY(), tx.GetAngleZ()))
    out = Registration(matrix=M, rotation_deg=rot, translation_mm=tuple(float(v) for v in FLIP @ t_lps),
                       centre_mm=tuple(float(v) for v in c_ras), metric=float(reg.GetMetricValue()),
                       iterations=int(reg.GetOptimizerIteration()),
                       stop=reg.GetOptimizerStopConditionDescription())
    log.info("registration: rotation %.2f deg, shift at the head centre %.2f mm (%s)",
             rotation_angle_deg(M), float(np.linalg.norm(M[:3, :3] @ c_ras + M[:3, 3] - c_ras)), out.stop)
    return out
