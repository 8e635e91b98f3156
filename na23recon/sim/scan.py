"""Synthetic sodium scans: analytic phantom k-space on a real trajectory, written as a twix file.

The k-space is the closed-form ellipsoid / cylinder transform (`sim.kspace`) evaluated at every sample's k
and time after excitation (TE + readout time), so T2* decay during the readout is modelled and no
NUFFT is involved (no inverse crime). The data are scaled by 1 / (voxel volume * sqrt(N^3)) so
that an orthonormal NUFFT adjoint with sum-normalised density compensation returns the signal
weight C * saturation * decay of each compartment in its voxels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..core.acquisition import Acquisition
from ..core.atomic import ensure_writable_dir, write_text_atomic
from ..core.geometry import Geometry
from ..core.nifti import save_nifti
from ..core.scan import Scan
from ..core.trajectory import SampleSelection, Trajectory
from ..errors import InputError
from ..io.trajfile import save_traj
from ..io.twix import write_scan
from ..provenance import base_sidecar
from ..traj.dar import dar_3d
from ..traj.dcf import dcf_analytic, dcf_radial_shells, normalise_dcf
from ..traj.delay import check_delays, delayed_k
from ..traj.radial import radial_for_matrix
from ..traj.tpi import tpi_3d
from .anatomy import write_anatomy
from .coils import HelmetArray
from .fields import B1Model, head_radii_mm
from .kspace import analytic_kspace, build_fields
from .phantom import Phantom, load_phantom


@dataclass
class SimProtocol:
    """Protocol of a simulated scan. Units in the names.

    traj: 'radial' | 'dar' (density-adapted radial, Nagel et al., Magn Reson Med 2009) | 'tpi' (twisted projection
        imaging, Boada et al., Magn Reson Med 1997).
    b1_variation: transmit flip scale spans about 1 +- this (`sim.fields.B1Model`, `b1_model`).
    receive: 'auto' (helmet loops when ncoil > 1, else uniform), 'uniform', 'reciprocal'
        (s = k_B1, a transmit-receive volume coil; one coil) or 'helmet'.
    off_resonance_hz: a global frequency offset, applied as exp(i 2 pi df t) with t from excitation.
    noise_correlation: rho of the coil noise covariance (`sim.coils.HelmetArray.noise_covariance`).
    field_order: total degree of the field series (None: 3 for B1, 4 with coils).
    gradient_delay_us: per-axis delays (read, phase, partition), us: the k-space is evaluated at
        k_i(t - d_i) (`traj.delay.delayed_k`, through the gradient waveform), the trajectory file
        keeps the nominal k.
    """
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
    slice_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Normal of the imaging volume (its partition axis) in LPS; read and phase follow from it and
    `inplane_rot_rad` by Siemens' rule (`core.geometry`)."""
    inplane_rot_rad: float = 0.0
    phantom_position_mm: tuple[float, float, float] | None = None
    """Where the phantom's origin sits in LPS, mm (its axes are the patient axes: x -> L, y -> P,
    z -> S); None: at the FOV centre."""
    patient_position: str = "HFS"
    traj: str = "radial"
    b1_variation: float = 0.0
    b1_model: str = "birdcage"
    receive: str = "auto"
    off_resonance_hz: float = 0.0
    noise_correlation: float = 0.3
    field_order: int | None = None
    readout_ms: float | None = None
    """TPI only: the readout duration, ms, set through the twist gradient (None: the fastest the
    scanner limits allow)."""
    gradient_delay_us: tuple[float, float, float] = (0.0, 0.0, 0.0)


TRAJECTORIES = ("radial", "dar", "tpi")


