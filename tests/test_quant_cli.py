"""`na23recon b1map` (NIfTI inputs) and `na23recon quantify`: files, sidecars, exit codes."""

import csv
import json

import numpy as np
import pytest
import quant_sim as qs
from scipy import ndimage

from na23recon.cli import main
from na23recon.core.nifti import load_nifti, save_nifti

N = 64


def _acq(flip, tr, te):
    return qs.acquisition(flip, tr, te, N)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return qs.write_quant_files(tmp_path_factory.mktemp("quant"), N)


def test_b1map_then_quantify(files, capsys):
    d = files
    assert main(["b1map", str(d / "a.nii.gz"), str(d / "2a.nii.gz"), "-o", str(d / "b1.nii.gz")]) == 0
    b1, aff, side = load_nifti(d / "b1.nii.gz")
    lab = qs.labels(N)
    brain = (lab >= 1) & (lab <= 5)
    assert np.max(np.abs(b1[brain] / qs.true_b1(N)[brain] - 1)) < 0.03
    assert side["b1"]["flip_deg"] == 60.0 and "inputs" in side and (d / "b1.png").exists()
    rc = main(["quantify", str(d / "img.nii.gz"), "--vials", str(d / "vials.json"), "--b1", str(d / "b1.nii.gz"),
               "--labels", str(d / "labels.nii.gz"), "--label-tissue", "1=csf,2=gm,3=wm,4=csf,5=lesion",
               "-o", str(d / "TSC.nii.gz")])
    assert rc == 0
    tsc, _, side = load_nifti(d / "TSC.nii.gz")
    sd, _, _ = load_nifti(d / "TSC_sd.nii.gz")
    assert tsc.shape == (N, N, N) and sd.shape == (N, N, N) and np.all(sd >= 0)
    assert side["acquisition"]["flip_deg"] == 80.0 and side["quant"]["unit"] == "mM"
    assert side["quant"]["vials_detected"] is True
    for name in ("TSC_sd.json", "TSC_roi.csv", "TSC_roi.json", "TSC.png", "TSC_calibration.png", "TSC_vials.nii.gz"):
        assert (d / name).exists(), name
    rows = list(csv.DictReader((d / "TSC_roi.csv").open()))
    assert list(rows[0]) == ["region", "kind", "label", "voxels", "volume_ml", "mean", "sd", "median", "se_noise",
                             "se_calibration", "se", "mean_pvc_gtm", "se_pvc_gtm", "mean_pvc_rbv"]
    wm = next(r for r in rows if r["label"] == "3")
    assert abs(float(wm["median"]) - 32.0) < 2.0
    m = ndimage.binary_erosion(lab == 2)
    assert abs(np.mean(tsc[m]) - 42.0) < max(0.05 * 42, 2.0)


def test_overrides_and_vial_mask(files):
    d = files
    rc = main(["quantify", str(d / "img.nii.gz"), "--vials", str(d / "vials.json"), "--vial-mask",
               str(d / "vmask.nii.gz"), "--flip-deg", "70", "--intercept", "zero", "--no-png",
               "-o", str(d / "t2.nii.gz")])
    assert rc == 0
    _, _, side = load_nifti(d / "t2.nii.gz")
    assert side["acquisition"]["flip_deg"] == 70.0 and side["quant"]["intercept"] == "zero"
    assert not (d / "t2.png").exists() and not (d / "t2_vials.nii.gz").exists()


@pytest.mark.parametrize("case,msg", [
    ("missing_vials_file", "vials file not found"),
    ("bad_medium", "unknown medium"),
    ("shape", "shape"),
    ("affine", "affine"),
    ("nan", "non-finite"),
    ("no_acq", "give --flip-deg, --tr-ms, --te-ms"),
    ("flips", "needs a and 2a"),
    ("vials_dir", "not a file"),
    ("label_fraction", "label must be an integer, got 11.5"),
    ("label_bool", "label must be an integer, got True"),
    ("label_huge", "label must be an integer in 1.."),
])
def test_bad_input_exit_2_one_line_no_output(files, tmp_path, capsys, case, msg):
    d = files
    img, vials, extra = str(d / "img.nii.gz"), str(d / "vials.json"), []
    cmd = None
    if case == "missing_vials_file":
        vials = str(tmp_path / "nope.json")
    elif case == "bad_medium":
        (tmp_path / "v.json").write_text(json.dumps({"vials": [{"label": 11, "concentration_mM": 25, "medium": "jelly"},
                                                                {"label": 12, "concentration_mM": 50, "medium": "agar2"}]}))
        vials = str(tmp_path / "v.json")
    elif case == "shape":
        save_nifti(tmp_path / "b1.nii.gz", np.ones((N, N, N - 1)), qs.affine(N), {})
        extra = ["--b1", str(tmp_path / "b1.nii.gz")]
    elif case == "affine":
        aff = qs.affine(N)
        aff[0, 3] += 10
        save_nifti(tmp_path / "b1.nii.gz", np.ones((N, N, N)), aff, {})
        extra = ["--b1", str(tmp_path / "b1.nii.gz")]
    elif case == "nan":
        a, aff, side = load_nifti(img)
        a[3, 3, 3] = np.nan
        save_nifti(tmp_path / "img.nii.gz", a, aff, side)
        img = str(tmp_path / "img.nii.gz")
    elif case == "no_acq":
        a, aff, _ = load_nifti(img)
        save_nifti(tmp_path / "img.nii.gz", a, aff, {})
        img = str(tmp_path / "img.nii.gz")
    elif case == "vials_dir":
        (tmp_path / "vdir").mkdir()
        vials = str(tmp_path / "vdir")
    elif case.startswith("label_"):
        bad = {"label_fraction": 11.5, "label_bool": True, "label_huge": 70000 * 1000}[case]
        (tmp_path / "v.json").write_text(json.dumps({"vials": [{"label": bad, "concentration_mM": 25, "medium": "agar2"},
                                                                {"label": 12, "concentration_mM": 50, "medium": "agar2"}]}))
        vials = str(tmp_path / "v.json")
    elif case == "flips":
        cmd = ["b1map", str(d / "a.nii.gz"), str(d / "img.nii.gz"), "-o", str(tmp_path / "out.nii.gz")]
    if cmd is None:
        cmd = ["quantify", img, "--vials", vials, *extra, "-o", str(tmp_path / "out.nii.gz")]
    capsys.readouterr()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and msg in err and "Traceback" not in err
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "out_sd.nii.gz").exists()
