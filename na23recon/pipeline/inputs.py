"""A scan and its trajectory from where users have them: what `recon`, `b1map`, `run` and `batch` read.

Scan: twix or ISMRMRD (`io.scan_file.read_scan_file`). Trajectory (`--traj`):
- `.npz` / `.npy`: the toolkit's contract (k in 1/m);
- `.mat`, `.txt`, `.csv`: imported in `ReconOptions.traj_units` (per_m, kmax, kmax_half);
- `.seq`: a Pulseq sequence (`traj.pulseq`), k at every ADC sample checked against the scan's
  readouts, samples and dwell. For a twix written by the Pulseq interpreter the protocol's FOV,
  matrix and dwell are placeholders: FOV comes from the sequence's definitions, the matrix per
  axis from the reach of its k (2 ceil(max |k_i| FOV_i)), the dwell from its ADC; the slice
  position and orientation stay the header's (the interpreter plays the gradients on them);
- none, for an MRD file that stores its trajectory (in `traj_units`).
The sidecar's `recon.trajectory` block says which source, file and units were used.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core import ReconOptions, Scan, Trajectory
from ..errors import InputError
from ..io.scan_file import read_scan_file
from ..io.trajfile import import_mat, import_text, load_traj
from ..traj.pulseq import match_scan, read_seq, seq_fov_mm

log = logging.getLogger(__name__)

TRAJ_SUFFIXES = (".npz", ".npy", ".mat", ".txt", ".csv", ".seq")


def load_scan_and_trajectory(scan_path: str | os.PathLike, traj_path: str | os.PathLike | None,
                             options: ReconOptions | None = None) -> tuple[Scan, Trajectory, dict]:
    """(scan, trajectory in 1/m fitted to it, sidecar block {source, file, units, ...})."""
    opts = options or ReconOptions()
    scan, stored, src = read_scan_file(scan_path, allow_nucleus=opts.allow_nucleus,
                                       zero_bad_samples=opts.zero_bad_samples)
    geom = scan.acquisition.geometry
    fov = None if geom is None else geom.fov_mm
    base = None if geom is None else geom.matrix[0]
    if traj_path is None:
        if stored is None:
            raise InputError(f"{Path(scan_path).name} carries no trajectory: give --traj")
        traj = _scaled_stored(stored, opts.traj_units, fov, base, Path(scan_path).name)
        return scan, traj, {"source": "mrd", "file": Path(scan_path).name, "units": opts.traj_units}
    path = Path(traj_path)
    if not path.is_file():
        raise InputError(f"trajectory file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in TRAJ_SUFFIXES:
        raise InputError(f"{path.name}: unknown trajectory format {suffix!r}; expected one of {', '.join(TRAJ_SUFFIXES)}")
    if suffix == ".seq":
        return _from_seq(scan, path, src.pulseq)
    if suffix in (".npz", ".npy"):
        if opts.traj_units != "per_m":
            raise InputError(f"{path.name}: .npz/.npy trajectories hold k in 1/m; --traj-units {opts.traj_units} "
                             f"is for .mat/.txt/.csv files")
        return scan, load_traj(path, fov_mm=fov, matrix=base), {"source": suffix[1:], "file": path.name,
                                                                "units": "per_m"}
    if opts.traj_units != "per_m" and geom is None:
        raise InputError(f"{path.name}: --traj-units {opts.traj_units} needs the scan's FOV and matrix, "
                         f"which its header does not give")
    if suffix == ".mat":
        traj = import_mat(path, units=opts.traj_units, fov_mm=fov, matrix=base)
    else:
        traj = import_text(path, nsample=scan.nsample, units=opts.traj_units, fov_mm=fov, matrix=base)
    return scan, traj, {"source": "mat" if suffix == ".mat" else "text", "file": path.name,
                        "units": opts.traj_units}


def _scaled_stored(k: np.ndarray, units: str, fov, base, name: str) -> Trajectory:
    """An MRD file's stored trajectory in 1/m."""
    if units == "per_m":
        return Trajectory(k=np.asarray(k, dtype=np.float64), kind="mrd", meta={"units": units})
    if fov is None:
        raise InputError(f"{name}: --traj-units {units} needs the scan's FOV and matrix")
    edge = base / 2.0 if units == "kmax" else float(base)
    return Trajectory.from_coord(np.asarray(k, dtype=np.float64) * edge, fov, kind="mrd", meta={"units": units})


def _from_seq(scan: Scan, path: Path, pulseq_twix: bool) -> tuple[Scan, Trajectory, dict]:
    acq = scan.acquisition
    seq = read_seq(path)
    traj = match_scan(seq, scan.nreadout, scan.nsample, necho=scan.necho, nrep=scan.nrep, dwell_us=acq.dwell_us,
                      trust_seq_dwell=pulseq_twix, source=path.name)
    os_factor = int(traj.meta["oversampling"])
    block = {"source": "pulseq", "file": path.name, "units": "per_m", "adc_events": int(seq.nreadout),
             "adc_samples": int(seq.nsample), "adc_dwell_us": float(seq.meta["dwell_s"]) * 1e6,
             "readout_oversampling": os_factor}
    if pulseq_twix:
        fov = seq_fov_mm(seq)
        geom = acq.geometry
        if geom is not None and fov is not None:
            fov_m = np.asarray(fov) * 1e-3
            reach = np.max(np.abs(traj.k), axis=(0, 1)) * fov_m  # cycles/FOV per axis
            matrix = tuple(max(1, 2 * math.ceil(r - 0.05)) for r in reach)
            new = replace(geom, fov_mm=fov, matrix=matrix)
            if new != geom:
                log.warning("%s: Pulseq scan: FOV %s mm and matrix %s from the sequence (the protocol's %s mm, %s "
                            "are the interpreter's placeholders)", path.name, fov, matrix, geom.fov_mm, geom.matrix)
            block["geometry_from_sequence"] = {"fov_mm": list(fov), "matrix": list(matrix)}
            acq = acq.with_(geometry=new)
        dwell = float(seq.meta["dwell_s"]) * 1e6 / os_factor
        if acq.dwell_us is None or abs(acq.dwell_us - dwell) > 1e-3 * dwell:
            block["dwell_from_sequence"] = True
            acq = acq.with_(dwell_us=dwell)
        scan = Scan(data=scan.data, acquisition=acq, noise=scan.noise)
    return scan, traj, block
