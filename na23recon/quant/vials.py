"""Reference vials: the vials file, automatic detection in the image, matching to concentrations.

Vials file (docs/design.md): {"vials": [{"label": 1, "concentration_mM": 50.0, "medium": "agar2",
"diameter_mm": 20, "length_mm": 28, "shape": "cylinder"}, ...]}; the size is optional (all vials
or none) and helps automatic detection (quant/vial_detect.py). With a vial mask each `label` is a
value in the mask.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .relax import presets

log = logging.getLogger(__name__)

#: Largest vial label: masks are stored as float32 NIfTI, exact for integers up to 2^24.
MAX_LABEL = 2 ** 24


#: vial shapes: a cylinder (diameter x length), an ellipsoid of revolution or a sphere (diameter)
SHAPES = ("cylinder", "ellipsoid", "sphere")

#: saturated NaCl at room temperature is about 6.1 M: no vial holds more sodium
MAX_VIAL_MM = 6200.0


@dataclass(frozen=True)
class Vial:
    """One reference vial: its label (value in a vial mask), concentration (mM), medium preset and,
    optionally, its size (mm; length None for a sphere)."""

    label: int
    concentration_mM: float
    medium: str
    diameter_mm: float | None = None
    length_mm: float | None = None
    shape: str = "cylinder"

    def volume_mm3(self) -> float | None:
        """The vial's inner volume (mm^3) from its size, None when it is not listed."""
        if self.diameter_mm is None:
            return None
        d = self.diameter_mm
        length = self.length_mm if self.length_mm is not None else d
        return float(np.pi / 4 * d * d * length if self.shape == "cylinder" else np.pi / 6 * d * d * length)


def parse_vials(d: Mapping, config: Mapping | None = None) -> list[Vial]:
    """Vials from the parsed vials file; checks labels, concentrations and media (against the
    relaxation presets after `config` overrides)."""
    if not isinstance(d, Mapping) or not isinstance(d.get("vials"), list) or not d["vials"]:
        raise InputError('vials file must be {"vials": [{"label": .., "concentration_mM": .., "medium": ..}, ...]}')
    known = presets(config)
    out = []
    for i, v in enumerate(d["vials"]):
        try:
            label, conc = v["label"], v["concentration_mM"]
            medium = v.get("medium", "agar2")
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"vial #{i + 1} in the vials file is malformed ({type(exc).__name__}: {exc}); "
                             "expected label, concentration_mM and medium") from None
        # a label is an integer: 11.5 or true are refused, not truncated to 11 or 1 (11.0 is 11)
        if isinstance(label, bool) or not (isinstance(label, int) or (isinstance(label, float) and label.is_integer())):
            raise InputError(f"vial #{i + 1} in the vials file: label must be an integer, got {label!r}")
        label = int(label)
        if not 0 < label <= MAX_LABEL:
            raise InputError(f"vial #{i + 1} in the vials file: label must be an integer in 1..{MAX_LABEL} "
                             f"(0 is background; larger labels are not exact in a float32 NIfTI mask), got {label}")
        if isinstance(conc, bool) or not isinstance(conc, (int, float)):
            raise InputError(f"vial {label}: concentration_mM must be a number, got {conc!r}")
        if not isinstance(medium, str):
            raise InputError(f"vial {label}: medium must be a preset name, got {medium!r}")
        vial = Vial(label=label, concentration_mM=float(conc), medium=medium, **_vial_size(v, label))
        if not np.isfinite(vial.concentration_mM) or not 0 <= vial.concentration_mM <= MAX_VIAL_MM:
            raise InputError(f"vial {vial.label}: concentration must be a finite number in [0, {MAX_VIAL_MM:g}] mM "
                             f"(saturated NaCl), got {vial.concentration_mM}")
        if vial.medium not in known:
            raise InputError(f"vial {vial.label}: unknown medium {vial.medium!r}; known: {', '.join(sorted(known))}")
        out.append(vial)
    sized = [v.label for v in out if v.diameter_mm is not None]
    if sized and len(sized) != len(out):
        raise InputError(f"vial(s) {sized} list a size (diameter_mm) but the others do not: give every vial's "
                         "size or none")
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise InputError(f"vial labels must be distinct, got {labels}")
    if len(out) < 2:
        raise InputError(f"calibration needs at least 2 vials, the vials file lists {len(out)}")
    return out


def _vial_size(v: Mapping, label: int) -> dict:
    """diameter_mm, length_mm and shape of vial entry `v` (checked), {} when it lists no size."""
    if "diameter_mm" not in v:
        if "length_mm" in v:
            raise InputError(f"vial {label}: length_mm without diameter_mm")
        return {}
    shape = v.get("shape", "cylinder")
    if shape not in SHAPES:
        raise InputError(f"vial {label}: shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    out: dict = {"shape": shape}
    for key in ("diameter_mm", "length_mm"):
        x = v.get(key)
        if key == "length_mm" and (x is None or shape == "sphere"):
            if x is not None:
                raise InputError(f"vial {label}: a sphere has a diameter_mm only, not a length_mm")
            if shape != "sphere":
                raise InputError(f"vial {label}: a {shape} needs length_mm besides diameter_mm")
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not (np.isfinite(x) and 0 < x <= 1000):
            raise InputError(f"vial {label}: {key} must be a number in (0, 1000] mm, got {x!r}")
        out[key] = float(x)
    return out


def load_vials(path: str | os.PathLike, config: Mapping | None = None) -> list[Vial]:
    """Read and check a vials JSON file (the contract in docs/design.md)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"vials file not found: {p}")
    if not p.is_file():
        raise InputError(f"vials file {p} is not a file (a directory?): give the vials JSON file")
    try:
        d = json.loads(p.read_text())
    except OSError as exc:
        raise InputError(f"cannot read vials file {p}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"vials file {p} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"vials file {p} nests too deeply to be a vials list") from None
    return parse_vials(d, config)


def vial_core(mask: np.ndarray, depth_vox: float = 1.0, min_voxels: int = 5) -> np.ndarray:
    """The central voxels of a vial ROI: those within `depth_vox` of the ROI's deepest point.

    Small vials are mostly partial volume at a few voxels per diameter; their centre is the only
    part that reads the vial's own concentration. Selecting by depth (distance to the ROI's
    edge) rather than by intensity keeps the noise unbiased. Grows until >= `min_voxels` voxels
    (or the whole ROI). mask: bool (x, y, z); returns bool (x, y, z).
    """
    m = np.asarray(mask, dtype=bool)
    if m.sum() <= min_voxels:
        return m
    dist = ndimage.distance_transform_edt(m)
    dmax = float(dist.max())
    d = depth_vox
    while d < dmax:
        core = m & (dist >= dmax - d)
        if core.sum() >= min_voxels:
            return core
        d += 0.5
    return m
