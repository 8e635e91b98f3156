"""`run` and `batch` give what `recon`, `b1map` and `quantify` give one after another, with every
option passed the same way (and not the defaults: a dropped option would show)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from na23recon.cli import main
from na23recon.core import Image
from na23recon.sim.scan import simulate_to_folder

RECON = ["--method", "cg", "--iters", "4", "--lam", "0.05"]
B1 = ["--fit", "poly", "--order", "2"]
QUANT = ["--tissue", "wm", "--label-tissue", "1=csf,2=gm,3=wm,4=csf,5=lesion", "--intercept", "zero"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("same")
    sim = simulate_to_folder(d / "sim", matrix=32, snr=30, double_angle=True, flip_deg=45.0, tr_ms=150.0,
                             b1_variation=0.2)
    labels = Image.load(sim["labels"])
    vials = np.where(np.isin(labels.array, (11, 12, 13, 14)), labels.array, 0).astype(np.float32)
    Image(vials, labels.affine, {}).save(d / "vial_mask.nii.gz")
    return d, sim


def _run(args):
    assert main([str(a) for a in args]) == 0


def _arrays(folder):
    return {name: Image.load(folder / f"{name}.nii.gz").array for name in ("recon", "b1", "tsc", "tsc_sd")}


def test_run_and_batch_equal_the_single_commands(study):
    d, sim = study
    single = d / "single"
    _run(["recon", sim["scan"], "--traj", sim["traj"], "-o", single / "recon.nii.gz", *RECON])
    _run(["b1map", sim["scan"], sim["scan_2a"], "--traj", sim["traj"], "-o", single / "b1.nii.gz", *B1, *RECON])
    _run(["quantify", single / "recon.nii.gz", "--vials", sim["vials"], "--vial-mask", d / "vial_mask.nii.gz",
          "--b1", single / "b1.nii.gz", "--labels", sim["labels"], "-o", single / "tsc.nii.gz", *QUANT])

    inputs = {"scan": sim["scan"], "traj": sim["traj"], "b1_scan_a": sim["scan"], "b1_scan_2a": sim["scan_2a"],
              "vials": sim["vials"], "vial_mask": d / "vial_mask.nii.gz", "labels": sim["labels"]}
    config = d / "visit.toml"
    config.write_text("[input]\n" + "".join(f'{k} = "{v}"\n' for k, v in inputs.items()) +
                      '[recon]\nmethod = "cg"\niters = 4\nlam = 0.05\n[b1]\nfit = "poly"\norder = 2\n'
                      '[quant]\ntissue = "wm"\nlabel_tissue = {1 = "csf", 2 = "gm", 3 = "wm", 4 = "csf", 5 = "lesion"}\n'
                      'intercept = "zero"\n')
    _run(["run", config, "-o", d / "run"])

    manifest = d / "study.csv"
    manifest.write_text(",".join(["id", *inputs]) + "\n" + ",".join(["s1", *map(str, inputs.values())]) + "\n")
    _run(["batch", manifest, "-o", d / "batch", "--workers", "1", "--no-progress", *RECON,
          "--b1-fit", "poly", "--b1-order", "2", *QUANT])

    ref = _arrays(single)
    assert np.all(np.isfinite(ref["tsc"])) and ref["tsc"].max() > 100  # the ventricles' ~145 mM
    for other in (d / "run", d / "batch" / "s1"):
        got = _arrays(other)
        for name, arr in ref.items():
            np.testing.assert_allclose(got[name], arr, rtol=1e-5, atol=1e-5 * float(np.abs(arr).max()),
                                       err_msg=f"{other.name}: {name}")
        side = json.loads((other / "tsc.json").read_text())
        assert side["quant"]["options"]["tissue"] == "wm"
        assert side["quant"]["options"]["label_tissue"] == {"1": "csf", "2": "gm", "3": "wm", "4": "csf",
                                                            "5": "lesion"}
        assert json.loads((other / "recon.json").read_text())["recon"]["options"]["method"] == "cg"


def test_run_options_on_the_command_line_override_the_config(study):
    d, sim = study
    config = d / "plain.toml"
    config.write_text(f'[input]\nscan = "{sim["scan"]}"\ntraj = "{sim["traj"]}"\n[recon]\nmethod = "cg"\niters = 2\n')
    _run(["run", config, "-o", d / "override", "--iters", "3"])
    side = json.loads((d / "override" / "recon.json").read_text())["recon"]
    assert side["options"]["method"] == "cg" and side["options"]["iters"] == 3
