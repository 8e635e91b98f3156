"""Siemens twix (.dat) input and output, built on twixtools' binary layouts.

Reading (`read_scan`) walks the measurement's readout headers (MDH) itself and copies the
samples through one memory map of the file, instead of twixtools' per-readout `mdb.data` (one
seek + read + frombuffer per readout). The protocol header is split into its buffers here and
the values we need are read from the raw text, so twixtools' casts (keys starting with 'b' go
through bool(str), ASCCONV values are cut at the first blank) never touch them.

Writing (`write_scan`) builds twixtools `Mdb_local` blocks and hands them to
`twixtools.write_twix` (VD/VE layout only: twixtools cannot write VB).

Readout <-> counter mapping (the same in both directions, see `_readout_keys`):

- `Eco` is the echo index, `Rep` the repetition; `Ave` is kept apart, never averaged: the
  repetition axis of `Scan.data` runs over (Rep, Ave) pairs, Ave fastest.
- The readout (spoke) index is the rank of the remaining counters
  (Sli, Phs, Set, Ida..Ide, Par, Lin, Seg) in lexicographic order, plus an occurrence number for
  readouts whose counters are all equal (so repeated lines stay apart). For a Cartesian scan
  that is phase-encoding line order per partition.
- The writer stores readout r as Lin = r % 65536, Par = r // 65536 (counters are uint16), so
  a 3D radial scan of any size round-trips in acquisition order.
- Noise-adjust readouts (flag NOISEADJSCAN) of the measurement, or, if it has none, of the
  measurement just before it, are concatenated along samples into `Scan.noise` (ncoil, nnoise).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_path
from .scan import Scan, ScanInfo

log = logging.getLogger(__name__)

# --- binary layout constants (twixtools.mdh_def / hdr_def) ----------------------------------------
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
_COUNTERS = ("Lin", "Ave", "Sli", "Par", "Eco", "Phs", "Rep", "Set", "Seg",
             "Ida", "Idb", "Idc", "Idd", "Ide")
_KEY_ORDER = ("Sli", "Phs", "Set", "Ida", "Idb", "Idc", "Idd", "Ide", "Par", "Lin", "Seg")
MAX_COUNTER = 65536
SUPPORTED_NUCLEUS = "23Na"


def _mdh_dtypes():
    import twixtools.mdh_def as mdh_def  # twixtools' ctypes layouts, as numpy dtypes

    return np.dtype(mdh_def.Scan_header), np.dtype(mdh_def.VB17_header), np.dtype(mdh_def.Channel_header)


# =================================================================================================
# Header text
# =================================================================================================

@dataclass
class Header:
    """The protocol header of one measurement: raw text of each buffer, plus lookups."""

    buffers: dict[str, str]
    ascconv: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ascconv:
            self.ascconv = parse_ascconv(self.buffers.get("MeasYaps", ""))

    def yaps(self, key: str, default=None):
        """ASCCONV value (MeasYaps) as raw text: strings without their quotes."""
        return self.ascconv.get(key, default)

    def xprot(self, buffer: str, name: str, default=None):
        """Value of an XProtocol parameter `<Param*."name"> { ... }` as raw text."""
        text = self.buffers.get(buffer, "")
        m = re.search(r'<Param\w*\."' + re.escape(name) + r'">\s*\{([^}]*)\}', text)
        if m is None:
            return default
        body = re.sub(r"<\w+>\s*\S+", " ", m.group(1))  # drop <Precision> 16, <Visible> "true", ...
        body = body.strip()
        if not body:
            return default
        if body.startswith('"'):
            end = body.find('"', 1)
            return body[1:end if end > 0 else None]
        return body.split()[0]


def parse_ascconv(text: str) -> dict[str, str]:
    """Flat {key: raw value} of the ASCCONV block; string values lose their quotes."""
    out: dict[str, str] = {}
    begin = text.find("### ASCCONV BEGIN")
    if begin < 0:
        return out
    end = text.find("### ASCCONV END", begin)
    block = text[text.find("\n", begin) + 1: end if end > 0 else None]
    for line in block.splitlines():
        key, sep, val = line.partition("=")
        if not sep:
            continue
        key, val = key.strip(), val.strip()
        if not key or " " in key:
            continue
        if val.startswith('"'):
            close = val.rfind('"')
            val = val[1:close] if close > 0 else val[1:]
        else:
            val = val.split()[0] if val.split() else ""
        out[key] = val
    return out


def _num(text, what: str, default=None, kind=float):
    if text is None:
        if default is None:
            raise InputError(f"twix header has no {what}")
        return default
    try:
        t = str(text).strip()
        if kind is int:
            return int(t, 16) if t.lower().startswith("0x") else int(float(t))
        v = float(t)
    except ValueError:
        raise InputError(f"twix header value of {what} is not a number: {str(text)[:40]!r}") from None
    if not math.isfinite(v):
        raise InputError(f"twix header value of {what} is not finite: {text!r}")
    return v


def _decode_utf7(s: str) -> str:
    # Siemens writes tProtocolName in UTF-7 ('_' -> '+AF8-')
    if "+" not in s:
        return s
    try:
        return s.encode("ascii").decode("utf-7")
    except (UnicodeError, ValueError):
        return s


def _split_header(buf: memoryview, off: int, length: int) -> tuple[Header, int]:
    """Split the measurement header at `off` into its named text buffers; return (Header, hdr_len)."""
    if length < 8:
        raise InputError(f"corrupted twix header: measurement at byte {off} is only {length} bytes")
    if off + 8 > len(buf):
        raise InputError(f"truncated twix file: measurement header at byte {off}, file has {len(buf)} bytes")
    hdr_len, nbuf = struct.unpack_from("<II", buf, off)
    if off + hdr_len > len(buf):
        raise InputError(f"truncated twix file: header of {hdr_len} bytes at byte {off}, file has {len(buf)} bytes")
    if hdr_len < 8 or hdr_len > length:
        raise InputError(f"corrupted twix header: header length {hdr_len} outside the measurement "
                         f"({length} bytes at byte {off})")
    if nbuf > 64:
        raise InputError(f"corrupted twix header: {nbuf} header buffers (expected at most 64)")
    pos, end = off + 8, off + hdr_len
    buffers: dict[str, str] = {}
    for _ in range(nbuf):
        chunk = bytes(buf[pos: min(pos + 64, end)])
        m = re.match(rb"(\w{3,63})\x00", chunk)
        if m is None or pos + len(m.group(0)) + 4 > end:
            raise InputError(f"corrupted twix header: bad buffer name at byte {pos}")
        name = m.group(1).decode("ascii")
        pos += len(m.group(0))
        (blen,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + blen > end:
            raise InputError(f"corrupted twix header: buffer {name!r} ({blen} bytes) runs past the header end")
        buffers[name] = bytes(buf[pos: pos + blen]).decode("latin1").rstrip("\x00")
        pos += blen
    if "MeasYaps" not in buffers:
        raise InputError("corrupted twix header: no MeasYaps (ASCCONV) buffer")
    return Header(buffers), hdr_len


# =================================================================================================
# File layout: measurements and readout headers
# =================================================================================================

@dataclass
class Measurement:
    """One measurement of a (multi-raid) twix file."""

    index: int
    offset: int
    length: int
    meas_id: int = 0
    protocol: str = ""


@dataclass
class _Layout:
    path: Path
    mm: mmap.mmap
    is_ve: bool
    meas: list[Measurement]
    size: int


def _open_layout(path: str | os.PathLike) -> _Layout:
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
    return _Layout(path, mm, is_ve, meas, size)


@dataclass
class _Readouts:
    """Positions and headers of a measurement's readouts (arrays of length n)."""

    pos: np.ndarray        # int64 byte offset of each readout's first header
    mdh: np.ndarray        # structured (Scan_header or VB17_header) of each readout
    acqend: bool


