"""B1- and coil-weighted analytic k-space (Fourier-series fields) against an exact DFT of the
finely voxelised, field-weighted phantom; field fits; coil noise; off-resonance."""

import numpy as np
import pytest

from na23recon.sim.coils import HelmetArray
from na23recon.sim.fields import B1Model, FourierBasis, head_radii_mm
from na23recon.sim.kspace import FieldSet, analytic_kspace, build_fields, compartment_fourier, phantom_kspace
from na23recon.sim.phantom import Compartment, Phantom, load_phantom

TR_MS, FLIP = 60.0, np.deg2rad(70.0)


def _small_phantom():
    # a head-sized ellipsoid with a nested ellipsoid, a lesion and a cylinder beside it
    return Phantom("small", [
        Compartment("outer", 1, 140.0, (0, 0, 0), (62, 70, 55), t1_ms=55, t2s_short_ms=50, t2s_long_ms=50,
                    frac_short=0.0),
        Compartment("inner", 2, 40.0, (4, -3, 2), (45, 52, 40), rot_deg=15),
        Compartment("lesion", 3, 80.0, (20, 15, -8), (10, 12, 9)),
        Compartment("vial", 4, 100.0, (85, 0, 0), (10, 10, 20), shape="cylinder", t1_ms=40),
    ])


def _dft_with_fields(ph, fields, k, t, step_mm, half_mm, flip=FLIP):
    """sum over voxel centres of w_owner(t) h_owner,c(r) exp(-i 2 pi k.r) dV (field series evaluated
    separably per axis), for one time t."""
    ax = np.arange(-half_mm, half_mm, step_mm) + step_mm / 2
    w = ph.weights(np.array([t]), TR_MS, flip)[:, 0]
    fr = fields.basis.freqs  # (T, 3) 1/m
    ey = np.exp(2j * np.pi * np.outer(ax * 1e-3, fr[:, 1]))  # (n, T)
    ez = np.exp(2j * np.pi * np.outer(ax * 1e-3, fr[:, 2]))
    kmat_y = np.exp(-2j * np.pi * np.outer(ax * 1e-3, k[:, 1]))  # (n, nk)
    kmat_z = np.exp(-2j * np.pi * np.outer(ax * 1e-3, k[:, 2]))
    out = np.zeros((fields.ncoil, len(k)), complex)
    yy, zz = np.meshgrid(ax, ax, indexing="ij")
    for x in ax:
        r = np.stack([np.full_like(yy, x), yy, zz], -1)
        idx = ph.index_map(r)
        if not (idx >= 0).any():
            continue
        ex = np.exp(2j * np.pi * x * 1e-3 * fr[:, 0])  # (T,)
        phi = ex[None, None, :] * ey[:, None, :] * ez[None, :, :]  # (ny, nz, T)
        val = np.zeros((fields.ncoil,) + yy.shape, complex)
        for j in np.unique(idx[idx >= 0]):
            sel = idx == j
            val[:, sel] = w[j] * (phi[sel] @ fields.coef[j]).T
        kx = np.exp(-2j * np.pi * x * 1e-3 * k[:, 0])  # (nk,)
        # sum_yz val[c,y,z] e^{-i2pi ky y} e^{-i2pi kz z}, per k point
        tmp = np.einsum("cyz,yk->czk", val, kmat_y)
        out += np.einsum("czk,zk->ck", tmp, kmat_z) * kx
    return out * (step_mm * 1e-3) ** 3


