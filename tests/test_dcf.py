"""Density compensation: analytic radial DCFs against the sampled k-space volume."""

import math

import numpy as np
import pytest

from na23recon.traj.dcf import dcf_analytic, dcf_radial_shells
from na23recon.traj.radial import radial_3d, radial_for_matrix


def test_radial_shells_equal_spacing_is_k2():
    k = radial_3d(50, 33, 1.0)
    w = dcf_radial_shells(k)
    r = np.linalg.norm(k, axis=-1)
    # total = sphere of radius kmax + half a spacing
    dk = 1.0 / 32
    assert math.isclose(w.sum(), 4 / 3 * math.pi * (1 + dk / 2) ** 3, rel_tol=1e-9)
    inner = (r > 2 * dk) & (r < 1 - dk)
    ratio = w[inner] / (4 * math.pi * r[inner] ** 2 * dk / 50)
    assert np.allclose(ratio, 1.0, rtol=0.01)


def test_radial_shells_full_diameter():
    k = radial_3d(50, 64, 1.0, centre_out=False)
    w = dcf_radial_shells(k)
    assert math.isclose(w.sum(), 4 / 3 * math.pi * (1 + 1 / 64) ** 3, rel_tol=0.05)
    assert np.all(w >= 0)


def test_analytic_radial_matches_shells():
    k = radial_3d(50, 33, 1.0)
    wa = dcf_analytic(k, "radial")
    ws = dcf_radial_shells(k)
    r = np.linalg.norm(k, axis=-1)
    assert math.isclose(wa.sum(), 4 / 3 * math.pi, rel_tol=1e-9)
    inner = (r > 0.1) & (r < 0.95)
    ratio = wa[inner] / ws[inner]
    assert ratio.std() / ratio.mean() < 0.01
    assert wa[:, 0].min() > 0


def test_ramp_sampled_radial_dcf_integrates_volume():
    tr = radial_for_matrix(24, 240.0, dwell_us=10.0, slew_T_m_s=40.0)
    w = dcf_radial_shells(tr.k)
    # integrate a smooth radial function: sum w f(k) ~ int f d^3k
    r = np.linalg.norm(tr.k, axis=-1) / tr.kmax_per_m
    f = np.exp(-4 * r ** 2)
    est = np.sum(w * f) / tr.kmax_per_m ** 3
    exact = 4 * math.pi * (math.sqrt(math.pi) / 4 * math.erf(2) / 8 - math.exp(-4) / 8)
    assert est == pytest.approx(exact, rel=0.01)