def _walk(lay: _Layout, m: Measurement, hdr_len: int) -> _Readouts:
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
    vedt, vbdt, _ = _mdh_dtypes()
    dt = vedt if is_ve else vbdt
    raw = np.frombuffer(mm, dtype=np.uint8)
    mdh = np.zeros(p.size, dtype=dt)
    cols = np.arange(dt.itemsize)
    for a in range(0, p.size, 4096):  # chunks keep the byte-index array small
        mdh[a: a + 4096] = raw[p[a: a + 4096, None] + cols].view(dt).reshape(-1)
    return _Readouts(p, mdh, acqend)


def list_measurements(path: str | os.PathLike) -> list[dict]:
    """Measurements in a twix file: index, protocol, number of image and noise readouts, nucleus.

    Returns a list of dicts, one per measurement (VB files have exactly one).
    """
    lay = _open_layout(path)
    out = []
    for m in lay.meas:
        hdr, hdr_len = _split_header(lay.mm, m.offset, m.length)
        entry = {"index": m.index, "meas_id": m.meas_id,
                 "protocol": _decode_utf7(hdr.yaps("tProtocolName", "") or m.protocol),
                 "nucleus": hdr.yaps("sTXSPEC.asNucleusInfo[0].tNucleus", "")}
        try:
            ro = _walk(lay, m, hdr_len)
            mask = ro.mdh["EvalInfoMask"].astype(np.uint64)
            noise = (mask & np.uint64(1 << _BIT["NOISEADJSCAN"])) != 0
            image = (mask & np.uint64(_NOT_IMAGE)) == 0
            image &= ~(((mask & np.uint64(1 << _BIT["PATREFSCAN"])) != 0)
                       & ((mask & np.uint64(1 << _BIT["PATREFANDIMASCAN"])) == 0))
            entry.update(readouts=int(ro.pos.size), image_readouts=int(image.sum()),
                         noise_readouts=int(noise.sum()), complete=True)
        except InputError as exc:
            entry.update(complete=False, problem=str(exc))
        out.append(entry)
    return out


