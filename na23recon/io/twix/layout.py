"""The binary layout of a twix file: measurements, readout headers (MDH) and their counters.

Siemens twix files come in two layouts (the ones twixtools' `mdh_def` / `hdr_def` describe):
VB (one measurement, a 128-byte header per channel) and VD/VE (a 10240-byte MultiRaidFileHeader
listing the measurements, then per readout a 192-byte scan header and a 32-byte header per
channel). `open_layout` memory-maps the file and lists its measurements, `walk` steps through a
measurement's readout headers, `readout_keys` turns their counters into (rep, echo, readout)
indices (the mapping in the `na23recon.io.twix` docstring).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError

VE_SCAN_HDR = 192   # Scan_header, one per readout
VE_CHAN_HDR = 32    # Channel_header, one per channel
VB_CHAN_HDR = 128   # VB17_header, one per channel (no separate scan header)
RAID_HDR = 10240    # space reserved for the MultiRaidFileHeader in VD/VE files

_BIT = {"ACQEND": 0, "SYNCDATA": 5, "NOISEADJSCAN": 25, "PHASCOR": 21, "RTFEEDBACK": 1,
        "HPFEEDBACK": 2, "REFPHASESTABSCAN": 14, "PHASESTABSCAN": 15, "PATREFSCAN": 22,
        "PATREFANDIMASCAN": 23, "noname60": 60, "FIRSTSCANINSLICE": 28, "LASTSCANINSLICE": 29,
        "LASTSCANINMEAS": 11, "ONLINE": 3}
_NOT_IMAGE = sum(1 << _BIT[k] for k in ("ACQEND", "RTFEEDBACK", "HPFEEDBACK", "SYNCDATA",
                                         "REFPHASESTABSCAN", "PHASESTABSCAN", "PHASCOR",
                                         "NOISEADJSCAN", "noname60"))
_KEY_ORDER = ("Sli", "Phs", "Set", "Ida", "Idb", "Idc", "Idd", "Ide", "Par", "Lin", "Seg")
MAX_COUNTER = 65536
"""Counters are uint16: the writer stores readout r as Lin = r % MAX_COUNTER, Par = r // MAX_COUNTER."""


def mdh_dtypes() -> tuple[np.dtype, np.dtype, np.dtype]:
    """numpy dtypes of twixtools' Scan_header (VD/VE), VB17_header and Channel_header."""
    import twixtools.mdh_def as mdh_def  # twixtools' ctypes layouts, as numpy dtypes

    return np.dtype(mdh_def.Scan_header), np.dtype(mdh_def.VB17_header), np.dtype(mdh_def.Channel_header)


@dataclass
class Measurement:
    """One measurement of a (multi-raid) twix file."""

    index: int
    offset: int
    length: int
    meas_id: int = 0
    protocol: str = ""


@dataclass
class Layout:
    """A memory-mapped twix file and its measurements."""

    path: Path
    mm: mmap.mmap
    is_ve: bool
    meas: list[Measurement]
    size: int


def open_layout(path: str | os.PathLike) -> Layout:
    """Memory-map a twix file and list its measurements (InputError: missing, short, corrupted)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"twix file not found: {path}")
    size = path.stat().st_size
    if size < 64:
        raise InputError(f"not a twix file (only {size} bytes): {path}")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    first, second = struct.unpack_from("<II", mm, 0)
    is_ve = first < 10000 and second <= 64  # twixtools.helpers.idea_version_check
    meas: list[Measurement] = []
    if is_ve:
        if size < RAID_HDR:
            raise InputError(f"truncated twix file: {size} bytes, shorter than the VD/VE file header")
        if second == 0:
            raise InputError(f"corrupted twix header: the file lists no measurements: {path}")
        for k in range(second):
            base = 8 + 152 * k
            mid, _fid, off, length = struct.unpack_from("<IIQQ", mm, base)
            prot = bytes(mm[base + 88: base + 152]).split(b"\x00")[0].decode("latin1", "replace")
            if length == 0 and second == 1:
                length = size - off
            if off < RAID_HDR or off >= size:
                raise InputError(f"corrupted twix header: measurement {k} starts at byte {off}, "
                                 f"file has {size} bytes")
            meas.append(Measurement(k, int(off), int(length), int(mid), prot))
    else:
        meas.append(Measurement(0, 0, size))
    return Layout(path, mm, is_ve, meas, size)


@dataclass
class Readouts:
    """Positions and headers of a measurement's readouts (arrays of length n)."""

    pos: np.ndarray        # int64 byte offset of each readout's first header
    mdh: np.ndarray        # structured (Scan_header or VB17_header) of each readout
    acqend: bool


