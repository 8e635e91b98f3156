"""Vial geometry fitted through the PSF (quant/vialfit.py): exact solid volumes, the Rician
expected magnitude against Monte Carlo, and a vial's size and amplitude recovered from a blurred,
noisy magnitude image whose truth is rasterised independently (hard points, 8^3 per voxel)."""

from __future__ import annotations

import numpy as np
import pytest

from na23recon.quant.pvc import convolve_psf, gaussian_psf
from na23recon.quant.vialfit import fit_vial_shape, rician_mean, rician_slope, solid_fractions


def _hard_ellipsoid(shape, centre, semi, sub=8):
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    ax = [((np.arange(n)[:, None] + offs[None]).ravel() - c) / s for n, c, s in zip(shape, centre, semi)]
    inside = (ax[0][:, None, None] ** 2 + ax[1][None, :, None] ** 2 + ax[2][None, None, :] ** 2) <= 1
    return inside.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))


@pytest.mark.parametrize("semi", [(2.6, 2.6, 3.7), (1.4, 1.3, 1.9)])
def test_solid_fractions_hold_the_volume(semi):
    f = solid_fractions((16, 16, 16), (7.3, 8.1, 7.9), semi)
    assert f.sum() == pytest.approx(4 / 3 * np.pi * np.prod(semi), rel=0.01)
    assert f.min() >= 0 and f.max() <= 1
    c = solid_fractions((16, 16, 16), (7.3, 8.1, 7.9), semi, "cylinder")
    assert c.sum() == pytest.approx(np.pi * semi[0] * semi[1] * 2 * semi[2], rel=0.01)
    np.testing.assert_allclose(f, _hard_ellipsoid((16, 16, 16), (7.3, 8.1, 7.9), semi), atol=0.12)


def test_rician_mean_against_monte_carlo():
    rng = np.random.default_rng(1)
    sd = 2.0
    for a in (0.0, 1.0, 3.0, 10.0):
        n = rng.normal(0, sd, (2, 400_000))
        mc = np.abs((a + n[0]) + 1j * n[1]).mean()
        assert float(rician_mean(np.array([a]), sd)[0]) == pytest.approx(mc, rel=0.005)
    assert float(rician_mean(np.array([0.0]), sd)[0]) == pytest.approx(sd * np.sqrt(np.pi / 2), rel=1e-9)
    assert float(rician_mean(np.array([5.0]), 0.0)[0]) == 5.0


def _noisy_vial(shape, centre, semi, seed, amp=30.0, sd=3.0):
    """A hard ellipsoid of amplitude amp blurred by a Gaussian PSF, its magnitude in complex noise:
    (truth, psf, clean, magnitude)."""
    truth = _hard_ellipsoid(shape, centre, semi)
    psf = gaussian_psf(1.6, 1.0, shape)
    rng = np.random.default_rng(seed)
    clean = amp * convolve_psf(truth, psf, voxel_means=True)
    return truth, psf, clean, np.abs(clean + rng.normal(0, sd, shape) + 1j * rng.normal(0, sd, shape))


def test_fit_recovers_a_vial_through_the_psf_in_magnitude_noise():
    shape, centre, semi, amp, sd = (24, 24, 24), (11.6, 12.3, 11.8), (2.7, 2.6, 3.7), 30.0, 3.0
    truth, psf, clean, mag = _noisy_vial(shape, centre, semi, 3, amp, sd)
    region = clean > 0.5 * amp
    fit = fit_vial_shape(mag, region, psf, label=1, noise_sd=sd)
    vol = 4 / 3 * np.pi * np.prod(semi)
    print(f"vial fit: semi-axes {np.round(fit.semi_axes_vox, 2)} (true {semi}), amplitude {fit.amplitude:.2f} "
          f"(true {amp}), volume {fit.fractions.sum():.1f} (true {vol:.1f})")
    np.testing.assert_allclose(fit.centre_vox, centre, atol=0.15)
    assert fit.fractions.sum() == pytest.approx(vol, rel=0.06)
    # the fit's own volume uncertainty covers the error
    assert 0 < fit.volume_rel_sd < 0.1 and abs(fit.fractions.sum() / vol - 1) < 3 * fit.volume_rel_sd
    assert fit.amplitude * fit.fractions.sum() == pytest.approx(amp * vol, rel=0.05)
    # a fit of the signal itself (no noise model) reads the noise floor of the faint rim as a
    # background and shrinks the vial
    plain = fit_vial_shape(mag, region, psf, label=1)
    assert plain.fractions.sum() < 0.95 * vol and plain.amplitude < 0.97 * amp
    # the mean of the detected voxels, what a calibration without PVC takes, reads well below
    assert mag[region].mean() < 0.9 * amp


def test_a_listed_size_fixes_the_shape():
    shape, centre, semi, amp, sd = (20, 20, 20), (9.4, 10.2, 9.8), (1.35, 1.3, 1.85), 30.0, 3.0
    truth, psf, clean, mag = _noisy_vial(shape, centre, semi, 5, amp, sd)
    fit = fit_vial_shape(mag, clean > 0.5 * clean.max(), psf, label=1, noise_sd=sd, semi_vox=semi)
    np.testing.assert_allclose(fit.semi_axes_vox, semi)
    assert fit.volume_rel_sd == 0.0
    assert fit.amplitude == pytest.approx(amp, rel=0.08)


def test_listed_sizes_take_the_detected_orientation():
    """A listed cylinder's length goes along the axis its detected voxels spread along; a vial as
    long as it is wide, or a sphere, is the same on every axis; an unlisted or unfound long vial is
    left to the fit."""
    from na23recon.quant.vialfit import listed_semi_axes_mm
    from na23recon.quant.vials import Vial

    mask = np.zeros((20, 20, 20), np.int32)
    mask[4:7, 3:15, 4:7] = 11   # long along y
    mask[12:15, 12:15, 12:15] = 12
    vials = [Vial(11, 25.0, "agar2", diameter_mm=9.0, length_mm=36.0), Vial(12, 50.0, "agar2", diameter_mm=9.0),
             Vial(13, 100.0, "agar2"), Vial(14, 150.0, "agar2", diameter_mm=9.0, length_mm=30.0)]
    out = listed_semi_axes_mm(vials, mask, (3.0, 3.0, 3.0))
    np.testing.assert_allclose(out[11], [4.5, 18.0, 4.5])
    np.testing.assert_allclose(out[12], [4.5, 4.5, 4.5])
    assert 13 not in out and 14 not in out


def test_rician_slope_is_the_derivative_of_the_mean():
    # the GTM's Newton step uses it: against central differences of rician_mean, signed signals,
    # from below the noise to high SNR, and the noiseless limit sign(a)
    sd = np.array([1.0, 0.5, 2.0])
    for a in (-3.0, -0.2, 0.0, 0.3, 1.0, 4.0, 25.0):
        h = 1e-5
        num = (rician_mean(np.full(3, a + h), sd) - rician_mean(np.full(3, a - h), sd)) / (2 * h)
        np.testing.assert_allclose(rician_slope(np.full(3, a), sd), num, rtol=1e-5, atol=1e-7)
    assert np.array_equal(rician_slope(np.array([-2.0, 3.0]), 0.0), [-1.0, 1.0])