# =================================================================================================
# Reading
# =================================================================================================

def info_from_header(hdr: Header) -> ScanInfo:
    """ScanInfo from the protocol header (units converted: us/ns -> ms/us, see ScanInfo)."""
    y = hdr.yaps
    sl = "sSliceArray.asSlice[0]."
    necho = _num(y("lContrasts"), "lContrasts", 1, int)
    te = []
    for i in range(max(1, necho)):
        v = y(f"alTE[{i}]")
        if v is None:
            break
        te.append(_num(v, f"alTE[{i}]") / 1000.0)
    dim = _num(y("sKSpace.ucDimension"), "sKSpace.ucDimension", 4, int)
    matrix = (_num(y("sKSpace.lBaseResolution"), "sKSpace.lBaseResolution", 1, int),
              _num(y("sKSpace.lPhaseEncodingLines"), "sKSpace.lPhaseEncodingLines", 1, int),
              _num(y("sKSpace.lPartitions"), "sKSpace.lPartitions", 1, int) if dim != 2 else 1)
    coils = []
    for i in range(256):
        base = f"sCoilSelectMeas.aRxCoilSelectData[0].asList[{i}].sCoilElementID."
        el, cid = y(base + "tElement"), y(base + "tCoilID")
        if el is None and cid is None:
            break
        coils.append(el if el is not None else cid)
    nucleus = y("sTXSPEC.asNucleusInfo[0].tNucleus", "")
    ref = y("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude")
    b0 = hdr.xprot("Dicom", "flMagneticFieldStrength")
    if b0 is None:
        b0 = y("sProtConsistencyInfo.flNominalB0")
    pp = hdr.xprot("Meas", "tPatientPosition") or hdr.xprot("Config", "PatientPosition") or "HFS"
    sw = hdr.xprot("Dicom", "SoftwareVersions") or hdr.xprot("Dicom", "SoftwareVersion") or ""
    return ScanInfo(
        nucleus=nucleus,
        b0_T=_num(b0, "B0 (Dicom.flMagneticFieldStrength)", 0.0),
        larmor_hz=_num(y("sTXSPEC.asNucleusInfo[0].lFrequency"), "lFrequency", 0.0),
        te_ms=te or [0.0],
        tr_ms=_num(y("alTR[0]"), "alTR[0]", 0.0) / 1000.0,
        flip_deg=_num(y("adFlipAngleDegree[0]"), "adFlipAngleDegree[0]", 0.0),
        dwell_us=_num(y("sRXSPEC.alDwellTime[0]"), "sRXSPEC.alDwellTime[0]", 0.0) / 1000.0,
        fov_mm=(_num(y(sl + "dReadoutFOV"), "dReadoutFOV", 0.0),
                _num(y(sl + "dPhaseFOV"), "dPhaseFOV", 0.0),
                _num(y(sl + "dThickness"), "dThickness", 0.0)),
        matrix=matrix,
        ref_voltage=None if ref is None else _num(ref, "flReferenceAmplitude"),
        patient_position=pp.strip(),
        slice_position_mm=tuple(_num(y(sl + "sPosition." + d), d, 0.0) for d in ("dSag", "dCor", "dTra")),
        slice_normal=tuple(_num(y(sl + "sNormal." + d), d, 0.0) for d in ("dSag", "dCor", "dTra")),
        inplane_rot_rad=_num(y(sl + "dInPlaneRot"), "dInPlaneRot", 0.0),
        coil_names=coils,
        software_version=sw,
        protocol_name=_decode_utf7(y("tProtocolName", "") or ""),
    )


