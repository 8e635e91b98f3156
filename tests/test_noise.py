"""Coil noise without a noise-adjust scan: whiten only with samples that hold noise.

The multi-coil data are the analytic brain phantom's closed-form k-space with eight smooth coil
fields (`_multicoil`, no NUFFT). Whitening with a covariance that holds the object's signal
reshapes the coil-combined image; the acceptance measure is the worst compartment mean of the
image divided by the true receive field (root sum of squares of the true sensitivities), relative
to the same reconstruction with a noise-adjust scan, after one global scale (vial calibration
removes that): at most 0.5%.
"""

import logging

import numpy as np
import pytest
from _multicoil import make_case

from na23recon.core import ReconOptions
from na23recon.recon import coils
from na23recon.recon.app import reconstruct_arrays
from na23recon.sim.evaluate import compartment_means


def _roi_means(case, img):
    cm = compartment_means(img / case.rss, case.labels, erode=1)
    return np.array([cm[lab][0] for lab in sorted(cm) if cm[lab][1] >= 8])


def _worst(meas, ref):
    r = meas / ref
    return float(np.max(np.abs(r / np.median(r) - 1)))


@pytest.mark.parametrize("snr", [np.inf, 45.0])
def test_no_noise_scan_keeps_the_image_as_with_one(snr, caplog):
    case = make_case(n=32, snr=snr, seed=0)
    # noiseless data: the reference gets a white noise scan of the SNR-45 level (whitening with a
    # white noise scan is a scale only), as the "with a noise readout added"
    scan = case.noise if np.isfinite(snr) else make_case(n=32, snr=45.0, seed=0).noise
    shape = (case.n,) * 3
    with caplog.at_level(logging.WARNING, logger="na23recon.recon.coils"):
        img, info = reconstruct_arrays(case.kspace, case.coord, case.dcf, shape, ReconOptions(), noise=None)
    ref, info_ref = reconstruct_arrays(case.kspace, case.coord, case.dcf, shape, ReconOptions(), noise=scan)
    err = _worst(_roi_means(case, img), _roi_means(case, ref))
    print(f"SNR {snr}: worst ROI error without a noise scan {100 * err:.2f}% ({info['noise']})")
    assert err <= 0.005
    assert info_ref["noise"]["source"] == "noise-adjust scan" and info_ref["noise"]["prewhitened"]
    nz = info["noise"]
    assert nz["prewhitened"] is False and ("signal" in nz["why"] or "no noise" in nz["why"])
    assert any("no prewhitening" in r.getMessage() for r in caplog.records)
    if np.isfinite(snr):  # the SD comes from the noise-only coil directions of the outer shell
        assert nz["sd"] == pytest.approx(case.sigma, rel=0.05)


def test_signal_in_outer_kspace_is_detected_down_to_low_snr():
    for snr in (15.0, 5.0):
        case = make_case(n=32, snr=snr, seed=1)
        est = coils.estimate_noise(case.kspace, case.coord)
        assert est.psi is None and est.details["signal_directions"] >= 1, (snr, est.details)
        assert est.sd == pytest.approx(case.sigma, rel=0.05)


def test_noise_only_outer_kspace_is_used():
    # correlated receiver noise and a weak object: the outer shell is noise and is accepted
    case = make_case(n=32, snr=np.inf, seed=0)
    rng = np.random.default_rng(3)
    nc = 8
    mix = np.eye(nc) + 0.3 * (rng.normal(size=(nc, nc)) + 1j * rng.normal(size=(nc, nc)))
    cov = mix @ mix.conj().T * 2.0  # complex covariance: 2 sigma^2 per part on the diagonal
    z = (rng.normal(size=case.kspace.shape) + 1j * rng.normal(size=case.kspace.shape))
    noisy = np.tensordot(mix, z, axes=(1, 0)) + case.kspace * 1e-3
    est = coils.estimate_noise(noisy, case.coord)
    assert est.psi is not None and "checked" in est.source, est.details
    err = np.linalg.norm(est.psi - cov) / np.linalg.norm(cov)
    assert err < 0.1, err
    assert est.sd == pytest.approx(np.sqrt(np.mean(np.diag(cov).real) / 2), rel=0.05)
    # pure noise is never taken for signal (30 draws; the threshold sits above the spectrum's edge)
    for seed in range(30):
        g = np.random.default_rng(100 + seed)
        zz = g.normal(size=case.kspace.shape) + 1j * g.normal(size=case.kspace.shape)
        assert coils.estimate_noise(np.tensordot(mix, zz, axes=(1, 0)), case.coord).psi is not None


def test_noise_scan_wins_and_degenerate_scans_say_so(caplog):
    case = make_case(n=32, snr=20.0, seed=0)
    est = coils.estimate_noise(case.kspace, case.coord, noise=case.noise)
    assert est.psi is not None and est.source == "noise-adjust scan"
    assert est.sidecar()["prewhitened"] is True
    with caplog.at_level(logging.WARNING, logger="na23recon.recon.coils"):
        dead = case.noise.copy()
        dead[3] = 0
        est = coils.estimate_noise(case.kspace, case.coord, noise=dead)
        assert est.psi is None and "without noise" in est.why
        est = coils.estimate_noise(case.kspace, case.coord, noise=case.noise[:4])  # wrong coil count
        assert est.source != "noise-adjust scan"
    assert sum("no prewhitening" in r.getMessage() for r in caplog.records) >= 1
    # one coil with signal at the edge: nothing to whiten, the SD is the shell's level (upper bound)
    one = coils.estimate_noise(case.kspace[:1], case.coord)
    assert one.psi is None and "upper bound" in one.details["sd_from"] and one.sd > case.sigma
