"""`na23recon run CONFIG.toml`: one scan end to end from a config file."""

import json

import nibabel as nib
import numpy as np
import pytest

from na23recon.cli import main


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    root = tmp_path_factory.mktemp("run")
    simulate_to_folder(root / "s", matrix=24, snr=40.0)
    return root


def test_run_config_recon_and_report(sim, capsys):
    cfg = sim / "one.toml"
    cfg.write_text('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[recon]\nmatrix = 24\n[output]\ndir = "res"\n')
    assert main(["run", str(cfg)]) == 0
    out = sim / "res"
    img = nib.load(str(out / "recon.nii.gz"))
    assert img.shape == (24, 24, 24) and np.isfinite(img.get_fdata()).all()
    assert json.loads((out / "recon.json").read_text())["recon"]["matrix"] == [24, 24, 24]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "recon.nii.gz" in html


def test_run_config_b0_map_relative_to_config(sim, monkeypatch):
    """[recon] b0_map is a path relative to the config file (as the [input] paths), not to the cwd."""
    cfg = sim / "b0.toml"
    cfg.write_text('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[recon]\nmatrix = 24\nmethod = "adjoint"\n'
                   'b0_map = "s/truth_b0.nii.gz"\n[output]\ndir = "res-b0"\n')
    monkeypatch.chdir(sim / "s")  # elsewhere: a cwd-relative reading would not find s/truth_b0.nii.gz
    assert main(["run", str(cfg)]) == 0
    side = json.loads((sim / "res-b0" / "recon.json").read_text())
    assert side["recon"]["options"]["b0_map"] == str((sim / "s" / "truth_b0.nii.gz").resolve())
    assert "b0_model" in side["recon"]


@pytest.mark.parametrize("text,words", [
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[recon]\nb0_map = "s/nope.nii.gz"\n', ["b0_map", "not found"]),
    ('[input]\nscan = "s/scan.dat"\n', ["scan and traj"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/none.npz"\n', ["traj", "not found"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\nfoo = 1\n', ["unknown", "foo"]),
    ('[input\nscan=', ["TOML"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\nlabels = "s/truth_labels.nii.gz"\n', ["vials"]),
    ('input = 3\n', ["[input]", "table"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[recon]\nmatrix = "abc"\n', ["matrix", "whole number"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[quant]\nintercept = "bogus"\n', ["intercept"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\n[quant]\nfoo = 1\n', ["unknown", "foo"]),
])
def test_bad_config_is_exit_2(sim, capsys, text, words):
    cfg = sim / "bad.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "-o", str(sim / "bad-out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (sim / "bad-out").exists()


def test_run_config_full_chain_b1_and_tsc(tmp_path):
    """Recon + double-angle B1 from a scan pair + TSC with a vial mask and an ROI table."""
    import csv

    from na23recon.sim.scan import simulate_to_folder

    simulate_to_folder(tmp_path / "main", matrix=32, snr=40.0)
    simulate_to_folder(tmp_path / "b1a", matrix=32, snr=60.0, flip_deg=45.0, tr_ms=300.0, seed=1)
    simulate_to_folder(tmp_path / "b1b", matrix=32, snr=60.0, flip_deg=90.0, tr_ms=300.0, seed=2)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[input]\nscan = "main/scan.dat"\ntraj = "main/traj.npz"\nb1_scan_a = "b1a/scan.dat"\n'
                   'b1_scan_2a = "b1b/scan.dat"\nvials = "main/vials.json"\nvial_mask = "main/truth_labels.nii.gz"\n'
                   'labels = "main/truth_labels.nii.gz"\n[output]\ndir = "out"\n')
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "out"
    b1 = nib.load(str(out / "b1.nii.gz")).get_fdata()
    lab = nib.load(str(tmp_path / "main" / "truth_labels.nii.gz")).get_fdata().astype(int)
    brain = (lab >= 2) & (lab <= 5)
    # the simulator has a uniform transmit field: the map must read 1.0 in the brain
    assert abs(np.median(b1[brain]) - 1.0) < 0.03
    rows = {int(r["label"]): r for r in csv.DictReader(open(out / "tsc_roi.csv"))}
    for label, conc in {11: 25.0, 12: 50.0, 13: 100.0, 14: 150.0}.items():
        assert abs(float(rows[label]["mean"]) - conc) < 0.15 * conc, (label, rows[label])
    side = json.loads((out / "tsc.json").read_text())
    assert side["inputs"] and "acquisition" in side
    assert "tsc.nii.gz" in (out / "report.html").read_text()
