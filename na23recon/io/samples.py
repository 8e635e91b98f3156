"""Checks of raw k-space samples as read: non-finite or absurdly large values are refused (or zeroed).

A corrupted raw file can hold a NaN, an inf or a float32 with a flipped exponent bit (a sample
x2^16 ... x2^128 too large). Every reconstruction is linear in the samples, so one such value
spreads over the whole image: a NaN image, or one scaled by orders of magnitude. Sample
magnitudes of a real scan are bounded by the k-space centre, which every radial or TPI readout
passes through and which a few Cartesian lines hold: a sample more than `ABSURD_FACTOR` times the
largest readout peak once the top 1% of readouts are set aside (robust to a few corrupted readouts), or above
`ABSURD_ABS`, cannot be a measured value.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

ABSURD_FACTOR = 1e3
ABSURD_ABS = 1e30


def bad_sample_mask(data: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask of non-finite or absurd samples, the limit used), for k-space (..., nreadout, nsample)
    of any leading shape; works one leading index at a time to keep memory small."""
    lead = data.shape[:-2]
    flat = data.reshape((-1,) + data.shape[-2:]) if lead else data[None]
    peaks = np.zeros(flat.shape[:2], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(flat.shape[0]):
            a = np.abs(flat[i])
            a[~np.isfinite(a)] = 0
            peaks[i] = a.max(axis=-1)
    # per readout: the largest magnitude over the leading axes (coils, echoes, repetitions)
    nro = data.shape[-2]
    per_readout = peaks.reshape(-1, nro).max(axis=0) if nro else np.zeros(0)
    # the largest readout peak once the top 1% (at least one readout) are set aside
    srt = np.sort(per_readout)
    ref = float(srt[max(0, srt.size - 2 - srt.size // 100)]) if srt.size else 0.0
    limit = min(ABSURD_ABS, ABSURD_FACTOR * ref) if ref > 0 else ABSURD_ABS
    bad = np.zeros(flat.shape, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(flat.shape[0]):
            v = flat[i]
            bad[i] = ~np.isfinite(v) | ~(np.abs(v.astype(np.complex128)) <= limit)
    return bad.reshape(data.shape), limit


def check_samples(data: np.ndarray, where: str, axes: tuple[str, ...], zero: bool = False) -> int:
    """Refuse (InputError with their count and first position) or, with `zero`, set to 0 in place
    the non-finite or absurd samples of `data`; returns how many were zeroed.

    axes: the names of data's axes, for the message (e.g. ('rep', 'echo', 'coil', 'readout', 'sample')).
    """
    if data.size == 0:
        return 0
    bad, limit = bad_sample_mask(data)
    n = int(bad.sum())
    if n == 0:
        return 0
    first = np.unravel_index(int(np.flatnonzero(bad.reshape(-1))[0]), data.shape)
    pos = ", ".join(f"{a} {int(i)}" for a, i in zip(axes, first))
    nonfinite = int((~np.isfinite(data[bad])).sum())
    what = (f"{n} raw sample(s) are not finite ({nonfinite}) or absurdly large (> {limit:.3g}, "
            f"{n - nonfinite}); the first at {pos}: {data[first]!r}")
    if not zero:
        raise InputError(f"{where}: {what} (a corrupted file; zero_bad_samples / --zero-bad-samples sets them to 0)")
    data[bad] = 0
    log.warning("%s: %s; set to 0 (zero_bad_samples)", where, what)
    return n
