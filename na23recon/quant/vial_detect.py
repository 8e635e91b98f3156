"""Automatic detection of the reference vials in a sodium image, and their matching to the vials file.

A vial is a compact object of known size (the vials file's `diameter_mm` / `length_mm`, or about a
voxel's radius when they are not given) surrounded by background. Detection uses no global
intensity threshold between the vials and the head, so it holds under receive-coil shading (an
array makes the head and the vials tens of percent brighter or darker from place to place):

1. matched filter: the image smoothed by a Gaussian of SD 0.45 times the vial's equivalent-sphere
   radius (the SD of a uniform ball of radius r is r / sqrt(5));
2. the background level and SD from the far field (median and MAD of what lies well away from
   any object): the noise floor, uniform across the FOV for root-sum-of-squares combination;
3. candidates: local maxima of the filtered image more than MIN_PEAK_Z background SDs above the
   background (or above `threshold`);
4. local contrast: the SHELL_PERCENTILE-th percentile of the filtered image over a shell just
   beyond the vial's largest radius must be near the background, within SHELL_MAX of the
   candidate's height over the background (or one background SD). A vial is background on most
   sides; a bright spot inside the head (ventricles, tissue near a coil), and the head's edge,
   are tissue on half their sides or more. The criterion is a ratio of nearby intensities, so a
   smooth receive profile scales both sides of it alike (Lindeberg, Int J Comput Vis 1998, for
   blob detection as scale-matched extrema; the local-contrast test follows the same idea as
   local-background spot detection in microscopy, Olivo-Marin, Pattern Recognit 2002);
5. extent: the voxels connected to the peak above half its height over the background, inside
   the shell, and between 0.3 and 2.5 times the listed volume (or `min_voxels` when no size). A
   many-channel sum of squares has a high noise floor (its background reads more than
   HIGH_FLOOR times its SD; one channel's Rayleigh floor reads 1.91): there, and for a blob too
   small at the first level, the level is half the blob's amplitude with the floor removed in
   power (M^2 = A^2 + floor^2; Gudbjartsson & Patz, Magn Reson Med 1995). On the magnitude the
   floor lifts half height to 0.56 of a bright array vial's amplitude and 0.65 of a dim one's,
   where the array's shading across the vial leaves too few voxels.

The found blobs are matched to the listed vials by rank of expected signal. When fewer are found
than listed, the subset of vials whose expected signals best fit the found heights (one common
scale, least squares in log) is matched, and each vial left out is named with the reason it was
not found (too dim for the noise, a candidate near its expected level rejected and why, or no
candidate). When more are found than listed, the listed number of them whose heights best follow
the expected signals (the same fit) is kept, the more isolated set among equally good fits: a blob
of noise in a regularised background can be more isolated than a vial beside the head.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import comb

import numpy as np
from scipy import ndimage

from ..errors import InputError

log = logging.getLogger(__name__)

# Measured on adjoint reconstructions of the brain phantom (matrix 32-48, SNR 15-30, 1-32 helmet
# receive loops): vials give shell ratios 0.00-0.125, spots in the head and its edge 0.177-0.5.
SMOOTH_VOX = 1.0         # matched-filter SD (voxels) when the vials' size is not listed
DEFAULT_RADIUS_VOX = 2.8  # a vial's largest radius (voxels) when its size is not listed
MIN_PEAK_Z = 6.0         # a vial's filtered peak is this many background SDs above the background
SHELL_GAP_VOX = 1.5      # the contrast shell starts this far beyond the vial's largest radius
SHELL_WIDTH_VOX = 2.0
SHELL_PERCENTILE = 60.0  # most of a vial's surroundings are background
SHELL_MAX = 0.15         # ... that percentile within this fraction of the peak over the background
NOISE_ALLOWANCE = 1.0    # ... or within this many background SDs of it (a dim vial's ratio is noisy)
HALF = 0.5               # a blob's extent: above half its filtered peak over the background
# ... or above half its amplitude with the noise floor removed in power, under a high floor or
# when the first extent is below the listed volume's range. Measured on 32 helmet loops (matrix
# 32-40, SNR 15-30, reference-corrected): vial Dice 0.67-0.87 -> 0.77-0.86 (the 25 mM vial at SNR
# 5 refused before: 6 voxels of 27); on one coil the floor-removed level lets noise in (matrix 40,
# SNR 30, the 25 mM vial: Dice 0.78 -> 0.67), so it stays off there.
HIGH_FLOOR = 3.0         # background mean / SD above this: a many-channel floor (2 channels: 2.8)
MASK_SMOOTH_VOX = 0.75   # a vial's voxels are taken in a less smoothed image (sharper edges)
NOISE_FREE_FLOOR = 0.003  # least background SD, relative to the brightest object
VOLUME_RANGE = (0.3, 2.5)  # a blob's extent relative to the listed vial volume


@dataclass(frozen=True)
class Blob:
    """A candidate: peak voxel, filtered height, z (height over background in background SDs),
    shell ratio (local background over the height, both above the background), its voxels, and
    why it was rejected ('' when accepted)."""

    peak: tuple[int, int, int]
    height: float
    z: float
    shell: float
    region: np.ndarray
    reason: str = ""


@dataclass
class Detection:
    """The vial mask (int32 (x, y, z), labels) and what detection measured: found vials
    {label: {peak, voxels, height, z, shell}}, missing vials {label: reason}, warnings, and the
    background level/SD of the filtered image."""

    mask: np.ndarray
    found: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    background: float = 0.0
    background_sd: float = 0.0

    def as_dict(self) -> dict:
        return {"found": {str(k): v for k, v in self.found.items()},
                "missing": {str(k): v for k, v in self.missing.items()}, "warnings": list(self.warnings),
                "background": self.background, "background_sd": self.background_sd}


def vial_sizes_vox(vials: Sequence, voxel_mm: Sequence[float] | None) -> tuple[float, float, list[float]] | None:
    """(matched-filter SD, largest radius, volume per vial) in voxels from the vials' listed sizes,
    or None when a size or the voxel size is unknown. Orientation is not assumed: the radius is
    the vial's largest semi-axis, the filter follows its equivalent-sphere radius."""
    if voxel_mm is None or any(getattr(v, "diameter_mm", None) is None for v in vials):
        return None
    vox = float(np.prod(voxel_mm)) ** (1.0 / 3.0)
    vols = [v.volume_mm3() / float(np.prod(voxel_mm)) for v in vials]
    r_eq = (3.0 * min(v.volume_mm3() for v in vials) / (4.0 * np.pi)) ** (1.0 / 3.0) / vox
    r_max = max(0.5 * max(v.diameter_mm, v.length_mm or v.diameter_mm) for v in vials) / vox
    return float(np.clip(0.45 * r_eq, 0.75, 3.0)), float(r_max), vols


