"""Reference vials: the vials file, automatic detection in the image, matching to concentrations.

Vials file (DESIGN.md): {"vials": [{"label": 1, "concentration_mM": 50.0, "medium": "agar2"}, ...]}.
With a vial mask each `label` is a value in the mask. Without one, the vials are found as the
connected bright components outside the head (the largest component) and matched to the listed
concentrations by rank of their expected signal; a match that is not unambiguous (wrong count,
equal expected signals, overlapping intensities) is refused with an InputError that says why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .relax import presets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vial:
    """One reference vial: its label (value in a vial mask), concentration (mM) and medium preset."""

    label: int
    concentration_mM: float
    medium: str


def parse_vials(d: Mapping, config: Mapping | None = None) -> list[Vial]:
    """Vials from the parsed vials file; checks labels, concentrations and media (against the
    relaxation presets after `config` overrides)."""
    if not isinstance(d, Mapping) or not isinstance(d.get("vials"), list) or not d["vials"]:
        raise InputError('vials file must be {"vials": [{"label": .., "concentration_mM": .., "medium": ..}, ...]}')
    known = presets(config)
    out = []
    for i, v in enumerate(d["vials"]):
        try:
            vial = Vial(label=int(v["label"]), concentration_mM=float(v["concentration_mM"]),
                        medium=str(v.get("medium", "agar2")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"vial #{i + 1} in the vials file is malformed ({type(exc).__name__}: {exc}); "
                             "expected label, concentration_mM and medium") from None
        if not np.isfinite(vial.concentration_mM) or vial.concentration_mM < 0:
            raise InputError(f"vial {vial.label}: concentration must be a finite number >= 0 mM, "
                             f"got {vial.concentration_mM}")
        if vial.label <= 0:
            raise InputError(f"vial labels must be positive integers (0 is background), got {vial.label}")
        if vial.medium not in known:
            raise InputError(f"vial {vial.label}: unknown medium {vial.medium!r}; known: {', '.join(sorted(known))}")
        out.append(vial)
    labels = [v.label for v in out]
    if len(set(labels)) != len(labels):
        raise InputError(f"vial labels must be distinct, got {labels}")
    if len(out) < 2:
        raise InputError(f"calibration needs at least 2 vials, the vials file lists {len(out)}")
    return out


def load_vials(path: str | os.PathLike, config: Mapping | None = None) -> list[Vial]:
    """Read and check a vials JSON file (DESIGN.md)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"vials file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"vials file {p} is not valid JSON: {exc}") from None
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


def find_components(image: np.ndarray, threshold: float, min_voxels: int = 5) -> tuple[np.ndarray, list[int]]:
    """Connected components (6-connectivity) of image > threshold, largest first, tiny ones dropped.

    Returns (component label image int32 (x, y, z), list of component ids by decreasing size).
    """
    lab, n = ndimage.label(np.asarray(image) > threshold)
    if n == 0:
        return lab, []
    sizes = np.bincount(lab.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    return lab, order


def detect_vials(corrected: np.ndarray, vials: list[Vial], expected: Mapping[int, float], threshold: float,
                 noise_sd: float, min_voxels: int = 5, min_separation: float = 1.0) -> np.ndarray:
    """Find the vials as bright components outside the head and give each its vial's label.

    corrected: image (x, y, z) whose intensity is proportional to concentration * `expected`
    ratios (B1 and relaxation corrected with a common medium, quant/tsc.py); expected: vial label
    -> relative signal expected per vial (concentration times its medium's weight). The head is
    the largest component above `threshold`; the others with at least `min_voxels` voxels (and at
    least a fifth of the largest of them) are the vials. They are matched by rank of mean
    intensity over each component's core (`vial_core`) to the rank of `expected`. Refused
    (InputError) when the count differs from the list, when two vials expect signals within 10%,
    or when neighbours in rank differ by less than `min_separation` times the combined spread of
    their core voxels (at least `noise_sd`, the noise in the units of `corrected`).
    Returns an int16 vial mask (x, y, z): each vial's voxels hold its label, 0 elsewhere.
    """
    comp, order = find_components(corrected, threshold, min_voxels)
    if not order:
        raise InputError(f"no signal above the vial threshold {threshold:.3g}: cannot find the head or vials")
    sizes = np.bincount(comp.ravel())
    cand = order[1:]
    if cand:
        cand = [c for c in cand if sizes[c] >= 0.2 * sizes[cand[0]]]
    if len(cand) != len(vials):
        found = ", ".join(str(int(sizes[c])) for c in cand) or "none"
        raise InputError(f"found {len(cand)} bright component(s) outside the head (voxels: {found}) but the "
                         f"vials file lists {len(vials)} vials: give --vial-mask, or check the threshold")
    exp_sorted = sorted(vials, key=lambda v: expected[v.label])
    for v0, v1 in zip(exp_sorted, exp_sorted[1:]):
        e0, e1 = expected[v0.label], expected[v1.label]
        if e1 - e0 <= 0.1 * max(e1, 1e-12):
            raise InputError(f"vials {v0.label} and {v1.label} are expected to give signals within 10% of each "
                             "other: automatic matching is ambiguous, give --vial-mask")
    stats = []
    for c in cand:
        vals = corrected[vial_core(comp == c)]
        stats.append((float(np.mean(vals)), max(float(np.std(vals)), noise_sd), c))
    stats.sort()
    for (m0, s0, _), (m1, s1, _) in zip(stats, stats[1:]):
        if m1 - m0 < min_separation * np.hypot(s0, s1):
            raise InputError(f"two vial candidates have overlapping intensities ({m0:.3g} +- {s0:.2g} and "
                             f"{m1:.3g} +- {s1:.2g}): automatic matching is ambiguous, give --vial-mask")
    mask = np.zeros(corrected.shape, dtype=np.int16)
    for (m, _, c), v in zip(stats, exp_sorted):
        mask[comp == c] = v.label
        log.info("vial %d (%.1f mM, %s): component of %d voxels, mean %.4g", v.label, v.concentration_mM,
                 v.medium, int(sizes[c]), m)
    return mask