def sim_geometry(acq: SimProtocol) -> Geometry:
    """The `Geometry` of the simulated scan (cubic FOV and matrix, the protocol's volume)."""
    return Geometry(fov_mm=(acq.fov_mm,) * 3, matrix=(acq.matrix,) * 3,
                    position_mm=tuple(float(v) for v in acq.slice_position_mm),
                    normal=tuple(float(v) for v in acq.slice_normal), inplane_rot_rad=float(acq.inplane_rot_rad),
                    patient_position=acq.patient_position)


def image_to_phantom(acq: SimProtocol) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3, 3), offset_mm (3,)): a point r (mm) of the image grid, relative to the FOV centre
    in the image axes (read, phase, slice), lies at rotation @ r + offset_mm in phantom coordinates.
    rotation = the image axes in LPS (`Geometry.rotation_lps`); offset = FOV centre - phantom origin."""
    geo = sim_geometry(acq)
    where = acq.slice_position_mm if acq.phantom_position_mm is None else acq.phantom_position_mm
    return geo.rotation_lps(), np.asarray(geo.position_mm, float) - np.asarray(where, dtype=float)


def make_trajectory(acq: SimProtocol) -> Trajectory:
    """The scanner-like trajectory of `acq` with its analytic DCF, as a `core.Trajectory`.

    k (nreadout, nsample, 3) 1/m, t (nsample,) s from excitation (TE + time from the readout
    start), dcf (nreadout, nsample) in (1/m)^3, meta: the scalars stored with the trajectory file
    (kind, kmax_per_m, k0_per_m, te_s, readout_ms, nreadout, nsample, undersampling, dcf_method).
    DCF: radial shell volumes for radial, the closed form |k|^2 below k0 and k0^2 above
    (`traj.dcf.dcf_analytic`, the generator's k0) for TPI (Boada et al. MRM 1997); DA-radial
    (Nagel et al. MRM 2009) spokes are straight, so they get the exact shell volumes too (which
    follow the gradient ramp at the start of the readout, unlike the closed form). TPI has no
    undersampling option of its own: with undersampling u > 1 every u-th projection is kept
    (evenly strided over the cones); the result then has no gradient `design`."""
    if acq.traj not in TRAJECTORIES:
        raise InputError(f"trajectory must be one of {', '.join(TRAJECTORIES)}, got {acq.traj!r}")
    if acq.readout_ms is not None and acq.traj != "tpi":
        raise InputError(f"readout_ms sets the TPI readout; the {acq.traj} readout follows from the matrix")
    if not np.isfinite(acq.undersampling) or acq.undersampling < 1:
        raise InputError(f"undersampling must be >= 1, got {acq.undersampling}")
    if acq.traj == "radial":

        tr = radial_for_matrix(acq.matrix, acq.fov_mm, undersampling=acq.undersampling, te_ms=acq.te_ms)
    elif acq.traj == "dar":

        tr = dar_3d(acq.matrix, acq.fov_mm, undersampling=acq.undersampling, te_ms=acq.te_ms)
    else:
        g = None
        if acq.readout_ms is not None:  # the readout is ~ inversely proportional to the twist gradient
            if not np.isfinite(acq.readout_ms) or not 0.5 <= acq.readout_ms <= 100:
                raise InputError(f"readout_ms must be between 0.5 and 100, got {acq.readout_ms}")
            probe = tpi_3d(acq.matrix, acq.fov_mm, g_mT_m=1.0).t[-1] * 1e3
            g = probe / acq.readout_ms
        tr = tpi_3d(acq.matrix, acq.fov_mm, te_ms=acq.te_ms, g_mT_m=g)
    kmax_per_m, k0_per_m = float(tr.design.kmax_per_m), float(tr.design.k0_per_m)
    if acq.traj == "tpi" and acq.undersampling > 1:
        n = tr.nreadout
        keep = np.unique(np.round(np.linspace(0, n - 1, int(np.ceil(n / acq.undersampling))))).astype(int)
        tr = tr.select(SampleSelection((keep, slice(None))))
    if acq.traj in ("radial", "dar"):
        # straight spokes: the exact shell volumes follow the ramp-sampled start, which the closed form
        # misses (dcf_analytic 'dar' weights the first ramp samples up to 60x too much and scales
        # extended objects ~45% too bright at matrix 32)
        dcf = dcf_radial_shells(tr.k)
        dcf_method = "dcf_radial_shells"
    else:
        dcf = dcf_analytic(tr.k, kind=acq.traj, k0=k0_per_m, kmax=kmax_per_m)
        dcf_method = "dcf_analytic(tpi, k0)"
    meta = {"kind": acq.traj, "kmax_per_m": kmax_per_m, "k0_per_m": k0_per_m,
            "te_s": acq.te_ms * 1e-3, "readout_ms": float(tr.sample_times()[-1] * 1e3), "nreadout": tr.nreadout,
            "nsample": tr.nsample, "undersampling": float(acq.undersampling), "dcf_method": dcf_method}
    return replace(tr, dcf=dcf, meta=meta)


def simulate_kspace(phantom: Phantom, traj: Trajectory, acq: SimProtocol,
                    fields=None, flip_deg: float | None = None) -> np.ndarray:
    """k-space of `phantom` at the samples of `traj` (k in 1/m, t in s from excitation), scaled
    to voxel units of `acq.matrix`: (nreadout, nsample) complex128 without `fields`,
    (ncoil, nreadout, nsample) with a `sim.kspace.FieldSet`. Exact closed forms with each sample's
    T2* decay (`sim.kspace.analytic_kspace`), plus the global off-resonance phase.

    The trajectory's k is in the image (logical) axes (read, phase, slice); the scanner plays it
    along R k in patient coordinates (R = `image_to_phantom` rotation) and demodulates about the
    FOV centre, so the phantom, fixed in patient coordinates, is sampled at R k with the phase
    exp(2 pi i (R k) . offset) of its origin relative to the FOV centre."""
    if traj.t is None:
        raise InputError("simulating k-space needs the sample times t (s from excitation)")
    n = acq.matrix
    vox_m3 = (acq.fov_mm * 1e-3 / n) ** 3
    t_exc = traj.t[None, :] if traj.t.ndim == 1 else traj.t
    flip = np.deg2rad(acq.flip_deg if flip_deg is None else flip_deg)
    rot, offset_mm = image_to_phantom(acq)
    k = delayed_k(traj, acq.gradient_delay_us) if np.any(acq.gradient_delay_us) else traj.k
    k = k if np.array_equal(rot, np.eye(3)) else k @ rot.T
    y = analytic_kspace(phantom, k, t_exc, acq.tr_ms, flip, fields)
    if offset_mm.any():
        y = y * np.exp(2j * np.pi * (k @ (offset_mm * 1e-3)))
    if acq.off_resonance_hz:
        y = y * np.exp(2j * np.pi * acq.off_resonance_hz * t_exc)
    y /= vox_m3 * np.sqrt(float(n) ** 3)
    return y if fields is not None else y[0]


def noise_sigma(phantom: Phantom, dcf: np.ndarray, coord: np.ndarray, acq: SimProtocol, snr: float) -> float:
    """k-space noise SD giving image SNR `snr` for the brightest compartment after a density-
    compensated adjoint reconstruction (`recon.adjoint`): var_img = sigma^2 sum(w^2) / N^3 with the
    weights w (nreadout, nsample) in absolute units (`normalise_dcf`) and `coord` in cycles/FOV.
    With a coil array every coil gets this SD (sensitivities are scaled so that their RSS averages
    1 over the head, `sim.coils`)."""
    if not np.isfinite(snr) or snr <= 0:
        raise InputError(f"SNR must be a positive number, got {snr}")
    n3 = float(acq.matrix) ** 3
    w = normalise_dcf(dcf, coord).astype(np.float64)
    peak = float(np.max(phantom.weights(np.array([acq.te_ms * 1e-3]), acq.tr_ms, np.deg2rad(acq.flip_deg))))
    return peak / snr / np.sqrt(np.sum(w * w) / n3)


def b1_model_for(phantom: Phantom, acq: SimProtocol):
    """The `B1Model` of `acq` scaled to the phantom's head, or None without B1 variation."""
    if not acq.b1_variation:
        return None
    return B1Model(kind=acq.b1_model, variation=acq.b1_variation, radii_mm=head_radii_mm(phantom))


def receive_model_for(phantom: Phantom, acq: SimProtocol):
    """'uniform', 'reciprocal' or a `HelmetArray` for `acq.receive` / `acq.ncoil`."""
    rx = acq.receive
    if rx == "auto":
        rx = "helmet" if acq.ncoil > 1 else "uniform"
    if rx not in ("uniform", "reciprocal", "helmet"):
        raise InputError(f"receive must be 'auto', 'uniform', 'reciprocal' or 'helmet', got {acq.receive!r}")
    if rx != "helmet" and acq.ncoil != 1:
        raise InputError(f"receive {rx!r} models one coil, but ncoil is {acq.ncoil} (use 'helmet')")
    return HelmetArray(acq.ncoil, head_radii_mm(phantom)) if rx == "helmet" else rx


def simulate_scan(phantom: Phantom, acq: SimProtocol, snr: float | None = None, seed: int = 0,
                  flip_deg: float | None = None, cache: dict | None = None):
    """Simulate a centre-out 3D scan (radial, DA-radial or TPI) with B1+, coils and noise.

    Returns (Scan, {'traj': the `core.Trajectory` (k [1/m], dcf, t [s from excitation], meta),
    'sim': a dict describing the fields, their fit residuals and the noise covariance}).
    flip_deg overrides acq.flip_deg (double-angle pairs). `cache`, a dict the caller keeps,
    reuses the noiseless k-space between calls that differ only in snr and seed.
    """
    if not 8 <= acq.matrix <= 256:
        raise InputError(f"matrix must be between 8 and 256, got {acq.matrix}")
    if not 1 <= acq.ncoil <= 64:
        raise InputError(f"ncoil must be between 1 and 64, got {acq.ncoil}")
    if not (np.isfinite(acq.te_ms) and acq.te_ms >= 0 and np.isfinite(acq.tr_ms) and acq.tr_ms > 0):
        raise InputError(f"TE must be >= 0 and TR > 0 ms, got TE {acq.te_ms}, TR {acq.tr_ms}")
    acq = replace(acq, gradient_delay_us=tuple(float(v) for v in check_delays(acq.gradient_delay_us, 3,
                                                                                "gradient delay (us)")))
    flip = acq.flip_deg if flip_deg is None else float(flip_deg)
    if not 0 < flip < 180:
        raise InputError(f"flip angle must be in (0, 180) degrees, got {flip}")
    key = (phantom.name, repr(acq), flip)
    if cache is not None and key in cache:
        traj, y, rx, sim_info = cache[key]
    else:
        traj = make_trajectory(acq)
        b1 = b1_model_for(phantom, acq)
        rx = receive_model_for(phantom, acq)
        fields = build_fields(phantom, np.deg2rad(flip), acq.tr_ms, b1, rx, order=acq.field_order)
        y = simulate_kspace(phantom, traj, acq, fields=fields, flip_deg=flip)
        sim_info = {
            "b1": b1.describe() if b1 is not None else None,
            "receive": rx.describe() if hasattr(rx, "describe") else rx,
            "field_series": {"order": fields.basis.order, "nterms": fields.basis.nterms,
                             "period_mm": fields.basis.period_m * 1e3},
            "field_fit_residual": {c.name: round(float(r), 5) for c, r in zip(phantom.compartments, fields.residual)},
            "off_resonance_hz": acq.off_resonance_hz,
            "gradient_delay_us": list(acq.gradient_delay_us),
        }
        if cache is not None:
            cache[key] = (traj, y, rx, sim_info)
    rng = np.random.default_rng(seed)
    data = y.astype(np.complex64)
    noise = None
    sim_info = dict(sim_info)
    if snr is not None:
        sigma = noise_sigma(phantom, traj.dcf, traj.coord(acq.fov_mm), acq, snr)
        cov = rx.noise_covariance(sigma, acq.noise_correlation) if hasattr(rx, "noise_covariance") else \
            np.eye(acq.ncoil) * sigma**2
        chol = np.linalg.cholesky(cov)
        data = data + _correlated_noise(rng, chol, data.shape)
        noise = _correlated_noise(rng, chol, (acq.ncoil, 4096))
        sim_info["noise"] = {"sigma": sigma, "covariance_real": cov.real.tolist(), "covariance_imag": cov.imag.tolist()}
    t = traj.sample_times()
    dwell_s = float(t[1] - t[0]) if t.size > 1 else 10e-6
    geometry = sim_geometry(acq)
    acquisition = Acquisition(
        nucleus="23Na", b0_T=acq.b0_T, larmor_hz=GAMMA_BAR_NA23_HZ_PER_T * acq.b0_T, te_ms=(acq.te_ms,),
        tr_ms=acq.tr_ms, flip_deg=flip, dwell_us=dwell_s * 1e6, geometry=geometry,
        coil_names=tuple(f"Na{c + 1:02d}" for c in range(acq.ncoil)),
        software_version="na23recon-sim", protocol_name=f"sim_{phantom.name}_{acq.traj}",
    )
    scan = Scan(data=data[None, None], acquisition=acquisition, noise=noise)
    return scan, {"traj": traj, "sim": sim_info}


def _correlated_noise(rng: np.random.Generator, chol: np.ndarray, shape) -> np.ndarray:
    """Complex Gaussian noise (ncoil, ...) whose real and imaginary parts each have covariance
    chol chol^H (as `_cnoise`: sigma is the SD of each part)."""
    z = _cnoise(rng, (shape[0], int(np.prod(shape[1:]))), 1.0)
    return (chol.astype(np.complex64) @ z).reshape(shape).astype(np.complex64)


def _cnoise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Complex Gaussian noise with SD `sigma` in each of the real and imaginary parts."""
    return (rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape)).astype(np.complex64)


def simulate_to_folder(out: str | os.PathLike, phantom: str = "brain", matrix: int = 48, fov_mm: float = 240.0,
                       snr: float | None = None, seed: int = 0, double_angle: bool = False,
                       cache: dict | None = None, anat: bool = False, anat_voxel_mm: float = 1.0,
                       anat_offset_mm=(0.0, 0.0, 0.0), anat_rot_deg=(0.0, 0.0, 0.0), receive_reference: bool = False,
                       b0_map_voxel_mm: float | None = None, labels_voxel_mm: float | None = None,
                       **acq_kw) -> dict[str, Path]:
    """Write a complete synthetic scan into `out`: scan.dat (twix), traj.npz (k 1/m, analytic dcf,
    t from excitation), truth_conc.nii.gz (mM), truth_labels.nii.gz, truth_b1.nii.gz (relative
    flip scale of the B1+ model, 1.0 = nominal), truth_b0.nii.gz (the field, Hz at 23Na: each
    compartment's `b0_hz` plus the global offset, on the scan's grid), vials.json and phantom.json (the protocol, the
    phantom, the fields and their fit residuals, the noise covariance).

    double_angle: also write scan_2a.dat at twice the flip angle (noise seed + 1), the pair the
    double-angle B1 map needs (Insko & Bolinger, J Magn Reson A 1993; choose tr_ms >> T1 for it).
    anat: also write the phantom's GM/WM/CSF probability maps and atlas as a 1H scan of the visit
    sees them (`sim.anatomy.write_anatomy`: anat_gm/wm/csf.nii.gz, anat_atlas.nii.gz + .tsv,
    anat_motion.json) at `anat_voxel_mm`, the head moved by `anat_rot_deg` (about RAS x, y, z)
    and `anat_offset_mm` (RAS) between the scans.
    receive_reference: also write scan_ref.dat, the same scan received by the transmit volume coil
    (one channel, its receive field the B1+ model by reciprocity; noise seed + 2, the same SD per
    channel), the reference of `quantify --receive reference`.
    b0_map_voxel_mm: also write truth_b0_fine.nii.gz, the same field on a finer grid over the FOV
        (voxel ~ this, in scanner coordinates; each voxel the field of the compartment owning its
        centre), as a 1H field map at 1-2 mm would give it.
    labels_voxel_mm: also write truth_labels_fine.nii.gz, the label map on a finer grid over the FOV
        (each voxel the label of the compartment owning its centre), as a segmentation of a 1H scan
        gives it (the per-voxel decay model's `--decay-map` samples it into sub-voxel fractions).
    acq_kw: the other `SimProtocol` fields (traj, te_ms, tr_ms, flip_deg, ncoil, undersampling,
    b1_variation, off_resonance_hz, ...). Returns the paths by name.
    """
    ph = load_phantom(phantom)
    out = ensure_writable_dir(out)
    if not np.isfinite(fov_mm) or not 20 <= fov_mm <= 600:
        raise InputError(f"FOV must be between 20 and 600 mm, got {fov_mm}")
    acq = SimProtocol(matrix=matrix, fov_mm=fov_mm, **acq_kw)
    if double_angle and not 0 < acq.flip_deg < 90:
        raise InputError(f"a double-angle pair needs a flip angle below 90 degrees (2a < 180), got {acq.flip_deg}")
    scan, traj = simulate_scan(ph, acq, snr=snr, seed=seed, cache=cache)
    paths = {"scan": out / "scan.dat", "traj": out / "traj.npz", "truth": out / "truth_conc.nii.gz",
             "labels": out / "truth_labels.nii.gz", "b1": out / "truth_b1.nii.gz", "b0": out / "truth_b0.nii.gz",
             "vials": out / "vials.json",
             "phantom": out / "phantom.json"}
    write_scan(paths["scan"], scan)
    sims = {"scan": traj["sim"]}
    if double_angle:
        scan2, traj2 = simulate_scan(ph, acq, snr=snr, seed=seed + 1, flip_deg=2 * acq.flip_deg, cache=cache)
        paths["scan_2a"] = out / "scan_2a.dat"
        write_scan(paths["scan_2a"], scan2)
        sims["scan_2a"] = traj2["sim"]
    if receive_reference:
        ref_acq = replace(acq, ncoil=1, receive="reciprocal")
        scan_ref, traj_ref = simulate_scan(ph, ref_acq, snr=snr, seed=seed + 2, cache=cache)
        paths["scan_ref"] = out / "scan_ref.dat"
        write_scan(paths["scan_ref"], scan_ref)
        sims["scan_ref"] = traj_ref["sim"]
    save_traj(paths["traj"], traj["traj"])
    shape = (matrix,) * 3
    affine = scan.acquisition.geometry.affine(shape)
    side = base_sidecar(inputs=[])
    side["acquisition"] = scan.acquisition.sidecar()
    side["simulation"] = {"phantom": ph.name, "snr": snr, "seed": seed, "what": "ground truth"}
    rot, offset_mm = image_to_phantom(acq)
    save_nifti(paths["truth"], ph.truth(shape, fov_mm, "conc", supersample=3, rotation=rot, offset_mm=offset_mm),
               affine, {**side, "unit": "mM"})
    save_nifti(paths["labels"], ph.truth(shape, fov_mm, "label", rotation=rot, offset_mm=offset_mm), affine,
               {**side, "labels": {str(lab): names for lab, names in ph.labels.items()}})
    b1 = b1_model_for(ph, acq)
    r = ph.voxel_centres_mm(shape, fov_mm) @ rot.T + offset_mm
    b1map = b1(r) if b1 is not None else np.ones(shape)
    save_nifti(paths["b1"], b1map.astype(np.float32), affine, {
        **side, "unit": "relative flip scale (1.0 = nominal)", "b1_model": b1.describe() if b1 else None})
    b0 = ph.truth(shape, fov_mm, "b0_hz", rotation=rot, offset_mm=offset_mm) + acq.off_resonance_hz
    save_nifti(paths["b0"], b0.astype(np.float32), affine, {
        **side, "unit": "Hz at the sodium frequency (signal ~ exp(2 pi i f t))",
        "b0_hz": {c.name: c.b0_hz for c in ph.compartments}, "global_offset_hz": acq.off_resonance_hz})
    if b0_map_voxel_mm is not None:
        if not np.isfinite(b0_map_voxel_mm) or not 0.25 <= b0_map_voxel_mm <= fov_mm / 8:
            raise InputError(f"--b0-map-voxel-mm must be between 0.25 mm and FOV/8, got {b0_map_voxel_mm}")
        nf = int(round(fov_mm / b0_map_voxel_mm))
        paths["b0_fine"] = out / "truth_b0_fine.nii.gz"
        fine = ph.truth(nf, fov_mm, "b0_hz", rotation=rot, offset_mm=offset_mm) + acq.off_resonance_hz
        save_nifti(paths["b0_fine"], fine.astype(np.float32), scan.acquisition.geometry.affine((nf,) * 3), {
            **side, "unit": "Hz at the sodium frequency (signal ~ exp(2 pi i f t))", "voxel_mm": fov_mm / nf,
            "b0_hz": {c.name: c.b0_hz for c in ph.compartments}, "global_offset_hz": acq.off_resonance_hz})
    if labels_voxel_mm is not None:
        if not np.isfinite(labels_voxel_mm) or not 0.25 <= labels_voxel_mm <= fov_mm / 8:
            raise InputError(f"labels voxel must be between 0.25 mm and FOV/8, got {labels_voxel_mm}")
        nf = int(round(fov_mm / labels_voxel_mm))
        paths["labels_fine"] = out / "truth_labels_fine.nii.gz"
        save_nifti(paths["labels_fine"], ph.truth(nf, fov_mm, "label", rotation=rot, offset_mm=offset_mm),
                   scan.acquisition.geometry.affine((nf,) * 3),
                   {**side, "voxel_mm": fov_mm / nf, "labels": {str(lab): names for lab, names in ph.labels.items()}})
    # the vials' size as a vials file lists it: diameter of the cross-section, length along its axis
    vials = [{"label": c.label, "concentration_mM": c.conc_mM, "medium": c.medium, "shape": c.shape,
              "diameter_mm": round(2.0 * float(np.sqrt(c.semi_axes_mm[0] * c.semi_axes_mm[1])), 3),
              "length_mm": round(2.0 * float(c.semi_axes_mm[2]), 3)}
             for c in ph.compartments if c.medium is not None]
    write_text_atomic(paths["vials"], json.dumps({"vials": vials}, indent=2) + "\n")
    if anat:
        where = acq.slice_position_mm if acq.phantom_position_mm is None else acq.phantom_position_mm
        paths.update(write_anatomy(out, ph, where, anat_voxel_mm, anat_offset_mm, anat_rot_deg, side))
    write_text_atomic(paths["phantom"], json.dumps({
        "phantom": ph.name, "acquisition": acq.__dict__, "snr": snr, "seed": seed, "trajectory": dict(traj["traj"].meta),
        "simulation": sims, "compartments": [c.__dict__ for c in ph.compartments]},
        indent=2, default=str) + "\n")
    return paths
