"""Trajectories from a Pulseq .seq, a CSV with units, an ISMRMRD file; `traj --seq`; MRD on the command line.

Truths: the analytic phantom k-space (na23recon.sim) at k that pypulseq computes from a sequence
the test writes itself; the design's own k for `traj --seq`; the twix reconstruction for MRD.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest

from na23recon import GAMMA_BAR_NA23_HZ_PER_T
from na23recon.cli import main
from na23recon.core import Acquisition, Geometry, Image, Scan
from na23recon.io.twix import write_scan
from na23recon.sim.kspace import phantom_kspace
from na23recon.sim.phantom import Phantom, load_phantom

pp = pytest.importorskip("pypulseq")

N, FOV_MM, NSPOKE, DWELL = 96, 240.0, 160, 20e-6


def _radial_2d_seq(path):
    """A 2D radial GRE (full-diameter spokes over 180 deg, ADC on the flat top) written with pypulseq."""
    sys_ = pp.Opts(max_grad=30, grad_unit="mT/m", max_slew=120, slew_unit="T/m/s", gamma=GAMMA_BAR_NA23_HZ_PER_T,
                   rf_ringdown_time=20e-6, rf_dead_time=100e-6, adc_dead_time=10e-6)
    seq = pp.Sequence(system=sys_)
    dk = 1 / (FOV_MM * 1e-3)
    rf = pp.make_block_pulse(math.pi / 2, duration=300e-6, system=sys_, use="excitation")
    ro = pp.make_trapezoid("x", flat_area=N * dk, flat_time=N * DWELL, system=sys_)
    adc = pp.make_adc(N, dwell=DWELL, delay=ro.rise_time, system=sys_)
    pre = pp.make_trapezoid("x", area=-ro.area / 2, duration=1e-3, system=sys_)
    for i in range(NSPOKE):
        phi = math.pi * i / NSPOKE
        c, s = math.cos(phi), math.sin(phi)
        seq.add_block(rf)
        seq.add_block(pp.scale_grad(pre, c), pp.scale_grad(_on_y(pre), s))
        seq.add_block(pp.scale_grad(ro, c), pp.scale_grad(_on_y(ro), s), adc)
        seq.add_block(pp.make_delay(5e-3))
    seq.set_definition("FOV", [FOV_MM * 1e-3, FOV_MM * 1e-3, 5e-3])
    seq.write(str(path))
    return seq


def _on_y(g):
    import copy

    g = copy.copy(g)
    g.channel = "y"
    return g


def _phantom() -> Phantom:
    """The QA cylinders, every cylinder of one length: its projection along z is concentration x length."""
    ph = load_phantom("qa_cylinders")
    comps = [dataclasses.replace(c, semi_axes_mm=(c.semi_axes_mm[0], c.semi_axes_mm[1], 60.0))
             for c in ph.compartments]
    return Phantom(ph.name, comps)


def _acq(matrix, fov, dwell_us, nucleus="23Na"):
    geo = Geometry(fov_mm=fov, matrix=matrix, position_mm=(0.0, 0.0, 0.0), normal=(0.0, 0.0, 1.0))
    return Acquisition(nucleus=nucleus, b0_T=7.0, larmor_hz=7.0 * GAMMA_BAR_NA23_HZ_PER_T, te_ms=(1.0,),
                       tr_ms=10.0, flip_deg=90.0, dwell_us=dwell_us, geometry=geo, protocol_name="sim2d")


def _means(img: np.ndarray, phantom: Phantom) -> dict[str, float]:
    vox = FOV_MM / N
    x = (np.arange(N) - N // 2) * vox
    X, Y = np.meshgrid(x, x, indexing="ij")
    out = {}
    for c in phantom.compartments[1:]:
        r = np.hypot(X - c.center_mm[0], Y - c.center_mm[1])
        out[c.name] = float(img[..., 0][r < c.semi_axes_mm[0] - 2.5 * vox].mean())
    return out


def test_2d_radial_pulseq_scan_of_the_phantom(tmp_path, capsys):
    seq = _radial_2d_seq(tmp_path / "radial2d.seq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = np.asarray(seq.calculate_kspace()[0]).T.reshape(NSPOKE, N, 3)
    ph = _phantom()
    data = phantom_kspace(ph, k, t_s=0.0)  # fully relaxed, no decay: image = projected concentration
    scan = Scan(data[None, None, None].astype(np.complex64), _acq((N, N, 1), (FOV_MM, FOV_MM, 5.0), DWELL * 1e6))
    dat = write_scan(tmp_path / "scan.dat", scan)
    out = tmp_path / "r.nii.gz"
    assert main(["recon", str(dat), "--traj", str(tmp_path / "radial2d.seq"), "-o", str(out), "--no-png"]) == 0
    img = Image.load(out)
    assert img.array.shape == (N, N, 1)
    side = json.loads((tmp_path / "r.json").read_text())
    assert side["recon"]["trajectory"]["source"] == "pulseq" and side["recon"]["layout"].startswith("2D")
    m = _means(img.array, ph)
    truth = {c.name: c.conc_mM for c in ph.compartments[1:]}
    names = sorted(truth)
    a, b = np.array([m[n] for n in names]), np.array([truth[n] for n in names])
    # calibration as the TSC step does it (--intercept fit): a line through the known concentrations.
    # The radial image carries an offset (+3 mM here, equally with the exact NUDFT adjoint: the
    # disc-limited radial PSF), which a line through the origin would leave in the 10 mM cylinder.
    slope, icpt = np.polyfit(b, a, 1)
    errs = {n: (m[n] - icpt) / slope / truth[n] - 1 for n in names}
    with capsys.disabled():
        print("2D radial .seq: compartment mean / truth - 1 after calibration:",
              {n: f"{e * 100:+.2f}%" for n, e in errs.items()}, f"(intercept {icpt / slope:+.2f} mM)")
    assert max(abs(e) for e in errs.values()) < 0.03
    # the same k-space with the wrong dwell in the header is refused with one line
    bad = Scan(scan.data, _acq((N, N, 1), (FOV_MM, FOV_MM, 5.0), 10.0))
    write_scan(tmp_path / "bad.dat", bad)
    capsys.readouterr()
    assert main(["recon", str(tmp_path / "bad.dat"), "--traj", str(tmp_path / "radial2d.seq"),
                 "-o", str(tmp_path / "b.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dwell" in err[0]


@pytest.mark.parametrize("kind", ["radial", "dar", "tpi"])
def test_traj_seq_round_trip(kind, tmp_path, capsys):
    from na23recon.io.trajfile import load_traj
    from na23recon.traj.pulseq import read_seq

    out, seq = tmp_path / "t.npz", tmp_path / "t.seq"
    assert main(["traj", kind, "--matrix", "16", "--fov-mm", "240", "-o", str(out), "--no-png", "--seq", str(seq)]) == 0
    design = load_traj(out)
    back = read_seq(seq)
    kmax = 16 / (2 * 0.24)
    err = float(np.max(np.abs(back.k - design.k))) / kmax
    with capsys.disabled():
        print(f"{kind}: {back.shape} readouts x samples, max |k_seq - k_design| = {err:.2e} kmax")
    assert back.shape == design.shape and err < 1e-3
    s = pp.Sequence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.read(str(seq))
        ok, _ = s.check_timing()
    assert ok


def test_csv_trajectory_with_units(tmp_path):
    from na23recon.io.trajfile import load_traj

    n = 16
    rng = np.random.default_rng(1)
    d = rng.standard_normal((200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k_half = d[:, None, :] * np.linspace(0, 0.5, 8)[None, :, None]  # |k| = 0.5 at kmax
    np.savetxt(tmp_path / "k.csv", k_half.reshape(-1, 3), delimiter=",")
    kmax = n / (2 * 0.24)
    scan = Scan(np.ones((1, 1, 1, 200, 8), np.complex64), _acq((n, n, n), (240.0,) * 3, 10.0))
    dat = write_scan(tmp_path / "s.dat", scan)
    np.savez(tmp_path / "ref.npz", k=k_half * 2 * kmax)
    out = tmp_path / "c.nii.gz"
    assert main(["recon", str(dat), "--traj", str(tmp_path / "k.csv"), "--traj-units", "kmax_half",
                 "-o", str(out), "--no-png"]) == 0
    assert main(["recon", str(dat), "--traj", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "r.nii.gz"),
                 "--no-png"]) == 0
    a, b = Image.load(out).array, Image.load(tmp_path / "r.nii.gz").array
    assert np.allclose(a, b, rtol=1e-4, atol=1e-6 * b.max())
    tr = json.loads((tmp_path / "c.json").read_text())["recon"]["trajectory"]
    assert tr == {"source": "text", "file": "k.csv", "units": "kmax_half"}
    assert np.allclose(load_traj(tmp_path / "ref.npz").k, k_half * 2 * kmax)


def test_mrd_round_trip_reconstructs_like_twix(tmp_path, capsys):
    pytest.importorskip("ismrmrd")
    from na23recon.io.mrd import write_mrd
    from na23recon.traj.radial import radial_for_matrix

    traj = radial_for_matrix(20, 240.0)
    data = phantom_kspace(load_phantom("qa_cylinders"), traj.k, t_s=traj.t, tr_ms=100.0)
    rng = np.random.default_rng(2)
    data = data + 0.02 * np.abs(data).max() * (rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape))
    scan = Scan(data[None, None, None].astype(np.complex64), _acq((20, 20, 20), (240.0,) * 3, 10.0),
                noise=(rng.standard_normal((1, 400)) + 1j * rng.standard_normal((1, 400))).astype(np.complex64))
    dat = write_scan(tmp_path / "s.dat", scan)
    np.savez(tmp_path / "t.npz", k=traj.k)
    h5 = write_mrd(tmp_path / "s.h5", scan, traj.k)
    assert main(["recon", str(dat), "--traj", str(tmp_path / "t.npz"), "-o", str(tmp_path / "a.nii.gz"),
                 "--no-png"]) == 0
    assert main(["recon", str(h5), "-o", str(tmp_path / "b.nii.gz"), "--no-png"]) == 0
    a, b = Image.load(tmp_path / "a.nii.gz"), Image.load(tmp_path / "b.nii.gz")
    err = float(np.linalg.norm(b.array - a.array) / np.linalg.norm(a.array))
    with capsys.disabled():
        print(f"MRD vs twix: NRMSE {err:.2e}")
    assert err < 1e-4 and np.allclose(a.affine, b.affine, atol=1e-4)
    side = json.loads((tmp_path / "b.json").read_text())
    assert side["acquisition"]["nucleus"] == "23Na" and side["recon"]["trajectory"]["source"] == "mrd"
    # no nucleus parameter: the frequency / field ratio says 23Na, never 1H
    from na23recon.io.scan_file import read_scan_file

    bare = Scan(scan.data, scan.acquisition.with_(nucleus=None), scan.noise)
    s2, _, _ = read_scan_file(write_mrd(tmp_path / "bare.h5", bare, traj.k))
    assert s2.acquisition.nucleus == "23Na"
    capsys.readouterr()
    assert main(["info", str(h5)]) == 0
    text = capsys.readouterr().out
    assert "ISMRMRD" in text and "23Na" in text and "stored in the file" in text


def test_hdf5_that_is_not_ismrmrd(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"] = np.zeros(3)
    for cmd in (["info", str(tmp_path / "x.h5")], ["recon", str(tmp_path / "x.h5"), "-o", str(tmp_path / "o.nii.gz")]):
        capsys.readouterr()
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not ISMRMRD" in err[0]
