"""Reference vials: the vials file, automatic detection in the image, matching to concentrations.

Vials file (docs/design.md): {"vials": [{"label": 1, "concentration_mM": 50.0, "medium": "agar2"}, ...]}.
With a vial mask each `label` is a value in the mask. Without one, the vials are found as compact
bright blobs (local maxima of a smoothed image, well above the background noise) beyond the
head's ringing, and matched to the listed concentrations by rank of their expected signal; a
match that is not unambiguous (wrong count, equal expected signals, overlapping intensities) is
refused with an InputError that says why.
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


#: saturated NaCl at room temperature is about 6.1 M: no vial holds more sodium
MAX_VIAL_MM = 6200.0


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
        vial = Vial(label=label, concentration_mM=float(conc), medium=medium)
        if not np.isfinite(vial.concentration_mM) or not 0 <= vial.concentration_mM <= MAX_VIAL_MM:
            raise InputError(f"vial {vial.label}: concentration must be a finite number in [0, {MAX_VIAL_MM:g}] mM "
                             f"(saturated NaCl), got {vial.concentration_mM}")
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


# Detection scale and limits (voxels / SDs); measured on adjoint reconstructions of the brain
# phantom (matrix 32-64, SNR 15-30), where vials are 3-6 voxels across and 4-6 voxels from the head.
SMOOTH_VOX = 1.0        # Gaussian SD of the detection image: about a vial's radius, a matched filter
HEAD_OPEN_VOX = 2       # opening of the head mask: cuts vials that blur into the head at low matrix
HEAD_MARGIN_VOX = 1.5   # a vial's peak lies beyond this distance from the head mask (ringing is nearer)
MIN_PEAK_Z = 6.0        # a vial's smoothed peak is this many background SDs above the background
HALF = 0.5              # a blob's extent: above half its smoothed peak height over the background
MASK_SMOOTH_VOX = 0.75  # a vial's voxels: above that half height in a less smoothed image (sharper edges)
# 3D Gaussian kernel's noise gain sqrt(sum k^2) = (2 sqrt(pi) sigma)^(-3/2): noise SD of the smoothed image
_NOISE_GAIN = (2.0 * np.sqrt(np.pi) * SMOOTH_VOX) ** -1.5


@dataclass(frozen=True)
class _Blob:
    peak: tuple[int, int, int]
    height: float        # smoothed image at the peak (units of `corrected`)
    z: float             # (height - background) / background SD of the smoothed image
    region: np.ndarray   # bool (x, y, z)


def head_mask(smooth: np.ndarray, background: float, bg_sd: float) -> tuple[np.ndarray, float]:
    """The head (the largest object, holes filled) in a smoothed image, and its typical level.

    smooth: (x, y, z) image smoothed at about a voxel; background, bg_sd: its background level and
    SD. The object level is the median over the largest component above background + 10 SD; the
    head is the largest component above half-way between background and that level (above the
    ringing beside it and above the dimmest vials' blur), holes filled, then opened by
    HEAD_OPEN_VOX voxels so that a bright vial joined to it by blur is cut off.
    Returns (bool (x, y, z), level).
    """
    lab, order = find_components(smooth, background + 10.0 * bg_sd, 1)
    if not order:
        raise InputError("no object above the background noise: cannot find the head or vials")
    level = float(np.median(smooth[lab == order[0]]))
    lab, order = find_components(smooth, background + 0.5 * (level - background), 1)
    head = ndimage.binary_fill_holes(lab == order[0])
    opened = ndimage.binary_opening(head, iterations=HEAD_OPEN_VOX)
    lab, order = find_components(opened, 0.5, 1)
    return (lab == order[0]) if order else head, level


def _blob_region(s: np.ndarray, peak: tuple[int, int, int], level: float, exclude: np.ndarray) -> np.ndarray:
    """Voxels of the blob at `peak`: connected to it above `level`, outside `exclude`, and inside
    the ellipsoid whose semi-axes are the blob's shorter half-width along each image axis plus a
    voxel. The ellipsoid keeps a dim blob's region from running along noise or ringing that
    touches it. Returns bool (x, y, z)."""
    p = np.asarray(peak)
    semi = []
    for ax in range(3):
        widths = []
        for step in (-1, 1):
            q, r = p.copy(), 0
            while True:
                q[ax] += step
                if not 0 <= q[ax] < s.shape[ax] or s[tuple(q)] <= level:
                    break
                r += 1
            widths.append(r)
        semi.append(min(widths) + 1.0)
    grid = np.ogrid[tuple(slice(0, n) for n in s.shape)]
    inside = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, p, semi)) <= 1.0
    lab, _ = ndimage.label((s > level) & inside & ~exclude)
    return lab == lab[tuple(p)]


def _find_blobs(corrected: np.ndarray, threshold: float | None, min_voxels: int) -> tuple[list[_Blob], dict]:
    """Vial-like blobs outside the head, brightest first, and what was measured on the way."""
    s = ndimage.gaussian_filter(corrected, SMOOTH_VOX)
    # Background from the whole image first (the head fills a minority of a head FOV), then from
    # what lies well outside the head; median and MAD ignore the vials.
    bg = float(np.median(s))
    bg_sd = 1.4826 * float(np.median(np.abs(s - bg)))
    head, level = head_mask(s, bg, bg_sd)
    dist = ndimage.distance_transform_edt(~head)
    outside = dist > HEAD_MARGIN_VOX + 2.0
    bg = float(np.median(s[outside]))
    s_mask = ndimage.gaussian_filter(corrected, MASK_SMOOTH_VOX)
    bg_mask = float(np.median(s_mask[outside]))
    bg_sd = 1.4826 * float(np.median(np.abs(s[outside] - bg)))
    # A noise-free image has no background SD: then ringing is what the floor must reject.
    bg_sd = max(bg_sd, 0.01 * (level - bg))
    min_height = bg + MIN_PEAK_Z * bg_sd if threshold is None else float(threshold)
    # Smoothing reflects at the FOV's faces, which doubles the noise variance there: no peaks on them.
    inner = np.zeros(s.shape, dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True
    peaks = (s == ndimage.maximum_filter(s, size=3)) & inner & (dist > HEAD_MARGIN_VOX) & (s > min_height)
    idx = np.argwhere(peaks)
    idx = idx[np.argsort(-s[peaks], kind="stable")]
    blobs: list[_Blob] = []
    taken = np.zeros(s.shape, dtype=bool)
    max_voxels = max(int(0.2 * head.sum()), min_voxels)
    for p in (tuple(int(i) for i in q) for q in idx):
        if taken[p]:
            continue  # a second maximum of a blob already found (an elongated vial)
        h = float(s[p])
        region = _blob_region(s, p, bg + HALF * (h - bg), head)
        taken |= region
        n = int(region.sum())
        if n < min_voxels or n > max_voxels:
            log.debug("blob at %s (%.4g) rejected: %d voxels", p, h, n)
            continue
        near = ndimage.binary_dilation(region, iterations=1) & ~head
        lab, _ = ndimage.label(near & (s_mask > bg_mask + HALF * (h - bg)))
        keep = lab == lab[p] if lab[p] else region
        blobs.append(_Blob(peak=p, height=h, z=(h - bg) / bg_sd, region=keep))
    info = {"background": bg, "background_sd": bg_sd, "head_level": level, "min_height": min_height,
            "head_voxels": int(head.sum())}
    return blobs, info


def detect_vials(corrected: np.ndarray, vials: list[Vial], expected: Mapping[int, float],
                 threshold: float | None, noise_sd: float, min_voxels: int = 5,
                 min_separation: float = 3.0) -> np.ndarray:
    """Find the vials as compact bright blobs outside the head and give each its vial's label.

    corrected: image (x, y, z) whose intensity is proportional to concentration * `expected`
    ratios (B1 and relaxation corrected with a common medium, quant/tsc.py); expected: vial label
    -> relative signal expected per vial (concentration times its medium's weight).

    Works on reconstructions with ringing, partial volume and noise, where no single threshold
    separates the dimmest vial from the background and the brightest from the head:
    1. smooth with a Gaussian of SMOOTH_VOX voxels (about a vial's radius: a matched filter);
    2. the head: the largest component above half its level, holes filled, opened (`head_mask`);
    3. candidates: local maxima of the smoothed image more than HEAD_MARGIN_VOX voxels from the
       head (Gibbs ringing of the head lies nearer) and MIN_PEAK_Z background SDs above the
       background (or above `threshold`, in units of `corrected`, when given);
    4. each candidate's extent: its connected region above half its peak height over the
       background, outside the head, inside an ellipsoid of its half-widths (`_blob_region`);
       between `min_voxels` and a fifth of the head's voxels, or it is no vial. The vial's voxels
       (the returned mask, which quant/tsc.py averages) are those near that extent above the same
       half height in an image smoothed by only MASK_SMOOTH_VOX: on the brain phantom at matrix 48
       their means match the true vials' (truth_labels) within 5%.
    The blobs are matched by rank of their smoothed peak to the rank of `expected`. Refused
    (InputError) when the count differs from the list, when two vials expect signals within 10%,
    or when neighbours in rank differ by less than `min_separation` times the noise of their
    difference (noise_sd, the image's Gaussian noise SD in the units of `corrected`, through the
    smoothing).
    Returns an int32 vial mask (x, y, z): each vial's voxels hold its label, 0 elsewhere.
    """
    corrected = np.asarray(corrected, dtype=np.float64)
    blobs, info = _find_blobs(corrected, threshold, min_voxels)
    if len(blobs) != len(vials):
        found = ", ".join(f"{int(b.region.sum())} vox at {list(b.peak)}" for b in blobs) or "none"
        raise InputError(f"found {len(blobs)} bright component(s) outside the head ({found}; peaks above "
                         f"{info['min_height']:.3g}) but the vials file lists {len(vials)} vials: "
                         "give --vial-mask, or --vial-threshold")
    exp_sorted = sorted(vials, key=lambda v: expected[v.label])
    for v0, v1 in zip(exp_sorted, exp_sorted[1:]):
        e0, e1 = expected[v0.label], expected[v1.label]
        if e1 - e0 <= 0.1 * max(e1, 1e-12):
            raise InputError(f"vials {v0.label} and {v1.label} are expected to give signals within 10% of each "
                             "other: automatic matching is ambiguous, give --vial-mask")
    blobs = sorted(blobs, key=lambda b: b.height)
    u = noise_sd * _NOISE_GAIN * np.sqrt(2.0)  # noise of the difference of two smoothed peaks
    for b0, b1 in zip(blobs, blobs[1:]):
        if b1.height - b0.height < min_separation * u:
            raise InputError(f"two vial candidates have overlapping intensities ({b0.height:.3g} and "
                             f"{b1.height:.3g}, difference noise {u:.2g}): automatic matching is ambiguous, "
                             "give --vial-mask")
    mask = np.zeros(corrected.shape, dtype=np.int32)
    for b, v in zip(blobs, exp_sorted):
        mask[b.region] = v.label
        log.info("vial %d (%.1f mM, %s): blob of %d voxels at %s, smoothed peak %.4g (%.0f SD above background)",
                 v.label, v.concentration_mM, v.medium, int(b.region.sum()), list(b.peak), b.height, b.z)
    return mask