def _background(s: np.ndarray) -> tuple[float, float]:
    """Level and SD of the background of a filtered image: median and MAD of what lies more than
    3 voxels from anything 5 SDs above it, refined three times (the first pass: the whole image)."""
    bg = float(np.median(s))
    sd = 1.4826 * float(np.median(np.abs(s - bg)))
    for _ in range(3):
        far = ~ndimage.binary_dilation(s > bg + 5.0 * max(sd, 1e-30), iterations=3)
        if far.sum() < 0.05 * s.size:
            break
        bg = float(np.median(s[far]))
        sd = 1.4826 * float(np.median(np.abs(s[far] - bg)))
    # a noise-free image has no background SD: a floor instead, so that the floor of detection
    # (MIN_PEAK_Z SDs) lies at 2% of the brightest object, above the ringing far from it
    return bg, max(sd, NOISE_FREE_FLOOR * (float(s.max()) - bg))


def _ball_offsets(r_in: float, r_out: float) -> np.ndarray:
    n = int(np.ceil(r_out))
    g = np.stack(np.meshgrid(*([np.arange(-n, n + 1)] * 3), indexing="ij"), -1).reshape(-1, 3)
    d = np.sqrt(np.sum(g * g, 1))
    return g[(d >= r_in) & (d < r_out)]


def _values_at(s: np.ndarray, p: tuple[int, int, int], offsets: np.ndarray) -> np.ndarray:
    q = offsets + np.asarray(p)
    ok = np.all((q >= 0) & (q < np.asarray(s.shape)), 1)
    return s[tuple(q[ok].T)]


