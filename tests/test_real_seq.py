"""Real Siemens Pulseq scans (../shared/data/real-twix): the .seq trajectory through the NUFFT equals a
plain FFT of the same readouts.

The truth is independent of the reconstruction: each readout's ky line comes from pypulseq
directly, the lines are placed on the Cartesian grid and inverse-FFT'd per coil, after the same
prewhitening (as the reconstruction's noise estimate decides),
then root-sum-of-squares. The NUFFT's image must match it to NRMSE < 1%.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from na23recon.cli import main
from na23recon.core import Image
from na23recon.io.twix import read_scan
from na23recon.recon import coils

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-twix"
CASES = {"gre2d_7T_oblique_E12": (256, 256, 1), "gre2d_VB_4ch": (256, 256, 1)}


def _data(name: str) -> Path:
    if not (DATA / "SHA256SUMS").is_file():
        pytest.skip(f"real twix folder not found: {DATA.resolve()}")
    sums = dict(reversed(line.split()) for line in (DATA / "SHA256SUMS").read_text().splitlines() if line.strip())
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{name} not in {DATA.resolve()}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sums.get(name, sums.get("./" + name)) not in (None, digest):
        pytest.fail(f"{name}: SHA256 differs from SHA256SUMS")
    return path


def _seq_k(path: Path) -> np.ndarray:
    import pypulseq as pp

    seq = pp.Sequence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq.read(str(path))
        k = seq.calculate_kspace()[0]
    fov = np.asarray(seq.definitions["FOV"], dtype=np.float64)
    return k, fov


def fft_recon(dat: Path, seq: Path) -> np.ndarray:
    """Line-sorted inverse FFT + root-sum-of-squares of the raw readouts: (N, N, 1), prewhitened
    as the reconstruction's noise estimate decides (the comparison is of the transforms)."""
    scan = read_scan(dat, allow_nucleus=True)
    ksp = scan.data[0, 0]  # (ncoil, nline, nsample)
    nc, nl, ns = ksp.shape
    k, fov = _seq_k(seq)
    k = k.T.reshape(nl, ns, 3) * fov  # cycles/FOV
    coord2 = k[..., :2]
    est = coils.estimate_noise(ksp, coord2, scan.noise)
    if est.psi is not None:
        w, _ = coils.whitening_matrix(est.psi)
        ksp = coils.prewhiten(ksp, w)
    ky = np.round(k[:, ns // 2, 1]).astype(int)
    assert np.allclose(k[:, :, 1], ky[:, None], atol=1e-2), "not Cartesian lines"
    grid = np.zeros((nc, ns, ns), np.complex128)  # (coil, kx, ky)
    grid[:, :, (ky + ns // 2) % ns] = np.transpose(ksp, (0, 2, 1))
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(grid, axes=(1, 2)), axes=(1, 2), norm="ortho"), axes=(1, 2))
    return np.sqrt(np.sum(np.abs(img) ** 2, axis=0))[:, :, None]


def nrmse(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(NRMSE of a against b, after the least-squares scale; that scale)."""
    s = float(np.vdot(a, b).real / np.vdot(a, a).real)
    return float(np.linalg.norm(s * a - b) / np.linalg.norm(b)), s


@pytest.mark.parametrize("name", sorted(CASES))
def test_cartesian_seq_recon_equals_fft(name, tmp_path, capsys):
    dat, seq = _data(name + ".dat"), _data(name + ".seq")
    out = tmp_path / "x.nii.gz"
    assert main(["recon", str(dat), "--traj", str(seq), "--allow-nucleus", "-o", str(out), "--no-png"]) == 0
    img = Image.load(out)
    assert img.array.shape == CASES[name]
    truth = fft_recon(dat, seq)
    err, scale = nrmse(img.array.astype(np.float64), truth)
    with capsys.disabled():
        print(f"{name}: image {img.array.shape}, NRMSE vs FFT {err:.2e} (scale {scale:.4g})")
    assert err < 0.01 and abs(scale - 1) < 0.01
    block = json.loads(out.with_suffix("").with_suffix(".json").read_text())["recon"]
    assert block["trajectory"]["source"] == "pulseq" and block["trajectory"]["file"] == seq.name
    assert block["dcf"].startswith("uniform") and block["layout"].startswith("2D")
    # the slice geometry: z voxel = slice thickness, in-plane voxel = FOV / 256
    vox = np.linalg.norm(img.affine[:3, :3], axis=0)
    fov = _seq_k(seq)[1] * 1e3
    np.testing.assert_allclose(vox, [fov[0] / 256, fov[1] / 256, fov[2]], rtol=1e-6)


def test_seq_that_does_not_fit_the_scan(tmp_path, capsys):
    dat = _data("gre2d_VB_4ch.dat")
    seq = tmp_path / "radial.seq"
    assert main(["traj", "radial", "--matrix", "12", "-o", str(tmp_path / "r.npz"), "--no-png", "--seq", str(seq)]) == 0
    rc = main(["recon", str(dat), "--traj", str(seq), "--allow-nucleus", "-o", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not (tmp_path / "x.nii.gz").exists()
    assert len(err) == 1 and "ADC events but the scan has 256 readouts" in err[0]
