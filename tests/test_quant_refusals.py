"""`b1map` / `quantify` refuse bad options before any work or output, write all outputs or none,
and record a complete `acquisition` block even when the input has no sidecar."""

import json
import logging

import numpy as np
import pytest
import quant_sim as qs

from na23recon.cli import main
from na23recon.core.nifti import load_nifti, save_nifti

N = 32
ACQ_FIELDS = {"nucleus", "b0_T", "te_ms", "tr_ms", "flip_deg", "dwell_us", "fov_mm", "matrix"}


def _acq(flip, tr, te):
    return qs.acquisition(flip, tr, te, N)


@pytest.fixture(scope="module")
def twix_pair(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    d = tmp_path_factory.mktemp("b1twix")
    return simulate_to_folder(d / "s", matrix=16, flip_deg=45.0, tr_ms=300.0, b1_variation=0.3, snr=60.0,
                              double_angle=True, traj="radial")


@pytest.fixture(scope="module")
def nii(tmp_path_factory):
    return qs.write_quant_files(tmp_path_factory.mktemp("quantref"), N)


def _refused(capsys, caplog, cmd, *words):
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rc = main(cmd)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    # nothing was logged before the refusal (it would be a second stderr line outside pytest)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    return err


@pytest.mark.parametrize("opts,words", [
    (["--order", "9"], ["order", "[0, 6]"]),
    (["--order=-1"], ["order"]),
    (["--snr-min", "nan"], ["--snr-min"]),
    (["--snr-min=-3"], ["--snr-min"]),
    (["--flip-deg", "100"], ["--flip-deg"]),
    (["--matrix", "4"], ["matrix"]),
    (["same_scan"], ["needs a and 2a"]),
])
def test_b1map_twix_refused_before_any_reconstruction(twix_pair, tmp_path, capsys, caplog, monkeypatch, opts, words):
    import na23recon.pipeline.b1_step as b1_step

    calls = []
    real = b1_step.recon_file
    monkeypatch.setattr(b1_step, "recon_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    scan_2a = twix_pair["scan_2a"]
    if opts == ["same_scan"]:
        opts, scan_2a = [], twix_pair["scan"]
    out = tmp_path / "o" / "b.nii.gz"
    _refused(capsys, caplog, ["b1map", str(twix_pair["scan"]), str(scan_2a), "--traj", str(twix_pair["traj"]),
                              "-o", str(out), *opts], *words)
    assert calls == []
    assert not (tmp_path / "o").exists()


def test_b1map_twix_refusal_after_reconstruction_leaves_nothing(twix_pair, tmp_path, capsys):
    out = tmp_path / "o" / "b.nii.gz"
    (tmp_path / "o").mkdir()
    capsys.readouterr()
    rc = main(["b1map", str(twix_pair["scan"]), str(twix_pair["scan_2a"]), "--traj", str(twix_pair["traj"]),
               "--snr-min", "1e9", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "too little signal" in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "o").iterdir()) == []  # no b_a.nii.gz, b_2a.nii.gz, staging folder
    rc = main(["b1map", str(twix_pair["scan"]), str(twix_pair["scan_2a"]), "--traj", str(twix_pair["traj"]),
               "--no-png", "-o", str(out)])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b.json", "b.nii.gz", "b_2a.json", "b_2a.nii.gz",
                                                                  "b_a.json", "b_a.nii.gz"]
    assert json.loads((tmp_path / "o" / "b.json").read_text())["acquisition"]["flip_deg"] == pytest.approx(45.0)


@pytest.mark.parametrize("case,words", [
    ("flip400", ["flip", "(0", "180"]),
    ("flip0", ["flip"]),
    ("noise0", ["--noise-sd"]),
    ("noise_neg", ["--noise-sd"]),
    ("te_neg", ["--te-ms"]),
    ("te_nan", ["--te-ms"]),
    ("tr_neg", ["--tr-ms"]),
    ("tr_nan", ["--tr-ms"]),
    ("sidecar_flip400", ["flip angle", "180"]),
    ("b1_zero", ["B1 map", "relative flip"]),
    ("b1_negative", ["B1 map"]),
    ("b1_percent", ["B1 map"]),
    ("vmask_huge", ["vial mask", "labels outside"]),
    ("vmask_fraction", ["vial mask", "integer"]),
    ("echo_neg", ["echo"]),
])
def test_quantify_impossible_inputs_exit_2(nii, tmp_path, capsys, caplog, case, words):
    d = nii
    img, extra = str(d / "img.nii.gz"), []
    opt = {"flip400": ["--flip-deg", "400"], "flip0": ["--flip-deg", "0"], "noise0": ["--noise-sd", "0"],
           "noise_neg": ["--noise-sd=-1"], "te_neg": ["--te-ms=-0.5"], "te_nan": ["--te-ms", "nan"],
           "tr_neg": ["--tr-ms=-60"], "tr_nan": ["--tr-ms", "nan"], "echo_neg": ["--echo=-1"]}
    if case in opt:
        extra = opt[case]
    elif case == "sidecar_flip400":
        a, aff, side = load_nifti(img)
        side["acquisition"]["flip_deg"] = 400.0
        save_nifti(tmp_path / "img.nii.gz", a, aff, side)
        img = str(tmp_path / "img.nii.gz")
    elif case.startswith("b1_"):
        val = {"b1_zero": 0.0, "b1_negative": -1.0, "b1_percent": 100.0}[case]
        save_nifti(tmp_path / "b1.nii.gz", np.full((N, N, N), val), qs.affine(N), {})
        extra = ["--b1", str(tmp_path / "b1.nii.gz")]
    elif case.startswith("vmask_"):
        v = {"vmask_huge": 2.0 ** 33, "vmask_fraction": 11.5}[case]
        m, aff, _ = load_nifti(d / "vmask.nii.gz")
        m[0, 0, 0] = v
        save_nifti(tmp_path / "vm.nii.gz", m, aff, {})
        extra = ["--vial-mask", str(tmp_path / "vm.nii.gz")]
    out = tmp_path / "o" / "TSC.nii.gz"
    _refused(capsys, caplog, ["quantify", img, "--vials", str(d / "vials.json"), *extra, "-o", str(out)], *words)
    assert not (tmp_path / "o").exists()


def test_quantify_fault_while_writing_leaves_no_output(nii, tmp_path, capsys, monkeypatch):
    from na23recon.pipeline import tsc_step

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tsc_step, "calibration_png", boom)  # written after TSC_sd, before TSC
    out = tmp_path / "o"
    out.mkdir()
    rc = main(["quantify", str(nii / "img.nii.gz"), "--vials", str(nii / "vials.json"), "--vial-mask",
               str(nii / "vmask.nii.gz"), "--labels", str(nii / "labels.nii.gz"), "-o", str(out / "TSC.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 1 and "disk on fire" in err
    assert list(out.iterdir()) == []


def test_quantify_without_sidecar_records_full_acquisition(nii, tmp_path, caplog):
    a, aff, _ = load_nifti(nii / "img.nii.gz")
    aff = aff.copy()
    aff[:3, :3] = np.diag([7.5, 7.0, 6.5])  # anisotropic voxels: fov_mm = voxel size x shape
    save_nifti(tmp_path / "img.nii.gz", a, aff, {})
    (tmp_path / "img.json").unlink()
    m, _, _ = load_nifti(nii / "vmask.nii.gz")
    save_nifti(tmp_path / "vm.nii.gz", m, aff, {})
    with caplog.at_level(logging.WARNING):
        rc = main(["quantify", str(tmp_path / "img.nii.gz"), "--vials", str(nii / "vials.json"), "--vial-mask",
                   str(tmp_path / "vm.nii.gz"), "--flip-deg", "80", "--tr-ms", "60", "--te-ms", "0.3", "--no-png",
                   "-o", str(tmp_path / "TSC.nii.gz")])
    assert rc == 0
    assert any("fov_mm and matrix taken from the NIfTI header" in r.getMessage() for r in caplog.records)
    for name in ("TSC.json", "TSC_sd.json"):
        acq = json.loads((tmp_path / name).read_text())["acquisition"]
        assert set(acq) == ACQ_FIELDS
        assert acq["fov_mm"] == pytest.approx([7.5 * N, 7.0 * N, 6.5 * N]) and acq["matrix"] == [N, N, N]
        assert acq["flip_deg"] == 80.0 and acq["tr_ms"] == 60.0 and acq["te_ms"] == [0.3]
        assert acq["nucleus"] is None and acq["b0_T"] is None and acq["dwell_us"] is None


def test_b1map_nifti_without_sidecars_records_full_acquisition(nii, tmp_path, caplog):
    for tag in ("a", "2a"):
        x, aff, _ = load_nifti(nii / f"{tag}.nii.gz")
        save_nifti(tmp_path / f"{tag}.nii.gz", x, aff, {})
        (tmp_path / f"{tag}.json").unlink()
    with caplog.at_level(logging.WARNING):
        rc = main(["b1map", str(tmp_path / "a.nii.gz"), str(tmp_path / "2a.nii.gz"), "--flip-deg", "60", "--no-png",
                   "-o", str(tmp_path / "b1.nii.gz")])
    assert rc == 0
    assert any("taken from the NIfTI header" in r.getMessage() for r in caplog.records)
    acq = json.loads((tmp_path / "b1.json").read_text())["acquisition"]
    assert set(acq) == ACQ_FIELDS
    assert acq["fov_mm"] == pytest.approx([qs.FOV_MM] * 3) and acq["matrix"] == [N, N, N]
    assert acq["flip_deg"] == 60.0 and acq["nucleus"] is None and acq["tr_ms"] is None
