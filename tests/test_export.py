"""DICOM export, de-identified outputs and BIDS-style derivatives (na23recon.export).

Truth: the NIfTI map the DICOM was made from; pydicom and highdicom read the DICOM back, dcm2niix
(an independent converter) turns the integer series into a NIfTI again; byte-wise search of every
output file for the identifiers a twix header held.
"""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from na23recon.cli import main
from na23recon.core.geometry import Geometry
from na23recon.core.image import Image
from na23recon.export import export_dicom, identity_for
from na23recon.io.twix import write as twix_write

PHI = {"name": "Doe^Jane", "id": "PID4711X", "birth": "19800101", "institution": "StMungoHospital"}
PHI_BYTES = [b"Doe", b"Jane", b"PID4711X", b"19800101", b"StMungoHospital"]
FOR_UID = "1.3.12.2.1107.5.2.34.99999.1.20240101120000000.0.0.0"


def _oblique_tsc(tmp: Path) -> Path:
    """A TSC-like map (the phantom's concentration) on an oblique, off-centre grid."""
    from na23recon.sim.scan import simulate_to_folder

    sim = simulate_to_folder(tmp / "sim", matrix=20, slice_position_mm=(12.5, -20.0, 33.0))
    truth = Image.load(sim["truth"])
    g = Geometry(fov_mm=(240.0, 240.0, 240.0), matrix=truth.shape[:3], position_mm=(12.5, -20.0, 33.0),
                 normal=(0.25, 0.2, 0.95), inplane_rot_rad=0.3, patient_position="HFS")
    meta = {"quant": {"unit": "mM", "map": "TSC"},
            "acquisition": {"nucleus": "23Na", "b0_T": 7.0, "te_ms": [0.3], "tr_ms": 100.0, "flip_deg": 90.0}}
    rng = np.random.default_rng(1)
    arr = (truth.array + rng.normal(0, 2.0, truth.shape)).astype(np.float32)  # negatives too
    path = tmp / "tsc.nii.gz"
    Image(arr, g.affine(truth.shape[:3]), meta).save(path)
    return path


def _frame_slice(lps: np.ndarray, ipp) -> int:
    ijk = np.linalg.solve(lps[:3, :3], np.asarray(ipp, float) - lps[:3, 3])
    assert np.allclose(ijk[:2], 0, atol=1e-4) and abs(ijk[2] - round(ijk[2])) < 1e-4
    return int(round(ijk[2]))


def test_dicom_oblique_roundtrip(tmp_path):
    nii = _oblique_tsc(tmp_path)
    img = nib.load(nii)
    arr, aff = img.get_fdata(dtype=np.float32), img.affine
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    out = export_dicom(nii, tmp_path / "dcm", identity_for(None, seed="t"))
    files = sorted(out["mr"].glob("MR_*.dcm"))
    assert len(files) == arr.shape[2]
    # integer series: within half a rescale step of the map, geometry per slice from the affine
    worst = 0.0
    for f in files:
        ds = pydicom.dcmread(f)
        k = _frame_slice(lps, ds.ImagePositionPatient)
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        err = np.abs(ds.pixel_array.T * slope + icpt - arr[:, :, k]).max()
        worst = max(worst, err / (slope / 2))
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([12.0, 12.0], abs=1e-6)
        assert float(ds.WindowCenter) == 60.0 and float(ds.WindowWidth) == 120.0
        assert ds.FrameOfReferenceUID == pydicom.dcmread(files[0]).FrameOfReferenceUID
    print(f"integer series: max |decoded - NIfTI| = {worst:.4f} half rescale steps")
    assert worst <= 1.0 + 1e-6
    # parametric map: float32 values equal the NIfTI map exactly, unit mmol/L (UCUM)
    pm_ds = pydicom.dcmread(out["pm"])
    pm = hd.pm.ParametricMap.from_dataset(pm_ds)
    frames = pm.pixel_array
    assert frames.dtype == np.float32
    for f, grp in enumerate(pm.PerFrameFunctionalGroupsSequence):
        k = _frame_slice(lps, grp.PlanePositionSequence[0].ImagePositionPatient)
        assert np.array_equal(frames[f].T, arr[:, :, k])
    rwvm = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = rwvm.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mmol/L", "UCUM")
    print(f"parametric map: {len(frames)} float32 frames equal to the NIfTI map")


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix (PyPI package dcm2niix) not installed")
def test_dcm2niix_reads_back_integer_series(tmp_path):
    nii = _oblique_tsc(tmp_path)
    img = nib.load(nii)
    arr, aff = img.get_fdata(dtype=np.float32), img.affine
    out = export_dicom(nii, tmp_path / "dcm", identity_for(None, seed="t"))
    src = tmp_path / "mr"
    src.mkdir()
    for f in out["mr"].glob("MR_*.dcm"):
        shutil.copy(f, src)
    conv = tmp_path / "conv"
    conv.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-b", "n", "-o", str(conv), "-f", "back", str(src)], check=True,
                   capture_output=True)
    back = nib.load(conv / "back.nii.gz")
    # dcm2niix orders voxels its own way: P maps our indices to its, an axis permutation with flips
    p = np.linalg.inv(back.affine) @ aff
    perm = np.round(p)
    assert np.allclose(p, perm, atol=1e-4), p
    assert np.abs(back.affine @ perm - aff).max() < 1e-3
    idx = np.indices(arr.shape).reshape(3, -1)
    theirs = (perm[:3, :3] @ idx + perm[:3, 3:]).astype(int)
    data = back.get_fdata(dtype=np.float64)[tuple(theirs)].reshape(arr.shape)
    slope = float(pydicom.dcmread(next(out["mr"].glob("MR_*.dcm"))).RescaleSlope)
    print(f"dcm2niix: affine max |diff| = {np.abs(back.affine @ perm - aff).max():.2e} mm, "
          f"array max |diff| = {np.abs(data - arr).max():.5f} mM (rescale step {slope:.5f} mM)")
    assert np.abs(data - arr).max() <= slope / 2 + 1e-4


