"""The shared data model: the types every stage takes and returns.

    Acquisition  protocol parameters (unknown values None), with its Geometry
    Geometry     where the volume sits (Siemens patient coordinates) -> the RAS affine
    Scan         k-space (nrep, necho, ncoil, nreadout, nsample) + Acquisition + noise samples
    Trajectory   k in 1/m, t in s, dcf; `.coord(fov_mm)` gives the NUFFT's cycles/FOV
    Image        array (x, y, z[, echo]) + affine + sidecar; `.load` / `.save`
    ReconOptions, QuantOptions, B1Options   frozen, validated options of each step

Readers build these once at the edge (io/), the stages pass them whole, writers turn them back
into files. Nothing here imports a stage.
"""

from .acquisition import Acquisition
from .geometry import Geometry
from .image import Image
from .options import B1Options, QuantOptions, ReconOptions
from .scan import Scan
from .trajectory import SampleSelection, Trajectory

__all__ = ["Acquisition", "Geometry", "Image", "Scan", "Trajectory", "SampleSelection", "ReconOptions",
           "QuantOptions", "B1Options"]