def _k_points(n, kmax, seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * rng.uniform(0, kmax, size=(n, 1))


def _sum_of_compartment_transforms(ph, k, t, tr_ms, flip):
    """sum_j [w_j(t) - w_parent(j)(t)] F_j(k), written out here from the single-shape transforms."""
    w = ph.weights(t, tr_ms, flip)
    out = np.zeros(len(k), complex)
    for j, c in enumerate(ph.compartments):
        p = ph.parents[j]
        out += (w[j] - (w[p] if p is not None else 0.0)) * compartment_fourier(c, k)
    return out


def test_uniform_fields_reproduce_phantom_kspace():
    # the kernel's nesting (own minus parent weight, per sample time) against the sum written out
    ph = load_phantom("brain")
    k = _k_points(500, 80, 0)
    t = np.linspace(0, 5e-3, 500)
    ref = _sum_of_compartment_transforms(ph, k, t, TR_MS, FLIP)
    got = analytic_kspace(ph, k, t, TR_MS, FLIP)[0]
    assert np.abs(got - ref).max() < 1e-9 * np.abs(ref).max()
    np.testing.assert_array_equal(phantom_kspace(ph, k, t, tr_ms=TR_MS, flip_rad=FLIP), got)  # phantom_kspace is this engine
    qa = load_phantom("qa_cylinders")  # cylinders
    ref = _sum_of_compartment_transforms(qa, k, t, TR_MS, FLIP)
    got = analytic_kspace(qa, k, t, TR_MS, FLIP)[0]
    assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()


def test_series_shift_matches_sens_terms():
    # a field series applied by the kernel equals the sum of shifted transforms sum_m a_m M(k - f_m)
    ph = _small_phantom()
    basis = FourierBasis(0.3, 1)
    rng = np.random.default_rng(4)
    a = rng.normal(size=basis.nterms) + 1j * rng.normal(size=basis.nterms)
    fs = FieldSet(basis, np.broadcast_to(a[None, :, None], (4, basis.nterms, 1)).copy(), np.zeros(4))
    k = _k_points(200, 60, 5)
    ref = sum(am * analytic_kspace(ph, k - f, 1e-3, TR_MS, FLIP)[0] for f, am in zip(basis.freqs, a))
    got = analytic_kspace(ph, k, 1e-3, TR_MS, FLIP, fs)[0]
    assert np.abs(got - ref).max() < 1e-9 * np.abs(ref).max()
    # Phantom.kspace's sens_terms is the same series as a FieldSet of arbitrary frequencies
    via = phantom_kspace(ph, k, 1e-3, TR_MS, FLIP, sens_terms=list(zip(basis.freqs, a)))
    assert np.abs(via - ref).max() < 1e-9 * np.abs(ref).max()


def test_b1_weighted_kspace_matches_fine_grid_dft():
    ph = _small_phantom()
    b1 = B1Model("birdcage", 0.3, radii_mm=head_radii_mm(ph))
    flip = np.deg2rad(30.0)  # well below the Ernst angle, so the signal follows the flip scale
    fs = build_fields(ph, flip, TR_MS, b1)
    assert fs.residual.max() < 0.01, fs.residual  # a smooth +-30% profile: the series fits to < 1%
    k = _k_points(16, 45, 1)
    t = 1.5e-3
    ana = analytic_kspace(ph, k, t, TR_MS, flip, fs)
    dft = _dft_with_fields(ph, fs, k, t, step_mm=1.0, half_mm=100, flip=flip)
    rel = np.linalg.norm(ana - dft) / np.linalg.norm(ana)
    assert rel < 0.01, rel
    # and the B1 weighting matters: the applied signal scale spans ~ +-30% over the object
    g = fs.field_at(ph, np.array([[0.0, 0, 0], [0, 0, 38], [60, 0, 0]]))[0].real
    assert g[0] > 1.15 and g[0] - g[2] > 0.15, g


def test_coil_weighted_kspace_matches_fine_grid_dft():
    ph = _small_phantom()
    arr = HelmetArray(4, head_radii_mm(ph))
    b1 = B1Model("gradient", 0.2, radii_mm=head_radii_mm(ph))
    fs = build_fields(ph, FLIP, TR_MS, b1, arr, order=3)
    assert fs.coef.shape == (4, fs.basis.nterms, 4)
    k = _k_points(12, 45, 2)
    t = 0.5e-3
    ana = analytic_kspace(ph, k, t, TR_MS, FLIP, fs)
    dft = _dft_with_fields(ph, fs, k, t, step_mm=1.0, half_mm=100)
    for c in range(4):
        rel = np.linalg.norm(ana[c] - dft[c]) / np.linalg.norm(ana[c])
        assert rel < 0.01, (c, rel)


def test_coil_fit_residual_is_reported_and_small_on_brain():
    ph = load_phantom("brain")
    arr = HelmetArray(8, head_radii_mm(ph))
    fs = build_fields(ph, FLIP, TR_MS, None, arr)
    names = [c.name for c in ph.compartments]
    res = dict(zip(names, fs.residual))
    # Biot-Savart loop fields against their order-4 series: worst on the CSF shell near the coils
    assert res["csf"] < 0.06 and res["wm"] < 0.01, res
    assert max(res.values()) < 0.06, res
    s = arr.sensitivities(np.zeros((1, 3)))
    assert s.shape == (8, 1) and np.all(np.abs(s) > 0)


def test_noise_covariance_positive_definite_and_recovered():
    from na23recon.sim.scan import SimProtocol, simulate_scan

    ph = load_phantom("brain")
    acq = SimProtocol(matrix=12, ncoil=4, noise_correlation=0.4)
    scan, traj = simulate_scan(ph, acq, snr=5.0, seed=3)
    assert scan.data.shape[2] == 4 and scan.noise.shape == (4, 4096)
    cov = np.array(traj["sim"]["noise"]["covariance_real"]) + 1j * np.array(traj["sim"]["noise"]["covariance_imag"])
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    emp = scan.noise @ scan.noise.conj().T / scan.noise.shape[1] / 2  # each part has variance diag(cov)
    assert np.abs(emp - cov).max() < 0.1 * np.abs(cov).max()


def test_global_off_resonance_is_a_phase_in_time():
    from na23recon.core.trajectory import Trajectory
    from na23recon.sim.scan import SimProtocol, simulate_kspace

    ph = load_phantom("brain")
    k = _k_points(300, 50, 3).reshape(30, 10, 3)
    t = np.linspace(0, 4e-3, 10)
    traj = Trajectory(k, t=0.3e-3 + t)  # t from excitation: TE 0.3 ms + readout time
    a0 = simulate_kspace(ph, traj, SimProtocol(matrix=16))
    a1 = simulate_kspace(ph, traj, SimProtocol(matrix=16, off_resonance_hz=75.0))
    np.testing.assert_allclose(a1, a0 * np.exp(2j * np.pi * 75.0 * (0.3e-3 + t)), rtol=1e-9, atol=1e-12)


def test_double_angle_pair_and_truth_b1(tmp_path):
    import nibabel as nib

    from na23recon.errors import InputError
    from na23recon.io.twix import read_scan
    from na23recon.sim.scan import simulate_to_folder

    p = simulate_to_folder(tmp_path / "d", matrix=12, flip_deg=45.0, tr_ms=300.0, b1_variation=0.3,
                           double_angle=True, traj="radial")
    a, b = read_scan(p["scan"]), read_scan(p["scan_2a"])
    assert a.acquisition.flip_deg == pytest.approx(45.0) and b.acquisition.flip_deg == pytest.approx(90.0)
    b1 = nib.load(str(p["b1"])).get_fdata()
    assert 0.65 < b1.min() and b1.max() < 1.31 and b1.max() - b1.min() > 0.3
    with pytest.raises(InputError, match="below 90"):
        simulate_to_folder(tmp_path / "e", matrix=12, flip_deg=90.0, double_angle=True)
