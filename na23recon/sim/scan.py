"""Synthetic sodium scans: analytic phantom k-space on a real trajectory, written as a twix file.

The k-space is the closed-form ellipsoid transform (`sim.phantom`) evaluated at every sample's k
and time after excitation (TE + readout time), so T2* decay during the readout is modelled and no
NUFFT is involved (no inverse crime). The data are scaled by 1 / (voxel volume * sqrt(N^3)) so
that an orthonormal NUFFT adjoint with sum-normalised density compensation returns the signal
weight C * saturation * decay of each compartment in its voxels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..errors import InputError
from ..io.scan import Scan, ScanInfo
from .phantom import Phantom, load_phantom


@dataclass
class Acquisition:
    """Protocol of a simulated scan. Units in the names (DESIGN.md)."""

    matrix: int = 48
    fov_mm: float = 240.0
    te_ms: float = 0.3
    tr_ms: float = 100.0
    flip_deg: float = 90.0
    b0_T: float = 3.0
    undersampling: float = 1.0
    ncoil: int = 1
    slice_position_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """FOV centre in Siemens patient coordinates (Sag, Cor, Tra) = LPS, mm."""
    patient_position: str = "HFS"


def simulate_kspace(phantom: Phantom, k_per_m: np.ndarray, t_s: np.ndarray, acq: Acquisition) -> np.ndarray:
    """k-space (nreadout, nsample) complex128 of `phantom` at k (nreadout, nsample, 3) 1/m and
    times t (nsample,) s from the readout start, scaled to voxel units of `acq.matrix`."""
    n = acq.matrix
    vox_m3 = (acq.fov_mm * 1e-3 / n) ** 3
    t_exc = acq.te_ms * 1e-3 + np.asarray(t_s)[None, :]
    y = phantom.kspace(k_per_m, t_exc, tr_ms=acq.tr_ms, flip_rad=np.deg2rad(acq.flip_deg))
    return y / (vox_m3 * np.sqrt(float(n) ** 3))


def noise_sigma(phantom: Phantom, dcf: np.ndarray, coord: np.ndarray, acq: Acquisition, snr: float) -> float:
    """k-space noise SD giving image SNR `snr` for the brightest compartment after a density-
    compensated adjoint reconstruction (`recon.adjoint`): var_img = sigma^2 sum(w^2) / N^3 with the
    weights w (nreadout, nsample) in absolute units (`normalise_dcf`) and `coord` in cycles/FOV."""
    from ..recon.adjoint import normalise_dcf

    if not np.isfinite(snr) or snr <= 0:
        raise InputError(f"SNR must be a positive number, got {snr}")
    n3 = float(acq.matrix) ** 3
    w = normalise_dcf(dcf, coord).astype(np.float64)
    peak = float(np.max(phantom.weights(np.array([acq.te_ms * 1e-3]), acq.tr_ms, np.deg2rad(acq.flip_deg))))
    return peak / snr / np.sqrt(np.sum(w * w) / n3)


def simulate_scan(phantom: Phantom, acq: Acquisition, snr: float | None = None, seed: int = 0):
    """Simulate a centre-out 3D radial scan. Returns (Scan, trajectory dict with k [1/m], dcf, t)."""
    from ..traj.dcf import dcf_radial_shells
    from ..traj.radial import radial_for_matrix

    if not 8 <= acq.matrix <= 256:
        raise InputError(f"matrix must be between 8 and 256, got {acq.matrix}")
    traj = radial_for_matrix(acq.matrix, acq.fov_mm, undersampling=acq.undersampling)
    k, t = np.asarray(traj.k, dtype=np.float64), np.asarray(traj.t, dtype=np.float64)
    fov_m = acq.fov_mm * 1e-3
    dcf = dcf_radial_shells(k * fov_m)
    y = simulate_kspace(phantom, k, t, acq)
    rng = np.random.default_rng(seed)
    data = np.broadcast_to(y, (acq.ncoil, *y.shape)).astype(np.complex64)
    noise = None
    if snr is not None:
        sigma = noise_sigma(phantom, dcf, k * fov_m, acq, snr)
        data = data + _cnoise(rng, data.shape, sigma)
        noise = _cnoise(rng, (acq.ncoil, 4096), sigma)
    dwell_s = float(t[1] - t[0]) if t.size > 1 else 10e-6
    info = ScanInfo(
        nucleus="23Na", b0_T=acq.b0_T, larmor_hz=GAMMA_BAR_NA23_HZ_PER_T * acq.b0_T, te_ms=[acq.te_ms],
        tr_ms=acq.tr_ms, flip_deg=acq.flip_deg, dwell_us=dwell_s * 1e6, fov_mm=(acq.fov_mm,) * 3,
        matrix=(acq.matrix,) * 3, coil_names=[f"Na{c + 1:02d}" for c in range(acq.ncoil)],
        slice_position_mm=tuple(float(v) for v in acq.slice_position_mm), patient_position=acq.patient_position,
        software_version="na23recon-sim", protocol_name=f"sim_{phantom.name}_radial",
    )
    scan = Scan(data=data[None, None], info=info, noise=noise)
    return scan, {"k": k.astype(np.float32), "dcf": dcf.astype(np.float32), "t": t.astype(np.float32)}


def _cnoise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Complex Gaussian noise with SD `sigma` in each of the real and imaginary parts."""
    return (rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape)).astype(np.complex64)


