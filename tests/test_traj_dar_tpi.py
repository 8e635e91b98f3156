"""Density-adapted radial (Nagel 2009) and TPI (Boada 1997): density, limits, durations, errors."""

import math

import numpy as np
import pytest

from na23recon import GAMMA_BAR_NA23_HZ_PER_T as GAMMA
from na23recon.core.trajectory import Trajectory
from na23recon.errors import InputError
from na23recon.traj.dar import dar_3d
from na23recon.traj.gradients import integrate_gradient
from na23recon.traj.tpi import tpi_3d, tpi_cones, tpi_readout_time_formula


def shell_density_spread(k, k0, kmax, nbins=5):
    """(max - min) / mean of samples per unit volume in equal-volume shells between k0 and kmax."""
    r = np.linalg.norm(k, axis=-1).ravel()
    edges = np.cbrt(np.linspace(k0 ** 3, kmax ** 3, nbins + 1))
    edges[-1] *= 1 + 1e-9
    counts, _ = np.histogram(r, bins=edges)
    dens = counts / (4 / 3 * np.pi * np.diff(edges ** 3))
    return (dens.max() - dens.min()) / dens.mean(), dens


@pytest.fixture(scope="module")
def dar():
    return dar_3d(48, 240.0, gmax_mT_m=40.0, slew_T_m_s=150.0, dwell_us=10.0, p=0.25)


@pytest.fixture(scope="module")
def tpi():
    return tpi_3d(48, 240.0, p=0.4, gmax_mT_m=40.0, slew_T_m_s=150.0, dwell_us=10.0, te_ms=0.2)


def test_generators_return_trajectories_timed_from_excitation(dar, tpi):
    for tr, kind, te in ((dar, "dar", 0.0), (tpi, "tpi", 0.2e-3)):
        assert isinstance(tr, Trajectory) and tr.kind == kind and tr.dcf is None
        assert tr.design.te_s == te and tr.t[0] == pytest.approx(te, abs=1e-15)
        assert tr.meta["te_s"] == te and tr.meta["kmax_per_m"] == tr.design.kmax_per_m


@pytest.mark.parametrize("name", ["dar", "tpi"])
def test_density_constant_beyond_k0(name, request):
    tr = request.getfixturevalue(name)
    spread, dens = shell_density_spread(tr.k, tr.design.k0_per_m, tr.design.kmax_per_m)
    print(f"{name}: shell density spread beyond k0 {spread * 100:.2f}%")
    assert spread < 0.05
    # and it is not constant inside k0 (radial part): the first shell is much denser
    r = np.linalg.norm(tr.k, axis=-1).ravel()
    inner = np.sum(r < tr.design.k0_per_m / 2) / (4 / 3 * np.pi * (tr.design.k0_per_m / 2) ** 3)
    assert inner > 2 * dens.mean()


@pytest.mark.parametrize("name", ["dar", "tpi"])
def test_limits_and_integrated_k(name, request):
    tr = request.getfixturevalue(name)
    d = tr.design
    rep = d.report
    print(f"{name}: {rep.summary()}")
    assert rep.ok
    assert rep.peak_g_T_m <= 40e-3 * 1.001 and rep.peak_slew_T_m_s <= 150 * 1.001
    assert rep.k_error_rel < 0.01
    # independent re-check on actual (rotated) readouts, from rest
    for r in np.linspace(0, tr.nreadout - 1, 7).astype(int):
        g = d.gradient(r)
        slew = np.linalg.norm(np.diff(np.vstack([np.zeros((1, 3)), g]), axis=0), axis=1) / d.raster_s
        assert np.linalg.norm(g, axis=1).max() <= 40e-3 * 1.001
        assert slew.max() <= 150 * 1.001
        kint = integrate_gradient(g, d.raster_s, tr.t - d.te_s, GAMMA)  # t from excitation -> readout start
        assert np.abs(kint - tr.k[r]).max() < 0.01 * d.kmax_per_m
    assert abs(np.linalg.norm(tr.k, axis=-1).max() - d.kmax_per_m) < 1e-6 * d.kmax_per_m


def test_dar_follows_nagel_gradient(dar):
    # beyond k0, G(t) = G0 k0^2 / k(t)^2 (checked at raster midpoints)
    d = dar.design
    g = np.linalg.norm(d.g_base[0], axis=1)
    g0 = d.params["g0_mT_m"] * 1e-3
    tm = (np.arange(g.size) + 0.5) * d.raster_s
    kint = integrate_gradient(d.g_base[0], d.raster_s, tm, GAMMA)
    r = np.linalg.norm(kint, axis=1)
    beyond = r > 1.05 * d.k0_per_m
    assert np.allclose(g[beyond], g0 * d.k0_per_m ** 2 / r[beyond] ** 2, rtol=0.01)


def test_tpi_readout_duration_matches_boada(tpi):
    g = tpi.design.params["g_mT_m"] * 1e-3
    T = tpi_readout_time_formula(tpi.design.kmax_per_m, g, 0.4, GAMMA)
    readout = tpi.t[-1] - tpi.t[0]  # the first sample is at the readout start
    print(f"tpi: readout {readout * 1e3:.3f} ms vs formula {T * 1e3:.3f} ms")
    assert abs(readout - T) / T < 0.02


def test_tpi_geometry(tpi):
    theta, nproj = tpi_cones(48, 0.4)
    assert np.all(np.diff(theta) <= 1 / 24 + 1e-12)
    R = 24
    assert abs(nproj.sum() / (4 * np.pi * R ** 2 * 0.4) - 1) < 0.1
    # readouts stay on their cone: polar angle constant beyond the radial start
    kk = tpi.k[10]
    r = np.linalg.norm(kk, axis=1)
    cos_pol = kk[1:, 2] / r[1:]
    assert np.allclose(cos_pol, cos_pol[-1], atol=1e-9)
    # twist (azimuth at kmax) follows Boada's phi(q)
    th = theta[tpi.design.base_index[10]]
    q = tpi.design.kmax_per_m / tpi.design.k0_per_m
    s = math.sqrt(q ** 4 - 1)
    phi = (s - math.atan(s)) / (2 * math.sin(th))
    k_end = tpi.design.rotation[10].T @ kk[-1]
    assert abs(math.atan2(k_end[1], k_end[0]) - math.remainder(phi, 2 * math.pi)) < 1e-6


def test_tpi_explicit_g_beyond_slew_is_input_error():
    with pytest.raises(InputError, match="slew rate"):
        tpi_3d(48, 240.0, p=0.4, g_mT_m=30.0, slew_T_m_s=150.0)


def test_tpi_too_long_readout_is_input_error():
    with pytest.raises(InputError, match="max_readout_ms"):
        tpi_3d(24, 240.0, p=0.1, slew_T_m_s=50.0, max_readout_ms=1.0)


def test_bad_p_and_k0():
    with pytest.raises(InputError, match="0 < p < 1"):
        tpi_3d(48, 240.0, p=1.2)
    with pytest.raises(InputError, match="k0"):
        dar_3d(48, 240.0, p=1.5)
    with pytest.raises(InputError, match="Gmax"):
        dar_3d(48, 240.0, g0_mT_m=50.0, gmax_mT_m=40.0)
