"""ISMRMRD / MRD (.h5) input through the `ismrmrd` package (and a writer, for tests and simulation).

Acquisition indices map onto the twix counters and use the same readout mapping as
`na23recon.io.twix` (module docstring there): kspace_encode_step_1 -> Lin, kspace_encode_step_2
-> Par, contrast -> echo, repetition -> repetition, average kept apart on the repetition axis,
slice/phase/set/segment into the readout key. Acquisitions flagged ACQ_IS_NOISE_MEASUREMENT
become `Scan.noise`. The trajectory, when the acquisitions carry one, is returned as stored
(float32 (nreadout, nsample, ndim), the units of the file: MRD does not fix them).

Header -> `Acquisition`: systemFieldStrength_T, H1resonanceFrequency_Hz (the system frequency of
the measured nucleus), sequenceParameters TE/TR (ms) and flipAngle_deg, the first image
acquisition's sample_time_us (dwell), coilLabel, protocolName; nucleus, reference voltage and
software version from userParameters (nucleus, refVoltage_V, softwareVersion); without a nucleus
parameter the nucleus is the one whose gyromagnetic ratio is resonance frequency / field strength
within 1% (`nucleus_from_frequency`: a 23Na scan is never taken for 1H). A value the file
does not give is None (unknown); the acquisition header's sample_time_us of 0 is ISMRMRD's unset
value and reads as unknown too. Values outside what a scanner can do raise InputError
(`Acquisition` range-checks them).

Header -> `Geometry`: reconSpace (else encodedSpace) FOV (mm) and matrix, patientPosition, and
the volume position, normal and in-plane rotation from the first image acquisition's position /
slice_dir / read_dir (float32). Without a slice direction (all zero, ISMRMRD's unset value) or a
patient position the geometry is None.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..core.acquisition import Acquisition
from ..core.atomic import atomic_path
from ..core.geometry import Geometry, inplane_rotation, prs_vectors
from ..core.scan import Scan
from ..errors import InputError
from .twix.layout import mdh_dtypes, readout_keys
from .twix.read import SUPPORTED_NUCLEUS

log = logging.getLogger(__name__)


def _ismrmrd():
    try:
        import ismrmrd
        import ismrmrd.xsd  # noqa: F401
    except ImportError:  # pragma: no cover - optional dependency
        raise InputError("reading MRD files needs the 'ismrmrd' package (pip install ismrmrd)") from None
    return ismrmrd


#: gamma / 2 pi in MHz/T of the nuclei a scanner may be tuned to (Harris et al., Pure Appl. Chem. 2001).
GAMMA_BAR_MHZ_T = {"1H": 42.577, "2H": 6.536, "7Li": 16.546, "13C": 10.708, "17O": -5.772, "19F": 40.052,
                   "23Na": 11.262, "31P": 17.235, "35Cl": 4.172, "39K": 1.989, "129Xe": -11.777, "3He": -32.434}


def nucleus_from_frequency(larmor_hz: float | None, b0_T: float | None) -> str | None:
    """The nucleus whose |gamma| / 2 pi matches larmor / B0 within 1%, else None."""
    if not larmor_hz or not b0_T:
        return None
    ratio = abs(float(larmor_hz) / float(b0_T)) / 1e6
    name, g = min(GAMMA_BAR_MHZ_T.items(), key=lambda kv: abs(abs(kv[1]) - ratio))
    return name if abs(abs(g) - ratio) <= 0.01 * abs(g) else None


def is_mrd(path: str | os.PathLike) -> bool:
    """True for an HDF5 file (by its signature), whatever it holds; `read_mrd` checks the layout."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _check_layout(path: Path) -> None:
    """InputError (one line) unless the HDF5 file has ISMRMRD's /dataset/xml and /dataset/data."""
    _ismrmrd()  # h5py comes with it
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ds = f.get("dataset")
            ok = isinstance(ds, h5py.Group) and "xml" in ds and "data" in ds
            top = sorted(f.keys())[:8]
    except Exception as exc:
        raise InputError(f"cannot read MRD file {path}: {type(exc).__name__}: {exc}") from None
    if not ok:
        raise InputError(f"{path.name} is an HDF5 file but not ISMRMRD/MRD (no /dataset/xml and /dataset/data; "
                         f"top-level groups {top})")


