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
    # in-plane rotation by +90 deg turns phase onto the unrotated read (Siemens: phase towards
    # -(normal x phase)); read stays phase x normal
    p2, r2, _ = prs_vectors((0, 0, 1), np.pi / 2)
    np.testing.assert_allclose(p2, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r2, [0, -1, 0], atol=1e-12)


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


# --- Siemens' rule, written again here from its description (fGSLClassOri + fGSLCalcPRS) -----------

def _siemens_prs(normal, psi):
    """(phase GP, read GR, slice GS) of Siemens' rule, in patient coordinates (Sag, Cor, Tra).

    Main orientation: the largest |component| of the normal; among components equal to within
    1e-6, transverse wins over coronal, coronal over sagittal. GP before rotation: transverse
    (0, n_tra, -n_cor), coronal (n_cor, -n_sag, 0), sagittal (-n_cor, n_sag, 0), normalised;
    GR = GS x GP; then GP turns about GS: GP' = cos(psi) GP - sin(psi) GR, and GR' = GS x GP'.
    The readout quaternion's rotation matrix has the columns (GP', GR', GS).
    """
    gs = np.array(normal, dtype=float)
    gs = gs / np.sqrt(gs @ gs)
    mag = np.abs(gs)
    top = [i for i in (2, 1, 0) if mag[i] >= mag.max() - 1e-6][0]  # priority Tra > Cor > Sag
    sag, cor, tra = gs
    gp = {2: np.array([0.0, tra, -cor]), 1: np.array([cor, -sag, 0.0]), 0: np.array([-cor, sag, 0.0])}[top]
    gp = gp / np.sqrt(gp @ gp)
    gr = np.array([cor * gp[2] - tra * gp[1], tra * gp[0] - sag * gp[2], sag * gp[1] - cor * gp[0]])
    gp = np.cos(psi) * gp - np.sin(psi) * gr
    gr = np.array([cor * gp[2] - tra * gp[1], tra * gp[0] - sag * gp[2], sag * gp[1] - cor * gp[0]])
    return gp, gr, gs


NORMALS = {
    "transverse": (0.0, 0.0, 1.0),
    "sagittal": (1.0, 0.0, 0.0),
    "coronal": (0.0, 1.0, 0.0),
    "transverse-dominant oblique": (-0.0488531665, -0.02787533953, 0.9984169137),  # the real 7 T scan
    "transverse-dominant double-oblique": (0.31, -0.42, 0.85),
    "sagittal-dominant double-oblique": (-0.88, 0.30, -0.37),
    "coronal-dominant double-oblique": (0.25, 0.91, -0.33),
    "sag = cor tie": (0.6, -0.6, 0.2),
}
ANGLES_DEG = (0.0, 1.0, -1.0, 90.0, -90.0, 180.0, 37.0)


@pytest.mark.parametrize("angle_deg", ANGLES_DEG)
@pytest.mark.parametrize("name", list(NORMALS))
def test_axes_follow_siemens_rule(name, angle_deg):
    """Image axes (read, phase, slice) = (-GR, GP, GS) and the quaternion = (GP, GR, GS), against
    the rule written independently above, at in-plane rotations 0, +-1, +-90, 180, 37 deg."""
    from na23recon.io.twix.slicedata import quaternion_to_matrix

    normal, psi = NORMALS[name], np.deg2rad(angle_deg)
    gp, gr, gs = _siemens_prs(normal, psi)
    geo = _geo(normal=normal, inplane_rot_rad=psi)
    np.testing.assert_allclose(geo.rotation_lps(), np.stack([-gr, gp, gs], axis=1), atol=1e-12)
    a = geo.affine()
    u = LPS2RAS @ (a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0))
    np.testing.assert_allclose(u, np.stack([-gr, gp, gs], axis=1), atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(geo.quaternion()), np.stack([gp, gr, gs], axis=1), atol=1e-12)
    assert np.linalg.det(geo.rotation_lps()) == pytest.approx(1.0)


