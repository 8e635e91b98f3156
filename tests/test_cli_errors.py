"""Bad input to `na23recon recon`: exit code 2, one clear line on stderr, no output file."""

import subprocess
import sys

import numpy as np
import pytest

from na23recon.cli import main


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    return simulate_to_folder(tmp_path_factory.mktemp("small"), matrix=16, fov_mm=240.0)


def _run_recon(capsys, scan, traj, out):
    rc = main(["recon", str(scan), "--traj", str(traj), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _assert_refused(rc, err, out, *words):
    assert rc == 2
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for w in words:
        assert w.lower() in err[0].lower(), err[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_wrong_number_of_readouts(small, tmp_path, capsys):
    d = np.load(small["traj"])
    bad = tmp_path / "short.npz"
    np.savez(bad, k=d["k"][:-7])
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, small["scan"], bad, out)
    n = d["k"].shape[0]
    _assert_refused(rc, err, out, str(n), str(n - 7), "readout")


def test_non_finite_trajectory(small, tmp_path, capsys):
    k = np.load(small["traj"])["k"].copy()
    k[3, 5, 1] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, k=k)
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, small["scan"], bad, out)
    _assert_refused(rc, err, out, "finite")


def test_truncated_twix(small, tmp_path, capsys):
    raw = small["scan"].read_bytes()
    bad = tmp_path / "trunc.dat"
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, bad, small["traj"], out)
    _assert_refused(rc, err, out, "truncated")


def test_proton_scan_refused(tmp_path, capsys):
    from na23recon.io.twix import read_scan, write_scan

    from na23recon.sim.scan import simulate_to_folder

    p = simulate_to_folder(tmp_path / "h", matrix=16)
    scan = read_scan(p["scan"])
    scan.info.nucleus = "1H"
    h1 = tmp_path / "h1.dat"
    write_scan(h1, scan)
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, h1, p["traj"], out)
    _assert_refused(rc, err, out, "1H", "23Na")


def test_console_script_usage_error():
    r = subprocess.run([sys.executable, "-m", "na23recon.cli", "recon"], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_missing_scan_file(tmp_path, capsys, small):
    out = tmp_path / "x.nii.gz"
    rc, err = _run_recon(capsys, tmp_path / "nope.dat", small["traj"], out)
    _assert_refused(rc, err, out)
