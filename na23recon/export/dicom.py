"""An image (TSC map, its SD, B1 map, sodium image) as DICOM series a PACS can show beside the visit.

Per image, in `OUT/<stem>/`:

- `MR_<k>.dcm`: an MR derived-image series (MR Image Storage, DERIVED\\SECONDARY), one slice a
  file, signed 16-bit pixels with RescaleSlope/Intercept giving the value (mM for TSC; intercept 0,
  slope the largest |value| / 32000, so a value is within half a slope of its pixel) and a fixed
  window per kind, for the many viewers that show no float pixel data;
- `PM.dcm` for maps in mM (TSC and its SD): a Parametric Map (highdicom) with the float32 values
  themselves and a Real World Value Mapping in mmol/L (UCUM), the series above as its source;
- `SC.dcm`: the QC montage PNG beside the image as Secondary Capture (highdicom).

Geometry from the image's RAS affine, turned to DICOM's LPS: array axis x runs along a row
(ImageOrientationPatient's first triplet), y down the columns, slice k at ImagePositionPatient
`A_lps @ (0, 0, k, 1)`; PixelSpacing (row spacing, column spacing) = (|y|, |x|), SliceThickness =
|z|. highdicom rather than writing the Parametric Map by hand: its multi-frame functional groups,
real-world value mapping and float pixel data are checked against the standard when made.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .. import __version__
from ..core.atomic import staged_outputs
from ..core.geometry import LPS_TO_RAS
from ..core.image import Image
from ..core.nifti import sidecar_path
from ..errors import InputError
from .deid import UID_PREFIX, Identity

#: kind -> (series description, unit, window centre, window width, series number); window None: from the data.
KINDS = {
    "tsc": ("TSC (mM)", "mM", 60.0, 120.0, 9003),
    "tsc_sd": ("TSC standard deviation (mM)", "mM", 10.0, 20.0, 9004),
    "b1": ("B1+ relative flip scale", "1", 1.0, 1.0, 9002),
    "recon": ("23Na image", "a.u.", None, None, 9001),
}
MMOL_PER_L = Code("mmol/L", "UCUM", "millimole per liter")
INT_MAX = 32000


def image_kind(meta: dict) -> str:
    """'tsc', 'tsc_sd', 'b1' or 'recon' from an image's sidecar."""
    q = meta.get("quant")
    if isinstance(q, dict) and q.get("unit") == "mM":
        return "tsc_sd" if "standard deviation" in str(q.get("map", "")) else "tsc"
    if "b1" in meta and "recon" not in meta:
        return "b1"
    return "recon"


def slice_geometry(affine: np.ndarray) -> tuple[list[float], list[float], float, list[list[float]]]:
    """(ImageOrientationPatient, PixelSpacing, SliceThickness, ImagePositionPatient per slice
    function input) of a RAS affine: LPS orientation of x and y, [|y|, |x|], |z|, and the LPS
    matrix (to place slices)."""
    lps = np.diag([*np.diag(LPS_TO_RAS), 1.0]) @ np.asarray(affine, dtype=np.float64)
    vox = np.linalg.norm(lps[:3, :3], axis=0)
    iop = [float(v) for v in np.concatenate([lps[:3, 0] / vox[0], lps[:3, 1] / vox[1]])]
    return iop, [float(vox[1]), float(vox[0])], float(vox[2]), lps.tolist()


def _position(lps: list[list[float]], k: int) -> list[float]:
    return [float(v) for v in (np.asarray(lps) @ np.array([0.0, 0.0, float(k), 1.0]))[:3]]


def rescale_slope(values: np.ndarray) -> float:
    """A slope whose DS text reads back as itself, with |values| / slope <= INT_MAX + 1."""
    top = float(np.max(np.abs(values))) if values.size else 0.0
    if not np.isfinite(top) or top == 0.0:
        return 1.0
    slope = float(f"{top / INT_MAX:.6g}")
    while top / slope > INT_MAX + 1:
        slope = float(f"{slope * 1.0001:.6g}")
    return slope


def _ds(v: float) -> str:
    """A decimal string (DS, at most 16 characters) for a float."""
    for digits in range(10, 3, -1):
        s = f"{v:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{v:.3g}"


def _acq_attributes(ds: Dataset, meta: dict) -> None:
    acq = meta.get("acquisition") or {}
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
    te = acq.get("te_ms")
    te = te[0] if isinstance(te, list) and te else te
    ds.EchoTime = _ds(float(te)) if te is not None else ""
    ds.RepetitionTime = _ds(float(acq["tr_ms"])) if acq.get("tr_ms") is not None else ""
    if acq.get("flip_deg") is not None:
        ds.FlipAngle = _ds(float(acq["flip_deg"]))
    if acq.get("b0_T") is not None:
        ds.MagneticFieldStrength = _ds(float(acq["b0_T"]))
    ds.EchoTrainLength = 1
    ds.ImagedNucleus = acq.get("nucleus") or "23Na"


