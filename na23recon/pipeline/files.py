"""What every file-level step shares: checking paths before work, naming outputs, provenance.

A step checks its options and output paths first, reads its inputs into the core types, calls
the stage, and writes its outputs atomically with a sidecar; `staged_outputs` (core.atomic) makes
a step's several outputs appear together or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.atomic import ensure_writable_dir
from ..errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(path: Path) -> tuple[Path, str]:
    """('/d/TSC.nii.gz') -> (Path('/d'), 'TSC'); refuses names that are not NIfTI."""
    name = path.name
    for ext in NIFTI_SUFFIXES:
        if name.endswith(ext):
            return path.parent, name[: -len(ext)]
    raise InputError(f"output must be a .nii.gz or .nii file, got {name}")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] | None = NIFTI_SUFFIXES) -> Path:
    """Refuse, before any work, an output whose name or folder cannot be used (InputError)."""
    path = Path(path)
    if suffixes and not any(path.name.endswith(s) for s in suffixes):
        raise InputError(f"output must end in {' or '.join(suffixes)}, got {path.name}")
    if path.is_dir():
        raise InputError(f"output {path} is a folder, expected a file name")
    ensure_writable_dir(path.parent)
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """InputError, before any work, when an output path is (or is the same file as) an input."""
    ins = [Path(p) for p in inputs if p is not None]
    for o in outputs:
        for i in ins:
            if same_file(o, i):
                raise InputError(f"output {o} is the input {i}: refusing to overwrite an input")


def nifti_inputs(paths) -> list[Path]:
    """Input files with, for NIfTI images, their JSON sidecars (read as inputs too)."""
    out = []
    for p in paths:
        if p is None:
            continue
        out.append(Path(p))
        name = Path(p).name
        for ext in NIFTI_SUFFIXES:
            if name.endswith(ext):
                out.append(Path(p).with_name(name[: -len(ext)] + ".json"))
                break
    return out


def step_outputs(folder: Path, stem: str, suffixes) -> list[Path]:
    """Every file a step may write: `<stem><suffix>` for each suffix."""
    return [folder / f"{stem}{s}" for s in suffixes]


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """The path of an input file that must exist (InputError naming `what` otherwise)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if not p.is_file():
        raise InputError(f"{what} {p} is not a file")
    return p

