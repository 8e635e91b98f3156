"""Receive-bias correction of array images (quant/receive.py): the volume-coil reference ratio,
N4, the default per coil count, and the whole chain on BART's analytic 8-coil phantom (BART as an
independent reference, skipped without it) and on the helmet-loop simulation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _bart import BART, SKIP_REASON, bart_pics, make_bart_case, roi_error
from scipy import ndimage

from na23recon.cli import main
from na23recon.core import Image, QuantOptions, ReconOptions
from na23recon.errors import InputError
from na23recon.pipeline.recon_step import recon_file
from na23recon.quant.receive import default_mode, n4_sensitivity, receive_field, reference_sensitivity


def _blocks(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-constant object (three values) and a smooth array-like shading (x2.5 across)."""
    g = (np.indices((n, n, n)) + 0.5) / n * 2 - 1
    r2 = np.sum(g**2, 0)
    obj = np.where(r2 < 0.7, 1.0, 0.0) + np.where(np.sum((g - [[[[0.25]]], [[[0.1]]], [[[0]]]]) ** 2, 0) < 0.08, 0.5, 0)
    obj += np.where(np.sum((g + [[[[0.3]]], [[[0.2]]], [[[0.1]]]]) ** 2, 0) < 0.05, 0.8, 0)
    shade = 1.0 + 1.5 * (0.5 + 0.5 * np.tanh(1.5 * (g[0] + 0.3 * g[1])))
    return obj, shade


def test_reference_ratio_recovers_the_shading():
    obj, shade = _blocks()
    r, info = reference_sensitivity(obj * shade * 7.0, obj, smooth_vox=0.0)
    inside = obj > 0
    ratio = (shade / r)[inside]
    assert np.ptp(ratio) / ratio.mean() < 1e-6  # exact without smoothing
    r1, _ = reference_sensitivity(obj * shade, obj, smooth_vox=1.0)
    ratio1 = (shade / r1)[ndimage.binary_erosion(inside)]
    assert np.ptp(ratio1) / ratio1.mean() < 0.05  # Gaussian smoothing of a x2.5 tanh edge
    assert info["method"] == "reference" and np.all(np.isfinite(r)) and np.all(r > 0)


def test_n4_flattens_a_smooth_bias():
    obj, shade = _blocks()
    img = obj * shade
    r, info = n4_sensitivity(img, (8.0, 8.0, 8.0))  # 192 mm across: 3 spans of 60 mm
    core = ndimage.binary_erosion(np.isclose(obj, 1.0), iterations=1)
    before = np.ptp(img[core]) / img[core].mean()
    after = np.ptp((img / r)[core]) / (img / r)[core].mean()
    assert before > 0.5 and after < 0.2 * before, (before, after)
    assert "n4" in info["method"]


def test_default_mode_and_refusals(caplog):
    assert default_mode(1, False) == "reciprocal"
    assert default_mode(None, False) == "reciprocal"
    assert default_mode(8, True) == "reference"
    with caplog.at_level(logging.WARNING):
        assert default_mode(32, False) == "none"
    assert "volume-coil reference" in caplog.text
    with pytest.raises(InputError, match="--receive must be one of"):
        QuantOptions(receive="body")
    with pytest.raises(InputError, match="needs the volume-coil"):
        receive_field("reference", np.ones((8, 8, 8)))
    with pytest.raises(InputError, match="reference only"):
        receive_field("n4", np.ones((8, 8, 8)), reference=np.ones((8, 8, 8)))
    with pytest.raises(InputError, match="receive-smooth-mm"):
        QuantOptions(receive_smooth_mm=-1)


# --- BART's analytic 8-coil Shepp-Logan --------------------------------------------------------

def _bart_errors(tmp_path, n: int, undersampling: float, methods=("adjoint",), pics: bool = False,
                 noise: float = 0.0) -> dict:
    case = make_bart_case(tmp_path, n, undersampling, noise=noise)
    vox = (240.0 / n,) * 3
    truth = case["truth_image"]
    out = {}
    for m in methods:
        opts = ReconOptions(method=m)
        arr = Image.load(recon_file(case["array"], case["traj"], tmp_path / f"a_{m}.nii.gz", opts, png=False)).array
        vol = Image.load(recon_file(case["volume"], case["traj"], tmp_path / f"v_{m}.nii.gz", opts, png=False)).array
        r_ref, _ = receive_field("reference", arr, vol, smooth_vox=QuantOptions().receive_smooth_mm / vox[0])
        r_n4, _ = receive_field("n4", arr, voxel_mm=vox)
        out[m] = {"volume": roi_error(vol, truth)[0], "none": roi_error(arr, truth)[0],
                  "reference": roi_error(arr / r_ref, truth)[0], "n4": roi_error(arr / r_n4, truth)[0],
                  "rois": roi_error(arr, truth)[1]}
    if pics:
        out["bart_pics_true_maps"] = roi_error(bart_pics(case, tmp_path), truth)[0]
    print(f"BART 8-coil n={n} undersampling {undersampling} noise {noise}: {json.dumps(out)}")
    return out


