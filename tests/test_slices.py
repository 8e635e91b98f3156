"""Multi-slice 2D and stack-of-stars acquisitions of the analytic phantom.

Multi-slice: each slice's k-space is the analytic 2D transform (kz = 0) of the QA cylinders
shifted in-plane by a per-slice offset (so a slice landing in the wrong place or order fails),
written as a twix with the Sli counter and a slice array in a scrambled order, read back and
reconstructed. Stack of stars: 2D radial spokes on Cartesian kz partitions, the phantom's
analytic 3D k-space at those points (never the NUFFT), reconstructed with the FFT along z.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from na23recon import GAMMA_BAR_NA23_HZ_PER_T
from na23recon.core import Acquisition, Geometry, Scan, Trajectory
from na23recon.errors import InputError
from na23recon.io.twix import read_scan, write_scan
from na23recon.recon.scan_recon import reconstruct
from na23recon.sim.kspace import phantom_kspace
from na23recon.sim.phantom import Phantom, load_phantom

N, FOV_MM, NSPOKE = 96, 240.0, 160
SLICE_Z = (10.0, -10.0, 0.0)  # slice centres along the normal, in Sli counter order (not sorted)
SHIFT_X = (-12.0, 12.0, 0.0)  # the phantom's in-plane shift in each slice (Sli order)


def _phantom(shift_x: float = 0.0, half_length: float = 60.0) -> Phantom:
    ph = load_phantom("qa_cylinders")
    comps = [dataclasses.replace(c, semi_axes_mm=(c.semi_axes_mm[0], c.semi_axes_mm[1], half_length),
                                 center_mm=(c.center_mm[0] + shift_x, c.center_mm[1], c.center_mm[2]))
             for c in ph.compartments]
    return Phantom(ph.name, comps)


def _radial_2d(nspoke: int = NSPOKE, n: int = N) -> np.ndarray:
    """Full-diameter 2D spokes over 180 deg, k in 1/m (nspoke, n, 2)."""
    dk = 1e3 / FOV_MM
    r = (np.arange(n) - n / 2) * dk
    phi = np.pi * np.arange(nspoke) / nspoke
    return np.stack([np.cos(phi)[:, None] * r, np.sin(phi)[:, None] * r], axis=-1)


def _acq(geo: Geometry) -> Acquisition:
    return Acquisition(nucleus="23Na", b0_T=7.0, larmor_hz=7.0 * GAMMA_BAR_NA23_HZ_PER_T, te_ms=(1.0,),
                       tr_ms=10.0, flip_deg=90.0, dwell_us=20.0, geometry=geo, protocol_name="slices")


def _disc_means(img2d: np.ndarray, phantom: Phantom, n: int, vox_mm: tuple[float, float]) -> dict[str, float]:
    x = (np.arange(n) - n // 2) * vox_mm[0]
    y = (np.arange(img2d.shape[1]) - img2d.shape[1] // 2) * vox_mm[1]
    X, Y = np.meshgrid(x, y, indexing="ij")
    out = {}
    for c in phantom.compartments[1:]:
        r = np.hypot(X - c.center_mm[0], Y - c.center_mm[1])
        out[c.name] = float(img2d[r < c.semi_axes_mm[0] - 2.5 * vox_mm[0]].mean())
    return out


def _calibrated_errors(means: list[dict[str, float]], truth: dict[str, float], line=None):
    """mean / truth - 1 after one calibration line (slope, intercept) for the whole scan, as the
    TSC step fits it (or the given line); returns (errors per slice, line)."""
    names = sorted(truth)
    if line is None:
        a = np.concatenate([[m[n] for n in names] for m in means])
        b = np.concatenate([[truth[n] for n in names] for _ in means])
        line = np.polyfit(b, a, 1)
    slope, icpt = line
    return [{n: (m[n] - icpt) / slope / truth[n] - 1 for n in names} for m in means], line


def test_multislice_2d_twix_reconstructs_each_slice_in_place(tmp_path, capsys):
    k2 = _radial_2d()
    k3 = np.concatenate([k2, np.zeros(k2.shape[:2] + (1,))], axis=-1)
    # each slice: the 2D transform of its own shifted disc pattern (a long cylinder at kz = 0
    # is its projection: concentration x length, the same factor in every slice)
    data = np.concatenate([phantom_kspace(_phantom(sx), k3) for sx in SHIFT_X])
    positions = tuple((0.0, 0.0, z) for z in SLICE_Z)
    geo = Geometry(fov_mm=(FOV_MM, FOV_MM, 4.0), matrix=(N, N, 1), position_mm=positions[0],
                   normal=(0.0, 0.0, 1.0), slice_positions_mm=positions)
    scan = Scan(data[None, None, None].astype(np.complex64), _acq(geo))
    back = read_scan(write_scan(tmp_path / "ms.dat", scan))
    assert back.nslices == 3 and back.acquisition.geometry.slice_positions_mm == positions
    assert np.array_equal(back.data, scan.data)  # Sli counter + slice array round trip
    img = reconstruct(back, Trajectory(k=k3))
    assert img.array.shape == (N, N, 3)
    aff = img.affine
    spacing = 10.0
    assert np.allclose(aff[:3, 2], [0.0, 0.0, spacing], atol=1e-9)
    # voxel (N/2, N/2, k) is slice k's centre, slices ascending along the normal
    for k, z in enumerate(sorted(SLICE_Z)):
        assert np.allclose(aff @ [N // 2, N // 2, k, 1], [0.0, 0.0, z, 1.0], atol=1e-9)
    assert img.meta["recon"]["slices"]["spacing_mm"] == pytest.approx(spacing)
    order = np.argsort(SLICE_Z)
    truth = {c.name: c.conc_mM for c in _phantom().compartments[1:]}
    vox = (FOV_MM / N, FOV_MM / N)
    means = [_disc_means(img.array[:, :, k], _phantom(SHIFT_X[s]), N, vox) for k, s in enumerate(order)]
    errs, line = _calibrated_errors(means, truth)
    with capsys.disabled():
        for k, e in enumerate(errs):
            print(f"multi-slice 2D slice {k} (z = {sorted(SLICE_Z)[k]:+.0f} mm): mean/truth - 1 after calibration",
                  {n: f"{v * 100:+.2f}%" for n, v in e.items()})
    assert max(abs(v) for e in errs for v in e.values()) < 0.03
    # a trajectory listing every slice's readouts (as a .seq does) gives the same image
    assert np.array_equal(reconstruct(back, Trajectory(k=np.concatenate([k3] * 3))).array, img.array)
    # the command line writes the same (N, N, 3) volume on the same affine
    from na23recon.cli import main
    from na23recon.core import Image
    from na23recon.io.trajfile import save_traj

    save_traj(tmp_path / "t.npz", Trajectory(k=k3))
    out = tmp_path / "ms.nii.gz"
    assert main(["recon", str(tmp_path / "ms.dat"), "--traj", str(tmp_path / "t.npz"), "-o", str(out), "--no-png"]) == 0
    cli = Image.load(out)
    assert cli.array.shape == (N, N, 3) and np.allclose(cli.affine, aff, atol=1e-4)
    assert np.allclose(cli.array, img.array, rtol=1e-5, atol=1e-5 * img.array.max())
    # another slice's pattern does not fit: the slices are told apart
    wrong = _disc_means(img.array[:, :, 0], _phantom(SHIFT_X[order[1]]), N, vox)
    werr = max(abs(v) for v in _calibrated_errors([wrong], truth, line)[0][0].values())
    with capsys.disabled():
        print(f"slice 0 measured on slice 1's pattern: largest error {werr * 100:.1f}%")
    assert werr > 0.1


def test_slice_geometry_oblique_and_refusals():
    normal = np.array([0.3, -0.5, 0.81])
    normal /= np.linalg.norm(normal)
    centre, d = np.array([12.0, -30.0, 25.0]), 6.5
    order = (2, 0, 3, 1)  # Sli counter i sits at step order[i] along the normal
    positions = tuple(tuple(centre + order[i] * d * normal) for i in range(4))
    geo = Geometry(fov_mm=(200.0, 180.0, 3.0), matrix=(64, 48, 1), normal=tuple(normal), inplane_rot_rad=0.3,
                   position_mm=positions[0], slice_positions_mm=positions)
    aff = geo.affine((64, 48, 4))
    ras = np.diag([-1.0, -1.0, 1.0])
    assert np.allclose(aff[:3, 2], ras @ (d * normal), atol=1e-9)
    assert np.allclose(aff[:3, :2], geo.affine((64, 48, 1))[:3, :2])
    for k in range(4):
        assert np.allclose(aff @ [32, 24, k, 1], np.r_[ras @ (centre + k * d * normal), 1.0], atol=1e-9)
    uneven = positions[:3] + (tuple(centre + 5.5 * d * normal),)
    with pytest.raises(InputError, match="not equally spaced"):
        dataclasses.replace(geo, slice_positions_mm=uneven).affine((64, 48, 4))


def test_multislice_refusals():
    k2 = _radial_2d(8, 16)
    geo2 = Geometry(fov_mm=(FOV_MM, FOV_MM, 4.0), matrix=(16, 16, 1),
                    slice_positions_mm=((0.0, 0.0, 0.0), (0.0, 0.0, 5.0)))
    scan2 = Scan(np.zeros((1, 1, 1, 16, 16), np.complex64), _acq(geo2))
    other = np.concatenate([k2, k2[:, ::-1] * 0.5])
    with pytest.raises(InputError, match="do not all have the same k"):
        reconstruct(scan2, Trajectory(k=other))
    k3 = np.random.default_rng(0).uniform(-30, 30, (40, 16, 3))
    geo = Geometry(fov_mm=(FOV_MM,) * 3, matrix=(16, 16, 16),
                   slice_positions_mm=((0.0, 0.0, -50.0), (0.0, 0.0, 50.0)))
    scan = Scan(np.zeros((1, 1, 1, 80, 16), np.complex64), _acq(geo))
    # a multi-slice (multi-slab) scan with a 3D trajectory
    with pytest.raises(InputError, match="multi-slab 3D is not supported"):
        reconstruct(scan, Trajectory(k=k3))


NZ, FOVZ = 16, 120.0  # partitions and slab thickness (mm) of the stack of stars


def _stack_scan():
    """2D radial spokes x NZ Cartesian kz partitions, the phantom's analytic 3D k-space there."""
    k2 = _radial_2d()
    kz = (np.arange(NZ) - NZ // 2) * 1e3 / FOVZ
    k = np.concatenate([np.concatenate([k2, np.full(k2.shape[:2] + (1,), z)], axis=-1) for z in kz])
    ph = _phantom(half_length=40.0)  # cylinders end inside the slab: no aliasing along z
    data = phantom_kspace(ph, k)
    geo = Geometry(fov_mm=(FOV_MM, FOV_MM, FOVZ), matrix=(N, N, NZ), normal=(0.0, 0.0, 1.0))
    return Scan(data[None, None, None].astype(np.complex64), _acq(geo)), Trajectory(k=k), ph


def test_stack_of_stars_fft_along_z(monkeypatch, capsys):
    from na23recon.nufft import Nufft
    from na23recon.recon import app
    from na23recon.sim.evaluate import nrmse

    scan, traj, ph = _stack_scan()
    t0 = time.perf_counter()
    img = reconstruct(scan, traj)
    t_stack = time.perf_counter() - t0
    assert img.array.shape == (N, N, NZ)
    assert img.meta["recon"]["layout"].startswith("stack") and img.meta["recon"]["nufft"].startswith("2D NUFFT per kz")
    assert np.allclose(img.affine[:3, 2], [0.0, 0.0, FOVZ / NZ])
    truth = {c.name: c.conc_mM for c in ph.compartments[1:]}
    vz = FOVZ / NZ
    central = [k for k in range(NZ) if abs((k - NZ // 2) * vz) <= 20.0]  # away from the cylinder ends
    means = [_disc_means(img.array[:, :, k], ph, N, (FOV_MM / N, FOV_MM / N)) for k in central]
    errs, _ = _calibrated_errors(means, truth)
    worst = max(abs(v) for e in errs for v in e.values())
    # the same reconstruction through the 3D NUFFT on the partition grid
    monkeypatch.setattr(app, "make_nufft", lambda c, s, eps=1e-3: Nufft(c, s, eps=eps))
    t0 = time.perf_counter()
    img3 = reconstruct(scan, traj)
    t_3d = time.perf_counter() - t0
    assert img3.meta["recon"]["nufft"] == "3D NUFFT"
    diff = nrmse(img.array, img3.array)
    with capsys.disabled():
        print(f"stack of stars ({NSPOKE} spokes x {NZ} partitions, {N}x{N}x{NZ}): slices z = "
              f"{[(k - NZ // 2) * vz for k in central]} mm, largest |mean/truth - 1| after calibration "
              f"{worst * 100:.2f}%; NRMSE vs 3D NUFFT path {diff:.2e}; recon time stack/3D "
              f"{t_stack / t_3d:.2f} (informative, one run each)")
    assert worst < 0.03
    assert diff < 1e-3
    # CG-SENSE goes through the same operator (its Toeplitz normal is the 3D plan's) and agrees too
    from na23recon.core import ReconOptions

    cg3 = reconstruct(scan, traj, ReconOptions(method="cg", iters=3))
    assert cg3.meta["recon"]["nufft"] == "3D NUFFT" and "solver" in cg3.meta["recon"]
    monkeypatch.undo()
    cgs = reconstruct(scan, traj, ReconOptions(method="cg", iters=3))
    assert cgs.meta["recon"]["nufft"].startswith("2D NUFFT per kz")
    cg_diff = nrmse(cgs.array, cg3.array)
    with capsys.disabled():
        print(f"stack of stars CG-SENSE (3 iterations): NRMSE stack vs 3D NUFFT path {cg_diff:.2e}")
    assert cg_diff < 1e-3


def test_stack_nufft_equals_the_exact_nudft():
    from na23recon.recon.stack import StackNufft

    n, nz = 12, 6
    rng = np.random.default_rng(3)
    c2 = rng.uniform(-n / 2, n / 2, (9, 7, 2))
    # two in-plane patterns (one shared by three partitions), kz on whole cycles and one off the grid
    kz = [-3, -1, 0, 2, 1.25]
    pats = [c2, c2, c2, c2[::-1] * 0.7, c2]
    coord = np.concatenate([np.concatenate([p, np.full(p.shape[:2] + (1,), z)], axis=-1) for p, z in zip(pats, kz)])
    y = rng.standard_normal((2,) + coord.shape[:2]) + 1j * rng.standard_normal((2,) + coord.shape[:2])
    r = np.stack(np.meshgrid(*(np.arange(m) - m // 2 for m in (n, n, nz)), indexing="ij"), axis=-1)
    phase = np.exp(2j * np.pi * np.einsum("xyzd,jd->xyzj", r / np.array([n, n, nz]), coord.reshape(-1, 3)))
    exact = (phase @ y.reshape(2, -1).T).transpose(3, 0, 1, 2) / np.sqrt(n * n * nz)
    op = StackNufft(coord, (n, n, nz), eps=1e-6)
    adj = op.adjoint(y)
    assert np.linalg.norm(adj - exact) / np.linalg.norm(exact) < 1e-5
    x = rng.standard_normal((n, n, nz)) + 0j
    fwd_exact = np.einsum("xyzj,xyz->j", np.conj(phase), x).reshape(coord.shape[:2]) / np.sqrt(n * n * nz)
    assert np.linalg.norm(op.forward(x) - fwd_exact) / np.linalg.norm(fwd_exact) < 1e-5