def test_ninety_degrees_swaps_phase_and_read_without_flip():
    """A routine phase-direction swap (+90 deg) on a transverse slice: phase runs along the
    unrotated read, read along minus the unrotated phase (a rotation, no mirror)."""
    g0, g90 = _geo(), _geo(inplane_rot_rad=np.pi / 2)
    r0, r90 = g0.rotation_lps(), g90.rotation_lps()
    np.testing.assert_allclose(r90[:, 1], r0[:, 0], atol=1e-12)
    np.testing.assert_allclose(r90[:, 0], -r0[:, 1], atol=1e-12)
    np.testing.assert_allclose(r90[:, 2], r0[:, 2], atol=1e-12)


@pytest.mark.parametrize("name", list(NORMALS))
def test_fov_centre_at_slice_position(name):
    pos = (12.5, -31.0, 47.25)
    geo = _geo(normal=NORMALS[name], inplane_rot_rad=0.3, position_mm=pos, matrix=(64, 50, 1),
               fov_mm=(240.0, 200.0, 3.0))
    centre = geo.affine() @ np.array([32, 25, 0, 1.0])
    np.testing.assert_allclose(centre[:3], LPS2RAS @ np.array(pos), atol=1e-9)


@pytest.mark.parametrize("angle_deg", ANGLES_DEG)
@pytest.mark.parametrize("name", list(NORMALS))
def test_from_rotation_inverts_the_rule(name, angle_deg):
    from na23recon.core.geometry import inplane_rotation

    geo = _geo(normal=NORMALS[name], inplane_rot_rad=np.deg2rad(angle_deg))
    back = Geometry.from_rotation(geo.rotation_lps(), fov_mm=geo.fov_mm, matrix=geo.matrix)
    np.testing.assert_allclose(back.rotation_lps(), geo.rotation_lps(), atol=1e-12)
    p, _, n = prs_vectors(geo.normal, geo.inplane_rot_rad)
    assert np.cos(inplane_rotation(n, p) - geo.inplane_rot_rad) == pytest.approx(1.0)
    with pytest.raises(InputError, match="proper rotation"):
        Geometry.from_rotation(geo.rotation_lps() * [1, 1, -1], fov_mm=geo.fov_mm, matrix=geo.matrix)


def test_written_header_and_quaternion_agree(tmp_path):
    """The writer's quaternion follows the rule, so the reader finds header and readouts agreeing."""
    from na23recon.io.twix import read_scan, write_scan

    geo = _geo(normal=NORMALS["coronal-dominant double-oblique"], inplane_rot_rad=np.deg2rad(-1.0))
    acq = Acquisition(nucleus="23Na", geometry=geo)
    p = write_scan(tmp_path / "g.dat", Scan(np.ones((1, 1, 1, 3, 4), np.complex64), acq))
    back = read_scan(p).acquisition.geometry
    assert back.orientation_source == "header+mdh"
    np.testing.assert_allclose(back.rotation_lps(), geo.rotation_lps(), atol=1e-6)


def test_header_that_disagrees_with_quaternion_loses(tmp_path, caplog):
    """A header whose in-plane rotation disagrees with the readouts' quaternion: one warning, and the
    geometry comes from the quaternion (the scanner placed its gradients with it)."""
    from na23recon.io.twix import read_scan, write_scan

    geo = _geo(normal=NORMALS["transverse-dominant double-oblique"], inplane_rot_rad=0.25)
    acq = Acquisition(nucleus="23Na", geometry=geo)
    p = write_scan(tmp_path / "g.dat", Scan(np.ones((1, 1, 1, 3, 4), np.complex64), acq))
    raw = p.read_bytes()
    key = b"dInPlaneRot"
    at = raw.index(key)
    eol = raw.index(b"\n", at)
    line = raw[at:eol]
    assert line.rstrip().endswith(b"0.25")
    p.write_bytes(raw[:at] + line[:-4] + b"0.35" + raw[eol:])  # same length: offsets unchanged
    with caplog.at_level("WARNING"):
        back = read_scan(p).acquisition
    warn = [r for r in caplog.records if "quaternion" in r.getMessage()]
    assert len(warn) == 1
    assert back.geometry.orientation_source == "mdh"
    np.testing.assert_allclose(back.geometry.rotation_lps(), geo.rotation_lps(), atol=1e-6)
    assert back.sidecar()["orientation_source"] == "mdh"


