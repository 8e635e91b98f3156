"""Image-domain sodium scans of the brain phantom for the B1 and TSC tests.

The truth is built here from the phantom's own per-compartment parameters with an explicit
spoiled-GRE formula written out independently of na23recon.quant.relax (so a wrong signal
equation there cannot agree with itself), a smooth B1+ field with +-30% variation that scales the
flip (transmit) and the signal (receive, by reciprocity), a slight blur, and complex Gaussian
noise (magnitude image, Rician) at a chosen SNR.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from na23recon.sim.phantom import load_phantom

FOV_MM = 240.0


def b1_field(r_mm: np.ndarray) -> np.ndarray:
    """Smooth, non-polynomial transmit field: 0.7..1.3 across the head and vials."""
    x, y, z = r_mm[..., 0], r_mm[..., 1], r_mm[..., 2]
    u = (0.8 * x + 0.5 * y + 0.3 * z) / 110.0
    return 1.0 + 0.3 * np.tanh(1.5 * u) / np.tanh(1.5)


@lru_cache(maxsize=None)
def _voxel_params(matrix: int, ss: int):
    """Per sub-voxel point: concentration, T1, T2*s, T2*l, frac_short, B1 (all (N, N, N, ss^3))."""
    ph = load_phantom("brain")
    r = ph.voxel_centres_mm(matrix, FOV_MM)
    vox = FOV_MM / matrix
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    pts = np.stack([r + vox * np.array([ox, oy, oz]) for ox in offs for oy in offs for oz in offs], axis=-2)
    idx = ph.index_map(pts)
    comps = ph.compartments
    table = np.array([[c.conc_mM, c.t1_ms, c.t2s_short_ms, c.t2s_long_ms, c.frac_short] for c in comps]
                     + [[0.0, 1.0, 1.0, 1.0, 0.0]])  # background row: no sodium
    p = table[idx]  # (N, N, N, ss^3, 5)
    return p, b1_field(pts), ph.truth(matrix, FOV_MM, "label"), b1_field(r)


def signal(matrix: int, flip_deg: float, tr_ms: float, te_ms: float, b1_scale: float = 1.0,
           ss: int = 2) -> np.ndarray:
    """Noise-free magnitude image (x, y, z): sum over sub-voxel points of
    k * C * sin(k a) (1 - exp(-TR/T1)) / (1 - exp(-TR/T1) cos(k a)) * [f e^(-TE/T2s) + (1-f) e^(-TE/T2l)]."""
    p, k, _, _ = _voxel_params(matrix, ss)
    c, t1, t2s, t2l, f = (p[..., i] for i in range(5))
    k = 1.0 + (k - 1.0) * b1_scale
    alpha = k * np.deg2rad(flip_deg)
    e1 = np.exp(-tr_ms / t1)
    s = k * c * np.sin(alpha) * (1 - e1) / (1 - e1 * np.cos(alpha)) * (f * np.exp(-te_ms / t2s) + (1 - f) * np.exp(-te_ms / t2l))
    return s.mean(axis=-1)


def scan(matrix: int, flip_deg: float, tr_ms: float, te_ms: float, snr: float, seed: int,
         blur_vox: float = 0.6, noise_sd: float | None = None) -> tuple[np.ndarray, float]:
    """Blurred, noisy magnitude image and its Gaussian noise SD (SNR = mean brain signal / SD)."""
    s = ndimage.gaussian_filter(signal(matrix, flip_deg, tr_ms, te_ms), blur_vox)
    lab = labels(matrix)
    if noise_sd is None:
        noise_sd = float(s[(lab == 2) | (lab == 3)].mean() / snr)
    rng = np.random.default_rng(seed)
    n = rng.normal(scale=noise_sd, size=(2,) + s.shape)
    return np.abs(s + n[0] + 1j * n[1]).astype(np.float32), noise_sd


def labels(matrix: int) -> np.ndarray:
    """Label image (x, y, z) of voxel centres: 1 CSF, 2 GM, 3 WM, 4 ventricles, 5 lesion, 11-14 vials."""
    return _voxel_params(matrix, 2)[2]


def true_b1(matrix: int) -> np.ndarray:
    """The transmit field at voxel centres (x, y, z)."""
    return _voxel_params(matrix, 2)[3]


def affine(matrix: int) -> np.ndarray:
    """RAS affine (mm) of the phantom grid: voxel n at (n - N//2) * FOV / N."""
    vox = FOV_MM / matrix
    a = np.diag([vox, vox, vox, 1.0])
    a[:3, 3] = -(matrix // 2) * vox
    return a


def acquisition(flip_deg: float, tr_ms: float, te_ms: float, matrix: int) -> dict:
    """A sidecar with the sidecar acquisition block for the test images."""
    return {"acquisition": {"nucleus": "23Na", "b0_T": 3.0, "te_ms": [te_ms], "tr_ms": tr_ms, "flip_deg": flip_deg,
                            "dwell_us": 10.0, "fov_mm": [FOV_MM] * 3, "matrix": [matrix] * 3}}


def write_quant_files(d, matrix: int):
    """The image-domain files the quantify/b1map CLI tests share, written into folder `d`:
    a.nii.gz / 2a.nii.gz (double-angle pair, flips 60/120 deg, TR 300 ms), img.nii.gz (flip 80,
    TR 60), labels.nii.gz, vmask.nii.gz (vial labels only), vials.json. Returns d."""
    import json

    from na23recon.core.nifti import save_nifti

    aff = affine(matrix)
    sa, sd = scan(matrix, 60.0, 300.0, 0.3, snr=30, seed=1)
    s2a, _ = scan(matrix, 120.0, 300.0, 0.3, snr=30, seed=2, noise_sd=sd)
    img, _ = scan(matrix, 80.0, 60.0, 0.3, snr=30, seed=3)
    lab = labels(matrix)
    save_nifti(d / "a.nii.gz", sa, aff, acquisition(60.0, 300.0, 0.3, matrix))
    save_nifti(d / "2a.nii.gz", s2a, aff, acquisition(120.0, 300.0, 0.3, matrix))
    save_nifti(d / "img.nii.gz", img, aff, acquisition(80.0, 60.0, 0.3, matrix))
    save_nifti(d / "labels.nii.gz", lab, aff, {})
    save_nifti(d / "vmask.nii.gz", np.where(lab > 10, lab, 0), aff, {})
    vials = {"vials": [{"label": 11 + i, "concentration_mM": c, "medium": "agar2"}
                       for i, c in enumerate([25, 50, 100, 150])]}
    (d / "vials.json").write_text(json.dumps(vials))
    return d
