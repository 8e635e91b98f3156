"""The protocol header of a twix measurement: its text buffers, their values, the `Acquisition`.

A measurement header is `uint32 length, uint32 nbuf` and `nbuf` named text buffers (Config,
Dicom, Meas, MeasYaps, ...; the layout twixtools' `twixprot` reads). Values are read from the raw
text here, so twixtools' casts (keys starting with 'b' go through bool(str), ASCCONV values are
cut at the first blank) never touch them.

Header -> `Acquisition` (`acquisition_from_header`):

- a value the header does not give is None (unknown), never 0 or a default; Siemens' ASCCONV
  leaves out values that are zero, so absent components of the volume position and normal and
  an absent in-plane rotation are 0, as the scanner meant them;
- the `Geometry` needs FOV (read, phase, thickness), matrix (base resolution, phase lines,
  partitions: 1 for a 2D scan), a slice normal and the patient position; without any of them
  the geometry is None;
- a value that is no number, not finite, or impossible (a TE of 1e305 ms, a dwell of 0, a slab
  of 1e-30 mm, a flip of 1e11 deg) raises InputError: `Acquisition` and `Geometry` range-check
  every field when they are made, and FOV and matrix are checked even when the geometry stays
  unknown.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from dataclasses import dataclass, field

from ...core.acquisition import Acquisition
from ...core.geometry import MAX_FOV_MM, MIN_FOV_MM, Geometry
from ...errors import InputError

log = logging.getLogger(__name__)

SLICE = "sSliceArray.asSlice[0]."
AXES = ("dSag", "dCor", "dTra")
#: the largest whole number a header field may hold (twix counters and matrix sizes are far below)
MAX_HEADER_INT = 2 ** 31 - 1


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


def parse_number(text, what: str, kind=float):
    """A header value as a finite float (or a whole number for kind=int); None stays None.

    Text that is no number, NaN, inf or beyond float range ('1e400'), and for kind=int a
    fraction or a value beyond MAX_HEADER_INT, raises InputError naming `what`.
    """
    if text is None:
        return None
    t = str(text).strip()
    try:
        v = float(int(t, 16)) if kind is int and t.lower().startswith("0x") else float(t)
    except (ValueError, OverflowError):
        raise InputError(f"twix header value of {what} is not a number: {t[:40]!r}") from None
    if not math.isfinite(v):
        raise InputError(f"twix header value of {what} is not finite: {t[:40]!r}")
    if kind is int:
        if not v.is_integer() or abs(v) > MAX_HEADER_INT:
            raise InputError(f"twix header value of {what} is not a whole number of at most "
                             f"{MAX_HEADER_INT}: {t[:40]!r}")
        return int(v)
    return v


def decode_utf7(s: str) -> str:
    """Siemens writes tProtocolName in UTF-7 ('_' -> '+AF8-')."""
    if "+" not in s:
        return s
    try:
        return s.encode("ascii").decode("utf-7")
    except (UnicodeError, ValueError):
        return s


def encode_utf7(s: str) -> str:
    """The inverse of `decode_utf7` for the writer (plain names stay as they are)."""
    if all(c.isalnum() or c in " .-" for c in s) and s.isascii():
        return s
    return s.encode("utf-7").decode("ascii")


def split_header(buf, off: int, length: int) -> tuple[Header, int]:
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
# Header -> Acquisition
# =================================================================================================

def _divided(value, factor: float):
    return None if value is None else value / factor


def _text(value) -> str | None:
    value = None if value is None else value.strip()
    return value or None


def acquisition_from_header(hdr: Header) -> Acquisition:
    """The `Acquisition` of a measurement's protocol header (module docstring: what is unknown).

    Units: alTE/alTR us -> ms, alDwellTime ns -> us. InputError (one line, naming the header
    key or the field) for a value that is no finite number or outside what a scanner can do.
    """
    y = hdr.yaps

    def num(key, kind=float):
        return parse_number(y(key), key, kind)

    necho = num("lContrasts", int)
    if necho is not None and not 1 <= necho <= 65536:
        raise InputError(f"twix header lContrasts = {necho} is impossible: expected 1..65536 echoes")
    te = []
    for i in range(necho or 1):
        v = num(f"alTE[{i}]")
        if v is None:
            break
        te.append(v / 1000.0)
    coils = coil_names(hdr)
    b0_key = "Dicom.flMagneticFieldStrength"
    b0 = hdr.xprot("Dicom", "flMagneticFieldStrength")
    if b0 is None:
        b0_key, b0 = "sProtConsistencyInfo.flNominalB0", y("sProtConsistencyInfo.flNominalB0")
    sw = hdr.xprot("Dicom", "SoftwareVersions") or hdr.xprot("Dicom", "SoftwareVersion")
    try:
        return Acquisition(
            nucleus=_text(y("sTXSPEC.asNucleusInfo[0].tNucleus")),
            b0_T=parse_number(b0, b0_key),
            larmor_hz=num("sTXSPEC.asNucleusInfo[0].lFrequency"),
            te_ms=tuple(te) or None,
            tr_ms=_divided(num("alTR[0]"), 1000.0),
            flip_deg=num("adFlipAngleDegree[0]"),
            dwell_us=_divided(num("sRXSPEC.alDwellTime[0]"), 1000.0),
            geometry=geometry_from_header(hdr),
            ref_voltage=num("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude"),
            coil_names=tuple(coils),
            software_version=_text(sw),
            protocol_name=_text(decode_utf7(y("tProtocolName") or "")),
        )
    except InputError as exc:
        msg = str(exc)
        if msg.startswith("twix header"):
            raise
        source = {"te_ms": "alTE", "TE": "alTE", "tr_ms": "alTR[0]", "flip_deg": "adFlipAngleDegree[0]",
                  "dwell_us": "sRXSPEC.alDwellTime[0]", "b0_T": b0_key,
                  "larmor_hz": "sTXSPEC.asNucleusInfo[0].lFrequency",
                  "ref_voltage": "sTXSPEC.asNucleusInfo[0].flReferenceAmplitude",
                  "patient position": "tPatientPosition", "volume position": SLICE + "sPosition",
                  "normal": SLICE + "sNormal", "in-plane rotation": SLICE + "dInPlaneRot"}
        keys = [key for word, key in source.items() if word in msg][:1]
        raise InputError(f"twix header{' ' + keys[0] if keys else ''}: {msg}") from None


COIL_LISTS = ("sCoilSelectMeas.aRxCoilSelectData[0].asList", "asCoilSelectMeas[0].asList")
"""Where the receive coil elements are listed: VD/VE/XA headers, then VB headers."""


def coil_names(hdr: Header) -> tuple[str, ...]:
    """Receive coil element names (tElement, else tCoilID) in the header's list order; () when none."""
    for prefix in COIL_LISTS:
        coils = []
        for i in range(256):
            base = f"{prefix}[{i}].sCoilElementID."
            el, cid = hdr.yaps(base + "tElement"), hdr.yaps(base + "tCoilID")
            if el is None and cid is None:
                break
            coils.append(el if el is not None else cid)
        if coils:
            return tuple(coils)
    return ()


