"""An image with its world geometry and its sidecar: what every step writes and reads.

Arrays are indexed (x, y, z[, echo]) in the NIfTI order; the 4x4 affine maps voxel indices to
RAS millimetres and travels with the array everywhere (nibabel's lesson: the affine is never
implicit). `meta` is the JSON sidecar (DESIGN contract): version, command, input checksums, the
`acquisition` block and what the step did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .acquisition import Acquisition
from .nifti import load_nifti, save_nifti


@dataclass(eq=False)
class Image:
    """array: (x, y, z) or (x, y, z, echo); affine: float64 (4, 4) voxel -> RAS mm; meta: sidecar."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise InputError(f"an image's affine must be a finite 4x4 matrix, got shape {aff.shape}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise InputError("an image's affine has a zero voxel size (singular 3x3 part)")
        self.affine = aff
        if self.array.ndim not in (3, 4):
            raise InputError(f"an image must be (x, y, z) or (x, y, z, echo), got shape {self.array.shape}")

    # --- files -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> Image:
        """Read a NIfTI image and its JSON sidecar (empty meta when there is none)."""
        arr, aff, meta = load_nifti(path)
        if arr.ndim not in (3, 4):
            raise InputError(f"image {path} must be 3D (x, y, z) or 4D (x, y, z, echo), got shape {arr.shape}")
        return cls(arr, aff, meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the NIfTI and its sidecar atomically (float32; complex as magnitude)."""
        return save_nifti(path, self.array, self.affine, self.meta)

    # --- views -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """Voxel size along each array axis, mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def echo(self, e: int = 0, what: str = "image") -> Image:
        """The 3D image of one echo (a 3D image is its own echo 0)."""
        if self.array.ndim == 3:
            if e != 0:
                raise InputError(f"{what} has one echo, echo {e} requested")
            return self
        if not 0 <= e < self.array.shape[3]:
            raise InputError(f"{what} has {self.array.shape[3]} echoes, echo {e} requested")
        return replace(self, array=self.array[..., e])

    def acquisition(self) -> tuple[Acquisition, list[str]]:
        """The acquisition in the sidecar, FOV and matrix completed from the image itself.
        Returns (acquisition, sidecar fields that were missing)."""
        return Acquisition.from_sidecar(self.meta.get("acquisition"), self.shape, self.affine)

    def check_same_grid(self, other: Image, what: str) -> None:
        """InputError unless `other` lies on this image's voxel grid (shape and affine)."""
        if self.shape[:3] != other.shape[:3]:
            raise InputError(f"{what} has shape {other.shape[:3]} but the image {self.shape[:3]}")
        if not np.allclose(self.affine, other.affine, atol=1e-3, rtol=1e-5):
            raise InputError(f"{what} has a different affine (geometry) from the image: resample it onto the image grid")
