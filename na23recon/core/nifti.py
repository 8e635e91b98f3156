"""NIfTI output and input with the JSON sidecar (the contract in docs/design.md).

Images are indexed (x, y, z) in the NIfTI order; their world geometry is a 4x4 RAS affine in mm,
which travels with the array everywhere (nibabel's lesson: the affine is never implicit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .atomic import atomic_pair


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """`X.nii.gz` -> `X.json` (also for `.nii`)."""
    p = Path(image_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_suffix(".json")


def save_nifti(path: str | os.PathLike, image: np.ndarray, affine: np.ndarray, sidecar: dict | None = None) -> Path:
    """Write `image` (x, y, z[, t]) with its RAS affine (4x4, mm) and the JSON sidecar, atomically.

    Complex images are stored as magnitude (float32); the sidecar says so. Returns the path.
    """
    path = Path(path)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    sidecar = dict(sidecar or {})
    if np.iscomplexobj(image):
        image = np.abs(image)
        sidecar.setdefault("stored", "magnitude")
    img = nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    text = json.dumps(sidecar, indent=2, default=_json_default) + "\n"
    # both are written and flushed under temporary names first, then renamed one after the other:
    # a failure while writing leaves neither, and the sidecar lands first (no image without one)
    with atomic_pair(path, sidecar_path(path)) as (tmp_img, tmp_side):
        nib.save(img, str(tmp_img))
        tmp_side.write_text(text, encoding="utf-8")
    return path


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read an image: (array float32 (x, y, z[, ...]), affine 4x4 RAS mm, sidecar dict or {})."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    try:
        img = nib.load(str(path))
        if np.dtype(img.get_data_dtype()).kind == "c":
            raise InputError(f"NIfTI {path} holds complex values: give a magnitude (real) image")
        data = np.asarray(img.dataobj, dtype=np.float32)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many kinds on a damaged file
        raise InputError(f"cannot read NIfTI {path}: {exc}") from None
    sc = sidecar_path(path)
    meta = {}
    if sc.exists():
        try:
            meta = json.loads(sc.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"sidecar {sc} is not valid JSON: {exc}") from None
        except RecursionError:
            raise InputError(f"sidecar {sc} nests too deeply") from None
        if not isinstance(meta, dict):
            raise InputError(f"sidecar {sc} must be a JSON object, got {type(meta).__name__}")
    return data, img.affine, meta


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