def read_mrd(path: str | os.PathLike, allow_nucleus: bool = True) -> tuple[Scan, np.ndarray | None]:
    """Read an MRD/ISMRMRD .h5 file.

    Returns (Scan with data complex64 (nrep, necho, ncoil, nreadout, nsample), noise (ncoil, nnoise)
    or None; trajectory float32 (nreadout, nsample, ndim) or None). allow_nucleus=False refuses a
    file whose userParameters name a nucleus other than 23Na.
    """
    ismrmrd = _ismrmrd()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"MRD file not found: {path}")
    if is_mrd(path):
        _check_layout(path)
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
    cnt = np.zeros(len(img), dtype=mdh_dtypes()[0].fields["Counter"][0])
    for i, a in enumerate(img):
        ix = a.idx
        cnt[i] = (ix.kspace_encode_step_1, ix.average, ix.slice, ix.kspace_encode_step_2, ix.contrast,
                  ix.phase, ix.repetition, ix.set, ix.segment, 0, 0, 0, 0, 0)
    rep, eco, rdo, nrep, _ = readout_keys(cnt)
    necho, nro = int(eco.max()) + 1, int(rdo.max()) + 1
    data = np.zeros((nrep, necho, nch, nro, ns), np.complex64)
    ndim = img[0].trajectory_dimensions
    traj = np.zeros((nro, ns, ndim), np.float32) if ndim else None
    for i, a in enumerate(img):
        data[rep[i], eco[i], :, rdo[i], :] = a.data
        if traj is not None and rep[i] == 0 and eco[i] == 0:
            traj[rdo[i]] = a.traj
    nz = np.concatenate([a.data for a in noise], axis=1).astype(np.complex64) if noise else None
    try:
        acq = _acquisition(hdr, img[0], nch)
    except InputError as exc:
        raise InputError(f"MRD header of {path}: {exc}") from None
    if acq.nucleus != SUPPORTED_NUCLEUS and not allow_nucleus:
        raise InputError(f"scan nucleus is {acq.nucleus or 'not given'!r}, expected {SUPPORTED_NUCLEUS!r}: {path}")
    return Scan(data=data, acquisition=acq, noise=nz), traj


def _user(hdr, kind: str) -> dict:
    up = hdr.userParameters
    if up is None:
        return {}
    items = getattr(up, {"str": "userParameterString", "double": "userParameterDouble"}[kind])
    return {p.name: p.value for p in items}


def _first(values) -> float | None:
    return float(values[0]) if values else None


def _acquisition(hdr, acq, nch: int) -> Acquisition:
    """The `Acquisition` of an MRD header and its first image acquisition (module docstring)."""
    sp = hdr.sequenceParameters
    asi = hdr.acquisitionSystemInformation
    exp = hdr.experimentalConditions
    mi = hdr.measurementInformation
    us, ud = _user(hdr, "str"), _user(hdr, "double")
    coils = sorted(asi.coilLabel, key=lambda c: c.coilNumber) if asi is not None else []
    dwell = float(acq.sample_time_us)
    b0 = None if asi is None or asi.systemFieldStrength_T is None else float(asi.systemFieldStrength_T)
    larmor = None if exp is None or exp.H1resonanceFrequency_Hz is None else float(exp.H1resonanceFrequency_Hz)
    nucleus = us.get("nucleus") or nucleus_from_frequency(larmor, b0)
    if not us.get("nucleus"):
        log.info("MRD header names no nucleus: %s from %s Hz at %s T", nucleus, larmor, b0)
    return Acquisition(
        nucleus=nucleus,
        b0_T=b0,
        larmor_hz=larmor,
        te_ms=tuple(float(t) for t in sp.TE) if sp is not None and sp.TE else None,
        tr_ms=_first(sp.TR) if sp is not None else None,
        flip_deg=_first(sp.flipAngle_deg) if sp is not None else None,
        dwell_us=dwell if dwell != 0 else None,
        geometry=_geometry(hdr, acq),
        ref_voltage=ud.get("refVoltage_V"),
        coil_names=tuple(c.coilName for c in coils)[:nch],
        software_version=us.get("softwareVersion") or None,
        protocol_name=(mi.protocolName or None) if mi is not None else None,
    )