def _region(s: np.ndarray, p: tuple[int, int, int], level: float, radius: float) -> np.ndarray:
    """Voxels of the blob at `p`: connected to it above `level`, within `radius` of it and inside
    the ellipsoid whose semi-axes are the blob's shorter half-width along each image axis plus a
    voxel (keeps a blob beside the head from running into it). Returns bool (x, y, z)."""
    pa = np.asarray(p)
    semi = []
    for ax in range(3):
        widths = []
        for step in (-1, 1):
            q, r = pa.copy(), 0
            while True:
                q[ax] += step
                if not 0 <= q[ax] < s.shape[ax] or s[tuple(q)] <= level or r >= radius:
                    break
                r += 1
            widths.append(r)
        semi.append(min(widths) + 1.0)
    grid = np.ogrid[tuple(slice(0, n) for n in s.shape)]
    inside = (sum(((g - c) / a) ** 2 for g, c, a in zip(grid, pa, semi)) <= 1.0) & \
        (sum((g - c) ** 2 for g, c in zip(grid, pa)) <= radius ** 2)
    lab, _ = ndimage.label((s > level) & inside)
    return lab == lab[tuple(pa)]


def find_blobs(corrected: np.ndarray, threshold: float | None = None, min_voxels: int = 5,
               sizes: tuple[float, float, list[float]] | None = None) -> tuple[list[Blob], list[Blob], float, float]:
    """Vial-like blobs (see the module docstring), brightest first; also the rejected candidates
    (with reasons), and the filtered image's background level and SD. sizes: `vial_sizes_vox`."""
    sigma, r_max, vols = sizes if sizes is not None else (SMOOTH_VOX, DEFAULT_RADIUS_VOX, None)
    s = ndimage.gaussian_filter(corrected, sigma)
    s_mask = ndimage.gaussian_filter(corrected, MASK_SMOOTH_VOX)
    bg, sd = _background(s)
    bg_mask = float(np.median(s_mask[s - bg < 2.0 * sd]))
    bg_raw, sd_raw = _background(np.asarray(corrected, dtype=np.float64))
    high_floor = bg_raw > HIGH_FLOOR * sd_raw
    floor = bg + MIN_PEAK_Z * sd if threshold is None else float(threshold)
    n_lo, n_hi = ((max(min_voxels, VOLUME_RANGE[0] * min(vols)), VOLUME_RANGE[1] * max(vols)) if vols
                  else (min_voxels, 4.0 / 3.0 * np.pi * (r_max + 1.0) ** 3))
    shell = _ball_offsets(r_max + SHELL_GAP_VOX, r_max + SHELL_GAP_VOX + SHELL_WIDTH_VOX)
    inner = np.zeros(s.shape, dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True  # smoothing reflects at the faces: no peaks on them
    peaks = (s == ndimage.maximum_filter(s, size=3)) & inner & (s > floor)
    idx = np.argwhere(peaks)
    idx = idx[np.argsort(-s[peaks], kind="stable")]
    found: list[Blob] = []
    rejected: list[Blob] = []
    taken = np.zeros(s.shape, dtype=bool)
    for p in (tuple(int(i) for i in q) for q in idx):
        if taken[p]:
            continue  # a second maximum of a blob already seen
        h = float(s[p])
        local = float(np.percentile(_values_at(s, p, shell), SHELL_PERCENTILE))
        ratio = (local - bg) / (h - bg)
        level, level_mask = bg + HALF * (h - bg), bg_mask + HALF * (h - bg)
        region = _region(s, p, level, r_max + SHELL_GAP_VOX)
        if high_floor or region.sum() < n_lo:  # half its amplitude, the floor removed in power
            half = HALF * float(np.sqrt(max(h * h - bg * bg, 0.0)))
            level, level_mask = float(np.hypot(bg, half)), float(np.hypot(bg_mask, half))
            region = _region(s, p, level, r_max + SHELL_GAP_VOX)
        taken |= region
        n = int(region.sum())
        reason = ""
        if ratio > SHELL_MAX and local - bg > NOISE_ALLOWANCE * sd:
            reason = (f"not isolated: its surroundings read {ratio:.0%} of its height over the background "
                      f"(a vial's read <= {SHELL_MAX:.0%}): inside or touching the head?")
        elif not n_lo <= n <= n_hi:
            reason = f"{n} voxels at half height, a vial has {n_lo:.0f}-{n_hi:.0f}"
        if reason:
            rejected.append(Blob(p, h, (h - bg) / sd, ratio, region, reason))
            continue
        near = ndimage.binary_dilation(region, iterations=1)
        lab, _ = ndimage.label(near & (s_mask > level_mask))
        keep = lab == lab[p] if lab[p] else region
        found.append(Blob(p, h, (h - bg) / sd, ratio, keep))
    return found, rejected, bg, sd


def _log_fit(heights: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """heights = a * expected (same order) fitted in log: (a, rms log residual)."""
    res = np.log(heights) - np.log(expected)
    loga = float(np.mean(res))
    return float(np.exp(loga)), float(np.sqrt(np.mean((res - loga) ** 2)))


def _best_subset(heights: np.ndarray, expected: np.ndarray) -> tuple[tuple[int, ...], float, float]:
    """The order-preserving choice of len(heights) of the `expected` signals (both ascending) that
    best fits heights = a * expected: (indices, a, rms log residual). Up to 5000 subsets."""
    best = ((), 0.0, np.inf)
    combos = itertools.combinations(range(len(expected)), len(heights))
    for sub in itertools.islice(combos, 5000):
        a, rms = _log_fit(heights, expected[list(sub)])
        if rms < best[2]:
            best = (sub, a, rms)
    return best


#: Fits of the blobs' heights to the expected signals within this rms log residual of the best are
#: equally good; the most isolated of them is kept.
FIT_TIE = 0.05
#: At most this many subsets of the found blobs are tried (the most isolated blobs first).
MAX_SUBSETS = 20000


def _best_blobs(blobs: list[Blob], h: Mapping, expected: np.ndarray) -> list[Blob]:
    """The len(expected) of `blobs` whose heights `h` (by peak), in rank order, best fit
    a * expected (ascending): least rms log residual, then the least summed shell ratio among the
    fits within FIT_TIE of the best."""
    n = len(expected)
    pool = sorted(blobs, key=lambda b: b.shell)
    while len(pool) > n and comb(len(pool), n) > MAX_SUBSETS:
        pool = pool[:-1]
    e = np.maximum(expected, 1e-30)
    fits = []
    for sub in itertools.combinations(pool, n):
        rms = _log_fit(np.sort(np.maximum([h[b.peak] for b in sub], 1e-30)), e)[1]
        fits.append((rms, sum(b.shell for b in sub), sub))
    best = min(f[0] for f in fits)
    return list(min((f for f in fits if f[0] <= best + FIT_TIE), key=lambda f: f[1])[2])


def detect_vials(image: np.ndarray, vials: Sequence, expected: Mapping[int, float], threshold: float | None = None,
                 scale: np.ndarray | float = 1.0, min_voxels: int = 5, min_separation: float = 3.0,
                 voxel_mm: Sequence[float] | None = None) -> Detection:
    """Find the listed vials in `image` and give each found one its label (module docstring).

    image: the reconstructed magnitude (x, y, z), whose noise is uniform across the FOV: the vials
    are found in it (their geometry, peak heights in background SDs, isolation). scale: the
    correction (x, y, z) or a number that makes image * scale proportional to concentration times
    the `expected` ratios (1 / (receive sensitivity * relaxation weight), quant/tsc.py); the found
    vials' heights over the background are scaled by it at their peaks before matching, so a
    receive profile the scale corrects does not reorder them. vials: `quant.vials.Vial`s;
    expected: label -> relative signal expected per vial; threshold: least filtered peak (units of
    `image`; None: MIN_PEAK_Z background SDs above the background); voxel_mm: voxel size, to use
    the vials' listed sizes.

    Refused (InputError) when two vials expect signals within 10%, or when two found vials
    neighbouring in rank differ by less than `min_separation` times the noise of the difference of
    their heights: matching by rank would be a guess. Returns a `Detection`; vials not found are
    in `.missing`, each with one line saying why.
    """
    image = np.asarray(image, dtype=np.float64)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), image.shape)
    sizes = vial_sizes_vox(vials, voxel_mm)
    blobs, rejected, bg, sd = find_blobs(image, threshold, min_voxels, sizes)
    det = Detection(mask=np.zeros(image.shape, dtype=np.int32), background=bg, background_sd=sd)
    exp_sorted = sorted(vials, key=lambda v: expected[v.label])
    for v0, v1 in zip(exp_sorted, exp_sorted[1:]):
        e0, e1 = expected[v0.label], expected[v1.label]
        if e1 - e0 <= 0.1 * max(e1, 1e-12):
            raise InputError(f"vials {v0.label} and {v1.label} are expected to give signals within 10% of each "
                             "other: automatic matching is ambiguous, give --vial-mask")
    # heights in corrected units, the magnitude noise floor removed in power (M^2 = A^2 + floor^2 for
    # A >> sigma; Gudbjartsson & Patz, Magn Reson Med 1995), and the noise of each (background SD)
    h = {b.peak: float(np.sqrt(max(b.height ** 2 - bg ** 2, 0.0))) * float(scale[b.peak]) for b in blobs}
    u = {b.peak: sd * abs(float(scale[b.peak])) for b in blobs}
    e_all = np.array([expected[v.label] for v in exp_sorted], dtype=np.float64)
    if len(blobs) > len(vials):
        keep = _best_blobs(blobs, h, e_all)
        extra = [b for b in blobs if all(b is not k for k in keep)]
        blobs = keep
        det.warnings.append(f"{len(extra)} vial-like blob(s) beyond the {len(vials)} listed ignored (those whose "
                            f"heights follow the listed concentrations least): at "
                            f"{', '.join(str(list(b.peak)) for b in extra)}")
    blobs = sorted(blobs, key=lambda b: h[b.peak])
    if blobs:
        sub, fit_scale, rms = _best_subset(np.maximum([h[b.peak] for b in blobs], 1e-30), np.maximum(e_all, 1e-30))
    else:
        sub, fit_scale, rms = (), 0.0, 0.0
    matched = [exp_sorted[i] for i in sub]
    for (b0, v0), (b1, v1) in zip(zip(blobs, matched), zip(blobs[1:], matched[1:])):
        noise = float(np.hypot(u[b0.peak], u[b1.peak]))
        if h[b1.peak] - h[b0.peak] < min_separation * noise:
            raise InputError(f"the vials found at {list(b0.peak)} and {list(b1.peak)} (by rank vials {v0.label} and "
                             f"{v1.label}) have overlapping intensities ({h[b0.peak]:.3g} and {h[b1.peak]:.3g}, noise "
                             f"{noise:.2g}): automatic matching is ambiguous (receive shading not corrected?), "
                             "give --vial-mask")
    for b, v in zip(blobs, matched):
        det.mask[b.region] = v.label
        det.found[v.label] = {"peak": list(b.peak), "voxels": int(b.region.sum()), "height": h[b.peak],
                              "z": round(b.z, 2), "shell": round(b.shell, 3)}
        log.info("vial %d (%.1f mM, %s): blob of %d voxels at %s, %.0f background SDs high, surroundings %.0f%%",
                 v.label, v.concentration_mM, v.medium, int(b.region.sum()), list(b.peak), b.z, 100 * b.shell)
    if len(blobs) >= 2 and rms > np.log(1.5):
        det.warnings.append(f"the found vials' intensities disagree with their listed concentrations by "
                            f"{np.expm1(rms):.0%} (rms; receive shading not corrected?): check the vial mask "
                            "written, or give --vial-mask")
    floor = MIN_PEAK_Z if threshold is None else (float(threshold) - bg) / sd
    for i, v in enumerate(exp_sorted):
        if v not in matched:
            # its expected height in background SDs, from the found vials' scale, at their mean correction
            pred = None
            if blobs:
                pred = fit_scale * e_all[i] / float(np.mean([u[b.peak] for b in blobs]))
            det.missing[v.label] = _why_missing(v, pred, floor, rejected)
    for w in det.warnings:
        log.warning("vial detection: %s", w)
    return det