@pytest.mark.skipif(BART is None, reason=SKIP_REASON)
def test_bart_8coil_reference_removes_the_shading(tmp_path):
    e = _bart_errors(tmp_path, 24, 3.0)["adjoint"]
    assert e["none"] > 0.04  # the array's shading, uncorrected
    assert e["reference"] <= 0.02
    assert e["reference"] <= e["volume"] + 0.005
    assert e["n4"] <= 0.04 < e["none"]


@pytest.mark.slow
@pytest.mark.skipif(BART is None, reason=SKIP_REASON)
@pytest.mark.parametrize("undersampling", [1.0, 3.0])
def test_bart_8coil_full_size(tmp_path, undersampling):
    res = _bart_errors(tmp_path, 32 if undersampling == 1.0 else 48, undersampling, ("adjoint", "cg"), pics=True)
    for m in ("adjoint", "cg"):
        e = res[m]
        assert e["none"] > 0.06
        assert e["reference"] <= 0.02
        assert e["n4"] <= 0.04


@pytest.mark.slow
@pytest.mark.skipif(BART is None, reason=SKIP_REASON)
def test_bart_8coil_noisy(tmp_path):
    # k-space noise 0.84% of the RMS sample: volume-coil image SNR ~18, array ~50-65 (n=32)
    res = _bart_errors(tmp_path, 32, 1.0, ("adjoint", "cg"), noise=0.0084)
    for m in ("adjoint", "cg"):
        assert res[m]["reference"] <= 0.02 and res[m]["n4"] <= 0.04 < res[m]["none"]


# --- the helmet-loop simulation, through the command line ----------------------------------------

def _helmet_chain(tmp_path, matrix: int, ncoil: int) -> dict:
    sim = tmp_path / "sim"
    assert main(["simulate", "brain", "-o", str(sim), "--matrix", str(matrix), "--ncoil", str(ncoil),
                 "--receive-reference"]) == 0
    lab = Image.load(sim / "truth_labels.nii.gz")
    Image(np.where(lab.array >= 11, lab.array, 0).astype(np.int16), lab.affine, {}).save(sim / "vmask.nii.gz")
    common = ["--vials", str(sim / "vials.json"), "--vial-mask", str(sim / "vmask.nii.gz"), "--labels",
              str(sim / "truth_labels.nii.gz"), "--label-tissue", "1=csf,2=gm,3=wm,4=csf,5=lesion", "--no-png"]
    for name, scan in (("array", "scan.dat"), ("volume", "scan_ref.dat")):
        assert main(["recon", str(sim / scan), "--traj", str(sim / "traj.npz"), "-o", str(tmp_path / f"{name}.nii.gz"),
                     "--no-png"]) == 0
    runs = {"volume": ("volume", ["--receive", "none"]), "none": ("array", ["--receive", "none"]),
            "reference": ("array", ["--receive", "reference", "--receive-reference", str(sim / "scan_ref.dat"),
                                    "--reference-traj", str(sim / "traj.npz")]),
            "n4": ("array", ["--receive", "n4"])}
    labels = lab.array
    out = {}
    for key, (img, extra) in runs.items():
        rc = main(["quantify", str(tmp_path / f"{img}.nii.gz"), *common, *extra, "-o", str(tmp_path / f"tsc_{key}.nii.gz")])
        if rc == 2 and key in ("none", "n4"):
            # the shading left in (or N4's wrong field) moves the vials off their line: refused
            # (quant.tsc.MIN_CALIBRATION_R2), its error counted as unbounded
            assert not (tmp_path / f"tsc_{key}.nii.gz").exists()
            out[key], out[key + "_mode"] = {k: float("inf") for k in (2, 3, 4, 5)}, key
            continue
        assert rc == 0, key
        tsc = Image.load(tmp_path / f"tsc_{key}.nii.gz")
        out[key] = {lab_: float(tsc.array[ndimage.binary_erosion(labels == lab_)].mean()) for lab_ in (2, 3, 4, 5)
                    if ndimage.binary_erosion(labels == lab_).sum() >= 4}
        out[key + "_mode"] = tsc.meta["quant"]["receive_correction"]["mode"]
    truth = {2: 42.0, 3: 32.0, 4: 145.0, 5: 70.0}
    for key in ("volume", "none", "reference", "n4"):
        out[key + "_vs_volume_pct"] = {k: round(100 * (v / out["volume"][k] - 1), 2) for k, v in out[key].items()
                                       if k in out["volume"]}
        out[key + "_vs_truth_pct"] = {k: round(100 * (v / truth[k] - 1), 2) for k, v in out[key].items()}
    print(f"helmet {ncoil} coils matrix {matrix}:", json.dumps({k: v for k, v in out.items() if "pct" in k}))
    return out


