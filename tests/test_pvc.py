"""Partial-volume correction (`quant.pvc`: GTM, RBV) with the reconstruction's PSF on the analytic brain
phantom: k-space from the closed-form ellipsoid transforms with each tissue's T2* decay per sample,
reconstructed by the product; exact tissue fractions from `sim.fractions` (5^3 points per voxel)."""

import numpy as np
import pytest

from na23recon.core import ReconOptions
from na23recon.quant.pvc import gtm, rbv
from na23recon.recon.psf import point_spread
from na23recon.recon.scan_recon import reconstruct
from na23recon.sim.fractions import tissue_fractions
from na23recon.sim.phantom import load_phantom
from na23recon.sim.scan import SimProtocol, simulate_scan

N, FOV = 48, 240.0
GROUPS = {"csf": [1, 4], "gm": [2], "wm": [3], "lesion": [5], "vial_25": [11], "vial_50": [12], "vial_100": [13],
          "vial_150": [14]}


@pytest.fixture(scope="module")
def brain():
    ph = load_phantom("brain")
    fr = tissue_fractions(ph, N, FOV, GROUPS, supersample=4)
    return ph, np.stack([fr[g] for g in GROUPS])


def _case(brain, traj_kind: str, method: str):
    ph, regions = brain
    acq = SimProtocol(matrix=N, fov_mm=FOV, traj=traj_kind)
    scan, extra = simulate_scan(ph, acq)
    traj = extra["traj"]
    opts = ReconOptions(method=method)
    img = reconstruct(scan, traj, opts).array
    comps = [next(c for c in ph.compartments if c.label == labs[0]) for labs in GROUPS.values()]
    # truth in image units: the signal weight at the echo (the first sample, k = 0)
    truth = np.array([c.conc_mM * float(c.saturation(acq.tr_ms, np.pi / 2) * c.decay(acq.te_ms * 1e-3))
                      for c in comps])
    cache = {}
    psfs = []
    for c in comps:  # each tissue blurs with its own T2*
        key = (c.t2s_short_ms, c.t2s_long_ms, c.frac_short)
        if key not in cache:
            cache[key] = point_spread(traj, opts, img.shape, FOV, t2s_ms=c.relax.decay)
        psfs.append(cache[key])
    w = regions.reshape(len(GROUPS), -1)
    raw = (w @ img.reshape(-1)) / w.sum(axis=1)
    vals, G = gtm(img, regions, psfs, normalize=False)  # the image in the reconstruction's units
    gain = float(np.sum(cache[next(iter(cache))]))
    corr = rbv(img, regions, psfs, values=vals, normalize=False)
    pure = regions > 0.9  # RBV restores the unblurred image: in voxels of one tissue, that tissue's value
    rbv_mean = np.array([corr[m].mean() if m.any() else np.nan for m in pure])
    for i, g in enumerate(GROUPS):
        print(f"{traj_kind} {method} {g:8s} truth {truth[i]:7.2f}  no PVC {100 * (raw[i] / gain / truth[i] - 1):+6.1f}%"
              f"  GTM {100 * (vals[i] / truth[i] - 1):+6.2f}%  RBV (voxels > 90% one region) "
              f"{100 * (rbv_mean[i] / truth[i] - 1):+6.2f}%")
    assert np.allclose(G @ vals, raw, rtol=1e-6)
    return truth, raw / gain, vals


def _check(truth, raw, vals):
    err = np.abs(vals / truth - 1)
    assert np.all(err[:3] < 0.03), err[:3]  # GM, WM, CSF
    assert np.all(err < 0.03), err
    off = np.abs(raw / truth - 1)  # without PVC (fraction-weighted means, the DC gain divided out)
    assert off[:3].max() > 0.05 and off[0] > 0.05, off[:3]  # CSF is ~20% low without PVC


def test_gtm_brain_radial_adjoint(brain):
    _check(*_case(brain, "radial", "adjoint"))


@pytest.mark.slow
@pytest.mark.parametrize("traj_kind,method", [("dar", "adjoint"), ("tpi", "adjoint"), ("radial", "cg"),
                                              ("dar", "cg"), ("tpi", "cg")])
def test_gtm_brain(brain, traj_kind, method):
    _check(*_case(brain, traj_kind, method))
