"""Seeded fuzzing of the twix reader (simulated 23Na scans and the real files), the recon
command, trajectory files, vials, run configs and manifests (the harness: tests/fuzz_harness.py).

Every mutant ends in exit 0 with a finite, plausible result or in a one-line refusal with no
output. A small campaign runs in CI; `-m slow` runs 5,000 mutants (NA23RECON_FUZZ_N to change).
"""

import os

import pytest

from fuzz_harness import REAL_TWIX, Campaign

BAD = ("internal", "hang", "nan output", "output after refusal", "multi-line error", "implausible")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    from na23recon.sim.scan import simulate_to_folder

    root = tmp_path_factory.mktemp("fuzz")
    sim = simulate_to_folder(root / "sim", matrix=16, snr=30.0, seed=0, ncoil=2)
    return Campaign(root, sim)


def _check(counts, findings):
    print("\nfuzz counts:", dict(counts))
    for f in findings[:40]:
        print("  ", f)
    assert all(counts[k] == 0 for k in BAD), [f for f in findings if not f.startswith("silent")][:10]


def test_real_files_present_or_skipped():
    if not REAL_TWIX.is_dir():
        pytest.skip(f"real twix files not found at {REAL_TWIX} (../shared/data/real-twix)")
    assert list(REAL_TWIX.glob("*.dat"))


def test_fuzz_small(campaign):
    counts = campaign.run(80, seed=14, recon_every=8)
    _check(counts, campaign.findings)


@pytest.mark.slow
def test_fuzz_thousands(campaign):
    n = int(os.environ.get("NA23RECON_FUZZ_N", "5000"))
    counts = campaign.run(n, seed=2024, recon_every=int(os.environ.get("NA23RECON_FUZZ_RECON_EVERY", "10")))
    _check(counts, campaign.findings)
