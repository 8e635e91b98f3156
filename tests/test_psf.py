"""The reconstruction's point-spread function (`recon.psf`) against a point source simulated through
the analytic k-space (`sim`, closed-form ball transform with each sample's T2* decay), reconstructed
by the product's own `reconstruct`; `recon --psf`."""

import json

import numpy as np
import pytest
from scipy import ndimage

from na23recon.cli import main
from na23recon.core import ReconOptions
from na23recon.quant.pvc import convolve_psf, gaussian_psf
from na23recon.quant.relax import PRESETS
from na23recon.recon.psf import point_spread_info, psf_fwhm_mm
from na23recon.recon.scan_recon import reconstruct
from na23recon.sim.phantom import Compartment, Phantom
from na23recon.sim.scan import SimProtocol, simulate_scan, simulate_to_folder

FOV = 240.0
GM = PRESETS["gm"]


def _point_scan(traj: str, n: int):
    """A 0.5 mm ball of grey matter (its biexponential T2*) at the FOV centre, noiseless."""
    comp = Compartment("point", 1, 100.0, (0.0, 0.0, 0.0), (0.5, 0.5, 0.5), t1_ms=GM.t1_ms,
                       t2s_short_ms=GM.t2s_short_ms, t2s_long_ms=GM.t2s_long_ms, frac_short=GM.frac_short)
    scan, extra = simulate_scan(Phantom("point", [comp]), SimProtocol(matrix=n, fov_mm=FOV, traj=traj, te_ms=0.3))
    return scan, extra["traj"]


def _compare(traj_kind: str, method: str, n: int, up: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FWHM (mm) of the point source reconstructed at `up` times the matrix (the product's sinc
    interpolation of its band-limited image; linear interpolation between its samples), of
    `point_spread` on the scan's grid with the GM decay, and of the PSF without decay."""
    scan, traj = _point_scan(traj_kind, n)
    opts = ReconOptions(method=method)
    img = reconstruct(scan, traj, ReconOptions(method=method, matrix=up * n)).array
    sim = np.array(psf_fwhm_mm(img, FOV / (up * n), upsample=1))
    psf, info = point_spread_info(traj, opts, (n, n, n), FOV, t2s_ms=GM.decay)
    _, info0 = point_spread_info(traj, opts, (n, n, n), FOV)
    got = np.array(info["fwhm_mm"])
    print(f"{traj_kind:6s} {method:7s} point sim {np.round(sim, 3)} PSF {np.round(got, 3)} "
          f"ratio {np.round(got / sim, 4)}; PSF without decay {info0['fwhm_mm']}; DC gain {info['dc_gain']}")
    assert info["kind"].startswith("exact") and abs(info["dc_gain"] - float(np.sum(psf))) < 1e-4
    return sim, got, np.array(info0["fwhm_mm"])


@pytest.mark.parametrize("traj_kind,method", [("radial", "adjoint"), ("dar", "adjoint"), ("tpi", "adjoint"),
                                              ("dar", "cg")])
def test_psf_fwhm_matches_point_source(traj_kind, method):
    sim, got, _ = _compare(traj_kind, method, 24, 2)
    assert np.all(np.abs(got / sim - 1) < 0.05)


def test_psf_follows_a_fast_decay():
    """TPI's 2.3 ms readout and a 0.5 ms T2*: the decay widens the PSF by ~38%, and the PSF follows it."""
    comp = Compartment("point", 1, 100.0, (0.0, 0.0, 0.0), (0.5, 0.5, 0.5), t1_ms=20.0, t2s_short_ms=0.5,
                       t2s_long_ms=0.5, frac_short=0.0)
    scan, extra = simulate_scan(Phantom("point", [comp]), SimProtocol(matrix=24, fov_mm=FOV, traj="tpi", te_ms=0.3))
    img = reconstruct(scan, extra["traj"], ReconOptions(matrix=48)).array
    sim = np.array(psf_fwhm_mm(img, FOV / 48, upsample=1))
    _, info = point_spread_info(extra["traj"], None, (24, 24, 24), FOV, t2s_ms=0.5)
    _, info0 = point_spread_info(extra["traj"], None, (24, 24, 24), FOV)
    print("T2* 0.5 ms TPI: point sim", np.round(sim, 3), "PSF", info["fwhm_mm"], "without decay", info0["fwhm_mm"])
    assert np.all(np.abs(np.array(info["fwhm_mm"]) / sim - 1) < 0.02)
    assert np.all(np.array(info0["fwhm_mm"]) / sim - 1 < -0.2)


@pytest.mark.slow
@pytest.mark.parametrize("traj_kind", ["radial", "dar", "tpi"])
@pytest.mark.parametrize("method", ["adjoint", "cg"])
def test_psf_fwhm_matches_point_source_matrix32(traj_kind, method):
    sim, got, _ = _compare(traj_kind, method, 32, 3)
    assert np.all(np.abs(got / sim - 1) < 0.05)


def test_cs_psf_is_an_estimate():
    scan, traj = _point_scan("dar", 24)
    _, info = point_spread_info(traj, ReconOptions(method="cs-tv"), (24, 24, 24), FOV, t2s_ms=GM.decay)
    assert info["kind"].startswith("estimate") and all(v > 0 for v in info["fwhm_mm"])


def test_fwhm_of_a_gaussian_and_fft_convolution():
    g = gaussian_psf((12.0, 9.0, 15.0), 3.0, (33, 32, 40))
    fw = psf_fwhm_mm(g, 3.0)
    assert np.allclose(fw, (12.0, 9.0, 15.0), rtol=0.01), fw
    rng = np.random.default_rng(0)
    x = rng.random((12, 11, 10))
    h = rng.random((5, 6, 7))
    # ndimage.convolve puts the kernel's origin at shape // 2, as the PSF convention does
    ref = ndimage.convolve(x, h, mode="constant", cval=0.0)
    assert np.allclose(convolve_psf(x, h), ref, atol=1e-10)


def test_recon_cli_writes_psf(tmp_path):
    sim = simulate_to_folder(tmp_path / "sim", matrix=16, snr=30, traj="dar")
    out = tmp_path / "out" / "X.nii.gz"
    assert main(["recon", str(sim["scan"]), "--traj", str(sim["traj"]), "-o", str(out), "--psf"]) == 0
    side = json.loads((tmp_path / "out" / "X.json").read_text())
    block = side["recon"]["psf"]
    assert block["file"] == "X_psf.nii.gz" and block["tissue"] == "gm" and block["kind"].startswith("exact")
    from na23recon.core import Image

    psf = Image.load(tmp_path / "out" / "X_psf.nii.gz")
    assert psf.array.shape == (16, 16, 16) and np.unravel_index(np.argmax(psf.array), psf.shape) == (8, 8, 8)
    assert np.allclose(psf_fwhm_mm(psf.array, FOV / 16), block["fwhm_mm"], rtol=1e-3)
    bad = tmp_path / "bad" / "Y.nii.gz"
    assert main(["recon", str(sim["scan"]), "--traj", str(sim["traj"]), "-o", str(bad), "--psf",
                 "--psf-tissue", "bogus"]) == 2
    assert not bad.parent.exists() or not any(bad.parent.iterdir())
