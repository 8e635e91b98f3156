"""BIDS-style derivatives (Gorgolewski et al., Sci Data 2016; the BIDS derivatives specification):
`sub-<id>[/ses-<ses>]/anat/sub-<id>[_ses-<ses>]_acq-23Na[_flip-<n>]_desc-<what>_<suffix>.nii.gz` with
its sidecar carrying the BIDS keys (EchoTime, RepetitionTime in s, FlipAngle, MagneticFieldStrength,
ResonantNucleus) beside ours; QC figures, ROI tables and the report in `figures/`; a
derivative `dataset_description.json` at the root. BIDS has no raw name for sodium images yet:
the entity acq-23Na marks them and `.bidsignore` lists what the validator cannot know."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .. import __version__
from ..core.atomic import write_text_atomic
from ..errors import InputError

LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
#: our output stem -> BIDS entities and suffix after sub/ses/acq
STEMS = {"recon": "desc-recon_PDw", "b1": "desc-B1_TB1map", "b1_a": "flip-1_desc-recon_PDw",
         "b1_2a": "flip-2_desc-recon_PDw", "tsc": "desc-TSC_PDmap", "tsc_sd": "desc-TSCsd_PDmap",
         "tsc_vials": "desc-vials_dseg", "tsc_pvc": "desc-TSCpvc_PDmap"}
IGNORE = ["logs/", "dicom/", "figures/", "summary.csv"]
#: what each map is (the sidecar's Description)
DESCRIPTIONS = {"recon": "23Na image (arbitrary units)", "B1": "B1+ map, relative flip scale (1 = nominal)",
                "TSC": "tissue sodium concentration, mM", "TSCsd": "standard deviation of the TSC, mM",
                "vials": "reference vial labels", "TSCpvc": "TSC, partial-volume corrected (RBV), mM"}


def check_label(value: str, what: str) -> str:
    if not LABEL_RE.match(value or ""):
        raise InputError(f"BIDS {what} label {value!r} must be letters and digits only")
    return value


def bids_prefix(subject: str, session: str | None = None) -> str:
    """'sub-01_ses-2_acq-23Na' (labels checked: letters and digits)."""
    p = f"sub-{check_label(subject, 'subject')}"
    if session:
        p += f"_ses-{check_label(session, 'session')}"
    return p + "_acq-23Na"


def bids_dir(root: str | os.PathLike, subject: str, session: str | None = None) -> Path:
    """root/sub-<id>[/ses-<ses>]/anat."""
    d = Path(root) / f"sub-{check_label(subject, 'subject')}"
    if session:
        d = d / f"ses-{check_label(session, 'session')}"
    return d / "anat"


def bids_keys(acquisition: dict | None) -> dict:
    """The BIDS sidecar keys of our `acquisition` block (s, deg, T); unknown values left out."""
    a = acquisition or {}
    te = a.get("te_ms")
    te = te[0] if isinstance(te, list) and te else te
    keys = {"EchoTime": None if te is None else te / 1000.0,
            "RepetitionTime": None if a.get("tr_ms") is None else a["tr_ms"] / 1000.0,
            "FlipAngle": a.get("flip_deg"), "MagneticFieldStrength": a.get("b0_T"),
            "ResonantNucleus": a.get("nucleus") or "23Na"}
    return {k: v for k, v in keys.items() if v is not None}


def _split(name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii", ".json", ".png", ".csv", ".html"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return Path(name).stem, Path(name).suffix


def figures_dir(anat: Path) -> Path:
    """ROOT/figures for `ROOT/sub-<id>[/ses-<ses>]/anat` (kept out of the subject folders, where
    the validator refuses folders it does not know even when .bidsignore lists them)."""
    sub = next(p for p in [anat, *anat.parents] if p.name.startswith("sub-"))
    return sub.parent / "figures"


def bids_rename(outputs: dict[str, Path], anat: Path, prefix: str) -> dict[str, Path]:
    """Move one scan's outputs (written into `anat` under our names) to BIDS names: images and
    sidecars (with the BIDS keys added) in `anat`, figures, ROI tables and the report in
    `ROOT/figures`. Returns the outputs by name at their new paths."""
    figures = figures_dir(anat)
    moved: dict[Path, Path] = {}
    for p in sorted(anat.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        stem, ext = _split(p.name)
        if stem in STEMS and ext in (".nii.gz", ".nii", ".json"):
            new = anat / f"{prefix}_{STEMS[stem]}{ext}"
            if ext == ".json":
                side = json.loads(p.read_text())
                desc = STEMS[stem].split("desc-")[1].split("_")[0]
                side = {**bids_keys(side.get("acquisition")), "SkullStripped": False,
                        "Description": DESCRIPTIONS.get(desc, desc), **side}
                write_text_atomic(new, json.dumps(side, indent=2) + "\n")
                p.unlink()
                moved[p] = new
                continue
        else:
            figures.mkdir(parents=True, exist_ok=True)
            new = figures / f"{prefix}_{STEMS.get(stem, 'desc-' + re.sub('[^A-Za-z0-9]', '', stem))}{ext}"
        os.replace(p, new)
        moved[p] = new
    return {k: moved.get(Path(v), Path(v)) for k, v in outputs.items()}


def write_dataset_description(root: str | os.PathLike, command: str) -> Path:
    """The derivative dataset's `dataset_description.json` and `.bidsignore` (written atomically)."""
    root = Path(root)
    desc = {"Name": "na23recon sodium MRI derivatives", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "na23recon", "Version": __version__, "Description": command}]}
    write_text_atomic(root / "dataset_description.json", json.dumps(desc, indent=2) + "\n")
    write_text_atomic(root / ".bidsignore", "\n".join(IGNORE) + "\n")
    if not (root / "README").exists():
        write_text_atomic(root / "README", "Sodium (23Na) MRI derivatives written by na23recon: sodium images, "
                                           "B1+ maps and tissue sodium concentration (TSC) maps in mM.\n")
    return root / "dataset_description.json"