def walk(lay: Layout, m: Measurement, hdr_len: int) -> Readouts:
    """Walk the readout headers of measurement `m` (cheap: reads 4 fields per readout)."""
    mm, is_ve = lay.mm, lay.is_ve
    end = m.offset + m.length
    if end > lay.size:
        raise InputError(f"truncated twix file: measurement {m.index} should end at byte {end}, "
                         f"file has {lay.size} bytes")
    pos = m.offset + hdr_len
    positions: list[int] = []
    acqend = False
    if is_ve:
        fmt, hsize, chsize = "<I36xQHH", VE_SCAN_HDR, VE_CHAN_HDR
    else:
        fmt, hsize, chsize = "<I16xQHH", VB_CHAN_HDR, VB_CHAN_HDR
    unpack = struct.Struct(fmt).unpack_from
    sync_mask = (1 << _BIT["ACQEND"]) | (1 << _BIT["SYNCDATA"])
    while pos + hsize <= end:
        dma, mask, ns, nch = unpack(mm, pos)
        if mask & sync_mask:
            if mask & (1 << _BIT["ACQEND"]):
                acqend = True
                break
            blen = dma % (1 << 25)
            if blen < hsize:
                raise InputError(f"corrupted twix readout header at byte {pos}: block length {blen}")
        else:
            blen = (hsize if is_ve else 0) + nch * (chsize + 8 * ns)
            if nch == 0 or ns == 0:
                raise InputError(f"truncated or corrupted twix file: empty readout ({nch} channels, "
                                 f"{ns} samples) at byte {pos}")
            if pos + blen > end:
                raise InputError(f"truncated twix file: readout at byte {pos} needs {blen} bytes, "
                                 f"measurement ends at byte {end}")
            positions.append(pos)
        pos += blen
    if not acqend:
        raise InputError(f"truncated twix file: measurement {m.index} has no ACQEND "
                         f"({len(positions)} readouts read)")
    p = np.asarray(positions, dtype=np.int64)
    vedt, vbdt, _ = mdh_dtypes()
    dt = vedt if is_ve else vbdt
    raw = np.frombuffer(mm, dtype=np.uint8)
    mdh = np.zeros(p.size, dtype=dt)
    cols = np.arange(dt.itemsize)
    for a in range(0, p.size, 4096):  # chunks keep the byte-index array small
        mdh[a: a + 4096] = raw[p[a: a + 4096, None] + cols].view(dt).reshape(-1)
    return Readouts(p, mdh, acqend)


def image_mask(mdh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, noise) boolean masks of readout headers: image readouts are neither sync, noise,
    phase-correction or -stabilisation nor pure parallel-imaging reference lines."""
    mask = mdh["EvalInfoMask"].astype(np.uint64)
    noise = (mask & np.uint64(1 << _BIT["NOISEADJSCAN"])) != 0
    image = (mask & np.uint64(_NOT_IMAGE)) == 0
    patref = ((mask & np.uint64(1 << _BIT["PATREFSCAN"])) != 0) & \
             ((mask & np.uint64(1 << _BIT["PATREFANDIMASCAN"])) == 0)
    return image & ~patref, noise


def readout_keys(cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Map counters (structured LineCounter array, n) to (rep, echo, readout) indices.

    Returns rep (Rep, Ave pairs, Ave fastest), echo (rank of Eco), readout (rank of the other
    counters plus an occurrence number), and the numbers of (Rep, Ave) pairs and of Ave values.
    """
    n = cnt.shape[0]
    ave_u, ave_i = np.unique(cnt["Ave"], return_inverse=True)
    rep_u, rep_i = np.unique(cnt["Rep"], return_inverse=True)
    eco_u, eco_i = np.unique(cnt["Eco"], return_inverse=True)
    rep = rep_i.astype(np.int64) * len(ave_u) + ave_i
    cols = np.stack([cnt[k].astype(np.int64) for k in _KEY_ORDER], axis=1)
    # occurrence number of readouts whose every counter is equal (within one rep/echo cell)
    full = np.concatenate([cols, rep[:, None], eco_i[:, None]], axis=1)
    grp = row_rank(full)
    order = np.argsort(grp, kind="stable")
    sg = grp[order]
    first = np.r_[0, np.flatnonzero(np.diff(sg)) + 1]
    runstart = np.repeat(first, np.diff(np.r_[first, n]))
    occ = np.empty(n, dtype=np.int64)
    occ[order] = np.arange(n) - runstart
    keys = np.concatenate([cols, occ[:, None]], axis=1)
    ro = row_rank(keys)
    return rep, eco_i.reshape(-1).astype(np.int64), ro.reshape(-1).astype(np.int64), \
        int(len(rep_u) * len(ave_u)), int(len(ave_u))


