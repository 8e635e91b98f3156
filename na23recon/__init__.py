"""na23recon: sodium (23Na) MRI reconstruction and tissue sodium concentration (TSC) maps.

Chain: Siemens twix -> non-Cartesian k-space + trajectory -> numba NUFFT -> coil handling and
adjoint / CG / compressed-sensing reconstruction -> B1 correction -> TSC in mM -> NIfTI + QC.

The Python API works on the types of `na23recon.core`::

    import na23recon as na
    scan = na.read_scan("scan.dat")                  # Scan: k-space + Acquisition (+ Geometry)
    traj = na.load_traj("traj.npz")                  # Trajectory: k in 1/m, t, dcf
    image = na.reconstruct(scan, traj, na.ReconOptions(method="cs-tv"))   # Image (+ affine, meta)
    tsc = na.quantify(image, na.load_vials("vials.json"), na.QuantOptions(tissue="gm"))
    image.save("recon.nii.gz")

Names are imported when first used, so `import na23recon` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

GAMMA_BAR_NA23_HZ_PER_T = 11.262e6
"""gamma / 2pi of 23Na in Hz/T."""
GAMMA_BAR_H1_HZ_PER_T = 42.577e6
"""gamma / 2pi of 1H in Hz/T."""

_API = {
    "Acquisition": "core", "Geometry": "core", "Image": "core", "Scan": "core", "Trajectory": "core",
    "ReconOptions": "core", "QuantOptions": "core", "B1Options": "core",
    "read_scan": "io.twix", "load_traj": "io.trajfile", "load_vials": "quant.vials",
    "reconstruct": "recon.scan_recon", "quantify": "quant.images", "b1_map": "quant.images",
}
__all__ = ["__version__", "GAMMA_BAR_NA23_HZ_PER_T", "GAMMA_BAR_H1_HZ_PER_T", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'na23recon' has no attribute {name!r}")
