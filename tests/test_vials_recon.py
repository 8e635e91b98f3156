"""Automatic vial detection on the simulator's reconstructions (adjoint recon: ringing, partial
volume, noise; single coil and the helmet-loop array), not on idealised image-domain images,
through `quant.images.quantify` with default options as a new user runs it.

Measured (seed 0; Dice of the detected vial against truth_labels, vials 11-14; all labels right):
matrix 48 SNR 30: 0.96-0.99; 48/15: 0.90-1.00; 40/30: 0.78-0.85. Limit: at matrix 32 SNR 15 the
25 mM vial is too dim for the noise: it is named missing and the calibration uses the other three.
Array scans: see test_array_scans_default_options and scripts/validate_vials.py.
"""

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from na23recon.cli import main
from na23recon.core import Image
from na23recon.core.nifti import load_nifti, save_nifti
from na23recon.errors import InputError
from na23recon.pipeline.recon_step import recon_file
from na23recon.quant import tsc
from na23recon.quant.images import quantify
from na23recon.quant.vials import load_vials
from na23recon.sim.scan import simulate_to_folder

VIAL_LABELS = (11, 12, 13, 14)
CASES = [(48, 30), (48, 15), (40, 30)]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """{(matrix, snr): folder with recon.nii.gz, truth_labels.nii.gz, vials.json}; one simulation each."""
    out = {}
    for matrix, snr in CASES + [(32, 15)]:
        d = tmp_path_factory.mktemp(f"m{matrix}s{snr}")
        p = simulate_to_folder(d, matrix=matrix, snr=snr)
        recon_file(p["scan"], p["traj"], d / "recon.nii.gz", png=False)
        out[(matrix, snr)] = d
    return out


def _detect(d):
    return quantify(Image.load(d / "recon.nii.gz"), load_vials(d / "vials.json"))


def _dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"m{c[0]}-snr{c[1]}")
def test_detected_vials_overlap_the_truth(scans, case):
    d = scans[case]
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    mask = _detect(d).vial_mask
    assert sorted(int(x) for x in np.unique(mask) if x) == list(VIAL_LABELS)
    for lab in VIAL_LABELS:
        got, t = mask == lab, truth == lab
        dice = _dice(got, t)
        shift = np.linalg.norm(np.mean(np.argwhere(got), 0) - np.mean(np.argwhere(t), 0))
        assert dice > 0.7 and shift < 1.0, (lab, dice, shift)  # measured: Dice >= 0.78


def test_too_dim_vial_is_named_and_left_out(scans, caplog):
    """Matrix 32, SNR 15: the 25 mM vial is too dim to tell from noise peaks; it is named, with the
    reason, and the other three calibrate (labels right, Dice measured 0.64-0.75)."""
    d = scans[(32, 15)]
    res = _detect(d)
    assert res.info["vials_missing"] == [11]
    assert "vial 11 (25 mM) not found" in res.info["vial_detection"]["missing"]["11"]
    assert any("vial 11 (25 mM) not found" in r.getMessage() for r in caplog.records)
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    assert sorted(int(x) for x in np.unique(res.vial_mask) if x) == [12, 13, 14]
    for lab in (12, 13, 14):
        assert _dice(res.vial_mask == lab, truth == lab) > 0.6
    assert [p["label"] for p in res.calibration.points] == [12, 13, 14]


def _quantify(capsys, img, vials, out, *extra):
    capsys.readouterr()
    rc = main(["quantify", str(img), "--vials", str(vials), "-o", str(out), "--no-png", *extra])
    return rc, capsys.readouterr().err


def test_quantify_cli_on_a_reconstruction(scans, tmp_path, capsys):
    d = scans[(48, 30)]
    rc, err = _quantify(capsys, d / "recon.nii.gz", d / "vials.json", tmp_path / "tsc.nii.gz",
                        "--labels", str(d / "truth_labels.nii.gz"))
    assert rc == 0, err
    rows = {int(r["label"]): float(r["mean"]) for r in csv.DictReader(open(tmp_path / "tsc_roi.csv"))}
    conc = {v["label"]: v["concentration_mM"] for v in json.loads((d / "vials.json").read_text())["vials"]}
    for lab in VIAL_LABELS:  # measured: -5%, -2%, +2%, +2%
        assert rows[lab] == pytest.approx(conc[lab], rel=0.10), (lab, rows[lab])
    assert (tmp_path / "tsc_vials.nii.gz").exists()


def test_missing_vials_on_a_reconstruction(scans, tmp_path, capsys, caplog):
    """A fifth vial listed but not in the image: named, and the other four calibrate (exit 0). All
    vials blanked out: nothing to calibrate on, exit 2 with one line naming them, no output."""
    d = scans[(48, 30)]
    vials = json.loads((d / "vials.json").read_text())
    vials["vials"].append(dict(vials["vials"][0], label=15, concentration_mM=75.0))
    (tmp_path / "five.json").write_text(json.dumps(vials))
    rc, err = _quantify(capsys, d / "recon.nii.gz", tmp_path / "five.json", tmp_path / "a.nii.gz")
    assert rc == 0, err
    assert any("vial 15 (75 mM) not found" in r.getMessage() for r in caplog.records)
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["quant"]["vials_missing"] == [15]
    assert sorted(int(x) for x in np.unique(load_nifti(tmp_path / "a_vials.nii.gz")[0]) if x) == list(VIAL_LABELS)
    # vials blanked out: their voxels and blurred surroundings replaced by background from a corner
    img, aff, side = load_nifti(d / "recon.nii.gz")
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    near = ndimage.binary_dilation(truth > 10, iterations=3)
    img = img.copy()
    img[near] = np.random.default_rng(0).choice(img[:8, :8, :8].ravel(), int(near.sum()))
    save_nifti(tmp_path / "blank.nii.gz", img, aff, side)
    rc, err = _quantify(capsys, tmp_path / "blank.nii.gz", d / "vials.json", tmp_path / "b.nii.gz")
    lines = [ln for ln in err.strip().splitlines() if "error" in ln.lower()]
    assert rc == 2 and "Traceback" not in err
    assert len(lines) == 1 and "found 0 of 4 vials" in lines[0] and "vial 11 (25 mM) not found" in lines[0]
    assert not (tmp_path / "b.nii.gz").exists()


ARRAY_CASES = [(1, 0), (1, 1), (8, 0), (8, 1)]


@pytest.fixture(scope="module")
def array_scans(tmp_path_factory):
    """{(ncoil, seed): folder}, matrix 48, SNR 15, and {ncoil: noiseless reconstruction}."""
    out, clean = {}, {}
    for ncoil in (1, 8):
        cache: dict = {}
        for seed in (None, 0, 1):
            d = tmp_path_factory.mktemp(f"c{ncoil}s{seed}")
            p = simulate_to_folder(d, matrix=48, snr=None if seed is None else 15.0, seed=seed or 0, ncoil=ncoil,
                                   cache=cache)
            recon_file(p["scan"], p["traj"], d / "recon.nii.gz", png=False)
            if seed is None:
                clean[ncoil] = load_nifti(d / "recon.nii.gz")[0].astype(np.float64)
            else:
                out[(ncoil, seed)] = d
    return out, clean


@pytest.mark.parametrize("case", ARRAY_CASES, ids=lambda c: f"coils{c[0]}-seed{c[1]}")
def test_array_scans_default_options(array_scans, case, monkeypatch):
    """Single coil and 8 helmet loops (sum of squares, receive profile left in), SNR 15, default
    recon and quantify: every vial whose SNR (noiseless mean over the noise SD, both from the
    reconstructions) exceeds 5 is found, with the right label and Dice >= 0.7 against the true
    vial (the CI subset of scripts/validate_vials.py). Before this detection, these scans were refused
    ("found 7 bright components") with 8 coils."""
    scans, clean = array_scans
    d = scans[case]
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    noisy = load_nifti(d / "recon.nii.gz")[0].astype(np.float64)
    if case[0] > 1:
        # the loops' shading left in moves the vials off their line: quantify refuses to calibrate
        # (measured R^2 0.27 for 8 coils, seed 0) ...
        try:
            _detect(d)
        except InputError as exc:
            assert "receive array's shading" in str(exc)
        # ... which is not detection, measured here with that check off
        monkeypatch.setattr(tsc, "MIN_CALIBRATION_R2", -np.inf)
    mask = _detect(d).vial_mask
    for lab in VIAL_LABELS:
        t = truth == lab
        snr = np.mean(clean[case[0]][t]) / np.std(noisy[t] - clean[case[0]][t], ddof=1)
        if snr > 5:
            assert _dice(mask == lab, t) >= 0.7, (lab, snr)


ARRAY32_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def array32(tmp_path_factory):
    """32 helmet loops, matrix 32, SNR 30, with the volume-coil reference scan (scan_ref.dat):
    {seed: folder} and the noiseless reconstruction (one simulation cache: the analytic k-space once)."""
    cache: dict = {}
    out, clean = {}, None
    for seed in (None,) + ARRAY32_SEEDS:
        d = tmp_path_factory.mktemp(f"c32s{seed}")
        p = simulate_to_folder(d, matrix=32, snr=None if seed is None else 30.0, seed=seed or 0, ncoil=32,
                               cache=cache, receive_reference=seed is not None)
        recon_file(p["scan"], p["traj"], d / "recon.nii.gz", png=False)
        if seed is None:
            clean = load_nifti(d / "recon.nii.gz")[0].astype(np.float64)
        else:
            out[seed] = d
    return out, clean


@pytest.mark.parametrize("seed", ARRAY32_SEEDS)
def test_32_coils_through_the_receive_reference(array32, seed, tmp_path, capsys):
    """32 loops as a user runs them: `quantify --receive-reference scan_ref.dat --reference-traj
    traj.npz` (the volume-coil scan reconstructed with the image's options, the ratio as the
    receive field): every vial whose SNR exceeds 5 is found with its label and Dice >= 0.7 against
    the simulator's vial mask. Measured: seed 0 vial SNR 6.7-26.5, Dice 0.79-0.83; seed 1 the 25 mM
    vial at SNR 4.0 (Dice 0.67, not asserted), the others Dice 0.79-0.86. The CI subset of
    scripts/validate_vials.py (its grid: matrix 48, 20 seeds, SNR 15 and 30)."""
    scans, clean = array32
    d = scans[seed]
    rc, err = _quantify(capsys, d / "recon.nii.gz", d / "vials.json", tmp_path / "tsc.nii.gz",
                        "--receive-reference", str(d / "scan_ref.dat"), "--reference-traj", str(d / "traj.npz"))
    assert rc == 0, err
    side = json.loads((tmp_path / "tsc.json").read_text())
    assert side["quant"]["receive_correction"]["mode"] == "reference"
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    noisy = load_nifti(d / "recon.nii.gz")[0].astype(np.float64)
    mask = np.round(load_nifti(tmp_path / "tsc_vials.nii.gz")[0]).astype(int)
    got = {}
    for lab in VIAL_LABELS:
        t = truth == lab
        snr = np.mean(clean[t]) / np.std(noisy[t] - clean[t], ddof=1)
        got[lab] = (round(float(snr), 1), round(float(_dice(mask == lab, t)), 2))
    print("32 coils, seed", seed, "vial: (SNR, Dice)", got)
    for lab, (snr, dice) in got.items():
        if snr > 5:
            assert dice >= 0.7, (lab, snr, dice)


def test_pvc_leaves_out_a_vial_that_was_not_found(scans):
    """Matrix 32, SNR 15 (vial 11 not found): the PVC's vial fits and calibration take the three
    vials the calibration used; before, the missing vial's empty region stopped `region_table`
    ('vial 11: empty region'), as it did on a decay-model reconstruction at matrix 32."""
    from na23recon.quant.anatomy import label_regions
    from na23recon.quant.pvc import gaussian_psf
    from na23recon.quant.roi import region_table

    d = scans[(32, 15)]
    img = Image.load(d / "recon.nii.gz")
    res = _detect(d)
    assert res.info["vials_missing"] == [11]
    truth = np.round(load_nifti(d / "truth_labels.nii.gz")[0]).astype(int)
    brain = np.where((truth >= 1) & (truth <= 5), truth, 0)
    vox = tuple(float(v) for v in img.voxel_mm)
    rows, _, info = region_table(res, img.array, [label_regions(brain)], load_vials(d / "vials.json"),
                                 float(np.prod(vox)) / 1e3, gaussian_psf(2 * vox[0], vox, img.array.shape))
    assert [s["label"] for s in info["vial_shapes"]] == [12, 13, 14]
    assert all(np.isfinite(r["mean_pvc_gtm"]) for r in rows)
