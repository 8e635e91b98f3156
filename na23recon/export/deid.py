"""Who and which study the DICOM outputs belong to, and their de-identified form.

The identity comes from the scan's twix header (XProtocol parameters of its Config, Meas and Dicom
buffers: PatientName, PatientID, PatientBirthDay, PatientSex, InstitutionName, FrameOfReference)
and, where given, a reference DICOM series of the same study (study UID, date, accession, patient
attributes), which takes precedence for the study. Nothing of it is written anywhere but the DICOM
outputs; de-identified (`Identity.deidentified`), the patient is a pseudonym and the UIDs are
replaced by UIDs hashed from the originals and the pseudonym (stable, so one subject's exports stay
one study), following the basic application level confidentiality profile of DICOM PS3.15 Annex E.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..core.nifti import sidecar_path
from ..errors import InputError
from ..io.twix import read_header

#: Our UID root: pydicom's (a registered root for generated UIDs).
UID_PREFIX = pydicom.uid.PYDICOM_ROOT_UID
#: Attributes the basic profile removes or empties (PS3.15 Table E.1-1, those our outputs could hold).
PROFILE_EMPTY = ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID", "PatientSex",
                 "StudyDate", "StudyTime", "ContentCreatorName")
PROFILE_REMOVE = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "OtherPatientIDs",
                  "OtherPatientNames", "PatientAge", "PatientWeight", "PatientSize", "PatientAddress",
                  "PatientBirthTime", "StationName", "OperatorsName", "PerformingPhysicianName",
                  "PhysiciansOfRecord", "StudyDescription", "RequestAttributesSequence", "AdditionalPatientHistory",
                  "PatientComments", "IssuerOfPatientID", "EthnicGroup", "MedicalRecordLocator")


@dataclass(frozen=True)
class Identity:
    """Patient and study attributes of the DICOM outputs (None: unknown, left empty)."""

    patient_name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    accession: str | None = None
    institution: str | None = None
    study_uid: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    frame_of_reference_uid: str | None = None
    deidentified: bool = False

    def merged(self, other: Identity) -> Identity:
        """This identity with the values `other` knows (other wins; the frame of reference stays
        ours when we know it: it is the scan's own)."""
        vals = {f.name: getattr(other, f.name) if getattr(other, f.name) is not None else getattr(self, f.name)
                for f in fields(self)}
        if self.frame_of_reference_uid:
            vals["frame_of_reference_uid"] = self.frame_of_reference_uid
        return Identity(**vals)

    def completed(self, seed: str) -> Identity:
        """With a study UID and a frame of reference: stable ones hashed from `seed` where unknown."""
        return replace(self, study_uid=self.study_uid or generate_uid(UID_PREFIX, ["study", seed]),
                       frame_of_reference_uid=self.frame_of_reference_uid or generate_uid(UID_PREFIX, ["for", seed]))

    def pseudonym(self, subject_id: str | None) -> str:
        """`subject_id`, else a hash of the patient ID (or 'anonymous' when that is unknown too)."""
        if subject_id:
            return subject_id
        if self.patient_id:
            return "anon" + hashlib.sha256(self.patient_id.encode()).hexdigest()[:10]
        return "anonymous"

    def deidentify(self, subject_id: str | None) -> Identity:
        """The basic-profile form: the pseudonym as name and ID, no birth date, sex, accession,
        institution, referring physician or study date; study and frame-of-reference UIDs replaced
        by UIDs hashed from the originals and the pseudonym (action U of PS3.15 Table E.1-1)."""
        pid = self.pseudonym(subject_id)

        def uid(what, value):
            return None if value is None else generate_uid(UID_PREFIX, [what, pid, value])

        return Identity(patient_name=pid, patient_id=pid, study_uid=uid("study", self.study_uid),
                        frame_of_reference_uid=uid("for", self.frame_of_reference_uid), deidentified=True)

    def apply(self, ds: Dataset) -> None:
        """Write the patient and study attributes into `ds` (type 2 ones empty when unknown)."""
        ds.PatientName = self.patient_name or ""
        ds.PatientID = self.patient_id or ""
        ds.PatientBirthDate = self.birth_date or ""
        ds.PatientSex = self.sex or ""
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate = self.study_date or ""
        ds.StudyTime = self.study_time or ""
        ds.StudyID = self.study_id or ""
        ds.AccessionNumber = self.accession or ""
        ds.ReferringPhysicianName = self.referring_physician or ""
        if self.study_description:
            ds.StudyDescription = self.study_description
        if self.institution:
            ds.InstitutionName = self.institution
        ds.FrameOfReferenceUID = self.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        if self.deidentified:
            basic_profile(ds)


def basic_profile(ds: Dataset) -> None:
    """Mark `ds` de-identified per PS3.15 Annex E (basic profile) and drop what the profile drops."""
    for name in PROFILE_REMOVE:
        if name in ds:
            delattr(ds, name)
    for name in PROFILE_EMPTY:
        if name in ds:
            setattr(ds, name, "")
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Annex E basic application level confidentiality profile (na23recon)"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]


# --- sources ----------------------------------------------------------------------------------------

def _xprot_any(hdr, *names: str) -> str | None:
    for buf in ("Config", "Meas", "Dicom"):
        for name in names:
            v = hdr.xprot(buf, name)
            if v is not None and str(v).strip():
                return str(v).strip()
    return None


def _dicom_date(text: str | None) -> str | None:
    """'19800101' (or '1980-01-01') -> '19800101'; other text -> None."""
    if not text:
        return None
    digits = "".join(c for c in text if c.isdigit())
    return digits[:8] if len(digits) >= 8 else None


def _uid(text: str | None) -> str | None:
    if text and len(text) <= 64 and all(c.isdigit() or c == "." for c in text) and text[0] != ".":
        return text
    return None


def identity_from_twix(path: str | os.PathLike) -> Identity:
    """Patient, institution and frame of reference from a twix file's protocol header."""
    hdr = read_header(path)
    sex = {"1": "F", "2": "M", "3": "O", "F": "F", "M": "M", "O": "O"}.get(_xprot_any(hdr, "PatientSex") or "")
    return Identity(patient_name=_xprot_any(hdr, "PatientName", "tPatientName"),
                    patient_id=_xprot_any(hdr, "PatientID", "PatientId"),
                    birth_date=_dicom_date(_xprot_any(hdr, "PatientBirthDay", "PatientBirthDate")),
                    sex=sex, institution=_xprot_any(hdr, "InstitutionName"),
                    study_uid=_uid(_xprot_any(hdr, "StudyInstanceUID", "StudyLOID")),
                    frame_of_reference_uid=_uid(_xprot_any(hdr, "FrameOfReference", "FrameOfReferenceUID")))


def identity_from_reference(folder: str | os.PathLike) -> Identity:
    """Study and patient attributes of the first readable DICOM file in `folder` (or that file)."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    if not folder.exists():
        raise InputError(f"reference DICOM not found: {folder}")
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # not DICOM: try the next file
            continue
        if "StudyInstanceUID" not in ds:
            continue

        def get(name, ds=ds):
            v = ds.get(name)
            return str(v) if v not in (None, "") else None

        return Identity(patient_name=get("PatientName"), patient_id=get("PatientID"),
                        birth_date=get("PatientBirthDate"), sex=get("PatientSex"), accession=get("AccessionNumber"),
                        institution=get("InstitutionName"), study_uid=get("StudyInstanceUID"),
                        study_date=get("StudyDate"), study_time=get("StudyTime"), study_id=get("StudyID"),
                        study_description=get("StudyDescription"), referring_physician=get("ReferringPhysicianName"),
                        frame_of_reference_uid=get("FrameOfReferenceUID"))
    raise InputError(f"no DICOM file with a study UID in {folder}")


def find_scan(image_path: str | os.PathLike, depth: int = 3) -> Path | None:
    """The twix file an image was made from, followed through its sidecars' `inputs` (absolute
    paths; de-identified sidecars name files only, and then it is not found: give the scan)."""
    side = sidecar_path(image_path)
    try:
        inputs = json.loads(side.read_text()).get("inputs", {}) if side.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return None
    for p in inputs if isinstance(inputs, dict) else ():
        if p.endswith(".dat") and Path(p).is_file():
            return Path(p)
    for p in inputs if depth > 1 and isinstance(inputs, dict) else ():
        if p.endswith((".nii.gz", ".nii")) and Path(p).is_file():
            found = find_scan(p, depth - 1)
            if found is not None:
                return found
    return None


def identity_for(scan: str | os.PathLike | None = None, reference: str | os.PathLike | None = None,
                 deidentify: bool = False, subject_id: str | None = None, seed: str = "") -> Identity:
    """The identity of a scan's DICOM outputs: its twix header, then the reference series; study and
    frame-of-reference UIDs hashed from `seed` where neither gives them; de-identified on request."""
    ident = Identity()
    if scan is not None and Path(scan).is_file():
        ident = identity_from_twix(scan)
    if reference is not None:
        ident = ident.merged(identity_from_reference(reference))
    ident = ident.completed(seed or str(ident.patient_id) + str(scan and Path(scan).name))
    return ident.deidentify(subject_id) if deidentify else ident