def _worst(d: dict) -> float:
    return max(abs(v) for v in d.values())


@pytest.mark.slow
def test_helmet_8coil_chain(tmp_path):
    out = _helmet_chain(tmp_path, 24, 8)
    assert out["reference_mode"] == "reference" and out["n4_mode"] == "n4"
    assert _worst(out["reference_vs_volume_pct"]) < _worst(out["none_vs_volume_pct"])
    assert _worst(out["reference_vs_volume_pct"]) <= 3.0
    # run: the reference scan is reconstructed with the run's options, as quantify did from the sidecar
    sim = tmp_path / "sim"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[input]\nscan = "{sim / "scan.dat"}"\ntraj = "{sim / "traj.npz"}"\nvials = "{sim / "vials.json"}"\n'
                   f'vial_mask = "{sim / "vmask.nii.gz"}"\nlabels = "{sim / "truth_labels.nii.gz"}"\n'
                   f'receive_reference = "{sim / "scan_ref.dat"}"\n[quant]\nreceive = "reference"\n'
                   f'label_tissue = {{1 = "csf", 2 = "gm", 3 = "wm", 4 = "csf", 5 = "lesion"}}\n'
                   f'[output]\ndir = "{tmp_path / "run-out"}"\n')
    assert main(["run", str(cfg)]) == 0
    a = Image.load(tmp_path / "run-out" / "tsc.nii.gz")
    b = Image.load(tmp_path / "tsc_reference.nii.gz")
    np.testing.assert_allclose(a.array, b.array, rtol=1e-4, atol=1e-3)
    assert a.meta["quant"]["receive_correction"]["mode"] == "reference"


@pytest.mark.slow
def test_helmet_32coil_chain(tmp_path):
    out = _helmet_chain(tmp_path, 32, 32)
    assert _worst(out["reference_vs_volume_pct"]) < 0.2 * _worst(out["none_vs_volume_pct"])


@pytest.mark.slow
def test_helmet_32coil_full_size(tmp_path):
    out = _helmet_chain(tmp_path, 48, 32)
    assert _worst(out["reference_vs_volume_pct"]) <= 3.0


@pytest.mark.parametrize("compress", ["auto", "2"])
def test_reference_scan_takes_the_image_options(tmp_path, compress):
    """A raw volume-coil scan is reconstructed with the array image's recorded options, whatever
    its --coil-compress (the default 'auto', or a count the one channel cannot take, dropped)."""
    from na23recon.pipeline.reference import load_reference
    from na23recon.sim.scan import simulate_to_folder

    p = simulate_to_folder(tmp_path / "sim", matrix=16, ncoil=4, snr=30.0, receive_reference=True)
    recon_file(p["scan"], p["traj"], tmp_path / "array.nii.gz", ReconOptions(coil_compress=compress), png=False)
    image = Image.load(tmp_path / "array.nii.gz")
    ref = load_reference(p["scan_ref"], image, p["traj"])
    assert ref.array.shape == image.array.shape and np.allclose(ref.affine, image.affine)
    assert ref.meta["recon"]["ncoil_scan"] == 1 and image.meta["recon"]["ncoil_scan"] == 4
    # the volume coil sees the same object: the array / volume ratio is smooth and positive inside it
    r, info = reference_sensitivity(image.array, ref.array, 1.0)
    assert info["voxels"] > 100 and np.all(r > 0)


def test_run_config_and_manifest_take_a_receive_reference(tmp_path):
    from na23recon.pipeline.config import load_run_config, read_manifest

    for name in ("scan.dat", "traj.npz", "ref.dat", "vials.json"):
        (tmp_path / name).write_bytes(b"x")
    cfg = tmp_path / "run.toml"
    cfg.write_text('[input]\nscan = "scan.dat"\ntraj = "traj.npz"\nreceive_reference = "ref.dat"\n')
    with pytest.raises(InputError, match="receive_reference and the anatomy .* need a vials"):
        load_run_config(cfg)
    cfg.write_text('[input]\nscan = "scan.dat"\ntraj = "traj.npz"\nreceive_reference = "ref.dat"\nvials = "vials.json"\n'
                   '[quant]\nreceive = "reference"\nreceive_smooth_mm = 2.0\n')
    job, opts, _ = load_run_config(cfg)
    assert job.receive_reference == str(tmp_path / "ref.dat") and opts.quant.receive == "reference"
    man = tmp_path / "m.csv"
    man.write_text("id,scan,traj,vials,receive_reference\ns1,scan.dat,traj.npz,vials.json,ref.dat\n")
    (job,) = read_manifest(man)
    assert job.receive_reference == str(tmp_path / "ref.dat") and str(tmp_path / "ref.dat") in job.inputs()