def _truth_at(phantom, lps_mm):
    conc = np.array([c.conc_mM for c in phantom.compartments] + [0.0])
    return conc[phantom.index_map(lps_mm)]


def test_off_centre_oblique_scan_lands_where_the_phantom_is(tmp_path):
    """A phantom fixed at the isocentre, scanned with a double-oblique, in-plane rotated (30 deg)
    volume whose centre is off the isocentre: the analytic k-space follows the geometry (k of the
    trajectory's logical axes played along the image axes in patient coordinates), the scan goes
    through the twix writer and reader, and the reconstruction, placed by its affine, shows the
    phantom where it is in patient coordinates (and not where the old in-plane sign put it)."""
    from na23recon.io.twix import read_scan, write_scan
    from na23recon.recon.scan_recon import reconstruct
    from na23recon.sim.phantom import Compartment, Phantom
    from na23recon.sim.scan import SimProtocol, simulate_scan

    slow = dict(t2s_short_ms=60.0, t2s_long_ms=60.0)
    ph = Phantom("asymmetric", [Compartment("bar", 1, 100.0, (25.0, -10.0, 5.0), (40.0, 12.0, 12.0), rot_deg=20, **slow),
                                Compartment("ball", 2, 100.0, (-40.0, 35.0, -15.0), (14.0, 14.0, 14.0), **slow)])
    normal, rot = NORMALS["transverse-dominant double-oblique"], np.deg2rad(30.0)
    acq = SimProtocol(matrix=32, fov_mm=240.0, te_ms=0.1, tr_ms=1000.0, undersampling=2.0,
                      slice_position_mm=(14.0, -11.0, 19.0), slice_normal=normal, inplane_rot_rad=rot,
                      phantom_position_mm=(0.0, 0.0, 0.0))
    scan, extra = simulate_scan(ph, acq)
    path = write_scan(tmp_path / "oblique.dat", scan)
    back = read_scan(path)
    assert back.acquisition.geometry.orientation_source == "header+mdh"
    img = reconstruct(back, extra["traj"])
    mag = np.abs(img.array)

    def truth_for(affine):
        ijk = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3)
        ras = ijk @ affine[:3, :3].T + affine[:3, 3]
        return _truth_at(ph, ras @ LPS2RAS.T).reshape(mag.shape)  # RAS -> LPS (its own inverse)

    truth = truth_for(img.affine)
    wrong = truth_for(Geometry(fov_mm=(240.0,) * 3, matrix=(32,) * 3, position_mm=acq.slice_position_mm,
                               normal=normal, inplane_rot_rad=-rot).affine())
    corr = np.corrcoef(mag.ravel(), truth.ravel())[0, 1]
    corr_wrong = np.corrcoef(mag.ravel(), wrong.ravel())[0, 1]
    # image-weighted centre of the bright voxels, in patient coordinates, vs the truth's
    ijk = np.argwhere(mag > 0.5 * mag.max())
    w = mag[tuple(ijk.T)]
    centre = LPS2RAS @ (img.affine[:3, :3] @ (w @ ijk / w.sum()) + img.affine[:3, 3])
    tj = np.argwhere(truth > 0)
    t_centre = LPS2RAS @ (img.affine[:3, :3] @ tj.mean(0) + img.affine[:3, 3])
    print(f"corr with truth {corr:.3f}, with the old in-plane sign {corr_wrong:.3f}; "
          f"centre off by {np.linalg.norm(centre - t_centre):.2f} mm")
    assert corr > 0.85
    assert corr_wrong < corr - 0.3
    assert np.linalg.norm(centre - t_centre) < 240.0 / 32  # within one voxel
