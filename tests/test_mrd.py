"""MRD (.h5) input: round trip through the ismrmrd package."""

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

from na23recon.errors import InputError  # noqa: E402
from na23recon.io.mrd import read_mrd, write_mrd  # noqa: E402
from na23recon.io.scan import Scan, ScanInfo  # noqa: E402


def _scan():
    rng = np.random.default_rng(3)
    shape = (2, 2, 3, 7, 12)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    info = ScanInfo(nucleus="23Na", b0_T=7.0, larmor_hz=78.8e6, te_ms=[0.2, 4.5], tr_ms=50.0, flip_deg=70.0,
                    dwell_us=10.0, fov_mm=(220.0, 220.0, 220.0), matrix=(48, 48, 48), ref_voltage=250.0,
                    patient_position="HFS", slice_position_mm=(1.0, -2.0, 3.0), slice_normal=(0.0, 0.0, 1.0),
                    inplane_rot_rad=0.25, coil_names=["a", "b", "c"], software_version="sim", protocol_name="na23")
    return Scan(data, info, noise=rng.standard_normal((3, 50)).astype(np.complex64))


def test_mrd_round_trip_with_trajectory(tmp_path):
    scan = _scan()
    traj = np.random.default_rng(0).uniform(-24, 24, (7, 12, 3)).astype(np.float32)
    back, k = read_mrd(write_mrd(tmp_path / "s.h5", scan, traj))
    assert np.array_equal(back.data, scan.data)
    assert np.array_equal(back.noise, scan.noise)
    assert np.array_equal(k, traj)
    a, b = back.info.to_dict(), scan.info.to_dict()
    for key in ("slice_position_mm", "slice_normal", "inplane_rot_rad"):
        np.testing.assert_allclose(a.pop(key), b.pop(key), atol=1e-6)
    assert a == b


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
    scan.info.nucleus = "1H"
    with pytest.raises(InputError, match="nucleus"):
        read_mrd(write_mrd(tmp_path / "h.h5", scan), allow_nucleus=False)
