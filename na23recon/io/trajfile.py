"""Trajectory files: the `.npz` contract both ways, plus text/CSV and MATLAB imports.

Contract: `.npz` with `k` float (nreadout, nsample, 3) in cycles per metre (1/m), k[..., i] along
image axis i; optional `dcf` (nreadout, nsample); optional `t` (nsample,) seconds from
excitation. A `.npy` holding only `k` is accepted. Extra scalar metadata (kind, kmax_per_m,
design parameters) is stored as 0-d arrays `meta_<name>` beside them and returned in
`Trajectory.meta` (and `meta_kind` as `Trajectory.kind`).

Every reader returns a `core.Trajectory`, whose construction validates k, dcf and t; its
InputError comes back with the file's name in front.

Imports (`.txt`, `.csv`, `.mat`) need explicit units: `units='per_m'` (1/m) or `units='kmax'`
(normalised so that |k| = 1 at kmax = matrix / (2 FOV); needs `fov_mm` and `matrix`; the
convention of many sequence packages is |k| <= 0.5, pass `units='kmax_half'` for that).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_path
from ..core.memory import check_fits, gb
from ..core.options import TRAJ_UNITS
from ..core.trajectory import KMAX_TOLERANCE, Trajectory
from ..errors import InputError

log = logging.getLogger(__name__)

UNITS = TRAJ_UNITS  # one definition, with the --traj-units option

__all__ = ["Trajectory", "UNITS", "load_traj", "save_traj", "import_text", "import_mat"]


def _trajectory(source: str, fov_mm: float | None = None, **fields: Any) -> Trajectory:
    """`Trajectory(**fields)` (or `Trajectory.from_coord(fields.pop('coord'), fov_mm, ...)`) for a
    file's arrays: its InputError names `source`; k must have the contract's 3 components."""
    try:
        if "coord" in fields:
            traj = Trajectory.from_coord(fields.pop("coord"), fov_mm, **fields)
        else:
            traj = Trajectory(**fields)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    if traj.ndim != 3:
        raise InputError(f"{source}: k must have shape (nreadout, nsample, 3), found {traj.k.shape}")
    return traj


def _check_kmax(traj: Trajectory, fov_mm: float | None, matrix: int | None, source: str) -> None:
    """Warn when |k| reaches beyond the matrix edge N/2 cycles/FOV (+2%): wrong units or FOV?"""
    if fov_mm is None or matrix is None:
        return
    reach = float(np.sqrt(np.max(np.sum(traj.coord(fov_mm).astype(np.float64) ** 2, axis=-1))))
    ratio = reach / (matrix / 2.0)
    if ratio > 1 + KMAX_TOLERANCE:
        found = traj.kmax_per_m()
        msg = (f"{source}: |k| reaches {found:.2f} 1/m, beyond kmax {found / ratio:.2f} 1/m of matrix {matrix} at "
               f"FOV {fov_mm} mm ({ratio:.2f} x kmax): wrong units or FOV?")
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)


def _declared_arrays(path: Path) -> list[tuple[str, tuple, np.dtype, int]]:
    """(name, shape, dtype, stored bytes) of every array of a .npy/.npz, from the npy headers
    alone (nothing is loaded); InputError for an unreadable header."""
    import zipfile

    def header(fh) -> tuple[tuple, np.dtype]:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        return tuple(int(n) for n in shape), np.dtype(dtype)

    out = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.filename.endswith(".npy"):
                        with zf.open(info) as fh:
                            shape, dtype = header(fh)
                        out.append((info.filename[:-4], shape, dtype, int(info.file_size)))
        else:
            with open(path, "rb") as fh:
                shape, dtype = header(fh)
            out.append(("k", shape, dtype, path.stat().st_size))
    except Exception as exc:  # a damaged header: np.load would fail too
        raise InputError(f"{path.name}: not a readable numpy file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())})") from None
    return out


def _check_declared(path: Path) -> None:
    """Refuse, before loading, arrays whose header declares more bytes than the file holds or
    than memory can take."""
    total = 0
    for name, shape, dtype, stored in _declared_arrays(path):
        nbytes = float(np.prod(np.asarray(shape, dtype=np.float64))) * dtype.itemsize
        if nbytes > stored:
            raise InputError(f"{path.name}: array {name!r} declares shape {shape} ({gb(nbytes)}) but the file holds "
                             f"{stored} bytes: truncated or corrupted")
        total += nbytes
    check_fits(3 * total, f"{path.name} (arrays of {gb(total)})")


def save_traj(path: str | os.PathLike, traj: Trajectory) -> Path:
    """Write `traj` as a trajectory `.npz` atomically (the module's contract).

    k (nreadout, nsample, 3) in 1/m; its dcf and t (seconds from excitation) when present;
    `traj.kind` as `meta_kind` and every `traj.meta` entry as a 0-d `meta_<name>` array (numbers,
    strings, bools; None entries are skipped). Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"trajectory file must end in .npz, found {path.name!r}")
    if not isinstance(traj, Trajectory):
        raise TypeError(f"save_traj needs a core.Trajectory, found {type(traj).__name__}")
    if traj.ndim != 3:
        raise InputError(f"{path}: k must have shape (nreadout, nsample, 3), found {traj.k.shape}")
    arrays: dict[str, np.ndarray] = {"k": traj.k}
    if traj.dcf is not None:
        arrays["dcf"] = traj.dcf
    if traj.t is not None:
        arrays["t"] = traj.t
    meta = dict(traj.meta)
    if traj.kind is not None:
        meta["kind"] = traj.kind
    for key, val in meta.items():
        if key in ("k", "dcf", "t"):
            raise InputError(f"metadata key {key!r} clashes with a trajectory array")
        if val is None:
            continue
        if not np.isscalar(val):
            raise InputError(f"metadata {key!r} must be a scalar, found {type(val).__name__}")
        arrays[f"meta_{key}"] = np.asarray(val)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_traj(path: str | os.PathLike, fov_mm: float | None = None, matrix: int | None = None,
              units: str = "per_m", key: str | None = None, nsample: int | None = None) -> Trajectory:
    """Read a trajectory file into a `core.Trajectory` (k in 1/m), validated.

    `.npz` / `.npy`: the module's contract (k already in 1/m; `units` must stay 'per_m').
    `.txt` / `.csv`: rows `kx ky kz` (comma or whitespace separated, '#' comments), readouts of
    `nsample` samples one after another (see `import_text`). `.mat`: variable `key` (default the first of 'k', 'traj',
    'ktraj', 'kspace_traj') of shape (nreadout, nsample, 3), (3, nsample, nreadout) or
    (nsample, nreadout, 3) per its 3-axis, converted to (nreadout, nsample, 3).
    With `fov_mm` and `matrix`, |k| beyond kmax = matrix / (2 FOV) (+2%) warns.
    """
    path = Path(path)
    if units not in UNITS:
        raise InputError(f"units must be one of {UNITS}, found {units!r}")
    if not path.is_file():
        raise InputError(f"trajectory file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        if units != "per_m":
            raise InputError(f"{path.name}: .npz/.npy trajectories hold k in 1/m by contract; units={units!r} "
                             f"is for text/.mat imports")
        _check_declared(path)
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:  # a truncated or foreign file
            raise InputError(f"{path.name}: not a readable numpy file ({type(exc).__name__}: {exc})") from None
        is_npz = isinstance(data, np.lib.npyio.NpzFile)
        if is_npz != (suffix == ".npz"):
            if is_npz:
                data.close()
            raise InputError(f"{path.name}: the file holds {'an .npz archive' if is_npz else 'a single .npy array'}, "
                             f"not what its name ({suffix}) says")
        if not is_npz:
            k, dcf, t, meta = data, None, None, {}
        else:
            try:
                with data:
                    if "k" not in data.files:
                        raise InputError(f"{path.name}: .npz must hold an array 'k', found {sorted(data.files)}")
                    k = data["k"]
                    dcf = data["dcf"] if "dcf" in data.files else None
                    t = data["t"] if "t" in data.files else None
                    meta = {f[5:]: data[f].item() for f in data.files if f.startswith("meta_") and data[f].ndim == 0}
            except InputError:
                raise
            except Exception as exc:  # object arrays, damaged members
                raise InputError(f"{path.name}: cannot read its arrays ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())})") from None
        _real_float(k, path.name)
        kind = meta.get("kind")
        traj = _trajectory(path.name, k=k, dcf=dcf, t=t, kind=kind if isinstance(kind, str) else None, meta=meta)
        _check_kmax(traj, fov_mm, matrix, path.name)
        return traj
    if suffix == ".mat":
        return import_mat(path, units=units, fov_mm=fov_mm, matrix=matrix, key=key)
    if suffix in (".txt", ".csv"):
        if nsample is None:
            raise InputError(f"{path.name}: a text trajectory needs the number of samples per readout (nsample)")
        return import_text(path, nsample=nsample, units=units, fov_mm=fov_mm, matrix=matrix)
    raise InputError(f"{path.name}: unknown trajectory format {suffix!r}; expected .npz, .npy, .mat, .txt or .csv")


def _real_float(k: np.ndarray, source: str) -> None:
    """k stored as integers (or booleans) lost its precision or is not k at all: refuse."""
    if k.dtype.kind in "biu":
        raise InputError(f"{source}: k must be floating point, found dtype {k.dtype} (integers cannot hold k in 1/m)")


def _scaled(k: np.ndarray, units: str, fov_mm: float | None, matrix: int | None, source: str,
            **fields: Any) -> Trajectory:
    """The Trajectory of k given in `units`: 1/m as is, or normalised to kmax (|k| = 1, or 0.5
    for 'kmax_half', at the matrix edge N/2 cycles/FOV) through `Trajectory.from_coord`."""
    if units not in UNITS:
        raise InputError(f"units must be one of {UNITS}, found {units!r}")
    if units == "per_m":
        return _trajectory(source, k=k, **fields)
    if fov_mm is None or matrix is None:
        raise InputError(f"{source}: units={units!r} needs fov_mm and matrix to convert to 1/m")
    edge = matrix / 2.0 if units == "kmax" else float(matrix)  # cycles/FOV per unit of the file
    k = np.asarray(k)
    coord = k.astype(np.float64) * edge if k.dtype.kind in "fiu" else k
    return _trajectory(source, fov_mm=fov_mm, coord=coord, **fields)


def import_text(path: str | os.PathLike, nsample: int, units: str, fov_mm: float | None = None,
                matrix: int | None = None) -> Trajectory:
    """Import a text/CSV trajectory: one sample per row `kx ky kz`, readouts one after another.

    nsample : samples per readout (rows must be a multiple of it).
    units : 'per_m' (1/m), 'kmax' (|k| = 1 at kmax) or 'kmax_half' (|k| = 0.5 at kmax); the
        normalised ones need `fov_mm` and `matrix`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trajectory file not found: {path}")
    text = path.read_text()
    delim = "," if "," in text.split("\n", 5)[-1] or path.suffix.lower() == ".csv" else None
    try:
        rows = np.loadtxt(path, delimiter=delim, comments="#", ndmin=2)
    except ValueError as exc:
        # a header line without '#': try once more skipping it
        try:
            rows = np.loadtxt(path, delimiter=delim, comments="#", ndmin=2, skiprows=1)
        except ValueError:
            raise InputError(f"{path.name}: expected numeric rows 'kx ky kz', found unparsable text ({exc})") from None
    if rows.shape[1] != 3:
        raise InputError(f"{path.name}: expected 3 columns (kx ky kz), found {rows.shape[1]}")
    if nsample < 1 or rows.shape[0] % nsample:
        raise InputError(f"{path.name}: {rows.shape[0]} rows are not a whole number of readouts of {nsample} samples")
    traj = _scaled(rows.reshape(-1, nsample, 3), units, fov_mm, matrix, path.name,
                   meta={"imported_from": path.name, "units": units})
    _check_kmax(traj, fov_mm, matrix, path.name)
    return traj


def import_mat(path: str | os.PathLike, units: str, fov_mm: float | None = None, matrix: int | None = None,
               key: str | None = None) -> Trajectory:
    """Import a MATLAB .mat trajectory (scipy.io.loadmat; v7.3/HDF5 files are not supported).

    The variable `key` (default the first of 'k', 'traj', 'ktraj', 'kspace_traj') must be 3D with
    one axis of length 3: (nreadout, nsample, 3), (3, nsample, nreadout) (MATLAB column-major
    habit) or (nsample, nreadout, 3). Ambiguous layouts take (nreadout, nsample, 3).
    Optional 'dcf'/'w' (same layout minus the 3-axis) and 't' are read too. Units as `import_text`.
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:
        raise InputError(f"{path.name}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from None
    except Exception as exc:
        raise InputError(f"{path.name}: not a readable .mat file ({type(exc).__name__}: {exc})") from None
    names = [n for n in mat if not n.startswith("__")]
    if key is None:
        key = next((n for n in ("k", "traj", "ktraj", "kspace_traj") if n in mat), None)
        if key is None:
            raise InputError(f"{path.name}: no trajectory variable ('k', 'traj', 'ktraj'), found {names}; pass key=")
    elif key not in mat:
        raise InputError(f"{path.name}: variable {key!r} not found, found {names}")
    k = np.asarray(mat[key])
    _real_float(k, path.name)
    transposed = False
    if k.ndim == 3 and k.shape[-1] != 3 and k.shape[0] == 3:
        k = np.transpose(k, (2, 1, 0))
        transposed = True
    if k.ndim != 3 or k.shape[-1] != 3:
        raise InputError(f"{path.name}: {key!r} must be (nreadout, nsample, 3) or (3, nsample, nreadout), found {k.shape}")
    dcf = None
    for dn in ("dcf", "w"):
        if dn in mat:
            dcf = np.asarray(mat[dn])
            if transposed and dcf.ndim == 2:
                dcf = dcf.T
            break
    t = np.asarray(mat["t"]).ravel() if "t" in mat else None
    traj = _scaled(k, units, fov_mm, matrix, path.name, dcf=dcf, t=t,
                   meta={"imported_from": path.name, "units": units})
    _check_kmax(traj, fov_mm, matrix, path.name)
    return traj
