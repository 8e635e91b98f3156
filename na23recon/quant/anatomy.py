"""Anatomy from the 1H scan in sodium space: tissue probability maps and atlas labels as the
fractional content of each sodium voxel.

Tissue maps (GM, WM, CSF probabilities as FSL FAST, SPM or SynthSeg write them from a T1w of the
same visit) and atlas label images come at any resolution and orientation; both they and the
sodium image carry NIfTI affines to scanner (RAS) millimetres, so a sodium voxel's content is
found through the affines (and, after `--register`, a rigid transform between the two worlds).
Going from ~1 mm to ~4 mm voxels a nearest-neighbour sample would pick one 1 mm voxel out of
~50; instead each sodium voxel is the average of s^3 sub-points (s = ceil(sodium voxel / source
voxel), spacing at most one source voxel), probabilities trilinearly interpolated and labels
counted, i.e. the box (area-weighted) average: the fraction of each tissue or label in the voxel,
the quantity partial-volume correction needs (Rousset, Ma & Evans, J Nucl Med 1998).

Label tables: TSV/CSV `id,name` (a header row is skipped) or a FreeSurfer colour LUT
(`id name R G B A`, '#' comments).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core import Image
from ..errors import InputError
from .bandlimit import band_resample
from .register import Registration, rigid_register
from .resample import resample_average, resample_labels
from .tsc import as_label_image

log = logging.getLogger(__name__)

#: Tissue classes of `--tissue-maps`, in their order, with the relaxation preset each takes.
TISSUES = ("gm", "wm", "csf")
#: A region's voxels in the ROI table: those it fills at least this much.
HARD_FRACTION = 0.5
#: Probability maps a little above 1 (rounding, interpolation by the segmenter) are accepted and clipped.
PROB_TOLERANCE = 0.02
MAX_ATLAS_LABELS = 2000


@dataclass
class Regions:
    """Regions on the sodium grid: names, ids (label or tissue index), kind ('tissue', 'atlas',
    'label'), the relaxation preset of each (None: the voxel's own mix) and fractions
    float32 (R, x, y, z) in [0, 1] (the part of each voxel the region fills)."""

    names: list[str]
    ids: list[int]
    kind: str
    fractions: np.ndarray
    presets: list[str | None] = field(default_factory=list)
    band: np.ndarray | None = None
    """float32 (R, x, y, z): each region's band-limited content at the voxel centres
    (`quant.bandlimit`), what partial-volume correction blurs with the PSF; None: the fractions
    (with the voxel's box transfer divided out, which leaves their aliasing in)."""

    def __post_init__(self) -> None:
        if not self.presets:
            self.presets = [None] * len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def hard(self, r: int) -> np.ndarray:
        """Voxels region r fills at least HARD_FRACTION of (bool, x, y, z)."""
        return self.fractions[r] >= HARD_FRACTION


def load_label_table(path: str | os.PathLike) -> dict[int, str]:
    """{id: name} from a TSV/CSV `id,name` table (header row allowed) or a FreeSurfer LUT."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"atlas table not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read atlas table {p.name}: {exc.strerror}") from None
    out: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [t.strip().strip('"') for t in re.split(r"[,\t]" if re.search(r"[,\t]", line) else r"\s+", line)]
        try:
            key = int(parts[0])
        except ValueError:
            if not out:  # a header row
                continue
            raise InputError(f"atlas table {p.name} line {n}: {parts[0]!r} is not a label id") from None
        if len(parts) < 2 or not parts[1]:
            raise InputError(f"atlas table {p.name} line {n}: label {key} has no name")
        if key in out:
            raise InputError(f"atlas table {p.name} line {n}: label {key} listed twice")
        out[key] = parts[1]
    if not out:
        raise InputError(f"atlas table {p.name} lists no labels (expected lines 'id,name')")
    return out


def check_probability(arr: np.ndarray, what: str) -> np.ndarray:
    """A probability map (x, y, z) as float32 in [0, 1]; refuses NaN/inf, negatives and percent maps."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim != 3:
        raise InputError(f"{what} must be one 3D volume, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} has non-finite voxels (NaN/inf)")
    lo, hi = float(a.min()), float(a.max())
    if lo < -PROB_TOLERANCE or hi > 1 + PROB_TOLERANCE:
        raise InputError(f"{what} holds values {lo:.3g}..{hi:.3g}: expected probabilities in 0..1")
    return np.clip(a, 0.0, 1.0)


def tissue_regions(maps: list[Image], target: Image, world: np.ndarray | None = None) -> Regions:
    """GM, WM, CSF fractions of each voxel of `target` from three probability maps (any grids).
    Where the three sum above 1 they are scaled to sum to 1."""
    if len(maps) != len(TISSUES):
        raise InputError(f"--tissue-maps takes {len(TISSUES)} maps (GM WM CSF), got {len(maps)}")
    shape = target.shape[:3]
    fr = np.stack([resample_average(check_probability(m.echo(0, f"{t.upper()} map").array, f"{t.upper()} map"),
                                    m.affine, target.affine, shape, world) for t, m in zip(TISSUES, maps)])
    total = fr.sum(axis=0)
    if not np.any(total > 0.01):
        raise InputError("the tissue maps do not overlap the sodium image: check that both are in scanner "
                         "coordinates (the same visit) or use --register")
    over = total > 1.0
    fr[:, over] /= total[over]
    band = np.stack([band_resample(check_probability(m.echo(0).array, "tissue map"), m.affine, target.affine, shape,
                                   world) for m in maps])
    return Regions(names=list(TISSUES), ids=[1, 2, 3], kind="tissue", fractions=fr.astype(np.float32),
                   presets=list(TISSUES), band=band)


def atlas_regions(atlas: Image, table: dict[int, str] | None, target: Image,
                  world: np.ndarray | None = None) -> Regions:
    """Fraction of each atlas label (> 0) in each voxel of `target`; names from `table`
    (labels it lacks are named label_<id>; its ids absent from the atlas are left out)."""
    lab = as_label_image(atlas.echo(0, "atlas").array, "atlas")
    present = [int(v) for v in np.unique(lab) if v > 0]
    if not present:
        raise InputError("the atlas holds no labels (all voxels 0)")
    if len(present) > MAX_ATLAS_LABELS:
        raise InputError(f"the atlas holds {len(present)} labels; at most {MAX_ATLAS_LABELS} are supported")
    table = table or {}
    unnamed = [v for v in present if v not in table]
    if table and unnamed:
        log.warning("atlas labels %s are not in the atlas table: named label_<id>", unnamed[:10])
    fr = resample_labels(lab, present, atlas.affine, target.affine, target.shape[:3], world)
    keep = [i for i in range(len(present)) if fr[i].max() > 0]
    if not keep:
        raise InputError("the atlas does not overlap the sodium image: check that both are in scanner "
                         "coordinates (the same visit) or use --register")
    return Regions(names=[table.get(present[i], f"label_{present[i]}") for i in keep],
                   ids=[present[i] for i in keep], kind="atlas", fractions=fr[keep])


def label_regions(labels: np.ndarray) -> Regions:
    """Hard regions from a label image already on the sodium grid (`--labels`)."""
    lab = np.asarray(labels)
    ids = [int(v) for v in np.unique(lab) if v > 0]
    fr = np.stack([(lab == v) for v in ids]).astype(np.float32) if ids else np.zeros((0,) + lab.shape, np.float32)
    return Regions(names=[f"label_{v}" for v in ids], ids=ids, kind="label", fractions=fr)


def anatomy_image(maps: list[Image]) -> Image:
    """A sodium-like image of the tissue maps (CSF bright, GM, WM darker) on the GM map's grid,
    for registration when no T1w is given (mutual information does not need the contrasts to match,
    only a consistent one)."""
    grid = maps[0].echo(0)
    out = np.zeros(grid.shape[:3], dtype=np.float32)
    for weight, m in zip((1.0, 0.75, 3.0), maps):
        arr = check_probability(m.echo(0).array, "tissue map")
        if arr.shape != grid.shape[:3] or not np.allclose(m.affine, grid.affine, atol=1e-3):
            arr = resample_average(arr, m.affine, grid.affine, grid.shape[:3])
        out += weight * arr
    return Image(out, grid.affine)


@dataclass
class Anatomy:
    """The anatomy in sodium space: tissue and atlas regions (None when not given), the
    registration (None: the affines alone), the 1H image resampled onto the sodium grid (for the
    check figure) and a description for the sidecar."""

    tissue: Regions | None
    atlas: Regions | None
    registration: Registration | None
    anat_on_grid: np.ndarray
    info: dict


#: The metric of the registration is evaluated within this distance (mm) of the 1H anatomy.
REGISTER_MARGIN_MM = 15.0


def prepare_anatomy(target: Image, tissue_maps: list[Image] | None = None, atlas: Image | None = None,
                    table: dict[int, str] | None = None, anat: Image | None = None,
                    register: bool = False) -> Anatomy:
    """Tissue fractions and atlas regions on `target`'s grid (the sodium image), after a rigid
    registration of the 1H image (`anat`, else a sodium-like image of the tissue maps, else the
    atlas' support) to the sodium image when `register`."""
    if tissue_maps is None and atlas is None:
        raise InputError("anatomy needs tissue maps (--tissue-maps GM WM CSF) or an atlas (--atlas)")
    tgt = target.echo(0)
    if anat is not None:
        moving = anat.echo(0, "1H image")
    elif tissue_maps is not None:
        moving = anatomy_image(tissue_maps)
    else:
        moving = Image((as_label_image(atlas.echo(0).array, "atlas") > 0).astype(np.float32), atlas.affine)
    shape = tgt.shape[:3]
    info: dict = {"resampling": "box average over each sodium voxel (trilinear sub-points for probabilities, "
                                "label counts for atlases) through the NIfTI affines",
                  "registration": None}
    world = None
    reg = None
    if register:
        initial = resample_average(moving.array, moving.affine, tgt.affine, shape)
        support = initial > 0.1 * float(initial.max()) if initial.max() > 0 else None
        if support is None or not support.any():
            raise InputError("--register: the 1H image does not overlap the sodium image through the affines; "
                             "registration starts from them")
        margin = max(1, int(round(REGISTER_MARGIN_MM / float(np.min(tgt.voxel_mm)))))
        mask = ndimage.binary_dilation(ndimage.binary_fill_holes(support), iterations=margin)
        reg = rigid_register(moving, tgt, mask=mask)
        world = reg.matrix
        info["registration"] = reg.as_dict()
    tissue = tissue_regions(tissue_maps, tgt, world) if tissue_maps is not None else None
    atl = atlas_regions(atlas, table, tgt, world) if atlas is not None else None
    on_grid = resample_average(moving.array, moving.affine, tgt.affine, shape, world)
    if tissue is not None:
        info["tissue_volume_ml"] = {n: float(tissue.fractions[i].sum() * np.prod(tgt.voxel_mm) / 1e3)
                                    for i, n in enumerate(tissue.names)}
    if atl is not None:
        info["atlas_labels"] = len(atl)
    return Anatomy(tissue=tissue, atlas=atl, registration=reg, anat_on_grid=on_grid, info=info)
