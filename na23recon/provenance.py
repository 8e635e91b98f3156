"""Provenance for JSON sidecars: versions, the command line and input checksums."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from . import __version__

_COMMAND: list[str] | None = None
LIBRARIES = ("numpy", "scipy", "numba", "sigpy", "twixtools", "nibabel")


def set_command(argv: list[str]) -> None:
    """Record the command line that the sidecars name (the CLI calls this with its own argv)."""
    global _COMMAND
    _COMMAND = [str(a) for a in argv]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numbers shape the result, from the installed distributions'
    metadata (a module's `__version__` is not always set: twixtools has none). A library that is
    not installed is not listed."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(name)
            if mod is not None and getattr(mod, "__version__", None):
                out[name] = str(mod.__version__)
    return out


def base_sidecar(inputs: list[str | os.PathLike] | None = None, command: list[str] | None = None) -> dict:
    """The common part of every sidecar: version, command, input checksums (by absolute path, so
    the sidecar resolves wherever it is read from), library versions."""
    return {
        "na23recon_version": __version__,
        "command": " ".join(shlex.quote(a) for a in (command if command is not None else _COMMAND or sys.argv)),
        "inputs": {str(Path(p).resolve()): sha256_file(p) for p in (inputs or [])},
        "versions": library_versions(),
    }
