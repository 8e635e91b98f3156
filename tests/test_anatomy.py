"""1H anatomy in sodium space: box-average resampling, label tables, the simulator's exact tissue
maps, rigid registration of a known head motion, per-voxel relaxation mixing, and `run`/`batch`
giving the TSC and ROI table `quantify` gives."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from na23recon.core import Image
from na23recon.errors import InputError
from na23recon.quant.anatomy import load_label_table, prepare_anatomy, resample_average, resample_labels
from na23recon.quant.register import rotation_angle_deg
from na23recon.quant.relax import get_preset, spgr_weight
from na23recon.quant.tsc import quantify
from na23recon.quant.vials import Vial
from na23recon.sim.anatomy import tissue_maps, write_anatomy
from na23recon.sim.phantom import load_phantom


def _vol(a, b, c):
    return 4 / 3 * np.pi * a * b * c / 1e3


def test_box_average_keeps_the_content():
    # a 1 mm block of 10 x 10 x 10 mm placed at a 4 mm grid's offset: each 4 mm voxel holds its exact share
    src = np.zeros((40, 40, 40), np.float32)
    src[9:19, 9:19, 9:19] = 1.0  # voxel centres 9..18 mm: the block spans 8.5..18.5 mm
    src_aff = np.eye(4)
    dst_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    dst_aff[:3, 3] = 1.5  # voxel i spans 4i - 0.5 .. 4i + 3.5 mm
    fr = resample_average(src, src_aff, dst_aff, (10, 10, 10))
    assert fr.sum() * 64 == pytest.approx(1000.0, rel=1e-6)
    # voxel 2 spans 7.5..11.5: 3 of its 4 mm inside the block along each axis
    assert fr[2, 2, 2] == pytest.approx((3 / 4) ** 3, abs=1e-6)
    assert fr[3, 3, 3] == pytest.approx(1.0)
    lab = resample_labels(src.astype(int) * 7, [7], src_aff, dst_aff, (10, 10, 10))[0]
    np.testing.assert_allclose(lab, fr, atol=1e-6)


def test_box_average_matches_scipy_trilinear_on_an_oblique_grid():
    # the numba kernels against the same sub-points through scipy.ndimage (trilinear and nearest,
    # 'constant' outside), on an oblique, anisotropic destination with a rigid world transform
    from scipy import ndimage

    from na23recon.quant.resample import sub_offsets, voxel_map

    rng = np.random.default_rng(1)
    src = rng.random((50, 56, 46)).astype(np.float32)
    lab = rng.integers(0, 5, src.shape)
    src_aff = np.eye(4)
    src_aff[:3, 3] = [-25, -28, -23]
    th = 0.2
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    dst_aff = np.eye(4)
    dst_aff[:3, :3] = rot @ np.diag([3.75, 3.5, 4.0])
    dst_aff[:3, 3] = [-30, -27, -26]
    world = np.eye(4)
    world[:3, 3] = [1.5, -2.0, 0.7]
    shape = (16, 15, 14)
    M = voxel_map(src_aff, dst_aff, world)
    offs = sub_offsets(np.linalg.norm(dst_aff[:3, :3], axis=0), 1.0)
    assert len(offs) == 4 * 4 * 4
    idx = np.indices(shape, dtype=float).reshape(3, -1)
    ref = np.zeros(idx.shape[1])
    hits = np.zeros((3, idx.shape[1]))
    for off in offs:
        p = M[:3, :3] @ (idx + off[:, None]) + M[:3, 3:4]
        ref += ndimage.map_coordinates(src, p, order=1, mode="constant", cval=0.0, prefilter=False)
        near = ndimage.map_coordinates(lab, p, order=0, mode="constant", cval=-1, prefilter=False)
        for i, v in enumerate((1, 2, 4)):
            hits[i] += near == v
    got = resample_average(src, src_aff, dst_aff, shape, world)
    assert 0.3 < np.mean(got > 0) < 0.9  # the grid reaches past the source: both branches run
    np.testing.assert_allclose(got.ravel(), ref / len(offs), atol=2e-6)
    np.testing.assert_allclose(resample_labels(lab, [1, 2, 4], src_aff, dst_aff, shape, world).reshape(3, -1),
                               hits / len(offs), atol=1e-6)


def test_label_tables(tmp_path):
    (tmp_path / "a.tsv").write_text("id\tname\n1\tcsf\n2\tgm\n")
    (tmp_path / "b.csv").write_text("1,left hippocampus\n2,right\n")
    (tmp_path / "lut.txt").write_text("# FreeSurfer\n0  Unknown 0 0 0 0\n17 Left-Hippocampus 220 216 20 0\n")
    assert load_label_table(tmp_path / "a.tsv") == {1: "csf", 2: "gm"}
    assert load_label_table(tmp_path / "b.csv") == {1: "left hippocampus", 2: "right"}
    assert load_label_table(tmp_path / "lut.txt") == {0: "Unknown", 17: "Left-Hippocampus"}
    (tmp_path / "bad.csv").write_text("1,a\n1,b\n")
    with pytest.raises(InputError, match="twice"):
        load_label_table(tmp_path / "bad.csv")


def test_simulated_tissue_maps_hold_the_exact_volumes():
    ph = load_phantom("brain")
    fr, atlas, aff = tissue_maps(ph, (0.0, 0.0, 0.0), voxel_mm=3.0)
    v = 27e-3
    gm = _vol(72, 88, 66) - _vol(56, 70, 50)
    wm = _vol(56, 70, 50) - 2 * _vol(9, 24, 12)  # the lesion counts as WM
    csf = _vol(78, 94, 72) - _vol(72, 88, 66) + 2 * _vol(9, 24, 12)
    assert fr["gm"].sum() * v == pytest.approx(gm, rel=2e-4)
    assert fr["wm"].sum() * v == pytest.approx(wm, rel=2e-4)
    assert fr["csf"].sum() * v == pytest.approx(csf, rel=2e-4)
    assert set(np.unique(atlas)) == {0, 1, 2, 3, 4, 5}


def _sodium_like(matrix=32, fov=240.0):
    """The phantom's partial-volume concentration on a sodium grid (no k-space: for registration)."""
    ph = load_phantom("brain")
    conc = ph.truth(matrix, fov, "conc", supersample=3)
    aff = np.diag([-fov / matrix, -fov / matrix, fov / matrix, 1.0])
    aff[:3, 3] = [fov / 2, fov / 2, -fov / 2]  # voxel N//2 at the origin; x, y run to L, P (LPS phantom axes)
    return ph, Image(conc.astype(np.float32), aff)


