"""MRD (.h5) input: round trip through the ismrmrd package."""

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

from na23recon.core import Acquisition, Geometry, Scan  # noqa: E402
from na23recon.errors import InputError  # noqa: E402
from na23recon.io.mrd import read_mrd, write_mrd  # noqa: E402


def _scan():
    rng = np.random.default_rng(3)
    shape = (2, 2, 3, 7, 12)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    geo = Geometry(fov_mm=(220.0, 220.0, 220.0), matrix=(48, 48, 48), position_mm=(1.0, -2.0, 3.0),
                   normal=(0.0, 0.0, 1.0), inplane_rot_rad=0.25, patient_position="HFS")
    acq = Acquisition(nucleus="23Na", b0_T=7.0, larmor_hz=78.8e6, te_ms=(0.2, 4.5), tr_ms=50.0, flip_deg=70.0,
                      dwell_us=10.0, geometry=geo, ref_voltage=250.0, coil_names=("a", "b", "c"),
                      software_version="sim", protocol_name="na23")
    return Scan(data, acq, noise=rng.standard_normal((3, 50)).astype(np.complex64))


def test_mrd_round_trip_with_trajectory(tmp_path):
    scan = _scan()
    traj = np.random.default_rng(0).uniform(-24, 24, (7, 12, 3)).astype(np.float32)
    back, k = read_mrd(write_mrd(tmp_path / "s.h5", scan, traj))
    assert np.array_equal(back.data, scan.data)
    assert np.array_equal(back.noise, scan.noise)
    assert np.array_equal(k, traj)
    a, b = back.acquisition.to_dict(), scan.acquisition.to_dict()
    ga, gb = a.pop("geometry"), b.pop("geometry")
    for key in ("position_mm", "normal", "inplane_rot_rad"):  # float32 in the acquisition headers
        np.testing.assert_allclose(ga.pop(key), gb.pop(key), atol=1e-6)
    assert a == b and ga == gb


def test_mrd_without_trajectory(tmp_path):
    scan = _scan()
    scan.noise = None
    back, k = read_mrd(write_mrd(tmp_path / "s.h5", scan))
    assert k is None and back.noise is None
    assert np.array_equal(back.data, scan.data)


def test_mrd_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_mrd(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="cannot read MRD"):
        read_mrd(bad)
    scan = _scan()
    scan.acquisition = scan.acquisition.with_(nucleus="1H")
    with pytest.raises(InputError, match="nucleus"):
        read_mrd(write_mrd(tmp_path / "h.h5", scan), allow_nucleus=False)


def test_mrd_unknown_values_read_as_none(tmp_path):
    scan = _scan()
    scan.acquisition = scan.acquisition.with_(tr_ms=None, flip_deg=None, b0_T=None, te_ms=None, dwell_us=None,
                                              nucleus=None, software_version=None)
    back, _ = read_mrd(write_mrd(tmp_path / "u.h5", scan))
    acq = back.acquisition
    assert acq.tr_ms is None and acq.flip_deg is None and acq.b0_T is None and acq.te_ms is None
    assert acq.dwell_us is None and acq.nucleus is None and acq.software_version is None
    assert acq.geometry is not None and acq.larmor_hz == 78.8e6
    with pytest.raises(InputError, match="nucleus"):
        read_mrd(tmp_path / "u.h5", allow_nucleus=False)


def test_mrd_needs_frequency_and_geometry_to_write(tmp_path):
    scan = _scan()
    scan.acquisition = scan.acquisition.with_(geometry=None)
    with pytest.raises(InputError, match="geometry"):
        write_mrd(tmp_path / "g.h5", scan)


@pytest.mark.parametrize("old,new,word", [("<TR>50.0</TR>", "<TR>-5</TR>", "tr_ms"),
                                          ("<flipAngle_deg>70.0<", "<flipAngle_deg>1e11<", "flip_deg"),
                                          ("<TE>0.2</TE>", "<TE>1e305</TE>", "TE")])
def test_mrd_impossible_header_values_refused(tmp_path, old, new, word):
    import ismrmrd

    p = write_mrd(tmp_path / "s.h5", _scan())
    dset = ismrmrd.Dataset(str(p), "dataset", create_if_needed=False)
    xml = dset.read_xml_header().decode()
    assert old in xml
    dset.write_xml_header(xml.replace(old, new).encode())
    dset.close()
    with pytest.raises(InputError, match=word) as e:
        read_mrd(p)
    assert "\n" not in str(e.value)
