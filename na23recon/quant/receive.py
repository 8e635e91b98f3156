"""Receive-bias correction: the relative receive sensitivity R (x, y, z) a sodium image is divided by.

A receive array's coil-combined image (root-sum-of-squares, or SENSE/adaptive with maps scaled to
their own root-sum-of-squares) keeps the array's combined sensitivity: bright near the loops, dim
in the centre. Four ways to take it out, chosen by `QuantOptions.receive`:

- 'reference': a scan of the same object with the volume coil in receive (the transmit birdcage,
  whose receive field is smooth and ~ its transmit field by reciprocity), as the scanner's prescan
  normalisation does: the ratio array / volume-coil image, smoothed by a Gaussian weighted with the
  volume-coil image squared (normalised convolution, Knutsson & Westin, CVPR 1993, so voxels of low
  signal, where the ratio is noise, count little), is the array's relative sensitivity. With a B1
  map and reciprocity the volume coil's own receive profile (k_B1) multiplies it. The image then
  reads as if received by the volume coil (Roemer et al., Magn Reson Med 1990; the same ratio
  underlies SENSE's body-coil reference, Pruessmann et al., Magn Reson Med 1999).
- 'n4': N4 bias-field estimate from the image itself (Tustison et al., IEEE Trans Med Imaging
  2010, SimpleITK's N4BiasFieldCorrectionImageFilter): a B-spline field that sharpens the
  histogram of the image in a mask. Its limits: it cannot tell receive shading from a true
  concentration gradient of low spatial frequency (a smooth lesion, a partial-volume rim, CSF
  filled sulci all look alike to it), it needs a mask that holds the object (Otsu here) and the
  reference vials (small objects at the edge of the FOV, where the array's field is steepest, are
  corrected only as well as a coarse B-spline mesh follows them), and it assumes few intensity
  classes: use the reference scan when there is one. The B-spline span is a size in mm over the
  object's bounding box (`QuantOptions.receive_n4_mm`), fitted at one level: a mesh finer than the
  object's features (N4's default multi-level refinement, or a span of a few voxels) bends the field
  into them and flattens their contrast, which a linear calibration with an offset hides.
- 'reciprocal': a single-channel transmit-receive coil receives with its transmit field (Hoult,
  Concepts Magn Reson 2000), R = k_B1 (`quant.b1.receive_sensitivity`); R = 1 without a B1 map.
- 'none': R = 1.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..core import Image, QuantOptions
from ..core.options import RECEIVE_MODES
from ..errors import InputError

log = logging.getLogger(__name__)

#: Voxels of the volume-coil image above this fraction of its 99th percentile hold the ratio.
REFERENCE_FRACTION = 0.1

#: N4's B-spline span (mm) over the object's bounding box. Measured on BART's 8-coil Shepp-Logan
#: (~195 mm across, ellipsoids 45-75 mm): a mesh of 3 spans (50-65 mm) left the small ROIs' field
#: 3-7% off; 2 spans (>= 80 mm) cannot follow the array's field, 4+ spans (<= 40 mm, or more fitting
#: levels) take the ellipsoids' contrast into the field (10-15%).
N4_SPACING_MM = 60.0


def _positive(r: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """R scaled to mean 1 over `mask`, finite and > 0 everywhere (the nearest masked value outside)."""
    r = np.where(np.isfinite(r), r, 0.0)
    good = mask & (r > 0)
    if not good.any():
        raise InputError("the receive field estimate is empty: no voxel of the object holds signal")
    if not good.all():
        _, ind = ndimage.distance_transform_edt(~good, return_indices=True)
        r = r[tuple(ind)]
    return r / float(np.mean(r[good]))


def object_mask(image: np.ndarray, fraction: float | None = None) -> np.ndarray:
    """Voxels of the object: above `fraction` of the 99th percentile, or above the Otsu threshold
    (fraction None) of the image."""
    img = np.asarray(image, dtype=np.float64)
    if fraction is not None:
        return img > fraction * float(np.percentile(img, 99))
    import SimpleITK as sitk
    itk = sitk.GetImageFromArray(img.astype(np.float32))
    m = sitk.GetArrayFromImage(sitk.OtsuThreshold(itk, 0, 1, 200)).astype(bool)
    return ndimage.binary_fill_holes(m)


def reference_sensitivity(array_image: np.ndarray, volume_image: np.ndarray, smooth_vox=1.0,
                          fraction: float = REFERENCE_FRACTION) -> tuple[np.ndarray, dict]:
    """Relative sensitivity of the array from the ratio to a volume-coil image of the same object.

    array_image, volume_image: magnitudes (x, y, z) on one grid (same reconstruction). The ratio
    array / volume is taken where the volume image exceeds `fraction` of its 99th percentile and
    smoothed by normalised convolution (Gaussian of SD `smooth_vox` voxels, one value or one per
    axis, weights volume^2, the
    inverse variance of the ratio); voxels the weights do not reach take the nearest value.
    Returns (R scaled to mean 1 over the object, info).
    """
    a = np.asarray(array_image, dtype=np.float64)
    v = np.asarray(volume_image, dtype=np.float64)
    if a.shape != v.shape or a.ndim != 3:
        raise InputError(f"receive reference: the volume-coil image {v.shape} must be 3D on the array image's "
                         f"grid {a.shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(a))):
        raise InputError("receive reference: the volume-coil image has non-finite voxels")
    sig = np.broadcast_to(np.asarray(smooth_vox, dtype=np.float64), (3,))
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise InputError(f"receive smoothing must be >= 0 voxels, got {smooth_vox}")
    mask = object_mask(v, fraction)
    if mask.sum() < 20:
        raise InputError(f"receive reference: only {int(mask.sum())} voxels of the volume-coil image hold signal")
    w = np.where(mask, v * v, 0.0)
    ratio = np.where(mask, a / np.maximum(v, 1e-30), 0.0)
    if np.any(sig > 0):
        num = ndimage.gaussian_filter(w * ratio, tuple(sig), mode="nearest")
        den = ndimage.gaussian_filter(w, tuple(sig), mode="nearest")
    else:
        num, den = w * ratio, w
    reach = den > 1e-3 * float(np.max(den))
    r = np.where(reach, num / np.maximum(den, 1e-300), np.nan)
    r = _positive(r, reach)
    inside = r[mask]
    info = {"method": "reference", "smooth_vox": [float(x) for x in sig], "mask_fraction": float(fraction),
            "voxels": int(mask.sum()), "range_in_object": [float(inside.min()), float(inside.max())]}
    return r, info


def n4_sensitivity(image: np.ndarray, voxel_mm=(1.0, 1.0, 1.0), mask: np.ndarray | None = None,
                   spacing_mm: float = N4_SPACING_MM, levels: int = 1, iterations: int = 50, erode_vox: int = 1,
                   convergence: float = 1e-6, shrink: int = 1) -> tuple[np.ndarray, dict]:
    """Bias field of `image` (x, y, z) by N4 (Tustison et al., IEEE TMI 2010, the B-spline successor
    of N3, Sled et al., IEEE TMI 1998; SimpleITK).

    mask: the object (default: Otsu threshold, holes filled, so vials count), eroded by `erode_vox`
    voxels so the partial-volume rim, whose intensities belong to no tissue class, does not drive the
    fit; the field is fitted on the mask's bounding box (one voxel margin) with a cubic B-spline mesh of
    about `spacing_mm` per span (a size in mm, so the FOV and matrix do not change it), `levels`
    fitting levels (the mesh halves at each after the first), `iterations` per level until the
    coefficient of variation of the field's change falls below `convergence`, after downsampling by
    `shrink`. Outside the box R takes the nearest value. See the module docstring for what N4 cannot
    do. Returns (R scaled to mean 1 over the mask, info).
    """
    import SimpleITK as sitk

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3 or not np.all(np.isfinite(img)):
        raise InputError(f"N4 needs a finite 3D image, got shape {img.shape}")
    vox = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    m = object_mask(img) if mask is None else np.asarray(mask, dtype=bool)
    if erode_vox > 0:
        eroded = ndimage.binary_erosion(m, iterations=int(erode_vox))
        m = eroded if eroded.sum() >= 20 else m
    if m.sum() < 20:
        raise InputError(f"N4: only {int(m.sum())} voxels in the mask")
    box = tuple(slice(max(0, int(ix.min()) - 1), int(ix.max()) + 2) for ix in np.nonzero(m))
    sub, sub_mask = img[box], m[box]
    floor = 1e-3 * float(np.percentile(sub[sub_mask], 99))
    itk = sitk.GetImageFromArray(np.maximum(sub, floor).astype(np.float32).transpose(2, 1, 0))
    itk.SetSpacing([float(v) for v in vox])
    itk_mask = sitk.GetImageFromArray(sub_mask.astype(np.uint8).transpose(2, 1, 0))
    itk_mask.CopyInformation(itk)
    if shrink > 1:
        small, small_mask = sitk.Shrink(itk, [shrink] * 3), sitk.Shrink(itk_mask, [shrink] * 3)
    else:
        small, small_mask = itk, itk_mask
    extent = np.asarray(sub.shape) * vox
    spans = np.maximum(1, np.round(extent / (spacing_mm * 2 ** (int(levels) - 1)))).astype(int)
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations([int(iterations)] * int(levels))
    f.SetNumberOfControlPoints([int(k) + 3 for k in spans])  # cubic: control points = spans + 3
    f.SetConvergenceThreshold(float(convergence))
    f.Execute(small, small_mask)
    log_bias = sitk.GetArrayFromImage(f.GetLogBiasFieldAsImage(itk)).astype(np.float64).transpose(2, 1, 0)
    full = np.full(img.shape, np.nan)
    full[box] = np.exp(log_bias)
    inbox = np.zeros(img.shape, dtype=bool)
    inbox[box] = True
    r = _positive(np.where(inbox, full, np.nan), inbox)
    r = r / float(np.mean(r[m]))
    inside = r[m]
    info = {"method": "n4 (Tustison et al. 2010, SimpleITK)", "spacing_mm": float(spacing_mm),
            "control_points": [int(k) + 3 for k in spans], "levels": int(levels), "iterations": int(iterations),
            "erode_vox": int(erode_vox), "shrink": int(shrink), "mask_voxels": int(m.sum()),
            "iterations_run": int(f.GetElapsedIterations()), "range_in_object": [float(inside.min()),
                                                                                  float(inside.max())]}
    return r, info


def default_mode(ncoil: int | None, has_reference: bool) -> str:
    """The mode when none is chosen: 'reference' with a reference image; 'reciprocal' for one coil
    (or an image that does not say); 'none' for an array without a reference, with a warning.

    Not N4 for the array: it helps on an object without vials (BART's 8-coil Shepp-Logan, worst
    ROI error 7.6-8.3% -> 1.3-2.8%, though its field is still 3-7% off in the small ellipsoids),
    but with reference vials outside the head, where a helmet array's field is steepest, it left
    the vial calibration as wrong as no correction (32 loops, brain phantom: compartments off by
    58-130% either way), and a correction that silently changes concentrations is worse than
    visible shading and a poor calibration R^2."""
    if has_reference:
        return "reference"
    if ncoil is None or ncoil <= 1:
        return "reciprocal"
    log.warning("%d-channel receive array and no volume-coil reference (--receive-reference): the TSC map keeps "
                "the array's shading; give a reference scan (--receive reference), or --receive n4 (which also "
                "flattens true low-frequency concentration changes)", ncoil)
    return "none"


def receive_field(mode: str, image: np.ndarray, reference: np.ndarray | None = None,
                  b1: np.ndarray | None = None, reciprocity: bool = True,
                  smooth_vox=1.0, voxel_mm=(1.0, 1.0, 1.0),
                  n4_mm: float = N4_SPACING_MM) -> tuple[np.ndarray | None, dict]:
    """R (x, y, z) for `mode` (one of RECEIVE_MODES), or None where the caller's default
    (reciprocity with a B1 map, else 1) applies ('reciprocal', 'none' handled by the caller).

    reference: the volume-coil image ('reference'); b1: relative flip scale, multiplied in for
    'reference' with `reciprocity` (the volume coil's receive field); voxel_mm, n4_mm: the voxel size
    and N4's B-spline span ('n4'). Returns (R or None, info).
    """
    if mode not in RECEIVE_MODES:
        raise InputError(f"--receive must be one of {', '.join(RECEIVE_MODES)}, got {mode!r}")
    if mode == "reference":
        if reference is None:
            raise InputError("--receive reference needs the volume-coil scan or image: give --receive-reference")
        r, info = reference_sensitivity(image, reference, smooth_vox)
        if b1 is not None and reciprocity:
            r = r * np.clip(np.asarray(b1, dtype=np.float64), 0.2, 3.0)
            info["volume_coil_receive"] = "reciprocity (x k_B1)"
        return r, info
    if reference is not None:
        raise InputError(f"--receive-reference is used by --receive reference only, not {mode}")
    if mode == "n4":
        return n4_sensitivity(image, voxel_mm, spacing_mm=n4_mm)
    if mode == "reciprocal":
        return None, {"method": "reciprocal" if (b1 is not None and reciprocity) else "none (no B1 map)"}
    return None, {"method": "none"}


def receive_for(image: Image, options: QuantOptions, reference: Image | None = None, b1: Image | None = None,
                receive_map: Image | None = None) -> tuple[np.ndarray | None, bool, dict]:
    """The receive correction of `quant.images.quantify`: (R or None, reciprocity, info).

    image: the sodium image (its sidecar's `recon.ncoil_scan` picks the default mode); reference:
    the volume-coil image on its grid; b1: the B1 map; receive_map: an explicit relative receive
    map, used as is (then `options.receive` must be left unset). R None: the caller's default
    (R = k_B1 with reciprocity and a B1 map, else 1); reciprocity False turns that off ('none').
    """
    img = image.echo(options.echo).array
    if receive_map is not None:
        if options.receive is not None or reference is not None:
            raise InputError("give either a receive map or --receive/--receive-reference, not both")
        return None, options.reciprocity, {"mode": "map"}
    ncoil = (image.meta.get("recon") or {}).get("ncoil_scan")
    mode = options.receive or default_mode(ncoil if isinstance(ncoil, int) else None, reference is not None)
    ref = None
    if reference is not None:
        ref_img = reference.echo(0, "receive reference")
        image.echo(options.echo).check_same_grid(ref_img, "receive reference")
        ref = ref_img.array
    b1_arr = None if b1 is None else b1.echo(0, "B1 map").array
    sigma = tuple(options.receive_smooth_mm / float(v) for v in image.voxel_mm[:3])
    r, info = receive_field(mode, img, ref, b1_arr, options.reciprocity, sigma, image.voxel_mm[:3],
                            options.receive_n4_mm)
    info = {"mode": mode, "chosen": "option" if options.receive else "default", "ncoil_scan": ncoil, **info}
    return r, options.reciprocity and mode in ("reciprocal", "reference"), info
