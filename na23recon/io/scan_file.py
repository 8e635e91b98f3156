"""One entry point for scan files: Siemens twix (.dat) or ISMRMRD/MRD (.h5), chosen by the file's content.

`read_scan_file(path, allow_nucleus)` -> (Scan, the trajectory the file carries or None, what
it is). An HDF5 file (by its signature) is read as MRD (`io.mrd.read_mrd`, whose trajectory is in
the file's units: the caller scales it, see `mrd_trajectory`); anything else as twix
(`io.twix.read_scan`). `describe_scan_file` is the `info` summary of either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.scan import Scan
from ..errors import InputError
from .mrd import is_mrd, read_mrd
from .samples import check_samples
from .twix import describe, format_description, read_header, read_scan


@dataclass(frozen=True)
class ScanSource:
    """What a scan file is: format 'twix' or 'mrd', and whether the Pulseq interpreter wrote it
    (its protocol is then a placeholder: FOV, matrix and dwell come from the .seq file)."""

    format: str
    pulseq: bool = False


def read_scan_file(path: str | os.PathLike, allow_nucleus: bool = False, zero_bad_samples: bool = False
                   ) -> tuple[Scan, np.ndarray | None, ScanSource]:
    """Read a twix or MRD scan: (Scan, trajectory float (nreadout, nsample, 3) in the file's units
    or None, ScanSource). allow_nucleus=False refuses a nucleus other than 23Na (InputError).
    Non-finite or absurd raw samples are refused (`io.samples.check_samples`), or set to 0 with
    `zero_bad_samples` (counted in `Scan.notes`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scan file not found: {path}")
    if is_mrd(path):
        scan, traj = read_mrd(path, allow_nucleus=allow_nucleus)
        if scan.acquisition.nucleus != "23Na" and not allow_nucleus:  # pragma: no cover - read_mrd refuses
            raise InputError(f"scan nucleus is {scan.acquisition.nucleus!r}, expected '23Na': {path}")
        zeroed = check_samples(scan.data, f"MRD {path.name}", ("rep", "echo", "coil", "readout", "sample"),
                               zero=zero_bad_samples)
        if zeroed:
            scan.notes["bad_samples_zeroed"] = zeroed
        if traj is not None and traj.shape[-1] == 2:
            traj = np.concatenate([traj, np.zeros(traj.shape[:-1] + (1,), traj.dtype)], axis=-1)
        return scan, traj, ScanSource("mrd")
    scan = read_scan(path, allow_nucleus=allow_nucleus, zero_bad_samples=zero_bad_samples)
    return scan, None, ScanSource("twix", pulseq=is_pulseq_twix(path))


def is_pulseq_twix(path: str | os.PathLike) -> bool:
    """True when the twix protocol's sequence is the Pulseq interpreter (tSequenceFileName)."""
    name = read_header(path).yaps("tSequenceFileName") or ""
    return "pulseq" in str(name).lower()


def describe_scan_file(path: str | os.PathLike) -> dict:
    """The `info` summary of a twix file (`io.twix.describe`) or an MRD file (same keys)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scan file not found: {path}")
    if not is_mrd(path):
        return describe(path)
    scan, traj, _ = read_scan_file(path, allow_nucleus=True)
    acq = scan.acquisition
    entry = {"index": 0, **acq.to_dict(),
             "fov_mm": None if acq.fov_mm is None else list(acq.fov_mm),
             "matrix": None if acq.matrix is None else list(acq.matrix),
             "readouts": int(scan.nrep * scan.necho * scan.nreadout), "image_readouts": int(
                 scan.nrep * scan.necho * scan.nreadout),
             "noise_readouts": None, "noise_samples": 0 if scan.noise is None else int(scan.noise.shape[1]),
             "complete": True,
             "dims": {"nrep": scan.nrep, "necho": scan.necho, "ncoil": scan.ncoil, "nreadout": scan.nreadout,
                      "nsample": scan.nsample},
             "trajectory": None if traj is None else "stored in the file"}
    return {"file": str(path), "version": "ISMRMRD", "measurements": [entry]}


def format_scan_description(d: dict) -> str:
    """Readable text of `describe_scan_file`'s summary."""
    text = format_description(d)
    if d.get("version") != "ISMRMRD":
        return text
    m = d["measurements"][0]
    first, _, rest = text.partition("\n")
    rest = rest.replace("noise None)", f"noise samples {m['noise_samples']})")
    return (f"{d['file']}  (ISMRMRD/MRD)\n{rest}\n  trajectory: "
            f"{m['trajectory'] or 'none in the file (give --traj)'}")
