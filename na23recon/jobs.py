"""One scan's inputs (a manifest row or a run config) and the TOML reader both use.

Kept apart from `batch` and `pipeline` so that each imports it without importing the other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

FIELDS = ("id", "scan", "traj", "b1_scan_a", "b1_scan_2a", "vials", "vial_mask", "labels")
PATH_FIELDS = FIELDS[1:]
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Job:
    """One scan of a manifest; paths are absolute."""

    id: str
    scan: str
    traj: str
    b1_scan_a: str | None = None
    b1_scan_2a: str | None = None
    vials: str | None = None
    vial_mask: str | None = None
    labels: str | None = None

    def inputs(self) -> list[str]:
        return [getattr(self, f) for f in PATH_FIELDS if getattr(self, f)]


def load_toml(path: str | os.PathLike, what: str) -> dict:
    """Parse a TOML file (tomllib, or tomli on Python 3.10); a bad one is an InputError."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(errors="replace"))
    except Exception as exc:
        raise InputError(f"{what} {path.name} is not valid TOML: {' '.join(str(exc).split())}") from None