def simulate_to_folder(out: str | os.PathLike, phantom: str = "brain", matrix: int = 48, fov_mm: float = 240.0,
                       snr: float | None = None, seed: int = 0, **acq_kw) -> dict[str, Path]:
    """Write a complete synthetic scan into `out`: scan.dat (twix), traj.npz, truth_conc.nii.gz (mM),
    truth_labels.nii.gz, vials.json and phantom.json. Returns the paths by name."""
    from ..io.geometry import affine_from_info
    from ..io.nifti import save_nifti
    from ..io.trajfile import save_traj
    from ..io.twix import write_scan
    from ..provenance import base_sidecar

    ph = load_phantom(phantom)
    if not np.isfinite(fov_mm) or not 20 <= fov_mm <= 600:
        raise InputError(f"FOV must be between 20 and 600 mm, got {fov_mm}")
    acq = Acquisition(matrix=matrix, fov_mm=fov_mm, **acq_kw)
    scan, traj = simulate_scan(ph, acq, snr=snr, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"scan": out / "scan.dat", "traj": out / "traj.npz", "truth": out / "truth_conc.nii.gz",
             "labels": out / "truth_labels.nii.gz", "vials": out / "vials.json", "phantom": out / "phantom.json"}
    write_scan(paths["scan"], scan)
    save_traj(paths["traj"], traj["k"], dcf=traj["dcf"], t=traj["t"])
    shape = (matrix,) * 3
    affine = affine_from_info(scan.info, shape)
    side = base_sidecar(inputs=[])
    side["acquisition"] = scan.info.sidecar_acquisition()
    side["simulation"] = {"phantom": ph.name, "snr": snr, "seed": seed, "what": "ground truth"}
    save_nifti(paths["truth"], ph.truth(shape, fov_mm, "conc", supersample=3), affine, {**side, "unit": "mM"})
    save_nifti(paths["labels"], ph.truth(shape, fov_mm, "label"), affine, {**side, "labels": {
        str(lab): names for lab, names in ph.labels.items()}})
    vials = [{"label": c.label, "concentration_mM": c.conc_mM, "medium": c.medium}
             for c in ph.compartments if c.medium is not None]
    from ..io.atomic import write_text_atomic

    write_text_atomic(paths["vials"], json.dumps({"vials": vials}, indent=2) + "\n")
    write_text_atomic(paths["phantom"], json.dumps({
        "phantom": ph.name, "acquisition": acq.__dict__, "snr": snr, "seed": seed,
        "compartments": [c.__dict__ for c in ph.compartments]}, indent=2, default=str) + "\n")
    return paths