def mr_series(image: Image, kind: str, identity: Identity, description: str | None = None) -> list[Dataset]:
    """The integer MR derived-image series of a 3D image, one Dataset per slice."""
    arr = np.asarray(image.array if image.array.ndim == 3 else image.array[..., 0], dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    label, unit, wc, ww, number = KINDS[kind]
    iop, spacing, thick, lps = slice_geometry(image.affine)
    slope = rescale_slope(arr)
    stored = np.clip(np.round(arr / slope), -32768, 32767).astype("<i2")
    if wc is None:
        top = float(np.percentile(arr, 99.5)) if arr.size else 1.0
        wc, ww = top / 2, max(top, 1e-6)
    series_uid = generate_uid(UID_PREFIX)
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    normal = np.cross(iop[:3], iop[3:])
    out = []
    for k in range(arr.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(UID_PREFIX)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SpecificCharacterSet = "ISO_IR 192"
        identity.apply(ds)
        ds.Modality = "MR"
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, number
        ds.SeriesDescription = description or label
        ds.SeriesDate = ds.ContentDate = now[0]
        ds.SeriesTime = ds.ContentTime = now[1]
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "na23recon", "na23recon", __version__
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.DerivationDescription = f"na23recon {kind}: value = pixel x RescaleSlope + RescaleIntercept ({unit})"
        ds.InstanceNumber = k + 1
        _acq_attributes(ds, image.meta)
        pos = _position(lps, k)
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.PixelSpacing = [_ds(v) for v in spacing]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(thick)
        ds.SliceLocation = _ds(float(np.dot(normal, pos)))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", _ds(slope), "US"
        ds.WindowCenter, ds.WindowWidth = _ds(wc), _ds(ww)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        out.append(ds)
    return out


def parametric_map(image: Image, source: list[Dataset], kind: str) -> Dataset:
    """A Parametric Map (float32 pixels, Real World Value Mapping in mmol/L) of a map in mM."""
    arr = np.asarray(image.array if image.array.ndim == 3 else image.array[..., 0], dtype=np.float32)
    label, _, wc, ww, number = KINDS[kind]
    iop, spacing, thick, lps = slice_geometry(image.affine)
    frames = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))
    finite = frames[np.isfinite(frames)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    mapping = hd.pm.RealWorldValueMapping(lut_label=kind.upper(), lut_explanation=label, unit=MMOL_PER_L,
                                          value_range=(lo, hi if hi > lo else lo + 1.0), slope=1.0, intercept=0.0)
    return hd.pm.ParametricMap(
        source_images=source, pixel_array=frames, series_instance_uid=generate_uid(UID_PREFIX),
        series_number=number + 10, sop_instance_uid=generate_uid(UID_PREFIX), instance_number=1,
        manufacturer="na23recon", manufacturer_model_name="na23recon", software_versions=__version__,
        device_serial_number="na23recon", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], window_center=wc, window_width=ww,
        content_description=label, content_label=kind.upper().replace("_", ""),
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=thick,
                                                spacing_between_slices=thick),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", iop),
        plane_positions=[hd.PlanePositionSequence("PATIENT", _position(lps, k)) for k in range(arr.shape[2])])


def secondary_capture(png: Path, ref: Dataset, identity: Identity, burned_in: bool) -> Dataset:
    """The QC montage PNG as a Secondary Capture image of the reference series' study."""
    from PIL import Image as PILImage

    rgb = np.asarray(PILImage.open(png).convert("RGB"))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=("L", "P"), series_instance_uid=generate_uid(UID_PREFIX),
        series_number=int(ref.SeriesNumber) + 20, sop_instance_uid=generate_uid(UID_PREFIX), instance_number=1,
        manufacturer="na23recon")
    sc.BurnedInAnnotation = "YES" if burned_in else "NO"
    sc.SeriesDescription = f"QC: {ref.SeriesDescription}"
    if identity.deidentified:
        for name in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"):
            if name in sc:
                setattr(sc, name, "")
    return sc


def export_dicom(image_path: str | os.PathLike, out_dir: str | os.PathLike, identity: Identity,
                 png: str | os.PathLike | None = None, burned_in: bool = True) -> dict[str, Path]:
    """Write the DICOM series of one image into `out_dir/<stem>/` (module docstring), all or none.

    png: the QC montage (default: `<stem>.png` beside the image, when it exists). burned_in: whether
    the montage's text may name an input. Returns {'mr': folder, 'pm': file, 'sc': file} of what was
    written."""
    image_path = Path(image_path)
    image = Image.load(image_path)
    if image.array.ndim == 4 and image.array.shape[3] > 1:
        raise InputError(f"{image_path.name} has {image.array.shape[3]} echoes: export one echo (recon --echo)")
    kind = image_kind(image.meta)
    stem = sidecar_path(image_path).stem
    folder = Path(out_dir) / stem
    png = Path(png) if png is not None else sidecar_path(image_path).with_suffix(".png")
    mr = mr_series(image, kind, identity, description=f"{KINDS[kind][0]} ({stem})")
    names = [f"MR_{k + 1:04d}.dcm" for k in range(len(mr))]
    written: dict[str, Path] = {"mr": folder}
    with staged_outputs(folder, stem) as tmp:
        for ds, name in zip(mr, names):
            ds.save_as(tmp / name, enforce_file_format=True)
        if KINDS[kind][1] == "mM":
            parametric_map(image, mr, kind).save_as(tmp / "PM.dcm")
            written["pm"] = folder / "PM.dcm"
        if png.is_file():
            secondary_capture(png, mr[0], identity, burned_in).save_as(tmp / "SC.dcm")
            written["sc"] = folder / "SC.dcm"
        (tmp / "export.json").write_text(json.dumps({"image": image_path.name, "kind": kind, "slices": len(mr),
                                                     "deidentified": identity.deidentified}, indent=2) + "\n")
        keep = set(names) | {"PM.dcm", "SC.dcm"}
        for old in folder.glob("*.dcm"):
            if old.name not in keep:
                old.unlink()
        tmp.commit()
    return written
