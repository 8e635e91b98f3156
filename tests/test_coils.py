"""Coil handling: prewhitening, compression, sensitivity maps (against the true smooth maps), combination."""

import numpy as np
import pytest
from _multicoil import coil_terms, make_case, sens_on_grid

from na23recon.errors import InputError
from na23recon.recon import coils


@pytest.fixture(scope="module")
def case():
    return make_case(n=32, snr=25)


def test_whitening_decorrelates_and_keeps_level():
    rng = np.random.default_rng(1)
    nc, n = 6, 200000
    mix = rng.normal(size=(nc, nc)) + 1j * rng.normal(size=(nc, nc))
    mix = np.eye(nc) + 0.3 * mix
    white = (rng.normal(size=(nc, n)) + 1j * rng.normal(size=(nc, n))) * 2.0
    noise = mix @ white
    psi = coils.noise_covariance(noise)
    w, sd = coils.whitening_matrix(psi)
    out = coils.prewhiten(noise, w)
    cov = coils.noise_covariance(out)
    s = np.mean(np.diag(psi).real)
    np.testing.assert_allclose(cov, s * np.eye(nc), atol=0.02 * s)
    assert sd == pytest.approx(np.sqrt(s / 2))


def test_noise_sd_from_noise_scan_and_outer_kspace(case):
    _, sd = coils.whitening_matrix(coils.noise_covariance(case.noise))
    assert sd == pytest.approx(case.sigma, rel=0.05)
    outer = coils.noise_from_outer_kspace(case.kspace, case.coord)
    _, sd2 = coils.whitening_matrix(coils.noise_covariance(outer))
    # the object's own signal at the k-space edge adds to it: an upper estimate, within 2x at 32^3
    assert case.sigma * 0.95 < sd2 < 2.0 * case.sigma


def test_noise_refusals():
    with pytest.raises(InputError):
        coils.noise_covariance(np.zeros((8, 4), np.complex64))
    with pytest.raises(InputError):
        coils.whitening_matrix(np.zeros((2, 2)))


def test_coil_compression_count_energy_and_unitarity(case):
    y = case.kspace
    out, mat = coils.coil_compress(y, ncoil=4)
    assert out.shape == (4,) + y.shape[1:] and mat.shape == (4, 8)
    np.testing.assert_allclose(mat @ mat.conj().T, np.eye(4), atol=1e-5)
    e4 = np.sum(np.abs(out) ** 2) / np.sum(np.abs(y) ** 2)
    assert 0.8 < e4 <= 1.0
    out2, mat2 = coils.coil_compress(y, energy=0.999)
    assert 4 <= mat2.shape[0] <= 8
    full, _ = coils.coil_compress(y)
    assert np.sum(np.abs(full) ** 2) == pytest.approx(np.sum(np.abs(y) ** 2), rel=1e-4)
    for bad in ({"ncoil": 0}, {"ncoil": 9}, {"energy": 1.5}, {"ncoil": 2, "energy": 0.9}):
        with pytest.raises(InputError):
            coils.coil_compress(y, **bad)


def _map_agreement(maps, case):
    """Median over head voxels of |<m_est, m_true>| (unit-norm maps, phase-invariant)."""
    r = case.phantom.voxel_centres_mm(case.n, case.fov_mm)
    s = sens_on_grid(coil_terms(8), r)
    s /= np.sqrt(np.sum(np.abs(s) ** 2, axis=0))
    head = case.labels > 0
    head &= np.isin(case.labels, [1, 2, 3, 4, 5])
    inner = np.abs(np.sum(np.conj(maps) * s, axis=0))
    return float(np.median(inner[head])), float(np.percentile(inner[head], 10))


@pytest.mark.parametrize("method", ["walsh", "espirit"])
def test_sensitivity_maps_match_truth(case, method):
    maps = coils.estimate_maps(case.kspace, case.coord, case.dcf, (case.n,) * 3, method=method)
    assert maps.shape == (8, case.n, case.n, case.n) and maps.dtype == np.complex64
    med, p10 = _map_agreement(maps, case)
    assert med > 0.97 and p10 > 0.9, (med, p10)


def test_combinations(case):
    from na23recon.recon.adjoint import adjoint_recon

    n = case.n
    imgs = adjoint_recon(case.kspace, case.coord, case.dcf, (n,) * 3)
    sos = coils.combine(imgs, "sos")
    ad = coils.combine(imgs, "adaptive")
    maps = coils.estimate_maps(case.kspace, case.coord, case.dcf, (n,) * 3)
    se = coils.combine(imgs, "sense", maps=maps)
    assert sos.shape == ad.shape == se.shape == (n, n, n)
    head = case.labels == 3
    # all three estimate rss(s) * m inside the head, up to noise
    for img in (ad, se):
        ratio = np.abs(img[head]) / sos[head]
        assert 0.85 < np.median(ratio) <= 1.01
    with pytest.raises(InputError):
        coils.combine(imgs, "sense")
    with pytest.raises(InputError):
        coils.combine(imgs, "best")