def _phi_header(monkeypatch):
    """Make write_scan put a patient name, ID, birth date, institution and frame of reference into
    the protocol header, as a scanner does."""
    orig = twix_write.build_header

    def build(acq, *a, **kw):
        raw = orig(acq, *a, **kw)
        extra = {"Config": ('<ParamString."PatientName">  { "%s"  }\n<ParamString."PatientID">  { "%s"  }\n'
                            '<ParamString."PatientBirthDay">  { "%s"  }\n<ParamLong."PatientSex">  { 1  }\n'
                            '<ParamString."FrameOfReference">  { "%s"  }\n'
                            % (PHI["name"], PHI["id"], PHI["birth"], FOR_UID)),
                 "Dicom": '<ParamString."InstitutionName">  { "%s"  }\n' % PHI["institution"]}
        return _add_params(raw, extra)

    monkeypatch.setattr(twix_write, "build_header", build)


def _add_params(raw: bytes, extra: dict[str, str]) -> bytes:
    import struct

    _, nbuf = struct.unpack_from("<II", raw, 0)
    pos, parts = 8, []
    for _ in range(nbuf):
        end = raw.index(b"\x00", pos)
        name = raw[pos:end].decode()
        (blen,) = struct.unpack_from("<I", raw, end + 1)
        text = raw[end + 5: end + 5 + blen].rstrip(b"\x00").decode("latin1")
        if name in extra:
            text = text.replace('<ParamMap."">\n{\n', '<ParamMap."">\n{\n' + extra[name], 1)
        b = text.encode("latin1") + b"\x00"
        parts.append(name.encode() + b"\x00" + struct.pack("<I", len(b)) + b)
        pos = end + 5 + blen
    body = b"".join(parts)
    n = 8 + len(body)
    pad = (-n) % 32
    return struct.pack("<II", n + pad, nbuf) + body + b"\x00" * pad


@pytest.fixture(scope="module")
def phi_study(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    mp = pytest.MonkeyPatch()
    _phi_header(mp)
    root = tmp_path_factory.mktemp("study")
    rows = ["id,scan,traj,vials,vial_mask,subject,session"]
    try:
        for i in range(2):
            d = root / f"Doe_Jane_19800101_{i}"
            simulate_to_folder(d, matrix=20, snr=40.0, seed=i)
            rows.append(f"scan{i},{d.name}/scan.dat,{d.name}/traj.npz,{d.name}/vials.json,"
                        f"{d.name}/truth_labels.nii.gz,S0{i + 1},1")
    finally:
        mp.undo()
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _grep(root: Path) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found = [w.decode() for w in PHI_BYTES if w in data]
            if found:
                hits[str(p.relative_to(root))] = found
    return hits


def test_twix_identity_is_read(phi_study):
    ident = identity_for(phi_study / "Doe_Jane_19800101_0" / "scan.dat")
    assert (ident.patient_name, ident.patient_id, ident.birth_date, ident.sex) == (PHI["name"], PHI["id"], PHI["birth"], "F")
    assert ident.institution == PHI["institution"] and ident.frame_of_reference_uid == FOR_UID


def test_identity_reaches_dicom_only(phi_study, tmp_path):
    """Without --deidentify the DICOM carries the patient (for the PACS) and the scan's frame of
    reference; NIfTI, sidecars, report and logs never copy header identifiers."""
    out = tmp_path / "out"
    rc = main(["batch", str(phi_study / "manifest.csv"), "-o", str(out), "--workers", "1", "--no-progress",
               "--matrix", "20", "--dicom"])
    assert rc == 0
    ds = pydicom.dcmread(next((out / "scan0" / "dicom" / "tsc").glob("MR_*.dcm")))
    assert str(ds.PatientName) == PHI["name"] and ds.PatientID == PHI["id"] and ds.FrameOfReferenceUID == FOR_UID
    pm = pydicom.dcmread(out / "scan0" / "dicom" / "tsc" / "PM.dcm")
    assert pm.FrameOfReferenceUID == FOR_UID and pm.StudyInstanceUID == ds.StudyInstanceUID
    hits = {k: v for k, v in _grep(out).items() if "/dicom/" not in k}
    folder_hits = {k: v for k, v in hits.items() if set(v) - {"Doe", "Jane", "19800101"}}
    assert not folder_hits, folder_hits  # only the input folder's name, through the recorded paths


@pytest.mark.parametrize("layout", ["flat", "bids"])
def test_deidentified_outputs_hold_no_identifier(phi_study, tmp_path, layout):
    out = tmp_path / "out"
    rc = main(["batch", str(phi_study / "manifest.csv"), "-o", str(out), "--workers", "1", "--no-progress",
               "--matrix", "20", "--dicom", "--deidentify", "--layout", layout])
    assert rc == 0, (out / "summary.csv").read_text()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".dcm" for p in files) and any(p.name.endswith(".nii.gz") for p in files)
    hits = _grep(out)
    print(f"{layout}: {len(files)} output files searched byte-wise, identifiers found: {hits}")
    assert not hits
    dcm = next(p for p in files if p.name == "PM.dcm")
    ds = pydicom.dcmread(dcm)
    assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == ds.PatientID
    assert ds.PatientID in ("S01", "S02") and ds.FrameOfReferenceUID != FOR_UID
    side = json.loads(next(p for p in files if p.name.endswith(".json") and "TSC" in p.name.upper()
                           and "dataset" not in p.name).read_text())
    assert all("/" not in k for k in side["inputs"]) and "Doe_Jane" not in side["command"]