def _why_missing(v, predicted_z: float | None, floor_z: float, rejected: Sequence[Blob]) -> str:
    """One line: why vial `v` was not found. predicted_z: its filtered height over the background in
    background SDs expected from the found vials (None without any); floor_z: detection's floor."""
    what = f"vial {v.label} ({v.concentration_mM:g} mM) not found"
    if predicted_z is not None and predicted_z < floor_z:
        return (f"{what}: the other vials predict it {predicted_z:.1f} background SDs above the background, "
                f"detection needs {floor_z:.1f} (too dim for the noise)")
    # a rejected candidate is worth naming when it is mostly isolated (not plain tissue)
    near = [b for b in rejected if b.shell < 0.35 and (predicted_z is None or 0.5 * predicted_z <= b.z <= 2.0 * predicted_z)]
    if near:
        # an isolated candidate first (a vial refused for its extent), then the nearest in height
        b = min(near, key=lambda b: (b.shell > SHELL_MAX, 0.0 if predicted_z is None else abs(np.log(b.z / predicted_z))))
        return f"{what}: the candidate at {list(b.peak)} ({b.z:.0f} SD) was rejected, {b.reason}"
    exp = f" (expected {predicted_z:.0f} SD above the background)" if predicted_z is not None else ""
    return f"{what}: no compact, isolated bright blob{exp}; it may be outside the FOV or touching the head"
