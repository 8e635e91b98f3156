"""Provenance for JSON sidecars: versions, the command line and input checksums."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shlex
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from . import __version__

_COMMAND: list[str] | None = None
LIBRARIES = ("numpy", "scipy", "numba", "sigpy", "twixtools", "nibabel")
#: Whether sidecars, command lines, figures and reports name input files without their folders
#: (de-identified outputs: folders often carry the subject's name).
_REDUCED = False
#: An absolute path (POSIX or Windows) up to its last separator: what `redact_paths` drops.
_DIR_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"=:,;()\[\]{}]*)+[\\/]")


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


@contextlib.contextmanager
def reduced_paths(on: bool = True) -> Iterator[None]:
    """Within the block, sidecars record inputs by file name (with their checksum), command lines
    with every path cut to its file name, and `display_name` hides input names."""
    global _REDUCED
    old, _REDUCED = _REDUCED, bool(on)
    try:
        yield
    finally:
        _REDUCED = old


def paths_reduced() -> bool:
    return _REDUCED


def redact_paths(text: str) -> str:
    """`text` with every folder part of an absolute path removed ('/data/Doe_Jane/scan.dat' ->
    'scan.dat'); relative names stay."""
    return _DIR_RE.sub("", str(text))


def display_name(path: str | os.PathLike, hidden: str = "input") -> str:
    """An input's file name for titles and reports; `hidden` when paths are reduced."""
    return hidden if _REDUCED else Path(path).name


class RedactingFilter(logging.Filter):
    """A logging filter that removes folders from every message (a de-identified batch's log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_paths(record.getMessage()), None
        return True


def _reduce_arg(a: str) -> str:
    """A command-line word with a path in it cut to the file name ('--x=d/f' -> '--x=f')."""
    key, eq, val = a.partition("=") if a.startswith("-") else ("", "", a)
    if "/" in val or "\\" in val:
        val = re.split(r"[\\/]", val.rstrip("/\\"))[-1]
    return key + eq + val


def _command_text(command: list[str]) -> str:
    if _REDUCED:
        command = [_reduce_arg(a) for a in command]
    return " ".join(shlex.quote(a) for a in command)


def command_line(command: list[str] | None = None) -> str:
    """The recorded command line as text (paths cut to file names within `reduced_paths`)."""
    return _command_text(command if command is not None else _COMMAND or sys.argv)


def base_sidecar(inputs: list[str | os.PathLike] | None = None, command: list[str] | None = None) -> dict:
    """The common part of every sidecar: version, command, input checksums (by absolute path, so
    the sidecar resolves wherever it is read from; by file name within `reduced_paths`), library
    versions."""
    key = (lambda p: Path(p).name) if _REDUCED else (lambda p: str(Path(p).resolve()))
    return {
        "na23recon_version": __version__,
        "command": _command_text(command if command is not None else _COMMAND or sys.argv),
        "inputs": {key(p): sha256_file(p) for p in (inputs or [])},
        "versions": library_versions(),
    }