def _image_mask(mdh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = mdh["EvalInfoMask"].astype(np.uint64)
    noise = (mask & np.uint64(1 << _BIT["NOISEADJSCAN"])) != 0
    image = (mask & np.uint64(_NOT_IMAGE)) == 0
    patref = ((mask & np.uint64(1 << _BIT["PATREFSCAN"])) != 0) & \
             ((mask & np.uint64(1 << _BIT["PATREFANDIMASCAN"])) == 0)
    return image & ~patref, noise


def _readout_keys(cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
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
    grp = _row_rank(full)
    order = np.argsort(grp, kind="stable")
    sg = grp[order]
    first = np.r_[0, np.flatnonzero(np.diff(sg)) + 1]
    runstart = np.repeat(first, np.diff(np.r_[first, n]))
    occ = np.empty(n, dtype=np.int64)
    occ[order] = np.arange(n) - runstart
    keys = np.concatenate([cols, occ[:, None]], axis=1)
    ro = _row_rank(keys)
    return rep, eco_i.reshape(-1).astype(np.int64), ro.reshape(-1).astype(np.int64), \
        int(len(rep_u) * len(ave_u)), int(len(ave_u))


def _row_rank(rows: np.ndarray) -> np.ndarray:
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


def _gather(lay: _Layout, pos: np.ndarray, nch: int, ns: int, out: np.ndarray,
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
    lay = _open_layout(path)
    m = _pick(lay, meas)
    return _split_header(lay.mm, m.offset, m.length)[0]


def _pick(lay: _Layout, meas: int) -> Measurement:
    try:
        return lay.meas[meas]
    except (IndexError, TypeError):
        raise InputError(f"twix file has {len(lay.meas)} measurement(s), asked for number {meas}") from None


def read_scan(path: str | os.PathLike, meas: int = -1, allow_nucleus: bool = False) -> Scan:
    """Read one measurement of a Siemens twix file (VB or VD/VE) into a `Scan`.

    Parameters
    ----------
    path : the .dat file.
    meas : measurement of a multi-raid file (default -1: the last, the image measurement).
    allow_nucleus : accept a nucleus other than 23Na (else InputError).

    Returns
    -------
    Scan with data complex64 (nrep, necho, ncoil, nreadout, nsample) (readout mapping: module
    docstring), noise complex64 (ncoil, nnoise) or None, and ScanInfo from the header.

    Raises InputError for a missing, truncated or corrupted file, a wrong nucleus, or a
    measurement without image readouts.
    """
    lay = _open_layout(path)
    m = _pick(lay, meas)
    hdr, hdr_len = _split_header(lay.mm, m.offset, m.length)
    info = info_from_header(hdr)
    if info.nucleus != SUPPORTED_NUCLEUS and not allow_nucleus:
        raise InputError(f"scan nucleus is {info.nucleus or 'not given'!r}, expected {SUPPORTED_NUCLEUS!r} "
                         f"(use --allow-nucleus / allow_nucleus=True to read it anyway): {path}")
    ro = _walk(lay, m, hdr_len)
    image, noise = _image_mask(ro.mdh)
    if not image.any():
        raise InputError(f"twix measurement {m.index} has no image readouts ({ro.pos.size} readouts, "
                         f"{int(noise.sum())} noise): {path}")
    img = ro.mdh[image]
    ns_all, nch_all = img["SamplesInScan"], img["UsedChannels"]
    if (ns_all != ns_all[0]).any() or (nch_all != nch_all[0]).any():
        raise InputError(f"image readouts differ in length: {ns_all.min()}..{ns_all.max()} samples, "
                         f"{nch_all.min()}..{nch_all.max()} channels")
    ns, nch = int(ns_all[0]), int(nch_all[0])
    rep, eco, rdo, nrep, _nave = _readout_keys(img["Counter"])
    necho, nro = int(eco.max()) + 1, int(rdo.max()) + 1
    nimg = int(image.sum())
    if nrep * necho * nro > 2 * nimg + 1024:
        raise InputError(f"readout counters do not form a grid: {nimg} image readouts spread over "
                         f"{nrep} repetitions x {necho} echoes x {nro} readouts")
    filled = nrep * necho * nro
    # every cell gets exactly one readout when the grid is complete: no need to zero it first
    data = (np.empty if nimg == filled else np.zeros)((nrep, necho, nch, nro, ns), dtype=np.complex64)
    _gather(lay, ro.pos[image], nch, ns, data, (rep, eco, rdo))
    if nimg != filled:
        log.warning("twix: %d of %d (rep, echo, readout) cells have no readout; left zero",
                    filled - nimg, filled)
    nz = _read_noise(lay, m, ro, noise, nch)
    if len(info.coil_names) != nch:
        if info.coil_names:
            log.warning("twix: header names %d coil elements, readouts have %d channels",
                        len(info.coil_names), nch)
    return Scan(data=data, info=info, noise=nz)


def _read_noise(lay: _Layout, m: Measurement, ro: _Readouts, noise: np.ndarray, nch: int):
    if not noise.any() and m.index > 0:
        prev = lay.meas[m.index - 1]
        try:
            _, hl = _split_header(lay.mm, prev.offset, prev.length)
            ro = _walk(lay, prev, hl)
        except InputError as exc:
            log.warning("twix: no noise readouts read from measurement %d: %s", prev.index, exc)
            return None
        noise = _image_mask(ro.mdh)[1]
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


def check_traj_matches(scan: Scan, k: np.ndarray) -> None:
    """Raise InputError unless trajectory `k` (nreadout, nsample, ndim) fits `scan`'s readouts."""
    k = np.asarray(k)
    if k.ndim != 3:
        raise InputError(f"trajectory must be (nreadout, nsample, ndim), got shape {k.shape}")
    if k.shape[:2] != (scan.nreadout, scan.nsample):
        raise InputError(f"trajectory has {k.shape[0]} readouts x {k.shape[1]} samples but the scan has "
                         f"{scan.nreadout} readouts x {scan.nsample} samples")


# =================================================================================================
# Writing
# =================================================================================================

class _Raw(str):
    """A header token written as is (hex numbers), not quoted."""


def _fmt(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def _scaled(x: float, factor: float):
    """A value v with v / factor == x exactly (so a round trip through the header is exact)."""
    x = float(x)
    v = x * factor
    for _ in range(4):
        if v / factor == x:
            break
        v = np.nextafter(v, math.inf if v / factor < x else -math.inf)
    vi = round(v)
    return vi if vi / factor == x else float(v)


def _encode_utf7(s: str) -> str:
    if all(c.isalnum() or c in " .-" for c in s) and s.isascii():
        return s
    return s.encode("utf-7").decode("ascii")


def build_header(info: ScanInfo, nreadout: int, necho: int, ncoil: int, nsample: int) -> bytes:
    """The protocol header of a synthetic measurement: the raw bytes twix files start with."""
    sl = "sSliceArray.asSlice[0]."
    yaps: list[tuple[str, object]] = [
        ("ulVersion", _Raw("0x1421cf5")),
        ("tSequenceFileName", "%CustomerSeq%\\na23recon_sim"),
        ("tProtocolName", _encode_utf7(info.protocol_name)),
        ("sProtConsistencyInfo.flNominalB0", float(info.b0_T)),
        ("sTXSPEC.asNucleusInfo[0].tNucleus", info.nucleus),
        ("sTXSPEC.asNucleusInfo[0].lFrequency", _scaled(info.larmor_hz, 1.0)),
    ]
    if info.ref_voltage is not None:
        yaps.append(("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude", float(info.ref_voltage)))
    yaps.append(("sRXSPEC.alDwellTime[0]", _scaled(info.dwell_us, 1000.0)))
    for i, te in enumerate(info.te_ms):
        yaps.append((f"alTE[{i}]", _scaled(te, 1000.0)))
    yaps += [("lContrasts", len(info.te_ms)), ("alTR[0]", _scaled(info.tr_ms, 1000.0)),
             ("adFlipAngleDegree[0]", float(info.flip_deg))]
    for i, name in enumerate(info.coil_names):
        base = f"sCoilSelectMeas.aRxCoilSelectData[0].asList[{i}]."
        yaps += [(base + "sCoilElementID.tCoilID", "NA23RECON"), (base + "sCoilElementID.tElement", name),
                 (base + "lElementSelected", 1), (base + "lRxChannelConnected", i + 1)]
    yaps += [("sKSpace.lBaseResolution", int(info.matrix[0])),
             ("sKSpace.lPhaseEncodingLines", int(info.matrix[1])),
             ("sKSpace.lPartitions", int(info.matrix[2])),
             ("sKSpace.lImagesPerSlab", int(info.matrix[2])),
             ("sKSpace.ucDimension", _Raw("0x4")), ("sKSpace.ucTrajectory", _Raw("0x2")),
             ("sKSpace.lRadialViews", int(nreadout)),
             ("sSliceArray.lSize", 1),
             (sl + "dThickness", float(info.fov_mm[2])),
             (sl + "dPhaseFOV", float(info.fov_mm[1])),
             (sl + "dReadoutFOV", float(info.fov_mm[0]))]
    for d, v in zip(("dSag", "dCor", "dTra"), info.slice_position_mm):
        yaps.append((sl + "sPosition." + d, float(v)))
    for d, v in zip(("dSag", "dCor", "dTra"), info.slice_normal):
        yaps.append((sl + "sNormal." + d, float(v)))
    yaps.append((sl + "dInPlaneRot", float(info.inplane_rot_rad)))
    lines = ["### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 ###"]
    lines += [f"{k:<48} = {v if isinstance(v, _Raw) else _fmt(v)}" for k, v in yaps]
    lines.append("### ASCCONV END ###")
    meas_yaps = "\n".join(lines) + "\n"

    def xp(name: str, params: list[tuple[str, str, object]]) -> str:
        body = []
        for kind, key, val in params:
            if kind == "Double":
                body.append(f'<ParamDouble."{key}">  {{ <Precision> 16  {_fmt(val)}  }}')
            elif kind == "String":
                body.append(f'<ParamString."{key}">  {{ "{val}"  }}')
            else:
                body.append(f'<ParamLong."{key}">  {{ {_fmt(val)}  }}')
        return (f'<XProtocol>\n{{\n<Name> "{name}"\n<ParamMap."">\n{{\n' + "\n".join(body)
                + "\n}\n}\n")

    buffers = {
        "Config": xp("Config", [("String", "ProtocolName", _encode_utf7(info.protocol_name)),
                                ("String", "PatientPosition", info.patient_position),
                                ("String", "chronSliceIndices", "0 -1"),
                                ("Long", "NoOfFourierColumns", nsample),
                                ("Long", "NoOfFourierLines", nreadout),
                                ("Long", "NEco", necho)]),
        "Dicom": xp("Dicom", [("Double", "flMagneticFieldStrength", float(info.b0_T)),
                              ("String", "SoftwareVersions", info.software_version),
                              ("String", "tProtocolName", _encode_utf7(info.protocol_name))]),
        "Meas": xp("Meas", [("String", "tPatientPosition", info.patient_position),
                            ("Long", "iMaxNoOfRxChannels", ncoil)]),
        "MeasYaps": meas_yaps,
    }
    parts = []
    for name, text in buffers.items():
        b = text.encode("latin1") + b"\x00"
        parts.append(name.encode("ascii") + b"\x00" + struct.pack("<I", len(b)) + b)
    body = b"".join(parts)
    hdr_len = 8 + len(body)
    pad = (-hdr_len) % 32
    hdr_len += pad
    return struct.pack("<II", hdr_len, len(buffers)) + body + b"\x00" * pad


def _make_mdb(data2d: np.ndarray, counters: dict, flags: tuple[str, ...], time_stamp: int):
    import twixtools.mdb
    import twixtools.mdh_def as mdh_def

    mdb = twixtools.mdb.Mdb_local()
    nch, ns = data2d.shape
    # one Channel_header per channel (Mdb_local would share one object between channels)
    mdb.channel_hdr = [mdh_def.Channel_header(ChannelId=c, TypeAndChannelLength=VE_CHAN_HDR + 8 * ns,
                                              MeasUID=1, SequenceTime=time_stamp) for c in range(nch)]
    mdb.data = data2d
    h = mdb.mdh
    h.MeasUID = 1
    h.TimeStamp = time_stamp
    h.PMUTimeStamp = time_stamp
    for k, v in counters.items():
        setattr(h.Counter, k, v)
    for f in flags:
        mdb.add_flag(f)
    return mdb


def _scan_dict(hdr: bytes, mdbs: list, meas_id: int, prot: str) -> dict:
    import twixtools.hdr_def as hdr_def

    ent = np.zeros(1, dtype=hdr_def.MrParcRaidFileEntry)[0]
    ent["measId_"] = meas_id
    ent["fileId_"] = meas_id
    ent["patName_"] = b"na23recon"
    ent["protName_"] = prot.encode("latin1", "replace")[:63]
    return {"hdr_str": np.frombuffer(hdr, dtype="S1").copy(), "mdb": mdbs, "raidfile_hdr": ent}


def _acqend(last):
    import twixtools.mdb

    end = twixtools.mdb.Mdb_local()
    end.add_flag("ACQEND")
    end.mdh.MeasUID = 1
    end.mdh.TimeStamp = last.mdh.TimeStamp
    return end


def write_scan(path: str | os.PathLike, scan: Scan, overwrite: bool = True,
               noise_measurement: bool = False, noise_readout: int | None = None) -> Path:
    """Write `scan` as a Siemens VD/VE twix file (via twixtools.write_twix), atomically.

    data (nrep, necho, ncoil, nreadout, nsample) -> one readout per (rep, readout, echo), in that
    order (echoes of one excitation together), counters as in the module docstring.
    noise (ncoil, nnoise) -> NOISEADJSCAN readouts of `noise_readout` samples (default nsample,
    the last one shorter) at the start of the measurement, or with `noise_measurement=True` in a
    measurement of their own before it (as scanners do).

    Returns the path written. Raises InputError if the path exists and overwrite is False.
    """
    import twixtools

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output exists (refusing to overwrite): {path}")
    data = np.asarray(scan.data)
    if data.dtype != np.complex64:
        data = data.astype(np.complex64)
    nrep, necho, nch, nro, ns = data.shape
    info = scan.info
    if nrep > MAX_COUNTER or necho > MAX_COUNTER or nro >= MAX_COUNTER * MAX_COUNTER:
        raise InputError(f"scan too large for twix counters: {data.shape}")
    if necho != len(info.te_ms):
        raise InputError(f"scan has {necho} echoes but info.te_ms lists {len(info.te_ms)}")
    if ns >= MAX_COUNTER or nch >= MAX_COUNTER:
        raise InputError(f"scan readouts too long for twix: {nch} channels x {ns} samples")
    hdr = build_header(info, nro, necho, nch, ns)
    quat, pos = _slice_quaternion(info)
    tick = max(1, int(round(info.tr_ms / 2.5)))  # Siemens time stamps count 2.5 ms

    noise_mdbs = []
    if scan.noise is not None and scan.noise.size:
        nz = np.asarray(scan.noise, dtype=np.complex64)
        if nz.ndim != 2 or nz.shape[0] != nch:
            raise InputError(f"scan noise must be (ncoil={nch}, nnoise), got shape {nz.shape}")
        step = int(noise_readout or ns)
        for i, a in enumerate(range(0, nz.shape[1], step)):
            noise_mdbs.append(_make_mdb(nz[:, a:a + step], {"Lin": i % MAX_COUNTER}, ("NOISEADJSCAN",), i))

    mdbs = [] if noise_measurement else list(noise_mdbs)
    t0 = len(noise_mdbs)
    first = True
    for p in range(nrep):
        for r in range(nro):
            for e in range(necho):
                flags = ("ONLINE", "FIRSTSCANINSLICE") if first else ("ONLINE",)
                first = False
                mdb = _make_mdb(data[p, e, :, r, :], {"Lin": r % MAX_COUNTER, "Par": r // MAX_COUNTER,
                                                       "Eco": e, "Rep": p}, flags,
                                t0 + (p * nro + r) * tick)
                sd = mdb.mdh.SliceData
                sd.SlicePos.Sag, sd.SlicePos.Cor, sd.SlicePos.Tra = pos
                sd.Quaternion[:] = quat
                mdb.mdh.CenterCol = 0
                mdbs.append(mdb)
    mdbs[-1].add_flag("LASTSCANINSLICE")
    mdbs[-1].add_flag("LASTSCANINMEAS")
    mdbs.append(_acqend(mdbs[-1]))
    scans = [_scan_dict(hdr, mdbs, 2, info.protocol_name)]
    if noise_measurement and noise_mdbs:
        noise_mdbs.append(_acqend(noise_mdbs[-1]))
        nhdr = build_header(info, len(noise_mdbs) - 1, 1, nch, ns)
        scans.insert(0, _scan_dict(nhdr, noise_mdbs, 1, "AdjCoilSens"))
    with atomic_path(path, suffix=".dat") as tmp:
        tmp.unlink()  # write_twix opens with 'xb' (refuses an existing file)
        with contextlib.redirect_stdout(io.StringIO()):
            twixtools.write_twix(scans, str(tmp), version_is_ve=True)
    return path


def _slice_quaternion(info: ScanInfo) -> tuple[list[float], tuple[float, float, float]]:
    """MDH SliceData: quaternion of the (phase, read, slice) -> patient rotation, and position."""
    try:
        from .geometry import quaternion_from_info
    except ImportError:  # geometry not there yet: identity
        return [1.0, 0.0, 0.0, 0.0], tuple(float(v) for v in info.slice_position_mm)
    return quaternion_from_info(info), tuple(float(v) for v in info.slice_position_mm)


# =================================================================================================
# Summary (the `info` subcommand)
# =================================================================================================

def describe(path: str | os.PathLike) -> dict:
    """JSON-ready summary of a twix file without reading its samples.

    {"file", "version" ("VB" | "VD/VE"), "measurements": [{index, protocol, nucleus, readouts,
    image_readouts, noise_readouts, complete, problem?, dims?: {nrep, necho, ncoil, nreadout,
    nsample}, te_ms, tr_ms, flip_deg, fov_mm, matrix, b0_T, coils, ...}]}
    """
    lay = _open_layout(path)
    out = {"file": str(path), "version": "VD/VE" if lay.is_ve else "VB", "measurements": []}
    for m in lay.meas:
        hdr, hdr_len = _split_header(lay.mm, m.offset, m.length)
        try:
            info = info_from_header(hdr)
            entry = {"index": m.index, **{k: v for k, v in info.to_dict().items()}}
        except InputError as exc:
            entry = {"index": m.index, "problem": str(exc)}
        try:
            ro = _walk(lay, m, hdr_len)
            image, noise = _image_mask(ro.mdh)
            entry.update(readouts=int(ro.pos.size), image_readouts=int(image.sum()),
                         noise_readouts=int(noise.sum()), complete=True)
            if image.any():
                img = ro.mdh[image]
                rep, eco, rdo, nrep, nave = _readout_keys(img["Counter"])
                entry["dims"] = {"nrep": nrep, "necho": int(eco.max()) + 1, "ncoil": int(img["UsedChannels"].max()),
                                 "nreadout": int(rdo.max()) + 1, "nsample": int(img["SamplesInScan"].max())}
        except InputError as exc:
            entry.update(complete=False, problem=str(exc))
        out["measurements"].append(entry)
    return out


def format_description(d: dict) -> str:
    """Readable text of `describe`'s summary."""
    lines = [f"{d['file']}  (twix {d['version']}, {len(d['measurements'])} measurement(s))"]
    for m in d["measurements"]:
        lines.append(f"measurement {m['index']}: {m.get('protocol_name') or '-'}"
                     f"{'' if m.get('complete') else '  [INCOMPLETE: ' + m.get('problem', '') + ']'}")
        if "nucleus" in m:
            lines.append(f"  nucleus {m['nucleus'] or '?'} at {m['b0_T']:g} T, {m['larmor_hz'] / 1e6:.4f} MHz")
            te = ", ".join(f"{t:g}" for t in m["te_ms"])
            lines.append(f"  TE {te} ms, TR {m['tr_ms']:g} ms, flip {m['flip_deg']:g} deg, dwell {m['dwell_us']:g} us")
            lines.append("  FOV {} mm, matrix {}".format(" x ".join(f"{v:g}" for v in m["fov_mm"]),
                                                           " x ".join(str(v) for v in m["matrix"])))
            lines.append(f"  coils ({len(m['coil_names'])}): {', '.join(m['coil_names']) or '-'}")
        if "readouts" in m:
            lines.append(f"  readouts {m['readouts']} (image {m['image_readouts']}, noise {m['noise_readouts']})")
        if "dims" in m:
            lines.append("  data (nrep, necho, ncoil, nreadout, nsample) = ({nrep}, {necho}, {ncoil}, "
                         "{nreadout}, {nsample})".format(**m["dims"]))
        elif "problem" in m and m.get("complete", True):
            lines.append(f"  problem: {m['problem']}")
    return "\n".join(lines)
