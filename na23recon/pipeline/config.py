"""Run configs and batch manifests -> typed jobs and options.

A scan's inputs are a `Job` (absolute paths); what to do with them is a `RunOptions` (the
`ReconOptions`, `QuantOptions` and `B1Options` of its steps). A run config (TOML or JSON) has the
sections [input], [recon], [quant], [b1], [output]; a batch manifest is a CSV with a header row, a
TOML file with one [[scan]] table per scan, or a JSON list of such objects. Relative paths are
relative to the config or manifest. Every key is checked against the dataclasses' fields, so a
misspelt option is refused instead of ignored.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core import B1Options, QuantOptions, ReconOptions
from ..core.options import OutputOptions
from ..errors import InputError

#: The 1H anatomy of a scan (`quantify --tissue-maps GM WM CSF --atlas --atlas-table --anat`).
TISSUE_FIELDS = ("tissue_gm", "tissue_wm", "tissue_csf")
ANATOMY_FIELDS = (*TISSUE_FIELDS, "atlas", "atlas_table", "anat")
PATH_FIELDS = ("scan", "traj", "b1_scan_a", "b1_scan_2a", "vials", "vial_mask", "labels", *ANATOMY_FIELDS,
               "receive_reference")
#: Optional BIDS labels of a manifest row (`batch --layout bids`): subject (default: the id) and session.
LABEL_FIELDS = ("subject", "session")
FIELDS = ("id", *PATH_FIELDS, *LABEL_FIELDS)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RESERVED_IDS = ("summary.csv",)  # names batch writes in OUTROOT itself


@dataclass(frozen=True)
class Job:
    """One scan's inputs; paths are absolute (None: not given)."""

    id: str
    scan: str
    traj: str | None  # None: an MRD scan that stores its trajectory
    b1_scan_a: str | None = None
    b1_scan_2a: str | None = None
    vials: str | None = None
    vial_mask: str | None = None
    labels: str | None = None
    tissue_gm: str | None = None
    tissue_wm: str | None = None
    tissue_csf: str | None = None
    atlas: str | None = None
    atlas_table: str | None = None
    anat: str | None = None
    receive_reference: str | None = None  # the volume-coil scan (or image) of the receive correction
    subject: str | None = None
    session: str | None = None

    def inputs(self) -> list[str]:
        return [getattr(self, f) for f in PATH_FIELDS if getattr(self, f)]

    def check(self) -> None:
        """InputError for a combination of inputs no step can use."""
        if bool(self.b1_scan_a) != bool(self.b1_scan_2a):
            raise InputError("a B1 map needs both b1_scan_a and b1_scan_2a")
        if (self.vial_mask or self.labels or self.receive_reference or any(getattr(self, f) for f in ANATOMY_FIELDS)) \
                and not self.vials:
            raise InputError("vial_mask, labels, receive_reference and the anatomy (tissue maps, atlas) need a vials "
                             "file to quantify TSC")
        given = [f for f in TISSUE_FIELDS if getattr(self, f)]
        if given and len(given) != len(TISSUE_FIELDS):
            raise InputError(f"tissue maps need all of {', '.join(TISSUE_FIELDS)}; got {', '.join(given)}")

    @property
    def tissue_maps(self) -> list[str] | None:
        """[GM, WM, CSF] map paths, or None."""
        return [getattr(self, f) for f in TISSUE_FIELDS] if self.tissue_gm else None


@dataclass(frozen=True)
class RunOptions:
    """The options of every step of one scan end to end."""

    recon: ReconOptions = field(default_factory=ReconOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)
    b1: B1Options = field(default_factory=B1Options)
    output: OutputOptions = field(default_factory=OutputOptions)

    def to_dict(self) -> dict:
        return {"recon": self.recon.to_dict(), "quant": self.quant.to_dict(), "b1": self.b1.to_dict(),
                "output": self.output.to_dict()}

    @classmethod
    def from_sections(cls, cfg: dict, where: str) -> RunOptions:
        """From a config's [recon], [quant] and [b1] tables (absent tables: defaults)."""
        parts = {}
        for name, typ in (("recon", ReconOptions), ("quant", QuantOptions), ("b1", B1Options)):
            val = cfg.get(name, {})
            if not isinstance(val, dict):
                raise InputError(f"{where}: [{name}] must be a table of keys")
            parts[name] = typ.from_mapping(val, f"{where} [{name}]")
        out = {k: v for k, v in cfg.get("output", {}).items() if k != "dir"}
        return cls(**parts, output=OutputOptions.from_mapping(out, f"{where} [output]"))


def _stores_traj(scan: str) -> bool:
    """An MRD scan (.h5) may carry its own trajectory: `traj` can then be left out."""
    return scan.lower().endswith((".h5", ".hdf5", ".mrd"))


