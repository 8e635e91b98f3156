"""core.atomic: one scheme for every output: temp beside the target, fsync file, rename, fsync folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from na23recon.core import atomic
from na23recon.core.atomic import (
    atomic_pair,
    atomic_path,
    remove_stale,
    staged_outputs,
    write_bytes_atomic,
    write_text_atomic,
)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.fixture
def fsyncs(monkeypatch):
    """Record every os.fsync as ('file' | 'dir', path) and still perform it."""
    calls = []
    real = os.fsync

    def rec(fd):
        p = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists(f"/proc/self/fd/{fd}") else None
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append((kind, p))
        return real(fd)

    monkeypatch.setattr(os, "fsync", rec)
    return calls


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failing_write_leaves_neither_temp_nor_target(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["a.txt"]


def test_fsync_file_then_folder(tmp_path, fsyncs):
    target = tmp_path / "x.bin"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    kinds = [k for k, _ in fsyncs]
    assert kinds == ["file", "dir"], fsyncs
    if fsyncs[1][1] is not None:
        assert fsyncs[1][1] == tmp_path.resolve()
        assert fsyncs[0][1].parent == tmp_path.resolve() and fsyncs[0][1].name.startswith(".x.")


def test_no_fsync_and_no_rename_on_error(tmp_path, fsyncs):
    with pytest.raises(ValueError), atomic_path(tmp_path / "y.txt") as tmp:
        tmp.write_text("z")
        raise ValueError
    assert fsyncs == []
    assert _names(tmp_path) == []


def test_mode_follows_umask(tmp_path, monkeypatch):
    assert atomic._FILE_MODE == 0o666 & ~_umask()  # read once at import, like open() would apply it
    monkeypatch.setattr(atomic, "_FILE_MODE", 0o666 & ~0o022)
    write_text_atomic(tmp_path / "t.txt", "t")
    with atomic_path(tmp_path / "u.bin") as tmp:
        tmp.write_bytes(b"u")
    with staged_outputs(tmp_path / "o", "s") as stage:
        old = os.umask(0o022)
        try:
            (stage / "s.json").write_text("{}")  # a plain write into the staging folder
        finally:
            os.umask(old)
        with atomic_path(stage / "s.nii") as tmp:
            tmp.write_bytes(b"s")
        stage.commit()
    for p in (tmp_path / "t.txt", tmp_path / "u.bin", tmp_path / "o" / "s.json", tmp_path / "o" / "s.nii"):
        assert p.stat().st_mode & 0o777 == 0o644, (p, oct(p.stat().st_mode))


def test_pair_sidecar_lands_first_and_only_after_both_written(tmp_path, monkeypatch):
    img, side = tmp_path / "a.nii.gz", tmp_path / "a.json"
    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (order.append(Path(d).name), real(s, d))[1])
    with atomic_pair(img, side) as (t_img, t_side):
        t_img.write_bytes(b"img")
        assert not side.exists() and not img.exists()
        t_side.write_text("{}")
        assert not side.exists() and not img.exists()
    assert order == ["a.json", "a.nii.gz"]
    assert img.read_bytes() == b"img" and side.read_text() == "{}"


def test_pair_failure_leaves_neither(tmp_path):
    with pytest.raises(OSError), atomic_pair(tmp_path / "a.nii", tmp_path / "a.json") as (_, t_side):
        t_side.write_text("{}")
        raise OSError("disk full")
    assert _names(tmp_path) == []


def test_save_nifti_goes_through_the_pair(tmp_path, fsyncs):
    from na23recon.core.nifti import load_nifti, save_nifti

    save_nifti(tmp_path / "im.nii.gz", np.ones((2, 2, 2)), np.eye(4), {"k": 1})
    assert _names(tmp_path) == ["im.json", "im.nii.gz"]
    assert [k for k, _ in fsyncs] == ["file", "file", "dir"]
    assert load_nifti(tmp_path / "im.nii.gz")[2] == {"k": 1}


def test_save_traj_fsyncs(tmp_path, fsyncs):
    from na23recon.core import Trajectory
    from na23recon.io.trajfile import save_traj

    save_traj(tmp_path / "t.npz", Trajectory(np.zeros((2, 3, 3))))
    assert _names(tmp_path) == ["t.npz"] and [k for k, _ in fsyncs] == ["file", "dir"]


def test_staged_commit_order_and_fsync(tmp_path, monkeypatch, fsyncs):
    folder = tmp_path / "out"
    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (order.append(Path(d).name), real(s, d))[1])
    with staged_outputs(folder, "TSC") as stage:
        assert stage.path.parent == folder and stage.path.name.startswith(".TSC.") and stage.path.is_dir()
        for name in ("TSC.nii.gz", "TSC.json", "TSC_sd.nii.gz", "TSC_sd.json", "TSC.png", "TSC_roi.csv"):
            (stage / name).write_text(name)
        assert _names(folder) == [stage.path.name]  # nothing visible yet
        fsyncs.clear()
        moved = stage.commit(last=["TSC.json", "TSC.nii.gz", "absent.txt"])
    assert order == ["TSC_sd.json", "TSC.png", "TSC_roi.csv", "TSC_sd.nii.gz", "TSC.json", "TSC.nii.gz"]
    assert [p.name for p in moved] == order
    assert _names(folder) == sorted(order)  # staging folder gone
    assert [k for k, _ in fsyncs] == ["file"] * 6 + ["dir", "dir"]  # files, the folder, its new entry
    for name in order:
        assert (folder / name).read_text() == name


def test_staged_error_removes_staging_and_created_folder(tmp_path):
    folder = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), staged_outputs(folder, "B1") as stage:
        (stage / "B1.json").write_text("{}")
        raise RuntimeError("refused")
    assert not folder.exists()


def test_staged_error_keeps_existing_folder_and_files(tmp_path):
    (tmp_path / "keep.txt").write_text("k")
    with pytest.raises(RuntimeError), staged_outputs(tmp_path, "B1") as stage:
        (stage / "B1.nii.gz").write_text("x")
        raise RuntimeError
    assert _names(tmp_path) == ["keep.txt"]


def test_staged_without_commit_writes_nothing(tmp_path):
    with staged_outputs(tmp_path / "o", "x") as stage:
        (stage / "x.json").write_text("{}")
    assert not (tmp_path / "o").exists()


def test_remove_stale(tmp_path):
    (tmp_path / ".recon.abc.tmp.nii.gz").write_text("half")
    (tmp_path / ".tsc.def.tmp").mkdir()
    (tmp_path / ".tsc.def.tmp" / "tsc.json").write_text("{}")
    (tmp_path / "recon.nii.gz").write_text("done")
    removed = remove_stale(tmp_path)
    assert len(removed) == 2
    assert _names(tmp_path) == ["recon.nii.gz"]


def test_refuses_folder_target(tmp_path):
    from na23recon.errors import InputError

    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="folder"):
        write_text_atomic(tmp_path / "d", "x")
