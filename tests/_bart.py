"""BART's analytic phantom as an independent test reference (BART 0.8, `bart` on PATH).

`bart phantom -3 -k -s 8 -t TRAJ` evaluates the 3D Shepp-Logan phantom's k-space in closed form
at our trajectory's samples with BART's analytic 8-coil sensitivities; without `-s` it is the
same object received by a uniform (volume) coil. The data are written as Siemens twix files with
the project's writer and read back by the project's reader, as a user's scans would be. The ROI
truth is BART's image-domain phantom (`bart phantom -3 -x N`), its distinct values.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from na23recon.core.acquisition import Acquisition
from na23recon.core.scan import Scan
from na23recon.io.trajfile import save_traj
from na23recon.io.twix import write_scan
from na23recon.sim.scan import SimProtocol, sim_geometry
from na23recon.traj.dcf import dcf_radial_shells
from na23recon.traj.radial import radial_for_matrix

BART = shutil.which("bart")
SKIP_REASON = "BART (bart on PATH) is the test reference here; it is not installed (Debian package 'bart')"


def write_cfl(name: str | Path, arr: np.ndarray) -> None:
    a = np.asarray(arr, dtype=np.complex64)
    Path(f"{name}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in a.shape) + "\n")
    a.ravel(order="F").tofile(f"{name}.cfl")


def read_cfl(name: str | Path) -> np.ndarray:
    dims = [int(x) for x in Path(f"{name}.hdr").read_text().split("\n")[1].split()]
    return np.fromfile(f"{name}.cfl", dtype=np.complex64).reshape(dims, order="F")


def bart(*args) -> None:
    subprocess.run([BART, *map(str, args)], check=True, capture_output=True)


def _squeeze(a: np.ndarray, keep: int) -> np.ndarray:
    return a.reshape(a.shape[:keep])


def make_bart_case(folder: Path, n: int = 32, undersampling: float = 1.0, fov_mm: float = 240.0,
                   ncoil: int = 8, noise: float = 0.0, seed: int = 0) -> dict:
    """Write array.dat (ncoil channels), volume.dat (one uniform coil), traj.npz and BART's
    truth into `folder`; returns paths and arrays (truth (n, n, n) float, sens (n, n, n, ncoil)).

    noise: SD of complex Gaussian noise added to every channel's k-space samples (real and imaginary
    parts each noise / sqrt 2), relative to the RMS of that scan's samples (all channels); independent
    draws for the two scans, written back to the CFL files so `bart_pics` sees the same data."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tr = radial_for_matrix(n, fov_mm, undersampling=undersampling)
    tr = replace(tr, dcf=dcf_radial_shells(tr.k))
    coord = tr.coord(fov_mm)  # (nreadout, nsample, 3) cycles/FOV: BART's unit, edge at +-n/2
    write_cfl(folder / "traj", np.transpose(coord, (2, 1, 0)))
    bart("phantom", "-3", "-k", "-s", ncoil, "-t", folder / "traj", folder / "ks_array")
    bart("phantom", "-3", "-k", "-t", folder / "traj", folder / "ks_volume")
    bart("phantom", "-3", "-x", n, folder / "truth")
    bart("phantom", "-3", "-S", ncoil, "-x", n, folder / "sens")
    geom = sim_geometry(SimProtocol(matrix=n, fov_mm=fov_mm))
    out = {"traj": folder / "traj.npz", "traj_cfl": folder / "traj", "ks_array": folder / "ks_array",
           "sens_cfl": folder / "sens"}
    save_traj(out["traj"], tr)
    scale = 1.0 / float(np.sqrt(float(n) ** 3))
    rng = np.random.default_rng(seed)
    for name, nc in (("array", ncoil), ("volume", 1)):
        if noise > 0:
            k = read_cfl(folder / f"ks_{name}")
            sd = noise * float(np.sqrt(np.mean(np.abs(k) ** 2)))
            k = k + (sd / np.sqrt(2)) * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
            write_cfl(folder / f"ks_{name}", k)
        k = _squeeze(read_cfl(folder / f"ks_{name}"), 4)[0]  # (nsample, nreadout, ncoil)
        data = (np.transpose(k, (2, 1, 0)) * scale)[None, None].astype(np.complex64)
        acq = Acquisition(nucleus="23Na", b0_T=7.0, te_ms=(0.3,), tr_ms=100.0, flip_deg=90.0, dwell_us=10.0,
                          geometry=geom, coil_names=tuple(f"Na{c + 1:02d}" for c in range(nc)))
        out[name] = write_scan(folder / f"{name}.dat", Scan(data=data, acquisition=acq))
    out["truth_image"] = np.abs(_squeeze(read_cfl(folder / "truth"), 3)).astype(np.float64)
    out["sens"] = _squeeze(read_cfl(folder / "sens"), 4)
    return out


def bart_pics(case: dict, folder: Path, iters: int = 30) -> np.ndarray:
    """BART's CG-SENSE (`bart pics`, l2, small lambda) with the true analytic sensitivities."""
    bart("pics", "-S", "-i", iters, "-l2", "-r", "1e-4", "-t", case["traj_cfl"], case["ks_array"], case["sens_cfl"],
         Path(folder) / "pics")
    return np.abs(_squeeze(read_cfl(Path(folder) / "pics"), 3)).astype(np.float64)


def roi_error(image: np.ndarray, truth: np.ndarray, min_voxels: int = 8) -> tuple[float, int]:
    """Worst relative error of the ROI means after one global linear calibration.

    ROIs: each connected region of one non-zero truth value, eroded by one voxel (no partial
    volume), kept when at least `min_voxels` remain (separate ellipsoids of one value are separate
    ROIs: they sit at different places of the coils' fields). The calibration is the least-squares
    line mean = a truth + b over the ROIs; the error of ROI i is |(mean_i - b) / a - truth_i| / truth_i.
    Returns (worst error, number of ROIs)."""
    means, t = [], []
    for v in np.unique(truth):
        if v <= 0:
            continue
        lab, nlab = ndimage.label(ndimage.binary_erosion(np.isclose(truth, v)))
        for j in range(1, nlab + 1):
            m = lab == j
            if m.sum() >= min_voxels:
                means.append(float(np.mean(image[m])))
                t.append(float(v))
    a, b = np.polyfit(t, means, 1)
    est = (np.asarray(means) - b) / a
    return float(np.max(np.abs(est - np.asarray(t)) / np.asarray(t))), len(t)