def _geometry(hdr, acq) -> Geometry | None:
    enc = hdr.encoding[0]
    space = enc.reconSpace or enc.encodedSpace
    mi = hdr.measurementInformation
    pp = mi.patientPosition if mi is not None else None
    pp = getattr(pp, "value", pp)
    normal = tuple(float(v) for v in acq.slice_dir)
    if space is None or not any(normal) or not pp:
        log.debug("MRD file lacks the encoding space, slice direction or patient position: geometry unknown")
        return None
    ph = np.asarray(acq.phase_dir, dtype=np.float64)
    rot = inplane_rotation(normal, ph) if ph.any() else 0.0
    fov, mat = space.fieldOfView_mm, space.matrixSize
    return Geometry(fov_mm=(float(fov.x), float(fov.y), float(fov.z)), matrix=(int(mat.x), int(mat.y), int(mat.z)),
                    position_mm=tuple(float(v) for v in acq.position), normal=normal, inplane_rot_rad=rot,
                    patient_position=pp)


def write_mrd(path: str | os.PathLike, scan: Scan, traj: np.ndarray | None = None) -> Path:
    """Write `scan` (and optionally traj (nreadout, nsample, ndim)) as an MRD .h5 file.

    Readout r -> kspace_encode_step_1 = r; echo -> contrast; repetition -> repetition. Meant for
    tests and simulation; overwrites an existing file. MRD needs the system frequency and the
    encoding space, so the acquisition must give larmor_hz and a geometry (else InputError); other
    unknown values are left out (dwell: sample_time_us 0, ISMRMRD's unset value).
    """
    ismrmrd = _ismrmrd()
    from ismrmrd import xsd

    protocol = scan.acquisition
    protocol.require("larmor_hz", "geometry", what="an MRD file")
    g = protocol.geometry
    nrep, necho, nch, nro, ns = scan.data.shape
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=g.matrix[0], y=g.matrix[1], z=g.matrix[2]),
        fieldOfView_mm=xsd.fieldOfViewMm(x=g.fov_mm[0], y=g.fov_mm[1], z=g.fov_mm[2]))
    lim = xsd.encodingLimitsType(kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=nro - 1, center=0))
    ups = xsd.userParametersType()
    for name, value in (("nucleus", protocol.nucleus), ("softwareVersion", protocol.software_version)):
        if value is not None:
            ups.userParameterString.append(xsd.userParameterStringType(name=name, value=value))
    if protocol.ref_voltage is not None:
        ups.userParameterDouble.append(xsd.userParameterDoubleType(name="refVoltage_V", value=protocol.ref_voltage))
    h = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(round(protocol.larmor_hz))),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemFieldStrength_T=protocol.b0_T, receiverChannels=nch,
            coilLabel=[xsd.coilLabelType(coilNumber=i, coilName=n) for i, n in enumerate(protocol.coil_names)]),
        sequenceParameters=xsd.sequenceParametersType(TR=_listed(protocol.tr_ms), TE=list(protocol.te_ms or ()),
                                                      flipAngle_deg=_listed(protocol.flip_deg)),
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType(g.patient_position), protocolName=protocol.protocol_name),
        encoding=[xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=lim,
                                   trajectory=xsd.trajectoryType("other" if traj is not None else "cartesian"))],
        userParameters=ups,
    )
    p, r, s = prs_vectors(g.normal, g.inplane_rot_rad)
    dwell = 0.0 if protocol.dwell_us is None else protocol.dwell_us
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp:
        tmp.unlink()
        dset = ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True)
        dset.write_xml_header(ismrmrd.xsd.ToXML(h))
        if scan.noise is not None:
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(scan.noise, np.complex64))
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            acq.sample_time_us = dwell
            dset.append_acquisition(acq)
        for rep in range(nrep):
            for ro in range(nro):
                for e in range(necho):
                    t = None if traj is None else np.ascontiguousarray(traj[ro], np.float32)
                    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(scan.data[rep, e, :, ro, :]), t)
                    acq.idx.kspace_encode_step_1 = ro
                    acq.idx.contrast = e
                    acq.idx.repetition = rep
                    acq.sample_time_us = dwell
                    acq.position[:] = g.position_mm
                    acq.read_dir[:] = r
                    acq.phase_dir[:] = p
                    acq.slice_dir[:] = s
                    dset.append_acquisition(acq)
        dset.close()
    return path


def _listed(value) -> list:
    return [] if value is None else [value]