def load_toml(path: str | os.PathLike, what: str) -> dict:
    """Parse a TOML file (tomllib, or tomli on Python 3.10); a bad one is an InputError."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except Exception as exc:
        raise InputError(f"{what} {path.name} is not valid TOML: {' '.join(str(exc).split())}") from None


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a bad one is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path.name} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{what} {path.name} nests too deeply") from None


def load_config(path: str | os.PathLike, what: str) -> Any:
    """A TOML or JSON file by its suffix."""
    return load_json(path, what) if Path(path).suffix.lower() == ".json" else load_toml(path, what)


def load_run_config(path: str | os.PathLike) -> tuple[Job, RunOptions, Path]:
    """Read a `na23recon run` config (TOML or JSON): [input] scan, traj, b1_scan_a, b1_scan_2a,
    vials, vial_mask, labels, tissue_gm, tissue_wm, tissue_csf, atlas, atlas_table, anat,
    receive_reference
    (relative to the config file); [recon], [quant], [b1] option tables;
    [output] dir. Returns (job, options, output folder)."""
    path = Path(path)
    cfg = load_config(path, "config")
    if not isinstance(cfg, dict):
        raise InputError(f"config {path.name} must be a table of sections")
    known = ("input", "recon", "quant", "b1", "output")
    for sec, val in cfg.items():
        if sec not in known:
            raise InputError(f"config {path.name}: unknown section [{sec}]; known: {sorted(known)}")
        if not isinstance(val, dict):
            raise InputError(f"config {path.name}: [{sec}] must be a table of keys")
    inp, out = cfg.get("input", {}), cfg.get("output", {})
    out_keys = ("dir", *OutputOptions.defaults())
    for sec, val, keys in (("input", inp, PATH_FIELDS), ("output", out, out_keys)):
        bad = set(val) - set(keys)
        if bad:
            raise InputError(f"config {path.name} [{sec}]: unknown key(s) {sorted(bad)}; known: {list(keys)}")
    if not inp.get("scan") or not (inp.get("traj") or _stores_traj(str(inp["scan"]))):
        raise InputError(f"config {path.name} [input] needs scan and traj (traj may be left out for an MRD .h5 "
                         f"scan that stores its trajectory)")
    for f, v in inp.items():
        if not isinstance(v, str):
            raise InputError(f"config {path.name} [input]: {f} must be a path string, got {v!r}")
    paths = {f: str((path.parent / str(inp[f])).resolve()) if inp.get(f) else None for f in PATH_FIELDS}
    for f, p in paths.items():
        if p and not Path(p).is_file():
            raise InputError(f"config {path.name}: {f} not found: {p}")
    job = Job(id=path.stem, **paths)
    job.check()
    options = RunOptions.from_sections(cfg, f"config {path.name}")
    if options.recon.b0_map:  # a path in [recon] is relative to the config file, as the inputs are
        b0 = (path.parent / options.recon.b0_map).resolve()
        if not b0.is_file():
            raise InputError(f"config {path.name}: [recon] b0_map not found: {b0}")
        options = replace(options, recon=replace(options.recon, b0_map=str(b0)))
    if options.recon.decay_map:  # likewise the per-voxel decay model's label map
        dm = (path.parent / options.recon.decay_map).resolve()
        if not dm.is_file():
            raise InputError(f"config {path.name}: [recon] decay_map not found: {dm}")
        options = replace(options, recon=replace(options.recon, decay_map=str(dm)))
    odir = out.get("dir", path.stem + "-out")
    if not isinstance(odir, str) or not odir.strip():
        raise InputError(f"config {path.name} [output]: dir must be a folder name (a string), got {odir!r}")
    outdir = path.parent / odir
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"config {path.name} [output]: dir {outdir} is a file, not a folder")
    return job, options, outdir


def _manifest_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".toml", ".json"):
        doc = load_config(path, "manifest")
        rows = doc.get("scan", []) if isinstance(doc, dict) else doc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(f"manifest {path.name}: expected a list of scans ([[scan]] tables in TOML)")
        return rows
    text = path.read_text(encoding="utf-8-sig", errors="replace")  # a BOM (Excel) is not part of the header
    try:
        return _csv_rows(path, text)
    except csv.Error as exc:
        raise InputError(f"manifest {path.name} is not a readable CSV: {exc}") from None


def _csv_rows(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [f for f in ("id", "scan", "traj") if f not in header]
    if missing:
        raise InputError(f"manifest {path.name} lacks column(s) {', '.join(missing)}; header is {header}")
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        raise InputError(f"manifest {path.name} has unknown column(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    rows = []
    for n, r in enumerate(reader, start=2):
        if None in r:  # more fields than the header names
            raise InputError(f"manifest {path.name} row {n} has {len(header) + len(r[None])} fields but the "
                             f"header names {len(header)}")
        rows.append({(k or "").strip(): (v or "").strip() for k, v in r.items()})
    return rows


def read_manifest(path: str | os.PathLike) -> list[Job]:
    """Parse a CSV, TOML or JSON manifest into jobs; a malformed manifest is an InputError.

    Files that do not exist are not refused here: that scan fails on its own and the others run.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    jobs, seen = [], set()
    for n, row in enumerate(_manifest_rows(path), start=2):
        if not any(str(v).strip() for v in row.values()):
            continue
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise InputError(f"manifest {path.name} entry {n - 1}: unknown key(s) {unknown}; known: {list(FIELDS)}")
        jid = str(row.get("id", "")).strip()
        if not ID_RE.match(jid):
            raise InputError(f"manifest {path.name} row {n}: id {jid!r} must be letters, digits, '_', '-', '.'")
        if jid.lower() in RESERVED_IDS:
            raise InputError(f"manifest {path.name} row {n}: id {jid!r} is the name of the batch's own "
                             f"{jid.lower()} in OUTROOT: choose another id")
        if jid in seen:
            raise InputError(f"manifest {path.name} row {n}: id {jid!r} appears twice")
        seen.add(jid)
        vals = {}
        for f in PATH_FIELDS:
            v = str(row.get(f) or "").strip()
            vals[f] = str((path.parent / v).resolve()) if v else None
        if not vals["scan"] or not (vals["traj"] or _stores_traj(vals["scan"])):
            raise InputError(f"manifest {path.name} row {n} ({jid}): scan and traj are required (traj may be "
                             f"empty for an MRD .h5 scan that stores its trajectory)")
        labels = {f: str(row.get(f) or "").strip() or None for f in LABEL_FIELDS}
        jobs.append(Job(id=jid, **vals, **labels))
    if not jobs:
        raise InputError(f"manifest {path.name} lists no scans")
    return jobs