def test_registration_recovers_5mm_5deg(tmp_path):
    ph, sodium = _sodium_like()
    paths = write_anatomy(tmp_path, ph, (0.0, 0.0, 0.0), 3.0, offset_mm=(3.0, -4.0, 0.0), rot_deg=(2.9, -2.9, 2.9))
    M = np.array(json.loads(paths["anat_motion"].read_text())["matrix"])
    assert rotation_angle_deg(M) == pytest.approx(5.0, abs=0.05)
    maps = [Image.load(paths[f"anat_{t}"]) for t in ("gm", "wm", "csf")]
    plain = prepare_anatomy(sodium, maps)
    reg = prepare_anatomy(sodium, maps, register=True)
    E = reg.registration.matrix
    head = np.array([[x, y, z, 1.0] for x in (-78, 78) for y in (-94, 94) for z in (-72, 72)]).T
    err_mm = np.abs(((E - M) @ head)[:3]).max()
    print(f"registration: rotation error {rotation_angle_deg(E[:3, :3].T @ M[:3, :3]):.2f} deg, "
          f"largest displacement error on the head's bounding box {err_mm:.2f} mm")
    assert rotation_angle_deg(E[:3, :3].T @ M[:3, :3]) < 1.0
    assert np.linalg.norm((E - M)[:3, 3]) < 1.0  # the shift at the head centre (the origin)
    # the registered GM fraction matches the truth's GM content far better than the affines alone
    truth_gm = ph.truth(32, 240.0, "label", supersample=1) == 2
    assert reg.tissue.fractions[0][truth_gm].mean() > plain.tissue.fractions[0][truth_gm].mean() + 0.02


def test_relaxation_is_the_fraction_weighted_mix():
    # a voxel of 30% GM and 70% CSF: signal = sum C_t f_t W_t; the map reads the mixed concentration
    shape = (12, 12, 12)
    rng = np.random.default_rng(0)
    f_gm = rng.uniform(0, 1, shape)
    f_csf = 1 - f_gm
    flip, tr, te = 90.0, 100.0, 0.3
    w = {k: float(spgr_weight(get_preset(k), flip, tr, te)) for k in ("gm", "csf", "agar2")}
    img = 42.0 * f_gm * w["gm"] + 42.0 * f_csf * w["csf"]  # one concentration in both tissues
    vmask = np.zeros(shape, np.int32)
    vials = [Vial(1, 25.0, "agar2"), Vial(2, 100.0, "agar2")]
    for lab, c, sl in ((1, 25.0, np.s_[:3, :3, :3]), (2, 100.0, np.s_[-3:, -3:, -3:])):
        vmask[sl] = lab
        img[sl] = c * w["agar2"]
        f_gm[sl] = f_csf[sl] = 0
    res = quantify(img, vials, flip, tr, te, vial_mask=vmask, noise_sd=0.01, intercept="zero",
                   tissue_fractions={"gm": f_gm, "csf": f_csf})
    tissue = vmask == 0
    # the exact mix reads 42 wherever GM and CSF share the concentration; one preset (gm) does not
    np.testing.assert_allclose(res.tsc[tissue], 42.0, rtol=1e-5)
    np.testing.assert_allclose(res.tsc[vmask == 2], 100.0, rtol=1e-5)  # the vials their medium
    one = quantify(img, vials, flip, tr, te, vial_mask=vmask, noise_sd=0.01, intercept="zero")
    assert np.abs(one.tsc[tissue] - 42.0).max() > 0.05 * 42.0


@pytest.mark.slow
def test_run_and_batch_give_what_quantify_gives(tmp_path):
    from na23recon.cli import main
    from na23recon.sim.scan import simulate_to_folder

    sim = simulate_to_folder(tmp_path / "sim", matrix=24, snr=30, anat=True, anat_voxel_mm=4.0)
    maps = [str(sim[f"anat_{t}"]) for t in ("gm", "wm", "csf")]
    # the PSF per tissue and vial medium, which `run` writes itself when anatomy is given
    assert main(["recon", str(sim["scan"]), "--traj", str(sim["traj"]), "-o", str(tmp_path / "q" / "recon.nii.gz"),
                 "--psf", "--psf-tissue", "gm,wm,csf,agar2"]) == 0
    assert main(["quantify", str(tmp_path / "q" / "recon.nii.gz"), "--vials", str(sim["vials"]), "--vial-mask",
                 str(sim["labels"]), "--tissue-maps", *maps, "--atlas", str(sim["anat_atlas"]), "--atlas-table",
                 str(sim["anat_atlas_table"]), "-o", str(tmp_path / "q" / "tsc.nii.gz")]) == 0
    (tmp_path / "run.toml").write_text(
        f'[input]\nscan = "{sim["scan"]}"\ntraj = "{sim["traj"]}"\nvials = "{sim["vials"]}"\n'
        f'vial_mask = "{sim["labels"]}"\ntissue_gm = "{maps[0]}"\ntissue_wm = "{maps[1]}"\ntissue_csf = "{maps[2]}"\n'
        f'atlas = "{sim["anat_atlas"]}"\natlas_table = "{sim["anat_atlas_table"]}"\n[output]\ndir = "run-out"\n')
    assert main(["run", str(tmp_path / "run.toml")]) == 0
    (tmp_path / "m.csv").write_text(
        "id,scan,traj,vials,vial_mask,tissue_gm,tissue_wm,tissue_csf,atlas,atlas_table\n"
        f"s1,{sim['scan']},{sim['traj']},{sim['vials']},{sim['labels']},{','.join(maps)},{sim['anat_atlas']},"
        f"{sim['anat_atlas_table']}\n")
    assert main(["batch", str(tmp_path / "m.csv"), "-o", str(tmp_path / "b"), "--workers", "1", "--no-progress"]) == 0
    ref = Image.load(tmp_path / "q" / "tsc.nii.gz").array
    rows = list(csv.DictReader(open(tmp_path / "q" / "tsc_roi.csv")))
    assert {r["region"] for r in rows if r["kind"] == "tissue"} == {"gm", "wm", "csf"}
    assert rows[0]["mean_pvc_gtm"]  # quantify found the PSF beside the image: PVC
    psf = Image.load(tmp_path / "q" / "recon_psf.nii.gz")
    assert psf.array.shape == (24, 24, 24, 4) and psf.meta["psf"]["tissues"] == ["gm", "wm", "csf", "agar2"]
    for d in (tmp_path / "run-out", tmp_path / "b" / "s1"):
        np.testing.assert_array_equal(Image.load(d / "recon_psf.nii.gz").array, psf.array)
        np.testing.assert_array_equal(Image.load(d / "tsc.nii.gz").array, ref)
        assert list(csv.DictReader(open(d / "tsc_roi.csv"))) == rows


@pytest.mark.slow
def test_pvc_tissue_tsc_through_quantify(tmp_path):
    # the product's own steps: recon with its per-tissue PSF, quantify with automatic vial detection,
    # the vials fitted through the PSF and calibrated in one GTM with the tissue maps
    from na23recon.pipeline.recon_step import recon_file
    from na23recon.pipeline.tsc_step import quantify_file
    from na23recon.sim.scan import simulate_to_folder

    # 1 mm maps: coarser ones, interpolated at the sub-points, blur the fractions (GM/WM -12..-18% at 2.5 mm)
    sim = simulate_to_folder(tmp_path / "sim", matrix=48, snr=30, anat=True)
    recon = tmp_path / "recon.nii.gz"
    recon_file(sim["scan"], sim["traj"], recon, png=False, psf=True, psf_tissues=["gm", "wm", "csf", "agar2"])
    quantify_file(recon, tmp_path / "tsc.nii.gz", sim["vials"], png=False,
                  tissue_map_paths=[sim[f"anat_{t}"] for t in ("gm", "wm", "csf")])
    rows = {r["region"]: r for r in csv.DictReader(open(tmp_path / "tsc_roi.csv")) if r["kind"] == "tissue"}
    # truth of a class: volume-weighted over its compartments (the lesion, 70 mM, is segmented as WM)
    v_wm, v_vent, v_les = _vol(56, 70, 50), 2 * _vol(9, 24, 12), _vol(11, 11, 11)
    truth = {"gm": 42.0, "csf": 145.0, "wm": (32.0 * (v_wm - v_vent - v_les) + 70.0 * v_les) / (v_wm - v_vent)}
    bias = {t: {k: 100 * (float(rows[t][k]) - truth[t]) / truth[t] for k in ("mean", "mean_pvc_gtm")} for t in truth}
    print("TSC bias % (no PVC, GTM):", {t: (round(b["mean"], 1), round(b["mean_pvc_gtm"], 1)) for t, b in bias.items()})
    # 5 mm voxels: a vial is 4 voxels across (at 7.5 mm, 2.7, its size and value are not separable
    # in the noise) and the CSF shell about one voxel thick
    assert abs(bias["gm"]["mean_pvc_gtm"]) < 4.0 and abs(bias["wm"]["mean_pvc_gtm"]) < 4.0
    assert abs(bias["csf"]["mean_pvc_gtm"]) < 8.0
    assert bias["gm"]["mean"] > 8.0  # without PVC (vials and tissue) GM reads too high at this size
    side = json.loads((tmp_path / "tsc_roi.json").read_text())
    vols = [v["volume_ml"] for v in side["vial_shapes"]]
    np.testing.assert_allclose(vols, _vol(10, 10, 14), rtol=0.2)  # the phantom's vials, 20 x 28 mm
