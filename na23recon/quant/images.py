"""Quantification on `Image`s: the TSC map and the double-angle B1 map, geometry and units kept.

These take and return the shared types (images with their affines and sidecars, typed options);
the arithmetic is in `tsc.quantify` and `b1.double_angle`. Acquisition parameters come from the
image's sidecar unless the options override them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ..core import Acquisition, B1Options, Image, QuantOptions
from ..errors import InputError
from .b1 import double_angle
from .relax import check_acquisition
from .tsc import TSCResult, as_label_image
from .tsc import quantify as quantify_arrays
from .vials import Vial

log = logging.getLogger(__name__)

METHOD = ("external vial calibration (Christensen et al., MRM 1996; Thulborn et al., Radiology 1999), B1 "
          "transmit/receive and relaxation corrected (Insko & Bolinger, JMR A 1993; Boada et al., MRM 1994)")


def acquisition_for(image: Image, options: QuantOptions) -> tuple[float, float, float, Acquisition]:
    """(flip_deg, tr_ms, te_ms, acquisition) of `image`'s echo `options.echo`: the sidecar's values
    unless the options give them. InputError naming the option to give when one is unknown."""
    acq, _ = image.acquisition()
    te = options.te_ms if options.te_ms is not None else acq.te_for(options.echo)
    flip = options.flip_deg if options.flip_deg is not None else acq.flip_deg
    tr = options.tr_ms if options.tr_ms is not None else acq.tr_ms
    missing = [n for n, v in (("--flip-deg", flip), ("--tr-ms", tr), ("--te-ms", te)) if v is None]
    if missing:
        raise InputError(f"acquisition parameter(s) not in the image's sidecar: give {', '.join(missing)}")
    check_acquisition(flip, tr, te)
    return float(flip), float(tr), float(te), acq.with_(flip_deg=flip, tr_ms=tr, te_ms=(te,))


def quantify(image: Image, vials: list[Vial], options: QuantOptions | None = None, vial_mask: Image | None = None,
             b1: Image | None = None, labels: Image | None = None, receive: Image | None = None,
             relaxation: Mapping | None = None, tissue_fractions: Mapping[str, np.ndarray] | None = None) -> TSCResult:
    """TSC map (mM) of a reconstructed sodium image, calibrated on reference vials.

    image: magnitude (x, y, z) or (x, y, z, echo) with its sidecar (TE, TR, flip); vials: from
    `quant.vials.load_vials`; vial_mask: label image of the vials (None: detected); b1: relative
    flip scale map (1.0 nominal); labels: ROI labels (per-label relaxation presets through
    `options.label_tissue`); receive: relative receive map (default with a B1 map: reciprocity);
    relaxation: preset overrides {name: {t1_ms: ...}}; tissue_fractions: {preset: fraction map}
    (`quant.anatomy.tissue_regions`), each voxel's relaxation the fraction-weighted mix. Every map
    must lie on the image's grid.

    Returns TSCResult (tsc, sd float32 (x, y, z) mM; vial_mask; calibration; info). The info
    holds what was used (flip, TR, TE, noise, presets, calibration line).
    """
    opts = options or QuantOptions()
    img = image.echo(opts.echo)
    flip, tr, te, _ = acquisition_for(image, opts)
    maps = {}
    for key, im, what in (("vial_mask", vial_mask, "vial mask"), ("b1", b1, "B1 map"),
                          ("labels", labels, "label image"), ("receive", receive, "receive map")):
        if im is not None:
            im3 = im.echo(0, what)
            img.check_same_grid(im3, what)
            maps[key] = im3.array
    for key in ("vial_mask", "labels"):
        if key in maps:
            maps[key] = as_label_image(maps[key], key.replace("_", " "))
    if opts.label_tissue and "labels" not in maps:
        raise InputError("--label-tissue needs a label image (--labels)")
    return quantify_arrays(img.array, vials, flip, tr, te, vial_mask=maps.get("vial_mask"), b1=maps.get("b1"),
                           receive=maps.get("receive"), reciprocity=opts.reciprocity, tissue=opts.tissue,
                           labels=maps.get("labels"), label_tissue=opts.label_tissue, noise_sd=opts.noise_sd,
                           intercept=opts.intercept, config=relaxation, vial_threshold=opts.vial_threshold,
                           tissue_fractions=tissue_fractions)


def b1_map(image_a: Image, image_2a: Image, options: B1Options | None = None) -> Image:
    """Double-angle B1+ map (Insko & Bolinger, JMR A 1993): relative flip scale, 1.0 = nominal.

    image_a, image_2a: magnitude images at nominal flips a and 2a on one grid (TR >> T1). The
    nominal flip a is `options.flip_deg`, else image a's sidecar. The scans' flips must be a and
    2a within 5%. Returns the map as an Image on image a's grid; meta holds `acquisition` and `b1`.
    """
    opts = options or B1Options()
    a = image_a.echo(0, "scan a")
    a2 = image_2a.echo(0, "scan 2a")
    a.check_same_grid(a2, "scan 2a")
    acq_a, _ = a.acquisition()
    acq_2a, _ = a2.acquisition()
    flip = double_angle_flip(opts.flip_deg, acq_a, acq_2a)
    m = double_angle(a.array, a2.array, flip, snr_min=opts.snr_min, fit=opts.fit, order=opts.order)
    if acq_a.tr_ms is not None and acq_a.tr_ms < 150.0:
        log.warning("TR %.0f ms is not >> T1 of sodium (20-60 ms): the double-angle map is biased", acq_a.tr_ms)
    acq = acq_a if acq_a.flip_deg is not None else acq_a.with_(flip_deg=flip)
    meta = {"acquisition": acq.sidecar(), "b1": dict(m.info, map="relative flip scale k_B1 (1.0 = nominal)")}
    return Image(np.asarray(m.b1, dtype=np.float32), a.affine, meta)


def double_angle_flip(flip_deg: float | None, acq_a: Acquisition, acq_2a: Acquisition) -> float:
    """The nominal flip a (deg) of a double-angle pair: `flip_deg` if given, else scan a's.

    InputError when it is unknown, outside (0, 90) deg, or when the second scan's flip (when
    known) is not twice the first's within 5%."""
    flip = flip_deg if flip_deg is not None else acq_a.flip_deg
    if flip is None:
        raise InputError("scan a's flip angle is not in its sidecar: give --flip-deg")
    if not 0 < flip < 90:
        raise InputError(f"nominal flip a must be in (0, 90) deg for the double-angle method, got {flip}")
    flip_a = acq_a.flip_deg if acq_a.flip_deg is not None else flip
    if acq_2a.flip_deg is not None and abs(acq_2a.flip_deg - 2 * flip_a) > 0.05 * 2 * flip_a:
        raise InputError(f"the scans' flips are {flip_a:g} and {acq_2a.flip_deg:g} deg: "
                         "the double-angle method needs a and 2a")
    return float(flip)
