"""3D radial generator: directions, Nyquist spoke count, scanner limits, k from the gradient."""

import math

import numpy as np
import pytest

from na23recon import GAMMA_BAR_NA23_HZ_PER_T
from na23recon.core.trajectory import Trajectory
from na23recon.errors import InputError
from na23recon.traj.gradients import integrate_gradient
from na23recon.traj.radial import golden_angle_2d, n_spokes_nyquist, radial_3d, radial_for_matrix, spoke_directions


@pytest.mark.parametrize("ordering", ["spiral", "golden"])
def test_directions_unit_and_uniform(ordering):
    d = spoke_directions(4000, ordering)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    # uniform on the sphere: mean ~ 0 and second moments ~ I/3
    assert np.abs(d.mean(0)).max() < 0.01
    assert np.allclose(d.T @ d / len(d), np.eye(3) / 3, atol=0.01)
    # nearest-neighbour distances of a good covering are close to each other
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(d).query(d, k=2)
    nn = dist[:, 1]
    assert nn.min() > 0.3 * np.median(nn)


def test_hemisphere_directions():
    d = spoke_directions(1000, "spiral", hemisphere=True)
    assert d[:, 2].min() >= 0 and abs(d[:, 2].mean() - 0.5) < 0.01
    d = spoke_directions(1000, "golden", hemisphere=True)
    assert d[:, 2].min() >= 0 and abs(d[:, 2].mean() - 0.5) < 0.01


def test_radial_3d_shape_and_extent():
    k = radial_3d(100, 33, 50.0)
    assert k.shape == (100, 33, 3) and k.dtype == np.float64
    r = np.linalg.norm(k, axis=-1)
    assert np.allclose(r[:, 0], 0) and np.allclose(r[:, -1], 50.0)
    kf = radial_3d(100, 64, 50.0, centre_out=False)
    rf = np.linalg.norm(kf, axis=-1)
    assert np.allclose(rf[:, 32], 0) and np.allclose(rf[:, 0], 50.0)


def test_golden_angle_2d():
    k = golden_angle_2d(10, 64, 1.0)
    assert k.shape == (10, 64, 2)
    ang = np.arctan2(k[:, 0, 1], k[:, 0, 0])
    step = np.mod(np.diff(ang), np.pi)
    assert np.allclose(step, math.radians(111.246) % np.pi, atol=1e-3)


def test_trajectory_coord_is_cycles_per_fov():
    k = radial_3d(10, 9, 64 / (2 * 0.24))
    kc = Trajectory(k).coord(240.0)
    assert kc.dtype == np.float32
    assert abs(np.abs(kc).max() - 32.0) < 1e-4  # the edge of matrix 64 at +-32 cycles/FOV
    assert np.allclose(kc, k * 0.24, rtol=1e-6)


@pytest.mark.parametrize("centre_out", [True, False])
def test_radial_for_matrix_limits_and_k(centre_out):
    tr = radial_for_matrix(32, 240.0, undersampling=2.0, dwell_us=10.0, centre_out=centre_out,
                           gmax_mT_m=40.0, slew_T_m_s=150.0, te_ms=0.5)
    assert isinstance(tr, Trajectory) and tr.kind == "radial"
    design = tr.design
    t_adc = tr.t - design.te_s  # t is from excitation; the waveform from the readout start
    assert design.te_s == 0.5e-3 and t_adc[0] == pytest.approx(0.0, abs=1e-15)
    kmax = 32 / (2 * 0.24)
    nsp = n_spokes_nyquist(32) / 2
    assert tr.nreadout == math.ceil(nsp if centre_out else nsp / 2)
    assert tr.k.shape == (tr.nreadout, tr.t.size, 3)
    assert abs(np.linalg.norm(tr.k, axis=-1).max() - kmax) < 1e-9 * kmax
    rep = design.report
    assert rep.ok
    assert rep.peak_g_T_m <= 40e-3 * 1.001 and rep.peak_slew_T_m_s <= 150 * 1.001
    # each readout's own (rotated) gradient integrates to its k within 1% of kmax
    for r in (0, tr.nreadout // 3, tr.nreadout - 1):
        g = design.gradient(r)
        kint = integrate_gradient(g, design.raster_s, t_adc, GAMMA_BAR_NA23_HZ_PER_T)
        if not centre_out:
            kint = kint + tr.k[r, 0]
        assert np.abs(kint - tr.k[r]).max() < 0.01 * kmax
    assert np.allclose(np.diff(tr.t), 10e-6)


def test_radial_ramp_sampling_crowds_centre():
    tr = radial_for_matrix(32, 240.0, dwell_us=10.0, slew_T_m_s=50.0)
    r = np.linalg.norm(tr.k[0], axis=-1)
    dr = np.diff(r)
    assert dr[0] < 0.5 * dr[-1]
    assert np.allclose(dr[-5:], dr[-1], rtol=1e-6)


def test_radial_gmax_violation_is_input_error():
    with pytest.raises(InputError, match="Gmax"):
        radial_for_matrix(64, 240.0, dwell_us=1.0, gmax_mT_m=40.0)


def test_bad_ordering():
    with pytest.raises(InputError, match="ordering"):
        spoke_directions(10, "random")
