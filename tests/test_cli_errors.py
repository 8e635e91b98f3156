"""Bad input to `na23recon recon`: exit code 2, one clear line on stderr, no output file."""

import json
import os
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
    scan.acquisition = scan.acquisition.with_(nucleus="1H")
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


def test_trajectory_in_wrong_units_is_refused(small, tmp_path, capsys):
    d = np.load(small["traj"])
    bad = tmp_path / "cpf.npz"
    np.savez(bad, k=d["k"] * 0.24)  # cycles/FOV instead of 1/m
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, small["scan"], bad, out)
    _assert_refused(rc, err, out, "1/m")


@pytest.mark.parametrize("kind", ["object", "npy-named-npz"])
def test_damaged_trajectory_files(small, tmp_path, capsys, kind):
    bad = tmp_path / "bad.npz"
    if kind == "object":
        np.savez(bad, k=np.array([object()], dtype=object))
    else:
        np.save(tmp_path / "a.npy", np.load(small["traj"])["k"])
        (tmp_path / "a.npy").rename(bad)
    out = tmp_path / "o" / "x.nii.gz"
    out.parent.mkdir()
    rc, err = _run_recon(capsys, small["scan"], bad, out)
    _assert_refused(rc, err, out, "bad.npz")


def test_output_under_a_file_or_folder(small, tmp_path, capsys):
    for out in (small["scan"] / "x.nii.gz", tmp_path):
        rc = main(["recon", str(small["scan"]), "--traj", str(small["traj"]), "-o", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
    assert main(["simulate", "-o", str(small["scan"])]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,words", [
    (["--t2s-ms", "20"], ["iterative"]),
    (["--matrix", "4"], ["matrix"]),
    (["--method", "cs-tv", "--lam", "-1"], ["--lam"]),
    (["--rep", "3"], ["repetition"]),
])
def test_bad_recon_options(small, tmp_path, capsys, args, words):
    out = tmp_path / "x.nii.gz"
    rc = main(["recon", str(small["scan"]), "--traj", str(small["traj"]), "-o", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    _assert_refused(rc, err, out, *words)


def test_outputs_are_readable_by_others(small, tmp_path):
    out = tmp_path / "x.nii.gz"
    old = os.umask(0o022)
    try:
        assert main(["recon", str(small["scan"]), "--traj", str(small["traj"]), "-o", str(out)]) == 0
    finally:
        os.umask(old)
    for p in (out, out.with_name("x.json"), out.with_name("x.png")):
        assert p.stat().st_mode & 0o777 == 0o644, (p, oct(p.stat().st_mode))


def test_repetitions_are_averaged_unless_one_is_chosen(small, tmp_path):
    import nibabel as nib

    from na23recon.io.twix import read_scan, write_scan

    scan = read_scan(small["scan"])
    scan.data = np.concatenate([scan.data, 3 * scan.data])  # two repetitions: x1 and x3
    two = tmp_path / "two.dat"
    write_scan(two, scan)
    imgs = {}
    for tag, extra in (("mean", []), ("r1", ["--rep", "1"]), ("one", None)):
        out = tmp_path / f"{tag}.nii.gz"
        src = small["scan"] if extra is None else two
        assert main(["recon", str(src), "--traj", str(small["traj"]), "-o", str(out), "--no-png", *(extra or [])]) == 0
        imgs[tag] = nib.load(str(out)).get_fdata()
    np.testing.assert_allclose(imgs["mean"], 2 * imgs["one"], rtol=1e-4, atol=1e-4 * imgs["one"].max())
    np.testing.assert_allclose(imgs["r1"], 3 * imgs["one"], rtol=1e-4, atol=1e-4 * imgs["one"].max())
    side = json.loads((tmp_path / "mean.json").read_text())
    assert side["recon"]["repetitions"] == {"in_scan": 2, "used": [0, 1], "combined": "k-space mean"}
