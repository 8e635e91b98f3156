"""--matrix above the acquired one: the reconstruction interpolates, says so in a warning and in
the sidecar, and keeps the acquired image's content (the analytic phantom's k-space, no NUFFT)."""

import logging

import numpy as np
import pytest

from na23recon.core import ReconOptions
from na23recon.recon.scan_recon import reconstruct
from na23recon.sim.phantom import load_phantom
from na23recon.sim.scan import SimProtocol, simulate_scan


@pytest.fixture(scope="module")
def scan16():
    return simulate_scan(load_phantom("brain"), SimProtocol(matrix=16), snr=None)


def test_matrix_above_acquired_warns_and_records(scan16, caplog):
    scan, sim = scan16
    native = reconstruct(scan, sim["traj"])
    assert "interpolated" not in native.meta["recon"]
    with caplog.at_level(logging.WARNING, logger="na23recon.recon.scan_recon"):
        fine = reconstruct(scan, sim["traj"], ReconOptions(matrix=32))
    assert any("above the acquired matrix 16" in r.getMessage() for r in caplog.records)
    rec = fine.meta["recon"]
    assert rec["interpolated"]["acquired_matrix"] == 16 and rec["interpolated"]["factor"] == 2.0
    assert rec["matrix"] == [32] * 3 and rec["samples_used"] == native.meta["recon"]["samples_used"]
    # the same data on a twice finer grid: every other voxel samples the same band-limited image,
    # no new detail (up to one scale: the density compensation is normalised per grid)
    a = np.asarray(fine.array, np.float64)[::2, ::2, ::2]
    b = np.asarray(native.array, np.float64)
    scale = np.sum(a * b) / np.sum(a * a)
    assert np.linalg.norm(scale * a - b) / np.linalg.norm(b) < 0.05
