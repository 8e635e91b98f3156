"""Batch over a manifest: process pool and Dask LocalCluster, partial failure, resume after interrupts."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from na23recon.cli import main


def _summary(root: Path) -> dict[str, dict]:
    with open(root / "summary.csv") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    root = tmp_path_factory.mktemp("study")
    rows = ["id,scan,traj"]
    for i in range(4):
        simulate_to_folder(root / f"s{i}", matrix=20, snr=30.0, seed=i)
        rows.append(f"sub{i},s{i}/scan.dat,s{i}/traj.npz")
    raw = (root / "s2" / "scan.dat").read_bytes()
    (root / "s2" / "broken.dat").write_bytes(raw[: len(raw) // 2])
    (root / "three.csv").write_text("\n".join([rows[0], rows[1], rows[2].replace("s1/", "s1/"),
                                               "sub2,s2/broken.dat,s2/traj.npz"]) + "\n")
    (root / "four.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("runner", [[], ["--dask", "local"]], ids=["pool", "dask"])
def test_three_scans_one_corrupt(study, tmp_path, capsys, runner):
    out = tmp_path / "out"
    rc = main(["batch", str(study / "three.csv"), "-o", str(out), "--workers", "2", "--no-progress", *runner])
    assert rc == 3
    s = _summary(out)
    assert [s[k]["status"] for k in ("sub0", "sub1", "sub2")] == ["ok", "ok", "failed"]
    assert "truncated" in s["sub2"]["message"]
    for k in ("sub0", "sub1"):
        assert (out / k / "recon.nii.gz").exists() and (out / k / "done.json").exists()
        assert json.loads((out / k / "recon.json").read_text())["recon"]["method"] == "adjoint"
    assert not (out / "sub2" / "recon.nii.gz").exists()
    assert "sub2" in capsys.readouterr().err


@pytest.mark.parametrize("text,word", [
    ("id,scan\na,x.dat\n", "traj"),
    ("id,scan,traj\na,s.dat,t.npz,EXTRA\n", "fields"),
    ("id,scan,traj\na,s.dat,t.npz\na,s2.dat,t.npz\n", "twice"),
    ("id,scan,traj\n", "no scans"),
])
def test_bad_manifest_is_input_error(tmp_path, capsys, text, word):
    m = tmp_path / "m.csv"
    m.write_text(text)
    assert main(["batch", str(m), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_and_resume(study, tmp_path, sig):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "na23recon.cli", "batch", str(study / "four.csv"), "-o", str(out),
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "sub0" / "done.json").exists():
        assert proc.poll() is None and time.time() < deadline, "batch ended before the interrupt"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    first = _summary(out)
    # a scan whose worker finished just as the interrupt came is complete on disk (done.json)
    # though the summary lists it as interrupted: the rerun must skip exactly the complete ones
    finished = {p.parent.name for p in out.glob("*/done.json")}
    assert {k for k, r in first.items() if r["status"] == "ok"} <= finished
    assert "sub0" in finished and len(finished) < 4
    # no half-written file anywhere, no result without its sidecar
    for p in out.rglob("*"):
        assert ".tmp" not in p.name, p
    for img in out.rglob("recon.nii.gz"):
        assert img.with_name("recon.json").exists()
    rc = main(["batch", str(study / "four.csv"), "-o", str(out), "--workers", "1", "--no-progress"])
    assert rc == 0
    second = _summary(out)
    assert {k for k, r in second.items() if r["status"] == "skipped"} == finished
    assert {k for k, r in second.items() if r["status"] == "ok"} == {f"sub{i}" for i in range(4)} - finished
