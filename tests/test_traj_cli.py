"""`na23recon traj` writes a contract-conforming .npz and a PNG; impossible requests exit 2."""

import numpy as np
import pytest

from na23recon.cli import main
from na23recon.io.trajfile import load_traj


@pytest.mark.parametrize("kind", ["radial", "dar", "tpi"])
def test_traj_cli_writes_npz_and_png(tmp_path, kind, capsys):
    out = tmp_path / f"{kind}.npz"
    rc = main(["traj", kind, "--matrix", "16", "--fov-mm", "200", "-o", str(out)])
    assert rc == 0
    tr = load_traj(out, fov_mm=200, matrix=16)
    assert tr.k.shape[-1] == 3 and tr.dcf.shape == tr.k.shape[:2] and tr.t.shape == (tr.k.shape[1],)
    assert abs(np.linalg.norm(tr.k, axis=-1).max() - 16 / (2 * 0.2)) < 1e-6
    assert tr.meta["kind"] == kind
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_traj_cli_impossible_tpi_exits_2(tmp_path, capsys):
    rc = main(["traj", "tpi", "--matrix", "16", "--g-mT-m", "20", "--slew-T-m-s", "100", "-o",
               str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()
