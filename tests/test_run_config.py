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


@pytest.mark.parametrize("text,words", [
    ('[input]\nscan = "s/scan.dat"\n', ["scan and traj"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/none.npz"\n', ["traj", "not found"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\nfoo = 1\n', ["unknown", "foo"]),
    ('[input\nscan=', ["TOML"]),
    ('[input]\nscan = "s/scan.dat"\ntraj = "s/traj.npz"\nlabels = "s/truth_labels.nii.gz"\n', ["vials"]),
])
def test_bad_config_is_exit_2(sim, capsys, text, words):
    cfg = sim / "bad.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "-o", str(sim / "bad-out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (sim / "bad-out").exists()