def geometry_from_header(hdr: Header) -> Geometry | None:
    """The imaging volume of the header's first slice (slab), or None when a part is missing."""
    y = hdr.yaps

    def num(key, kind=float):
        return parse_number(y(key), key, kind)

    fov = tuple(num(SLICE + k) for k in ("dReadoutFOV", "dPhaseFOV", "dThickness"))
    for key, v in zip(("dReadoutFOV", "dPhaseFOV", "dThickness"), fov):
        if v is not None and not MIN_FOV_MM <= v <= MAX_FOV_MM:
            raise InputError(f"twix header {SLICE}{key} = {v:g} mm is impossible: expected "
                             f"{MIN_FOV_MM:g}..{MAX_FOV_MM:g} mm")
    dim = num("sKSpace.ucDimension", int)
    matrix = (num("sKSpace.lBaseResolution", int), num("sKSpace.lPhaseEncodingLines", int),
              1 if dim == 2 else num("sKSpace.lPartitions", int))
    for key, v in zip(("lBaseResolution", "lPhaseEncodingLines", "lPartitions"), matrix):
        if v is not None and not 1 <= v <= 4096:
            raise InputError(f"twix header sKSpace.{key} = {v} is impossible: expected 1..4096")
    normal_raw = [num(SLICE + "sNormal." + d) for d in AXES]
    pp = hdr.xprot("Meas", "tPatientPosition") or hdr.xprot("Config", "PatientPosition")
    pp = _text(pp)
    missing = [name for name, v in (("FOV", None if None in fov else fov),
                                    ("matrix", None if None in matrix else matrix),
                                    ("slice normal", None if all(v is None for v in normal_raw) else 1),
                                    ("patient position", pp)) if v is None]
    if missing:
        log.debug("twix header lacks the %s: geometry unknown", ", ".join(missing))
        return None
    return Geometry(fov_mm=fov, matrix=matrix,
                    position_mm=tuple(num(SLICE + "sPosition." + d) or 0.0 for d in AXES),
                    normal=tuple(v or 0.0 for v in normal_raw),
                    inplane_rot_rad=num(SLICE + "dInPlaneRot") or 0.0,
                    patient_position=pp, slice_positions_mm=slice_positions(hdr))


def slice_positions(hdr: Header) -> tuple[tuple[float, float, float], ...]:
    """Centre (LPS, mm) of every slice of the slice array (sSliceArray.asSlice[i].sPosition, the
    twix `Sli` counter's order) when it lists more than one; else ()."""
    n = parse_number(hdr.yaps("sSliceArray.lSize"), "sSliceArray.lSize", int) or 1
    if not 1 <= n <= 4096:
        raise InputError(f"twix header sSliceArray.lSize = {n} is impossible: expected 1..4096")
    if n == 1:
        return ()
    return tuple(tuple(parse_number(hdr.yaps(f"sSliceArray.asSlice[{i}].sPosition.{d}"),
                                    "slice position", float) or 0.0 for d in AXES) for i in range(n))
