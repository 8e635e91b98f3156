"""Reading a twix measurement into a `Scan`: samples copied through one memory map.

`read_scan` walks the measurement's readout headers (`layout.walk`) and copies the samples
through one memory map of the file, instead of twixtools' per-readout `mdb.data` (one seek +
read + frombuffer per readout): runs of readouts that sit at a constant stride in the file are
one strided copy each.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ...core.acquisition import SIDECAR_FIELDS
from ...core.scan import Scan
from ...errors import InputError
from ..samples import check_samples
from .header import Header, acquisition_from_header, decode_utf7, split_header
from .layout import (
    VB_CHAN_HDR,
    VE_CHAN_HDR,
    VE_SCAN_HDR,
    Layout,
    Measurement,
    Readouts,
    acquisition_order,
    counter_problems,
    image_mask,
    open_layout,
    readout_keys,
    walk,
)
from .slicedata import checked_acquisition

log = logging.getLogger(__name__)

SUPPORTED_NUCLEUS = "23Na"


def list_measurements(path: str | os.PathLike) -> list[dict]:
    """Measurements in a twix file: index, protocol, number of image and noise readouts, nucleus.

    Returns a list of dicts, one per measurement (VB files have exactly one).
    """
    lay = open_layout(path)
    out = []
    for m in lay.meas:
        hdr, hdr_len = split_header(lay.mm, m.offset, m.length)
        entry = {"index": m.index, "meas_id": m.meas_id,
                 "protocol": decode_utf7(hdr.yaps("tProtocolName", "") or m.protocol),
                 "nucleus": hdr.yaps("sTXSPEC.asNucleusInfo[0].tNucleus", "")}
        try:
            ro = walk(lay, m, hdr_len)
            image, noise = image_mask(ro.mdh)
            entry.update(readouts=int(ro.pos.size), image_readouts=int(image.sum()),
                         noise_readouts=int(noise.sum()), complete=True)
        except InputError as exc:
            entry.update(complete=False, problem=str(exc))
        out.append(entry)
    return out


def _gather(lay: Layout, pos: np.ndarray, nch: int, ns: int, out: np.ndarray,
            idx: tuple[np.ndarray, ...] | None, chunk: int = 1024) -> None:
    """Copy samples of readouts at `pos` (all nch x ns) into `out` through the memory map.

    With idx = (rep, echo, readout): out[rep, echo, :, readout, :] = samples (nch, ns).
    With idx None: out is (nch, len(pos) * ns), readouts concatenated along samples.
    """
    is_ve = lay.is_ve
    first = VE_SCAN_HDR if is_ve else 0
    ch = VE_CHAN_HDR if is_ve else VB_CHAN_HDR
    cstride = ch + 8 * ns
    block = first + nch * cstride
    buf = lay.mm
    n = pos.size
    if idx is not None:
        _gather_cells(buf, pos, nch, ns, first + ch, cstride, out, idx, chunk)
        return
    # split into runs of readouts that follow each other without a gap
    breaks = np.flatnonzero(np.diff(pos) != block) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, n]
    for a0, b0 in zip(starts, stops):
        for a in range(int(a0), int(b0), chunk):
            b = min(int(b0), a + chunk)
            view = np.ndarray((b - a, nch, ns), dtype=np.complex64, buffer=buf,
                              offset=int(pos[a]) + first + ch, strides=(block, cstride, 8))
            if idx is None:
                out.reshape(nch, n, ns)[:, a:b, :] = view.transpose(1, 0, 2)
            else:
                r, e, k = (i[a:b] for i in idx)
                out[r, e, :, k, :] = view


def _gather_cells(buf, pos, nch, ns, skip, cstride, out, idx, chunk) -> None:
    """out[rep, echo, :, readout, :] = samples: as few strided copies as the layout allows.

    Readouts are sorted by (rep, echo, readout); a run of consecutive readout indices in one
    (rep, echo) cell whose file positions advance by a constant step is one strided copy
    (a 3D radial scan written echo-interleaved is one copy per echo); the rest is scattered.
    """
    r, e, k = idx
    order = np.lexsort((k, e, r))
    ps, rs, es, ks = pos[order], r[order], e[order], k[order]
    n = ps.size
    d = np.diff(ps)
    cont = (rs[1:] == rs[:-1]) & (es[1:] == es[:-1]) & (ks[1:] == ks[:-1] + 1) & (d > 0)
    # a run also needs a constant step: break where the step changes
    step_change = np.r_[False, d[1:] != d[:-1]]
    brk = np.flatnonzero(~cont | step_change) + 1
    starts, stops = np.r_[0, brk], np.r_[brk, n]
    single = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if b - a < 4:
            single.extend(range(a, b))
            continue
        step = int(ps[a + 1] - ps[a])
        src = np.ndarray((b - a, nch, ns), dtype=np.complex64, buffer=buf, offset=int(ps[a]) + skip,
                         strides=(step, cstride, 8))
        out[rs[a], es[a], :, ks[a]: ks[a] + (b - a), :] = src.transpose(1, 0, 2)
    if single:
        sel = np.asarray(single, dtype=np.int64)
        for c in range(0, sel.size, chunk):
            j = sel[c: c + chunk]
            for i in j.tolist():
                src = np.ndarray((nch, ns), dtype=np.complex64, buffer=buf, offset=int(ps[i]) + skip,
                                 strides=(cstride, 8))
                out[rs[i], es[i], :, ks[i], :] = src


def read_header(path: str | os.PathLike, meas: int = -1) -> Header:
    """The protocol header of measurement `meas` (negative counts from the last)."""
    lay = open_layout(path)
    m = _pick(lay, meas)
    return split_header(lay.mm, m.offset, m.length)[0]


def _pick(lay: Layout, meas: int) -> Measurement:
    try:
        return lay.meas[meas]
    except (IndexError, TypeError):
        raise InputError(f"twix file has {len(lay.meas)} measurement(s), asked for number {meas}") from None


def read_scan(path: str | os.PathLike, meas: int = -1, allow_nucleus: bool = False,
              zero_bad_samples: bool = False) -> Scan:
    """Read one measurement of a Siemens twix file (VB or VD/VE) into a `Scan`.

    Parameters
    ----------
    path : the .dat file.
    meas : measurement of a multi-raid file (default -1: the last, the image measurement).
    allow_nucleus : accept a nucleus other than 23Na (else InputError).
    zero_bad_samples : set non-finite or absurdly large raw samples to 0 (with a warning; the
        count is in `Scan.notes['bad_samples_zeroed']`) instead of refusing the file
        (`na23recon.io.samples`).

    Returns
    -------
    Scan with data complex64 (nrep, necho, ncoil, nreadout, nsample) (readout mapping: the
    `na23recon.io.twix` docstring), noise complex64 (ncoil, nnoise) or None, and the
    `Acquisition` of the header (`header.acquisition_from_header`: unknown values None).

    Raises InputError (one line) for a missing, truncated or corrupted file, a header value
    that is no number or impossible, a wrong nucleus, a measurement without image readouts,
    Rep/Ave/Eco counters that split the readouts unevenly, or bad raw samples. Readout counters
    that are out of line with the rest (`layout.counter_problems`: one far-off or rare value,
    repeated combinations, cells that disagree) are replaced by the acquisition order within each
    (rep, echo) cell, with the warning 'twix: readout counters inconsistent'.
    """
    lay = open_layout(path)
    m = _pick(lay, meas)
    hdr, hdr_len = split_header(lay.mm, m.offset, m.length)
    acq = acquisition_from_header(hdr)
    if acq.nucleus != SUPPORTED_NUCLEUS and not allow_nucleus:
        raise InputError(f"scan nucleus is {acq.nucleus or 'not given'!r}, expected {SUPPORTED_NUCLEUS!r} "
                         f"(use --allow-nucleus / allow_nucleus=True to read it anyway): {path}")
    ro = walk(lay, m, hdr_len)
    _check_scan_counter(ro, path)
    image, noise = image_mask(ro.mdh)
    if not image.any():
        raise InputError(f"twix measurement {m.index} has no image readouts ({ro.pos.size} readouts, "
                         f"{int(noise.sum())} noise): {path}")
    img = ro.mdh[image]
    acq = checked_acquisition(acq, img, str(path))
    missing = [name for name in SIDECAR_FIELDS if getattr(acq, name) is None]
    if missing:
        log.warning("twix header gives no %s: recorded as unknown (null): %s", ", ".join(missing), path)
    ns_all, nch_all = img["SamplesInScan"], img["UsedChannels"]
    if (ns_all != ns_all[0]).any() or (nch_all != nch_all[0]).any():
        raise InputError(f"image readouts differ in length: {ns_all.min()}..{ns_all.max()} samples, "
                         f"{nch_all.min()}..{nch_all.max()} channels")
    ns, nch = int(ns_all[0]), int(nch_all[0])
    rep, eco, rdo, nrep, _nave = readout_keys(img["Counter"])
    necho = int(eco.max()) + 1
    cell = rep * necho + eco
    per_cell = np.bincount(cell, minlength=nrep * necho)
    if per_cell.min() != per_cell.max():
        raise InputError(f"corrupted twix readout counters: {nrep} repetition(s)/average(s) x {necho} echo(es) "
                         f"hold {per_cell.min()}..{per_cell.max()} readouts each (Rep, Ave or Eco counter "
                         f"out of line): {path}")
    problems = counter_problems(img["Counter"], cell, rdo)
    if problems:
        log.warning("twix: readout counters inconsistent (%s); readouts taken in acquisition order: %s",
                    "; ".join(problems), path)
        rdo = acquisition_order(cell)
    nro = int(rdo.max()) + 1
    data = np.empty((nrep, necho, nch, nro, ns), dtype=np.complex64)  # a complete grid: every cell filled
    _gather(lay, ro.pos[image], nch, ns, data, (rep, eco, rdo))
    notes = {}
    zeroed = check_samples(data, f"twix {Path(path).name}", ("rep", "echo", "coil", "readout", "sample"),
                           zero=zero_bad_samples)
    if zeroed:
        notes["bad_samples_zeroed"] = zeroed
    nz = _read_noise(lay, m, ro, noise, nch)
    if acq.coil_names and len(acq.coil_names) != nch:
        log.warning("twix: header names %d coil elements, readouts have %d channels", len(acq.coil_names), nch)
    return Scan(data=data, acquisition=acq, noise=nz, notes=notes)


def _check_scan_counter(ro: Readouts, path) -> None:
    """The scanner numbers its readouts 1, 2, 3, ... (ScanCounter): headers read from shifted or
    overwritten bytes break that sequence. More than a few breaks (1% of the readouts): refuse."""
    sc = ro.mdh["ScanCounter"].astype(np.int64)
    if sc.size < 2:
        return
    brk = np.flatnonzero(np.diff(sc) != 1)
    if brk.size > max(2, sc.size // 100):
        raise InputError(f"corrupted twix readout headers: the scan counter breaks its sequence {brk.size} times "
                         f"in {sc.size} readouts, first after byte {int(ro.pos[brk[0]])}: {path}")


def _read_noise(lay: Layout, m: Measurement, ro: Readouts, noise: np.ndarray, nch: int):
    if not noise.any() and m.index > 0:
        prev = lay.meas[m.index - 1]
        try:
            _, hl = split_header(lay.mm, prev.offset, prev.length)
            ro = walk(lay, prev, hl)
        except InputError as exc:
            log.warning("twix: no noise readouts read from measurement %d: %s", prev.index, exc)
            return None
        noise = image_mask(ro.mdh)[1]
    if not noise.any():
        return None
    nm = ro.mdh[noise]
    nsn, nchn = nm["SamplesInScan"].astype(np.int64), nm["UsedChannels"]
    if (nchn != nchn[0]).any() or int(nchn[0]) != nch:
        log.warning("twix: noise readouts have %s channels, image readouts %d; noise ignored",
                    sorted(set(nchn.tolist())), nch)
        return None
    pos = ro.pos[noise]
    out = np.empty((nch, int(nsn.sum())), dtype=np.complex64)
    col = 0
    # readouts of equal length in a row are gathered together
    change = np.r_[0, np.flatnonzero(np.diff(nsn)) + 1, nsn.size]
    for a, b in zip(change[:-1], change[1:]):
        ns = int(nsn[a])
        w = (b - a) * ns
        part = np.empty((nch, w), dtype=np.complex64)
        _gather(lay, pos[a:b], nch, ns, part, None)
        out[:, col: col + w] = part
        col += w
    return out