def test_bids_layout(phi_study, tmp_path):
    out = tmp_path / "bids"
    rc = main(["batch", str(phi_study / "manifest.csv"), "-o", str(out), "--workers", "1", "--no-progress",
               "--matrix", "20", "--layout", "bids", "--deidentify"])
    assert rc == 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "na23recon"
    assert "batch" in desc["GeneratedBy"][0]["Description"]
    anat = out / "sub-S01" / "ses-1" / "anat"
    tsc = anat / "sub-S01_ses-1_acq-23Na_desc-TSC_PDmap.nii.gz"
    assert tsc.exists() and (anat / "sub-S01_ses-1_acq-23Na_desc-recon_PDw.nii.gz").exists()
    side = json.loads((anat / "sub-S01_ses-1_acq-23Na_desc-TSC_PDmap.json").read_text())
    assert side["ResonantNucleus"] == "23Na" and side["EchoTime"] == pytest.approx(side["acquisition"]["te_ms"][0] / 1000)
    assert side["RepetitionTime"] == pytest.approx(side["acquisition"]["tr_ms"] / 1000)
    assert side["FlipAngle"] == side["acquisition"]["flip_deg"] and "quant" in side
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok"]
    # resume: the renamed outputs are found again
    assert main(["batch", str(phi_study / "manifest.csv"), "-o", str(out), "--workers", "1", "--no-progress",
                 "--matrix", "20", "--layout", "bids", "--deidentify"]) == 0
    with open(out / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["skipped", "skipped"]
    validator = pytest.importorskip("bids_validator")
    v = validator.BIDSValidator()
    verdict = {str(p.relative_to(out)): v.is_bids("/" + str(p.relative_to(out)))
               for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    print("bids-validator is_bids:", json.dumps(verdict, indent=1))


def test_dicom_command_deidentified(phi_study, tmp_path, capsys):
    d = phi_study / "Doe_Jane_19800101_0"
    out = tmp_path / "r"
    assert main(["recon", str(d / "scan.dat"), "--traj", str(d / "traj.npz"), "-o", str(out / "recon.nii.gz"),
                 "--matrix", "20", "--deidentify"]) == 0
    side = json.loads((out / "recon.json").read_text())
    assert set(side["inputs"]) == {"scan.dat", "traj.npz"} and "Doe" not in side["command"]
    assert main(["dicom", str(out / "recon.nii.gz"), "-o", str(tmp_path / "dcm"), "--scan", str(d / "scan.dat"),
                 "--deidentify", "--subject-id", "P7"]) == 0
    assert not _grep(tmp_path / "dcm") and not _grep(out)
    ds = pydicom.dcmread(tmp_path / "dcm" / "recon" / "MR_0001.dcm")
    assert ds.PatientName == "P7" and ds.ImagedNucleus == "23Na" and (tmp_path / "dcm" / "recon" / "SC.dcm").exists()
    assert pydicom.dcmread(tmp_path / "dcm" / "recon" / "SC.dcm").BurnedInAnnotation == "NO"
    assert main(["dicom", str(out / "recon.nii.gz"), "-o", str(tmp_path / "x"), "--subject-id", "a_b"]) == 2
