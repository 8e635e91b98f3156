"""ISMRMRD / MRD (.h5) input through the `ismrmrd` package (and a writer, for tests and simulation).

Acquisition indices map onto the twix counters and use the same readout mapping as
`na23recon.io.twix` (module docstring there): kspace_encode_step_1 -> Lin, kspace_encode_step_2
-> Par, contrast -> echo, repetition -> repetition, average kept apart on the repetition axis,
slice/phase/set/segment into the readout key. Acquisitions flagged ACQ_IS_NOISE_MEASUREMENT
become `Scan.noise`. The trajectory, when the acquisitions carry one, is returned as stored
(float32 (nreadout, nsample, ndim), the units of the file: MRD does not fix them).

Header -> ScanInfo: systemFieldStrength_T, H1resonanceFrequency_Hz (the system frequency of the
measured nucleus), sequenceParameters TE/TR (ms) and flipAngle_deg, reconSpace FOV (mm) and
matrix, patientPosition, protocolName, coilLabel; nucleus, reference voltage and software
version from userParameters (nucleus, refVoltage_V, softwareVersion); slice position, normal and
in-plane rotation from the first image acquisition's position / slice_dir / read_dir (float32).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .scan import Scan, ScanInfo


def _ismrmrd():
    try:
        import ismrmrd
        import ismrmrd.xsd  # noqa: F401
    except ImportError:  # pragma: no cover - optional dependency
        raise InputError("reading MRD files needs the 'ismrmrd' package (pip install ismrmrd)") from None
    return ismrmrd


def read_mrd(path: str | os.PathLike, allow_nucleus: bool = True) -> tuple[Scan, np.ndarray | None]:
    """Read an MRD/ISMRMRD .h5 file.

    Returns (Scan with data complex64 (nrep, necho, ncoil, nreadout, nsample), noise (ncoil, nnoise)
    or None; trajectory float32 (nreadout, nsample, ndim) or None). allow_nucleus=False refuses a
    file whose userParameters name a nucleus other than 23Na.
    """
    from .twix import SUPPORTED_NUCLEUS, _mdh_dtypes, _readout_keys

    ismrmrd = _ismrmrd()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"MRD file not found: {path}")
    try:
        dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
        hdr = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
        n = dset.number_of_acquisitions()
        acqs = [dset.read_acquisition(i) for i in range(n)]
        dset.close()
    except InputError:
        raise
    except Exception as exc:  # h5py/ismrmrd raise many kinds for a damaged file
        raise InputError(f"cannot read MRD file {path}: {type(exc).__name__}: {exc}") from None
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    img = [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    if not img:
        raise InputError(f"MRD file has no image acquisitions ({len(acqs)} acquisitions): {path}")
    shapes = {a.data.shape for a in img}
    if len(shapes) != 1:
        raise InputError(f"MRD image acquisitions differ in shape: {sorted(shapes)}")
    nch, ns = shapes.pop()
    cnt = np.zeros(len(img), dtype=_mdh_dtypes()[0].fields["Counter"][0])
    for i, a in enumerate(img):
        ix = a.idx
        cnt[i] = (ix.kspace_encode_step_1, ix.average, ix.slice, ix.kspace_encode_step_2, ix.contrast,
                  ix.phase, ix.repetition, ix.set, ix.segment, 0, 0, 0, 0, 0)
    rep, eco, rdo, nrep, _ = _readout_keys(cnt)
    necho, nro = int(eco.max()) + 1, int(rdo.max()) + 1
    data = np.zeros((nrep, necho, nch, nro, ns), np.complex64)
    ndim = img[0].trajectory_dimensions
    traj = np.zeros((nro, ns, ndim), np.float32) if ndim else None
    for i, a in enumerate(img):
        data[rep[i], eco[i], :, rdo[i], :] = a.data
        if traj is not None and rep[i] == 0 and eco[i] == 0:
            traj[rdo[i]] = a.traj
    nz = np.concatenate([a.data for a in noise], axis=1).astype(np.complex64) if noise else None
    info = _info(hdr, img[0], nch)
    if info.nucleus != SUPPORTED_NUCLEUS and not allow_nucleus:
        raise InputError(f"scan nucleus is {info.nucleus!r}, expected {SUPPORTED_NUCLEUS!r}: {path}")
    return Scan(data=data, info=info, noise=nz), traj


def _user(hdr, kind: str) -> dict:
    up = hdr.userParameters
    if up is None:
        return {}
    items = getattr(up, {"str": "userParameterString", "double": "userParameterDouble"}[kind])
    return {p.name: p.value for p in items}


def _info(hdr, acq, nch: int) -> ScanInfo:
    from .geometry import prs_vectors

    sp = hdr.sequenceParameters
    enc = hdr.encoding[0]
    space = enc.reconSpace or enc.encodedSpace
    asi = hdr.acquisitionSystemInformation
    us, ud = _user(hdr, "str"), _user(hdr, "double")
    normal = tuple(float(v) for v in acq.slice_dir)
    rot = 0.0
    if any(normal):
        p0, r0, _ = prs_vectors(normal, 0.0)
        r = np.asarray(acq.read_dir, dtype=np.float64)
        rot = math.atan2(float(r @ p0), float(r @ r0))
    pp = hdr.measurementInformation.patientPosition if hdr.measurementInformation else None
    coils = sorted(asi.coilLabel, key=lambda c: c.coilNumber) if asi is not None else []
    return ScanInfo(
        nucleus=us.get("nucleus", "1H"),
        b0_T=float(asi.systemFieldStrength_T) if asi is not None and asi.systemFieldStrength_T else 0.0,
        larmor_hz=float(hdr.experimentalConditions.H1resonanceFrequency_Hz),
        te_ms=[float(t) for t in (sp.TE if sp is not None and sp.TE else [0.0])],
        tr_ms=float(sp.TR[0]) if sp is not None and sp.TR else 0.0,
        flip_deg=float(sp.flipAngle_deg[0]) if sp is not None and sp.flipAngle_deg else 0.0,
        dwell_us=float(acq.sample_time_us),
        fov_mm=(float(space.fieldOfView_mm.x), float(space.fieldOfView_mm.y), float(space.fieldOfView_mm.z)),
        matrix=(int(space.matrixSize.x), int(space.matrixSize.y), int(space.matrixSize.z)),
        ref_voltage=ud.get("refVoltage_V"),
        patient_position=getattr(pp, "value", pp) or "HFS",
        slice_position_mm=tuple(float(v) for v in acq.position),
        slice_normal=normal if any(normal) else (0.0, 0.0, 1.0),
        inplane_rot_rad=rot,
        coil_names=[c.coilName for c in coils][:nch] if coils else [],
        software_version=us.get("softwareVersion", ""),
        protocol_name=(hdr.measurementInformation.protocolName or "") if hdr.measurementInformation else "",
    )


def write_mrd(path: str | os.PathLike, scan: Scan, traj: np.ndarray | None = None) -> Path:
    """Write `scan` (and optionally traj (nreadout, nsample, ndim)) as an MRD .h5 file.

    Readout r -> kspace_encode_step_1 = r; echo -> contrast; repetition -> repetition. Meant for
    tests and simulation; overwrites an existing file.
    """
    ismrmrd = _ismrmrd()
    from ismrmrd import xsd

    from .atomic import atomic_path
    from .geometry import prs_vectors

    info = scan.info
    nrep, necho, nch, nro, ns = scan.data.shape
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=info.matrix[0], y=info.matrix[1], z=info.matrix[2]),
        fieldOfView_mm=xsd.fieldOfViewMm(x=info.fov_mm[0], y=info.fov_mm[1], z=info.fov_mm[2]))
    lim = xsd.encodingLimitsType(kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=nro - 1, center=0))
    ups = xsd.userParametersType()
    ups.userParameterString.append(xsd.userParameterStringType(name="nucleus", value=info.nucleus))
    ups.userParameterString.append(xsd.userParameterStringType(name="softwareVersion", value=info.software_version))
    if info.ref_voltage is not None:
        ups.userParameterDouble.append(xsd.userParameterDoubleType(name="refVoltage_V", value=info.ref_voltage))
    h = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(round(info.larmor_hz))),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemFieldStrength_T=info.b0_T, receiverChannels=nch,
            coilLabel=[xsd.coilLabelType(coilNumber=i, coilName=n) for i, n in enumerate(info.coil_names)]),
        sequenceParameters=xsd.sequenceParametersType(TR=[info.tr_ms], TE=list(info.te_ms),
                                                      flipAngle_deg=[info.flip_deg]),
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType(info.patient_position), protocolName=info.protocol_name),
        encoding=[xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=lim,
                                   trajectory=xsd.trajectoryType("other" if traj is not None else "cartesian"))],
        userParameters=ups,
    )
    p, r, s = prs_vectors(info.slice_normal, info.inplane_rot_rad)
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp:
        tmp.unlink()
        dset = ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True)
        dset.write_xml_header(ismrmrd.xsd.ToXML(h))
        if scan.noise is not None:
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(scan.noise, np.complex64))
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            acq.sample_time_us = info.dwell_us
            dset.append_acquisition(acq)
        for rep in range(nrep):
            for ro in range(nro):
                for e in range(necho):
                    t = None if traj is None else np.ascontiguousarray(traj[ro], np.float32)
                    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(scan.data[rep, e, :, ro, :]), t)
                    acq.idx.kspace_encode_step_1 = ro
                    acq.idx.contrast = e
                    acq.idx.repetition = rep
                    acq.sample_time_us = info.dwell_us
                    acq.position[:] = info.slice_position_mm
                    acq.read_dir[:] = r
                    acq.phase_dir[:] = p
                    acq.slice_dir[:] = s
                    dset.append_acquisition(acq)
        dset.close()
    return path
