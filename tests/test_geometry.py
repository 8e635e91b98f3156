"""Geometry.affine: centre, voxel size, orthogonality, Siemens orientation rules, vs twixtools."""

import numpy as np
import pytest

from na23recon.core import Acquisition, Geometry, Scan
from na23recon.core.geometry import CORONAL, SAGITTAL, TRANSVERSE, main_orientation, pcs_to_device, prs_vectors
from na23recon.errors import InputError

LPS2RAS = np.diag([-1.0, -1.0, 1.0])


def _geo(**kw):
    base = dict(fov_mm=(240.0, 200.0, 180.0), matrix=(64, 50, 36), position_mm=(10.0, -20.0, 30.0))
    base.update(kw)
    return Geometry(**base)


def test_centre_and_voxel_size():
    geo = _geo()
    a = geo.affine()
    centre = a @ np.array([32, 25, 18, 1.0])
    np.testing.assert_allclose(centre[:3], LPS2RAS @ np.array([10.0, -20.0, 30.0]))
    np.testing.assert_allclose(np.linalg.norm(a[:3, :3], axis=0), [240 / 64, 200 / 50, 180 / 36])
    a2 = geo.affine(48)  # recon matrix other than the protocol's
    np.testing.assert_allclose(np.linalg.norm(a2[:3, :3], axis=0), [5.0, 200 / 48, 3.75])


@pytest.mark.parametrize("normal,rot", [((0, 0, 1), 0.0), ((0.3, 0.2, 0.93), 0.4), ((0.9, 0.1, 0.2), -1.0),
                                        ((0.1, -0.8, 0.3), 2.5), ((-1, 0, 0), 0.0)])
def test_orthogonal_and_normal_is_slice_axis(normal, rot):
    a = _geo(normal=normal, inplane_rot_rad=rot).affine()
    u = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-12)
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    np.testing.assert_allclose(u[:, 2], LPS2RAS @ n, atol=1e-12)


def test_main_orientation_rules():
    assert main_orientation((0, 0, 1)) == TRANSVERSE
    assert main_orientation((0.1, 0.9, 0.2)) == CORONAL
    assert main_orientation((-0.9, 0.1, 0.2)) == SAGITTAL
    assert main_orientation((1, 1, 0)) == CORONAL      # Sag == Cor > Tra
    assert main_orientation((1, 0, 1)) == TRANSVERSE   # Sag == Tra > Cor
    assert main_orientation((0, 1, 1)) == TRANSVERSE   # Cor == Tra > Sag


def test_siemens_default_directions():
    # transverse: phase A>>P (+Cor), read along +Sag; sagittal: read along -Tra; coronal: phase +Sag
    p, r, _ = prs_vectors((0, 0, 1))
    np.testing.assert_allclose(p, [0, 1, 0]); np.testing.assert_allclose(r, [1, 0, 0])
    p, r, _ = prs_vectors((1, 0, 0))
    np.testing.assert_allclose(p, [0, 1, 0]); np.testing.assert_allclose(r, [0, 0, -1])
    p, r, _ = prs_vectors((0, 1, 0))
    np.testing.assert_allclose(p, [1, 0, 0]); np.testing.assert_allclose(r, [0, 0, 1])
    # in-plane rotation by +90 deg turns phase onto -read
    p2, r2, _ = prs_vectors((0, 0, 1), np.pi / 2)
    np.testing.assert_allclose(p2, [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r2, [0, 1, 0], atol=1e-12)


def test_patient_position_does_not_move_patient_coordinates():
    a = [_geo(patient_position=pp, normal=(0.2, 0.3, 0.9)).affine() for pp in ("HFS", "HFP", "FFS", "FFP")]
    for b in a[1:]:
        np.testing.assert_allclose(b, a[0])
    with pytest.raises(InputError, match="patient position"):
        _geo(patient_position="XYZ")


def test_pcs_to_device_matches_twixtools():
    geometry = pytest.importorskip("twixtools.geometry")
    for pp, m in geometry.pcs_transformations.items():
        np.testing.assert_array_equal(pcs_to_device(pp), m)


def _quat_to_rotmat(q):
    from twixtools.geometry import quat_to_rotmat
    return quat_to_rotmat(*q)


@pytest.mark.parametrize("normal,rot", [((0, 0, 1), 0.0), ((6.6e-9, 0.0383878015, 0.9992629886), 0.0),
                                        ((0.3, 0.2, 0.93), 0.4), ((0.9, 0.1, 0.2), -1.0), ((0.1, -0.8, 0.3), 2.5)])
def test_quaternion_agrees_with_twixtools(normal, rot):
    pytest.importorskip("twixtools")
    m = _quat_to_rotmat(_geo(normal=normal, inplane_rot_rad=rot).quaternion())
    m[:, :2] *= -1  # twixtools.geometry.prs2sct_mdb: (phase, read, slice) after its flip
    p, r, s = prs_vectors(normal, rot)
    np.testing.assert_allclose(m, np.stack([-p, r, s], axis=1), atol=1e-12)


def test_written_file_geometry_matches_twixtools(tmp_path):
    twixtools = pytest.importorskip("twixtools")
    from na23recon.io.twix import read_scan, write_scan

    acq = Acquisition(nucleus="23Na", geometry=_geo(normal=(0.3, 0.2, 0.93), inplane_rot_rad=0.4), coil_names=["a"])
    p = write_scan(tmp_path / "g.dat", Scan(np.ones((1, 1, 1, 3, 4), np.complex64), acq))
    geo = twixtools.read_twix(str(p), verbose=False)[-1]["geometry"][0]
    back = read_scan(p).acquisition.geometry
    assert back == acq.geometry
    r = back.affine()[:3, :3]
    u = LPS2RAS @ (r / np.linalg.norm(r, axis=0))  # image axes (read, phase, slice) in LPS
    prs = geo.prs_to_pcs()  # twixtools' columns: (-phase, read, slice)
    np.testing.assert_allclose(u[:, 0], prs[:, 1], atol=1e-6)
    np.testing.assert_allclose(u[:, 1], -prs[:, 0], atol=1e-6)
    np.testing.assert_allclose(u[:, 2], prs[:, 2], atol=1e-6)
    np.testing.assert_allclose(geo.offset, back.position_mm)


def test_bad_geometry_refused():
    with pytest.raises(InputError):
        _geo(normal=(0, 0, 0))
    with pytest.raises(InputError):
        _geo(fov_mm=(0, 1, 1))
