"""Coil combination."""

from __future__ import annotations

import numpy as np


def sum_of_squares(images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root sum of squares over the coil axis: (ncoil, ...) complex -> (...) float32 magnitude."""
    return np.sqrt(np.sum(np.abs(images) ** 2, axis=axis)).astype(np.float32)
