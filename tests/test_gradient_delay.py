"""Gradient delays: the delayed trajectory, the simulator's delayed k-space, `--gradient-delay-us`
and `--estimate-delay` through the CLI (RING on full-diameter spokes, data consistency on
centre-out radial and DA-radial), against the analytic phantom (no NUFFT in the simulation)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from na23recon import GAMMA_BAR_NA23_HZ_PER_T
from na23recon.cli import main
from na23recon.core import Image
from na23recon.errors import InputError
from na23recon.recon import delay as delay_mod
from na23recon.recon.adjoint import adjoint_recon
from na23recon.recon.delay import estimate_gradient_delay, ring_delay
from na23recon.sim.evaluate import compartment_means, nrmse
from na23recon.sim.kspace import build_fields
from na23recon.sim.phantom import load_phantom
from na23recon.sim.scan import SimProtocol, make_trajectory, receive_model_for, simulate_kspace
from na23recon.traj.dar import dar_3d
from na23recon.traj.dcf import dcf_shells, normalise_dcf
from na23recon.traj.delay import check_delays, delay_trajectory, delayed_k
from na23recon.traj.make import generate, trajectory_dcf
from na23recon.traj.radial import golden_angle_2d, radial_for_matrix

TRUE_US = (2.0, 5.0, 8.0)


def test_delayed_k_waveform_equals_interpolation_and_shift():
    """Through the gradient waveform (design) and by interpolation along t the delayed k agree;
    on a full-diameter spoke the plateau moves by -gamma G d_i n_i (the shift model of RING)."""
    for tr in (radial_for_matrix(24, 240.0, te_ms=0.3), dar_3d(24, 240.0), radial_for_matrix(24, 240.0, centre_out=False)):
        a = delayed_k(tr, TRUE_US)
        b = delayed_k(replace(tr, design=None), TRUE_US)
        assert np.abs(a - b).max() * 0.24 < 1e-9  # cycles/FOV
        assert np.abs(a - tr.k).max() * 0.24 > 0.05
    full = radial_for_matrix(24, 240.0, centre_out=False)
    gk = np.diff(np.linalg.norm(full.k[0], axis=-1)[-2:])[0] / 10e-6  # |dk/dt| on the plateau
    n = full.k[:, -1] / np.linalg.norm(full.k[:, -1], axis=-1, keepdims=True)
    shift = delayed_k(full, TRUE_US) - full.k
    np.testing.assert_allclose(shift, -gk * (n * np.array(TRUE_US) * 1e-6)[:, None, :] * np.ones((1, full.nsample, 1)),
                               atol=1e-9 * gk)


def test_centre_out_starts_from_rest():
    """A centre-out ramp-sampled spoke leaves the centre d_i later along axis i: k_i(t) = 0 up to
    t = d_i, then the nominal waveform integral gamma_bar sum G dt taken d_i late (computed here
    from the design's gradient by hand), through the waveform and by interpolation alike."""
    tr = radial_for_matrix(24, 240.0)
    des = tr.design
    d = np.array([3.0, 7.0, 15.0])
    t = tr.t - des.te_s
    for k in (delayed_k(tr, d), delayed_k(replace(tr, design=None), d)):
        for r in (0, 5, 300):
            g = des.gradient(r)  # (ngrad, 3) T/m on the raster
            for i in range(3):
                tau = t - d[i] * 1e-6
                want = np.zeros(tau.size)
                for s, ts in enumerate(tau):
                    if ts > 0:
                        m = int(ts // des.raster_s)
                        want[s] = GAMMA_BAR_NA23_HZ_PER_T * des.raster_s * (
                            g[:m, i].sum() + (ts / des.raster_s - m) * g[m, i])
                np.testing.assert_allclose(k[r, :, i], want, atol=1e-9 * des.kmax_per_m)
        assert np.all(k[:, 0] == 0) and np.all(k[:, 1, 2] == 0)  # axis 2 is 15 us late: still at rest at 10 us


def test_delayed_dcf_follows_the_samples():
    """With one delay on every axis the DCF carried over to the delayed samples equals the exact
    shell weights (dcf_shells, equal solid angles) of the delayed readouts; per-axis delays move
    the ramp samples' weights by tens of percent; full-diameter spokes keep their weights."""
    tr = radial_for_matrix(24, 240.0)
    tr = replace(tr, dcf=dcf_shells(tr.k))
    td = delay_trajectory(tr, (5.0, 5.0, 5.0))
    np.testing.assert_allclose(td.dcf, dcf_shells(td.k), rtol=1e-9, atol=1e-12 * td.dcf.max())
    td = delay_trajectory(tr, TRUE_US)
    assert np.abs(td.dcf / np.maximum(tr.dcf, 1e-30) - 1)[:, 2:10].max() > 0.3  # the ramp samples move a lot
    full = radial_for_matrix(24, 240.0, centre_out=False)
    full = replace(full, dcf=np.ones(full.shape))
    assert np.array_equal(delay_trajectory(full, TRUE_US).dcf, full.dcf)


@pytest.mark.parametrize("traj,n", [("radial", 32), ("radial", 64), ("dar", 32)])
def test_delayed_dc_gain_of_a_blob(traj, n):
    """The density-compensated sum over the delayed samples of a Gaussian blob's analytic k-space
    (f(x) = exp(-|x|^2 / 2 s^2), s = 2 voxels: F(k) = (2 pi s^2)^(3/2) exp(-2 pi^2 s^2 |k|^2), k
    in cycles/FOV) is the image at its centre, f(0) = 1, up to the nominal DCF's own error (<0.5%),
    and per-axis delays do not change it by more than 0.05%. The weights carried over to the
    delayed samples add up to the star-shaped region the shortened spokes reach; scaled instead to
    the ball of the longest spoke they gave +3.2% (radial, matrix 32), +1.5% (64)."""
    tr = generate(traj, n, 220.0)
    tr = tr.with_dcf(trajectory_dcf(tr))
    s = 2.0 / n

    def gain(t):
        c = t.coord(220.0)
        f = (2 * np.pi * s * s) ** 1.5 * np.exp(-2 * np.pi ** 2 * s * s * np.sum(c ** 2, axis=-1))
        return float(np.sum(normalise_dcf(t.dcf, c).astype(np.float64) * f))

    g0 = gain(tr)
    assert abs(g0 - 1) < 0.005
    for d in (TRUE_US, (8.0, 2.0, 5.0), (5.0, 5.0, 5.0)):
        assert gain(delay_trajectory(tr, d)) == pytest.approx(g0, abs=5e-4)


@pytest.mark.parametrize("traj,n,tol", [("radial", 32, 0.035), ("dar", 24, 0.01)])
def test_true_delays_reconstruct_like_undelayed(traj, n, tol):
    """Root cause of the 50-60% bias with the true delays applied: the nominal DCF on the delayed
    samples (on the ramp a delay moves the early samples inward by tens of percent). The analytic
    k-space at the delayed positions, reconstructed (adjoint) on the delayed trajectory with its
    carried-over DCF, gives the brain compartments of the undelayed reconstruction within `tol`;
    with the nominal DCF, and without correction, they are >10% off. (Plain radial at matrix 32
    keeps ~2.6% in the small ventricles, as with equal delays of 5 us (2.3%): its delayed spokes
    end short of kmax by gamma G d, 0.2-0.4 cycles/FOV, and the lost edge alone moves GM by ~9%
    at matrix 24; DA-radial ends at a low gradient. It kept 5.5% while the weights were scaled to
    the ball of the longest delayed spoke, `dcf.covered_volume`.)"""
    ph = load_phantom("brain")
    acq = SimProtocol(matrix=n, traj=traj, te_ms=0.0)
    tr = make_trajectory(acq)
    labels = ph.truth(n, acq.fov_mm, "label")
    y0 = simulate_kspace(ph, tr, acq)
    y1 = simulate_kspace(ph, tr, replace(acq, gradient_delay_us=TRUE_US))  # closed form at the delayed k
    td = delay_trajectory(tr, TRUE_US)
    shape = (n, n, n)
    ref = compartment_means(np.abs(adjoint_recon(y0, tr.coord(acq.fov_mm), tr.dcf, shape)), labels)
    brain = [lab for lab in ref if lab <= 5]

    def worst(y, coord, dcf):
        m = compartment_means(np.abs(adjoint_recon(y, coord, dcf, shape)), labels)
        return max(abs(m[lab][0] / ref[lab][0] - 1) for lab in brain)

    fixed = worst(y1, td.coord(acq.fov_mm), td.dcf)
    nominal_dcf = worst(y1, td.coord(acq.fov_mm), tr.dcf)
    none = worst(y1, tr.coord(acq.fov_mm), tr.dcf)
    print(f"{traj} N={n}: worst brain compartment vs undelayed: corrected {fixed:.2%}, nominal DCF "
          f"{nominal_dcf:.2%}, no correction {none:.2%}")
    assert fixed < tol
    assert nominal_dcf > 0.10 and none > 0.10


def test_bad_delays_refused(tmp_path):
    for bad in ([np.nan, 0, 0], [150.0, 0, 0], [1.0]):
        with pytest.raises(InputError):
            check_delays(bad)
    tr = radial_for_matrix(16, 240.0)
    with pytest.raises(InputError):
        delay_trajectory(replace(tr, t=None, design=None), (1.0, 1.0, 1.0))  # no times, no dwell
    assert main(["recon", str(tmp_path / "x.dat"), "--traj", str(tmp_path / "t.npz"), "-o",
                 str(tmp_path / "o.nii.gz"), "--gradient-delay-us", "1", "2", "500"]) == 2
    assert main(["recon", str(tmp_path / "x.dat"), "--traj", str(tmp_path / "t.npz"), "-o",
                 str(tmp_path / "o.nii.gz"), "--gradient-delay-us", "1", "nan", "2"]) == 2
    assert main(["simulate", "-o", str(tmp_path / "s"), "--matrix", "16", "--gradient-delay-us", "0", "0", "1e3"]) == 2
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("ndim", [2, 3])
def test_ring_full_diameter(ndim):
    """RING on full-diameter spokes of the analytic brain phantom, 4 helmet coils (2D golden angle,
    3D radial)."""
    ph = load_phantom("brain")
    acq = SimProtocol(matrix=32, te_ms=0.0, ncoil=4)
    fields = build_fields(ph, np.deg2rad(90.0), acq.tr_ms, None, receive_model_for(ph, acq))
    if ndim == 3:
        tr = radial_for_matrix(32, 240.0, centre_out=False, undersampling=4.0)
    else:
        k2 = golden_angle_2d(201, 64, 32 / 0.48)
        tr = replace(radial_for_matrix(16, 240.0), k=np.concatenate([k2, np.zeros(k2.shape[:2] + (1,))], -1),
                     t=10e-6 * np.arange(64), design=None, dcf=None)
    truth = np.array(TRUE_US)
    y = simulate_kspace(ph, delay_trajectory(tr, truth), acq, fields=fields)  # analytic k-space at the delayed positions
    k = tr.k if ndim == 3 else tr.k[..., :2]
    res = ring_delay(y, k, tr.t)
    est, sd = np.array(res["delay_us"]), np.array(res["sd_us"])
    print(f"RING {ndim}D: true {truth[:ndim]} estimated {np.round(est, 3)} sd {np.round(sd, 3)} ({res['pairs']} pairs)")
    assert np.all(np.abs(est - truth[:ndim]) < 0.5)


@pytest.mark.parametrize("refine_iters,tol", [pytest.param(400, 0.01, marks=pytest.mark.slow), (100, 0.02)])
def test_estimate_delay_dar_compartments(monkeypatch, refine_iters, tol):
    """DA-radial, matrix 24, the analytic brain phantom (CSF mono-exponential, grey and white
    matter biexponential) with delays 2/5/8 us: the data-consistency estimate (the decay model's
    short fraction fitted with the delays) is within 0.5 us per axis, and the brain compartments
    reconstructed with it are within 1% of the undelayed reconstruction (no correction: > 10%).
    CI: the fraction's profile with 100 instead of 400 CG iterations per evaluation, within 2%
    (the full version measured 0.51%, 177 s)."""
    monkeypatch.setattr(delay_mod, "REFINE_ITERS", refine_iters)
    n = 24
    ph = load_phantom("brain")
    acq = SimProtocol(matrix=n, traj="dar", te_ms=0.3)
    tr = make_trajectory(acq)
    labels = ph.truth(n, acq.fov_mm, "label")
    y0 = simulate_kspace(ph, tr, acq)
    y1 = simulate_kspace(ph, tr, replace(acq, gradient_delay_us=TRUE_US))
    res = estimate_gradient_delay(y1[None], tr, acq.fov_mm)
    est = np.array(res["delay_us"])
    shape = (n, n, n)
    ref = compartment_means(np.abs(adjoint_recon(y0, tr.coord(acq.fov_mm), tr.dcf, shape)), labels)
    brain = [lab for lab in ref if lab <= 5]

    def worst(t):
        m = compartment_means(np.abs(adjoint_recon(y1, t.coord(acq.fov_mm), t.dcf, shape)), labels)
        return max(abs(m[lab][0] / ref[lab][0] - 1) for lab in brain)

    err_est, err_none = worst(delay_trajectory(tr, est)), worst(tr)
    print(f"dar N={n}: estimated {np.round(est, 3).tolist()} sd {np.round(res['sd_us'], 3).tolist()} short fraction "
          f"{res['short_fraction_fitted']:.3f}; worst brain compartment vs undelayed {err_est:.2%} (no correction "
          f"{err_none:.2%}; {res['seconds']} s)")
    assert np.all(np.abs(est - np.array(TRUE_US)) < 0.5)
    assert err_est < tol
    assert err_none > 0.10


def _run(args) -> None:
    assert main([str(a) for a in args]) == 0


def _means(path, labels) -> dict:
    return {k: v for k, (v, _) in compartment_means(Image.load(path).array, labels).items()}


@pytest.mark.slow
@pytest.mark.parametrize("traj", ["radial", "dar"])
def test_estimate_delay_cli(tmp_path, traj):
    """simulate --gradient-delay-us; recon --estimate-delay recovers the delays (0.5 us) and the
    compartment means of the undelayed reconstruction (1%); without correction they move."""
    n = 32
    common = ["--traj", traj, "--matrix", n, "--te-ms", 0.3]
    _run(["simulate", "-o", tmp_path / "d", *common, "--gradient-delay-us", *TRUE_US])
    _run(["simulate", "-o", tmp_path / "r", *common])
    assert np.allclose(np.load(tmp_path / "d" / "traj.npz")["k"], np.load(tmp_path / "r" / "traj.npz")["k"])
    labels = Image.load(tmp_path / "r" / "truth_labels.nii.gz").array.astype(int)
    outs = {}
    for name, folder, extra in (("reference", "r", []), ("uncorrected", "d", []),
                                ("given", "d", ["--gradient-delay-us", *TRUE_US]), ("estimated", "d", ["--estimate-delay"])):
        out = tmp_path / f"{name}.nii.gz"
        _run(["recon", tmp_path / folder / "scan.dat", "--traj", tmp_path / folder / "traj.npz", "-o", out, *extra])
        outs[name] = out
    side = json.loads((tmp_path / "estimated.json").read_text())["recon"]["gradient_delay"]
    est = np.array(side["delay_us"])
    assert (tmp_path / "estimated_delay.png").exists()
    ref = _means(outs["reference"], labels)
    ref_img = Image.load(outs["reference"]).array
    report = [f"{traj} N={n}: true {list(TRUE_US)} estimated {np.round(est, 2).tolist()} sd "
              f"{np.round(side['sd_us'], 3).tolist()} ({side['seconds']} s)"]
    worst = {}
    for name in ("uncorrected", "given", "estimated"):
        m = _means(outs[name], labels)
        err = {k: m[k] / ref[k] - 1 for k in ref}
        worst[name] = max(abs(v) for v in err.values())
        report.append(f"  {name}: max compartment error vs undelayed {worst[name] * 100:.2f}%, NRMSE vs undelayed "
                      f"{nrmse(Image.load(outs[name]).array, ref_img, labels > 0):.4f}")
    print("\n".join(report))
    assert np.all(np.abs(est - np.array(TRUE_US)) < 0.5)
    # the sd includes the decay model's systematic part: the error is within 3 sd
    assert np.all(np.abs(est - np.array(TRUE_US)) < 3 * np.array(side["sd_us"]))
    if traj == "dar":  # radial's own true-delay reconstruction is ~5% off at matrix 32 (below)
        assert worst["estimated"] < 0.01
    # with the true delays the DCF follows the samples: DA-radial within 1%, radial within ~6% at
    # matrix 32 (its delayed spokes end short of kmax; see test_true_delays_reconstruct_like_undelayed)
    assert worst["given"] < (0.01 if traj == "dar" else 0.06)
    assert worst["uncorrected"] > 0.1
