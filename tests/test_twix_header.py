"""Header values -> Acquisition: impossible values refused with one InputError line, absent values
unknown (None, never 0). Files are written by `write_scan`, then their header text is patched."""

import re

import numpy as np
import pytest

from na23recon.core import Acquisition, Geometry, Scan
from na23recon.errors import InputError
from na23recon.io.twix import acquisition_from_header, describe, format_description, read_header, read_scan, write_scan


def _write(tmp_path):
    geo = Geometry(fov_mm=(220.0, 220.0, 200.0), matrix=(32, 32, 32), position_mm=(1.0, -2.0, 3.0),
                   normal=(0.0, 0.0, 1.0), patient_position="HFS")
    acq = Acquisition(nucleus="23Na", b0_T=2.89, larmor_hz=32.6e6, te_ms=(0.3,), tr_ms=100.0, flip_deg=80.0,
                      dwell_us=10.0, geometry=geo, coil_names=("c0",), protocol_name="na23")
    data = np.ones((1, 1, 1, 4, 8), np.complex64)
    return write_scan(tmp_path / "s.dat", Scan(data, acq))


def _patch(path, key: str, value: str | None, out=None):
    """Set ASCCONV `key` to `value` (None: rename the key so the header lacks it), keeping the
    header's byte length: the line is rewritten to its old width."""
    raw = path.read_bytes()
    pat = re.compile(rb"^" + re.escape(key.encode()) + rb" +=[^\n]*$", re.M)
    m = pat.search(raw)
    assert m, key
    old = m.group(0)
    new = (b"x" + key.encode()[1:] + b" = 0") if value is None else (key + " = " + value).encode()
    assert len(new) <= len(old), (new, old)
    out = out or path.with_name("patched.dat")
    out.write_bytes(raw[: m.start()] + new.ljust(len(old)) + raw[m.end():])
    return out


def _drop_xprot(path, name: str):
    """Rename an XProtocol parameter (same length) so the header lacks it."""
    raw = path.read_bytes()
    tag = f'."{name}">'.encode()
    assert tag in raw, name
    path.write_bytes(raw.replace(tag, f'."{"x" + name[1:]}">'.encode()))
    return path


IMPOSSIBLE = [
    ("sSliceArray.asSlice[0].dThickness", "1e-30", "dThickness"),
    ("sSliceArray.asSlice[0].dReadoutFOV", "0", "dReadoutFOV"),
    ("alTE[0]", "1e308", "TE"),
    ("alTE[0]", "-300", "TE"),
    ("adFlipAngleDegree[0]", "1e11", "flip_deg"),
    ("sRXSPEC.alDwellTime[0]", "0", "dwell_us"),
    ("alTR[0]", "-5", "tr_ms"),
    ("alTR[0]", "1e400", "alTR"),
    ("alTR[0]", "nan", "alTR"),
    ("sTXSPEC.asNucleusInfo[0].lFrequency", "inf", "lFrequency"),
    ("sKSpace.lBaseResolution", "inf", "lBaseResolution"),
    ("sKSpace.lBaseResolution", "1e400", "lBaseResolution"),
    ("sKSpace.lBaseResolution", "1e300", "lBaseResolution"),
    ("sKSpace.lBaseResolution", "0", "lBaseResolution"),
    ("sKSpace.lPartitions", "2.5", "lPartitions"),
    ("lContrasts", "1e400", "lContrasts"),
    ("lContrasts", "0", "lContrasts"),
    ("sKSpace.ucDimension", "0xZZ", "ucDimension"),
    ("sSliceArray.asSlice[0].sPosition.dSag", "1e9", "position"),
    ("sSliceArray.asSlice[0].sNormal.dTra", "0", "normal"),
]


@pytest.mark.parametrize("key,value,word", IMPOSSIBLE)
def test_impossible_header_values_refused(tmp_path, key, value, word):
    p = _patch(_write(tmp_path), key, value)
    with pytest.raises(InputError, match=re.escape(word)) as e:
        read_scan(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("twix header")
    # `na23recon info` still summarises the file and names the problem
    d = describe(p)
    assert "problem" in d["measurements"][-1] and d["measurements"][-1]["dims"]["nreadout"] == 4
    assert word in format_description(d)


def test_unknown_patient_position_refused(tmp_path):
    p = _write(tmp_path)
    p.write_bytes(p.read_bytes().replace(b'"HFS"', b'"XYZ"'))
    with pytest.raises(InputError, match=r"^twix header tPatientPosition: unknown patient position 'XYZ'"):
        read_scan(p)


def test_unknown_tr_flip_b0_read_as_none(tmp_path):
    p = _write(tmp_path)
    for key in ("alTR[0]", "adFlipAngleDegree[0]", "sProtConsistencyInfo.flNominalB0"):
        p = _patch(p, key, None, out=p)
    _drop_xprot(p, "flMagneticFieldStrength")
    acq = read_scan(p).acquisition
    assert acq.tr_ms is None and acq.flip_deg is None and acq.b0_T is None
    assert acq.te_ms == (0.3,) and acq.dwell_us == 10.0 and acq.geometry is not None
    assert acq.sidecar()["tr_ms"] is None
    text = format_description(describe(p))
    assert "TR ? ms, flip ? deg" in text and "at ? T" in text


def test_missing_fov_or_patient_position_leaves_geometry_unknown(tmp_path):
    p = _patch(_write(tmp_path), "sSliceArray.asSlice[0].dPhaseFOV", None)
    acq = read_scan(p).acquisition
    assert acq.geometry is None and acq.fov_mm is None and acq.tr_ms == 100.0
    assert "FOV ? mm, matrix ?" in format_description(describe(p))
    q = _drop_xprot(_write(tmp_path), "tPatientPosition")
    _drop_xprot(q, "PatientPosition")
    assert read_scan(q).acquisition.geometry is None


def test_zero_components_left_out_by_siemens_read_as_zero(tmp_path):
    # ASCCONV omits zero values: an absent position component or in-plane rotation is 0
    p = _write(tmp_path)
    for key in ("sSliceArray.asSlice[0].sPosition.dSag", "sSliceArray.asSlice[0].sNormal.dSag",
                "sSliceArray.asSlice[0].dInPlaneRot"):
        p = _patch(p, key, None, out=p)
    g = read_scan(p).acquisition.geometry
    assert g.position_mm == (0.0, -2.0, 3.0) and g.normal == (0.0, 0.0, 1.0) and g.inplane_rot_rad == 0.0


def test_acquisition_from_header_is_public_and_exact(tmp_path):
    p = _write(tmp_path)
    acq = acquisition_from_header(read_header(p))
    assert acq == read_scan(p).acquisition
    assert acq.geometry.affine().shape == (4, 4)