def row_rank(rows: np.ndarray) -> np.ndarray:
    """Rank of each row of an int64 (n, m) array among the distinct rows (lexicographic)."""
    rows = rows[:, rows.min(0) != rows.max(0)] if rows.shape[0] else rows
    if rows.shape[1] == 0:
        return np.zeros(rows.shape[0], dtype=np.int64)
    lo = rows.min(0)
    span = rows.max(0) - lo + 1
    if np.sum(np.log2(span.astype(np.float64))) < 62:  # one mixed-radix integer per row
        key = np.zeros(rows.shape[0], dtype=np.int64)
        for j in range(rows.shape[1]):
            key = key * span[j] + (rows[:, j] - lo[j])
        return np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def counter_problems(cnt: np.ndarray, cell: np.ndarray, readout: np.ndarray) -> list[str]:
    """Signs that the readout counters (not Rep/Ave/Eco) of a measurement are corrupted.

    cnt: the image readouts' LineCounter array; cell: each readout's (rep, echo) cell; readout: its
    index from `readout_keys`. Returned (one phrase each): a counter value far outside the range
    the others span (a jump more than 8 times the usual step and above 16), a value that only a
    handful of readouts carry while the others share a few values, readouts whose counters repeat
    while the others' do not, and (rep, echo) cells holding different readout indices.
    """
    n = cnt.shape[0]
    out = []
    for k in _KEY_ORDER:
        v = cnt[k].astype(np.int64)
        u, c = np.unique(v, return_counts=True)
        if u.size < 2 or (k == "Par" and int(cnt["Lin"].max()) == MAX_COUNTER - 1):
            continue  # (Par: the writer's Lin overflow into Par leaves a short last Par)
        gaps = np.diff(u)
        big = np.flatnonzero(gaps > max(16.0, 8.0 * float(np.median(gaps))))
        if big.size:
            j = int(big[0])
            out.append(f"{k} jumps from {int(u[j])} to {int(u[j + 1])}")
            continue
        rare = np.flatnonzero((8 * c < np.median(c)) & (c <= max(1, n // 100)))
        if rare.size:
            j = int(rare[0])
            out.append(f"{k} = {int(u[j])} on {int(c[j])} of {n} readouts")
    cols = np.stack([cnt[k].astype(np.int64) for k in _KEY_ORDER] + [cell], axis=1)
    sizes = np.bincount(row_rank(cols))
    if sizes.size and sizes.min() != sizes.max():
        out.append(f"{int((sizes > sizes.min()).sum())} counter combination(s) repeat {int(sizes.max())} times, "
                   f"others {int(sizes.min())}")
    ncell = int(cell.max()) + 1 if n else 0
    nro = int(readout.max()) + 1 if n else 0
    if n and n != ncell * nro:
        out.append(f"the (rep, echo) cells hold {n} readouts but {nro} distinct readout indices")
    return out


def acquisition_order(cell: np.ndarray) -> np.ndarray:
    """Readout index = the order of appearance within each (rep, echo) cell."""
    order = np.argsort(cell, kind="stable")
    sc = cell[order]
    first = np.r_[0, np.flatnonzero(np.diff(sc)) + 1]
    start = np.repeat(first, np.diff(np.r_[first, sc.size]))
    out = np.empty(cell.size, dtype=np.int64)
    out[order] = np.arange(cell.size) - start
    return out
