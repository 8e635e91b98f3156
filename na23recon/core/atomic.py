"""Atomic, durable file output: every file na23recon writes goes through this module.

A file is written under a temporary name in its target folder, flushed to disk (fsync), renamed
onto its target (``os.replace``, atomic within one file system) and the folder is flushed too, so
the rename itself survives a power cut. A reader, or a batch resumed after SIGINT/SIGTERM or a
crash, therefore sees either the old file or the complete new one, never a half-written file.

Three shapes of output:

* one file: `atomic_path` (a temporary path to write to), `write_text_atomic`, `write_bytes_atomic`;
* several files that belong together, e.g. an image and its JSON sidecar: `atomic_paths` /
  `atomic_pair`: every file is finished before the first one is renamed into place, and the
  renames happen in a fixed order (the sidecar before its image, so an image on disk always has
  its sidecar);
* a folder of outputs: `staged_outputs` writes everything into a hidden staging folder beside the
  outputs and `commit` moves it in, sidecars before images and the named files last.

New files get mode 0666 minus the process umask (0644 under the usual umask 022), as a plain
``open(..., "w")`` would give them; the temporary files themselves are private (0600) until then.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import InputError, OutputError

#: errno values that mean "this output cannot be written here", not a bug
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def as_output_error(exc: OSError, target: str | os.PathLike) -> OSError:
    """An `OutputError` naming `target` for a write failure (full disk, read-only...), else `exc`."""
    if isinstance(exc, OutputError) or exc.errno not in WRITE_ERRNOS:
        return exc
    return OutputError(f"cannot write {target}: {exc.strerror or exc} (nothing of it was left behind)", exc.errno)

__all__ = ["StagedOutputs", "atomic_pair", "atomic_path", "atomic_paths", "ensure_writable_dir", "fsync_dir",
           "fsync_file", "remove_stale", "staged_outputs", "write_bytes_atomic", "write_text_atomic"]

#: Every temporary name this module makes matches this glob in its folder (see `remove_stale`).
TEMP_GLOB = ".*.tmp*"


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check that files can be written in it (InputError if not)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable")
    return folder


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask can only be read by setting it, which is process-wide and would
# race with files that other threads (Dask worker tasks) create meanwhile
_FILE_MODE = 0o666 & ~_read_umask()


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be
    opened (Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: nothing more can be done
        pass
    finally:
        os.close(fd)


def _temp_beside(path: Path, suffix: str | None) -> Path:
    if path.is_dir():
        raise InputError(f"output {path} is a folder, expected a file name")
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _finish(tmp: Path) -> None:
    """Give a written temporary file its final mode and flush it."""
    # mkstemp makes the file 0600: give the result the mode any new file would get (umask)
    os.chmod(tmp, _FILE_MODE)
    fsync_file(tmp)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike], suffixes: Sequence[str | None] | None = None
                 ) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of `paths`; when the block succeeds, flush every one,
    then rename them onto their targets in the order given and flush the folder(s). On an error
    (also KeyboardInterrupt) every temporary file is removed and no target is touched.

    `suffixes` (one per path, None: the target's own multi-part suffix) let writers that infer the
    format from the name (nibabel: '.nii.gz') still do so.
    """
    paths = [Path(p) for p in paths]
    suffixes = list(suffixes) if suffixes is not None else [None] * len(paths)
    if len(suffixes) != len(paths):
        raise ValueError("one suffix per path")
    for folder in dict.fromkeys(p.parent for p in paths):
        ensure_writable_dir(folder)
    tmps: list[Path] = []
    try:
        for p, s in zip(paths, suffixes):
            tmps.append(_temp_beside(p, s))
        yield list(tmps)
        for tmp in tmps:
            _finish(tmp)
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)
        for folder in dict.fromkeys(p.parent for p in paths):
            fsync_dir(folder)
    except BaseException as exc:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise as_output_error(exc, paths[-1] if len(paths) == 1 else ", ".join(map(str, paths))) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success flush it, rename it onto `path` and flush
    the folder, else delete it.

    `suffix` defaults to the target's own (multi-part) suffix, so writers that infer the format
    from the name (nibabel: '.nii.gz') still do so. The writer may replace the temporary file
    (remove it and create it again), but must leave a file there.
    """
    with atomic_paths([path], [suffix]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_pair(image: str | os.PathLike, sidecar: str | os.PathLike) -> Iterator[tuple[Path, Path]]:
    """Yield temporary paths (image, sidecar) for an image and its JSON sidecar.

    Neither appears until both are written and flushed; the sidecar is renamed into place first
    and the image right after, so an image on disk always has its (new) sidecar and a sidecar
    never belongs to an unfinished image. A failure leaves neither.
    """
    image, sidecar = Path(image), Path(sidecar)
    with atomic_paths([sidecar, image]) as (tmp_side, tmp_img):
        yield tmp_img, tmp_side


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write a text file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class StagedOutputs:
    """A hidden staging folder beside a set of outputs (made by `staged_outputs`).

    Write files into it (``stage / name`` or ``stage.path / name``), then call `commit`.
    """

    def __init__(self, path: Path, folder: Path, created: bool):
        self.path = path
        self.folder = folder
        self._created = created
        self.committed = False

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def commit(self, last: Iterable[str] = ()) -> list[Path]:
        """Move every file of the staging folder into the output folder and return their new paths.

        All files are flushed first; then the JSON sidecars move, then the other files (name
        order), then the names in `last` in the order given (those not staged are skipped); then
        the output folder is flushed. The outputs therefore appear only once all of them were
        written, and the files in `last` (what a resumed batch looks for) after everything else.
        """
        last = [n for n in last]
        files = [p for p in self.path.iterdir()]
        for p in files:
            if p.is_file():
                fsync_file(p)
        names = sorted((p.name for p in files if p.name not in last),
                       key=lambda n: (not n.endswith(".json"), n))
        names += [n for n in last if (self.path / n).exists()]
        moved = []
        for name in names:
            os.replace(self.path / name, self.folder / name)
            moved.append(self.folder / name)
        fsync_dir(self.folder)
        if self._created:  # the output folder's own entry in its parent
            fsync_dir(self.folder.parent)
        self.committed = True
        return moved


@contextlib.contextmanager
def staged_outputs(folder: str | os.PathLike, stem: str) -> Iterator[StagedOutputs]:
    """A hidden staging folder `.<stem>.XXXX.tmp` inside the output folder `folder` (created if
    needed), for outputs that must appear together or not at all.

    Yields a `StagedOutputs`; call its `commit(last=[...])` inside the block to move the files in.
    On leaving the block the staging folder is removed with whatever is still in it (everything,
    after an error or without a commit), and so is `folder` when this call created it and it
    stayed empty.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        ensure_writable_dir(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=folder))
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise as_output_error(exc, folder) from None
        raise
    try:
        yield StagedOutputs(tmp, folder, created)
    except OSError as exc:
        raise as_output_error(exc, folder / stem if exc.filename is None else
                              folder / Path(str(exc.filename)).name) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and staging folders this module left in `folder` when a process
    was killed mid-write (SIGKILL: no clean-up ran). Only for folders no other process is writing
    to. Returns what was removed."""
    removed = []
    for stale in Path(folder).glob(TEMP_GLOB):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed
