"""Writing a `Scan` as a Siemens VD/VE twix file, through twixtools' binary layouts.

`write_scan` builds twixtools `Mdb_local` blocks and hands them to `twixtools.write_twix`
(VD/VE layout only: twixtools cannot write VB). `build_header` writes the protocol header the
reader (`header.acquisition_from_header`) reads back exactly: numbers are written so that the
unit conversion back (us -> ms, ns -> us) gives the same float, and a value the `Acquisition`
does not know (None) is left out of the header, so it reads back as unknown.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
from pathlib import Path

import numpy as np

from ...core.acquisition import Acquisition
from ...core.atomic import atomic_path
from ...core.scan import Scan
from ...errors import InputError
from .header import AXES, SLICE, encode_utf7
from .layout import MAX_COUNTER, VE_CHAN_HDR


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


def _ascconv(acq: Acquisition, nreadout: int, necho: int) -> str:
    """The MeasYaps buffer: the ASCCONV lines of every known value."""
    yaps: list[tuple[str, object]] = [
        ("ulVersion", _Raw("0x1421cf5")),
        ("tSequenceFileName", "%CustomerSeq%\\na23recon_sim"),
    ]

    def known(key, value, conv=lambda v: v):
        return [] if value is None else [(key, conv(value))]

    yaps += known("tProtocolName", acq.protocol_name, encode_utf7)
    yaps += known("sProtConsistencyInfo.flNominalB0", acq.b0_T, float)
    yaps += known("sTXSPEC.asNucleusInfo[0].tNucleus", acq.nucleus)
    yaps += known("sTXSPEC.asNucleusInfo[0].lFrequency", acq.larmor_hz, lambda v: _scaled(v, 1.0))
    yaps += known("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude", acq.ref_voltage, float)
    yaps += known("sRXSPEC.alDwellTime[0]", acq.dwell_us, lambda v: _scaled(v, 1000.0))
    for i, te in enumerate(acq.te_ms or ()):
        yaps.append((f"alTE[{i}]", _scaled(te, 1000.0)))
    yaps.append(("lContrasts", necho))
    yaps += known("alTR[0]", acq.tr_ms, lambda v: _scaled(v, 1000.0))
    yaps += known("adFlipAngleDegree[0]", acq.flip_deg, float)
    for i, name in enumerate(acq.coil_names):
        base = f"sCoilSelectMeas.aRxCoilSelectData[0].asList[{i}]."
        yaps += [(base + "sCoilElementID.tCoilID", "NA23RECON"), (base + "sCoilElementID.tElement", name),
                 (base + "lElementSelected", 1), (base + "lRxChannelConnected", i + 1)]
    g = acq.geometry
    if g is not None:
        yaps += [("sKSpace.lBaseResolution", g.matrix[0]), ("sKSpace.lPhaseEncodingLines", g.matrix[1]),
                 ("sKSpace.lPartitions", g.matrix[2]), ("sKSpace.lImagesPerSlab", g.matrix[2])]
    nsl = 1 if g is None else g.nslices
    yaps += [("sKSpace.ucDimension", _Raw("0x2" if nsl > 1 else "0x4")), ("sKSpace.ucTrajectory", _Raw("0x2")),
             ("sKSpace.lRadialViews", int(nreadout)), ("sSliceArray.lSize", nsl)]
    if g is not None:
        for i in range(nsl):  # one entry per slice, each at its own position (multi-slice 2D)
            sl = SLICE.replace("[0]", f"[{i}]")
            pos = g.slice_positions_mm[i] if nsl > 1 else g.position_mm
            yaps += [(sl + "dThickness", g.fov_mm[2]), (sl + "dPhaseFOV", g.fov_mm[1]),
                     (sl + "dReadoutFOV", g.fov_mm[0])]
            yaps += [(sl + "sPosition." + d, v) for d, v in zip(AXES, pos)]
            yaps += [(sl + "sNormal." + d, v) for d, v in zip(AXES, g.normal)]
            yaps.append((sl + "dInPlaneRot", g.inplane_rot_rad))
    lines = ["### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 ###"]
    lines += [f"{k:<48} = {v if isinstance(v, _Raw) else _fmt(v)}" for k, v in yaps]
    lines.append("### ASCCONV END ###")
    return "\n".join(lines) + "\n"


def _xprotocol(name: str, params: list[tuple[str, str, object]]) -> str:
    """An XProtocol buffer of (kind 'Double' | 'String' | 'Long', name, value); None values left out."""
    body = []
    for kind, key, val in params:
        if val is None:
            continue
        if kind == "Double":
            body.append(f'<ParamDouble."{key}">  {{ <Precision> 16  {_fmt(val)}  }}')
        elif kind == "String":
            body.append(f'<ParamString."{key}">  {{ "{val}"  }}')
        else:
            body.append(f'<ParamLong."{key}">  {{ {_fmt(val)}  }}')
    return f'<XProtocol>\n{{\n<Name> "{name}"\n<ParamMap."">\n{{\n' + "\n".join(body) + "\n}\n}\n"


def build_header(acq: Acquisition, nreadout: int, necho: int, ncoil: int, nsample: int) -> bytes:
    """The protocol header of a synthetic measurement: the raw bytes twix files start with.

    Unknown (None) values of `acq` are left out; without a geometry the FOV, matrix, volume
    position and patient position are left out.
    """
    prot = None if acq.protocol_name is None else encode_utf7(acq.protocol_name)
    pp = None if acq.geometry is None else acq.geometry.patient_position
    buffers = {
        "Config": _xprotocol("Config", [("String", "ProtocolName", prot), ("String", "PatientPosition", pp),
                                        ("String", "chronSliceIndices", "0 -1"),
                                        ("Long", "NoOfFourierColumns", nsample),
                                        ("Long", "NoOfFourierLines", nreadout), ("Long", "NEco", necho)]),
        "Dicom": _xprotocol("Dicom", [("Double", "flMagneticFieldStrength", acq.b0_T),
                                      # twixtools needs it: "" reads back as unknown
                                      ("String", "SoftwareVersions", acq.software_version or ""),
                                      ("String", "tProtocolName", prot)]),
        "Meas": _xprotocol("Meas", [("String", "tPatientPosition", pp), ("Long", "iMaxNoOfRxChannels", ncoil)]),
        "MeasYaps": _ascconv(acq, nreadout, necho),
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
    order (echoes of one excitation together), counters as in the `na23recon.io.twix` docstring;
    a multi-slice geometry (`Geometry.slice_positions_mm`) writes readout s * nreadout/nslices + r
    as Lin r, Sli s, at slice s's position, and the slice array with one entry per slice.
    noise (ncoil, nnoise) -> NOISEADJSCAN readouts of `noise_readout` samples (default nsample,
    the last one shorter) at the start of the measurement, or with `noise_measurement=True` in a
    measurement of their own before it (as scanners do). The readouts' SliceData carry the
    volume position and `Geometry.quaternion()` (left zero without a geometry; twixtools reads
    such a file only with `read_twix(..., parse_geometry=False)`, as it has no slice to parse).

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
    acq = scan.acquisition
    if nrep > MAX_COUNTER or necho > MAX_COUNTER or nro >= MAX_COUNTER * MAX_COUNTER:
        raise InputError(f"scan too large for twix counters: {data.shape}")
    if acq.te_ms is not None and necho != len(acq.te_ms):
        raise InputError(f"scan has {necho} echoes but its acquisition lists {len(acq.te_ms)} TEs")
    if ns >= MAX_COUNTER or nch >= MAX_COUNTER:
        raise InputError(f"scan readouts too long for twix: {nch} channels x {ns} samples")
    geo = acq.geometry
    nsl = 1 if geo is None else geo.nslices
    if nro % nsl:
        raise InputError(f"scan has {nro} readouts, not a whole number per slice of its {nsl} slices")
    nro_s = nro // nsl  # multi-slice: readouts slice-major (`core.scan`), Sli counter = slice
    hdr = build_header(acq, nro_s, necho, nch, ns)
    # Siemens time stamps count 2.5 ms: one TR apart (one tick when the TR is unknown)
    tick = 1 if acq.tr_ms is None else max(1, int(round(acq.tr_ms / 2.5)))

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
    quat = None if geo is None else geo.quaternion()
    for p in range(nrep):
        for r in range(nro):
            for e in range(necho):
                flags = ("ONLINE", "FIRSTSCANINSLICE") if first else ("ONLINE",)
                first = False
                s, rs = divmod(r, nro_s)
                mdb = _make_mdb(data[p, e, :, r, :], {"Lin": rs % MAX_COUNTER, "Par": rs // MAX_COUNTER,
                                                       "Sli": s, "Eco": e, "Rep": p}, flags,
                                t0 + (p * nro + r) * tick)
                if geo is not None:
                    sd = mdb.mdh.SliceData
                    sd.SlicePos.Sag, sd.SlicePos.Cor, sd.SlicePos.Tra = (
                        geo.slice_positions_mm[s] if nsl > 1 else geo.position_mm)
                    sd.Quaternion[:] = quat
                mdb.mdh.CenterCol = 0
                mdbs.append(mdb)
    mdbs[-1].add_flag("LASTSCANINSLICE")
    mdbs[-1].add_flag("LASTSCANINMEAS")
    mdbs.append(_acqend(mdbs[-1]))
    scans = [_scan_dict(hdr, mdbs, 2, acq.protocol_name or "")]
    if noise_measurement and noise_mdbs:
        noise_mdbs.append(_acqend(noise_mdbs[-1]))
        nhdr = build_header(acq, len(noise_mdbs) - 1, 1, nch, ns)
        scans.insert(0, _scan_dict(nhdr, noise_mdbs, 1, "AdjCoilSens"))
    with atomic_path(path, suffix=".dat") as tmp:
        tmp.unlink()  # write_twix opens with 'xb' (refuses an existing file)
        with contextlib.redirect_stdout(io.StringIO()):
            twixtools.write_twix(scans, str(tmp), version_is_ve=True)
    return path
