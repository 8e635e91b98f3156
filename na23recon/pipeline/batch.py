"""Many scans: a manifest run on a local process pool (default) or on a Dask cluster.

Manifest (`pipeline.config.read_manifest`: CSV with a header row, TOML with a `[[scan]]` table
per scan, or JSON): `id,scan,traj` and optionally `b1_scan_a,b1_scan_2a,vials,vial_mask,labels,receive_reference`;
relative paths are relative to the manifest. Every scan runs `pipeline.run.process_scan` with the
same `RunOptions` (all reconstruction, B1 and quantification options). Each scan's results go to
`OUTROOT/<id>/`, with its log in `OUTROOT/<id>/log.txt`;
`OUTROOT/summary.csv` has `id,status,seconds,message` with status ok | failed | skipped.

Resuming: a scan whose folder holds a `done.json` whose fingerprint (the SHA-256 of every input
file, the options and the toolkit version) matches is skipped. `done.json` is written last and
every output atomically, so an interrupted batch (SIGINT, SIGTERM) leaves either a finished scan or
one that is redone on the next run, never a half-written file that passes for a result.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.atomic import ensure_writable_dir, remove_stale, write_text_atomic
from ..core.memory import PlanMemory, available_bytes, recon_stage_bytes
from ..errors import InputError
from ..export.bids import bids_dir, write_dataset_description
from ..io.twix.describe import describe
from ..nufft.planning import choose_plan
from ..provenance import RedactingFilter, command_line, redact_paths, reduced_paths, sha256_file
from ..recon.coils import compression_plan, maps_rank
from . import workers
from .config import PATH_FIELDS, Job, RunOptions, read_manifest
from .run import process_scan
from .workers import Result, apply_thread_limit, run_dask, run_pool

LAYOUTS = ("flat", "bids")

log = logging.getLogger(__name__)

def fingerprint(job: Job, options: RunOptions) -> str:
    """SHA-256 over the inputs' checksums, the options and the toolkit version."""
    h = hashlib.sha256()
    h.update(__version__.encode())
    h.update(json.dumps(options.to_dict(), sort_keys=True, default=str).encode())
    for f in PATH_FIELDS:
        p = getattr(job, f)
        h.update(f"{f}={sha256_file(p) if p else ''};".encode())
    return h.hexdigest()


def run_job(job: Job, outroot: str, options: RunOptions, layout: str = "flat") -> Result:
    """Process one scan into OUTROOT/<id>/ (runs in a worker). Never raises: failures are results.

    A pool worker that receives SIGTERM while in here unwinds the job (removing its temporary
    files) and then ends its process, so it cannot go on with another queued scan."""
    try:
        return _run_job(job, outroot, options, layout)
    finally:
        if workers.TERMINATED:
            os._exit(128 + signal.SIGTERM)


class _QuietFileHandler(logging.FileHandler):
    """A scan's log.txt: a record that cannot be written (full disk) is dropped, not printed
    with a traceback on stderr; the scan's own error says what went wrong."""

    def handleError(self, record) -> None:  # noqa: N802 - logging API
        pass


def job_dirs(outroot: str | os.PathLike, job: Job, layout: str = "flat") -> tuple[Path, Path]:
    """(work folder: log, done.json, lock; output folder) of a scan. flat: both OUTROOT/<id>/;
    bids: results in sub-<id>[/ses-<ses>]/anat, the rest in OUTROOT/logs/<id>/ (in .bidsignore)."""
    workdir = Path(outroot) / job.id if layout == "flat" else Path(outroot) / "logs" / job.id
    outdir = workdir if layout == "flat" else bids_dir(outroot, job.subject or job.id, job.session)
    return workdir, outdir


def _run_job(job: Job, outroot: str, options: RunOptions, layout: str = "flat") -> Result:
    apply_thread_limit()
    t0 = time.perf_counter()
    workdir, outdir = job_dirs(outroot, job, layout)
    try:
        for d in {workdir, outdir}:
            d.mkdir(parents=True, exist_ok=True)
        lock = scan_lock(workdir)
    except OSError as exc:
        return Result(job.id, "failed", 0.0, f"cannot use {workdir}: {exc.strerror or exc}")
    if lock is None:
        return Result(job.id, "skipped", 0.0, "another batch is processing this scan")
    try:
        return _run_locked(job, Path(outroot), workdir, outdir, options, t0, layout)
    finally:
        os.close(lock)


def scan_lock(outdir: Path) -> int | None:
    """Take the scan's lock `OUTROOT/<id>/.lock` (an exclusive `flock`, released by the kernel when
    the process ends, even by SIGKILL) and write this process's id into it; None when another
    process holds it. Returns the open descriptor, to be closed when the scan is done."""
    fd = os.open(outdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no flock (Windows): no cross-batch lock
        pass
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(outroot: str | os.PathLike, job_id: str, layout: str = "flat") -> int | None:
    """The process id written into an unfinished scan's lock file (the last process that started
    it); None for a finished scan (its result may have been lost with a worker that died later)."""
    workdir = Path(outroot) / job_id if layout == "flat" else Path(outroot) / "logs" / job_id
    if (workdir / "done.json").exists():
        return None
    try:
        return int((workdir / ".lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _run_locked(job: Job, outroot: Path, workdir: Path, outdir: Path, options: RunOptions, t0: float,
                layout: str) -> Result:
    for d in {workdir, outdir}:
        remove_stale(d)  # temporary files and staging folders of a worker killed mid-write
    try:
        handler = _QuietFileHandler(workdir / "log.txt", mode="a")
    except OSError as exc:
        return Result(job.id, "failed", 0.0, f"cannot write {workdir / 'log.txt'}: {exc.strerror or exc}")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if options.output.reduce_paths:  # folders of inputs often carry the subject's name
        handler.addFilter(RedactingFilter())
    root = logging.getLogger("na23recon")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        missing = [p for p in job.inputs() if not Path(p).is_file()]
        if missing:
            raise InputError(f"input not found: {missing[0]}")
        fp = fingerprint(job, options)
        done = workdir / "done.json"
        if done.exists():
            try:
                prev = json.loads(done.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                prev = {}
            if not isinstance(prev, dict):
                prev = {}
            if prev.get("fingerprint") == fp and all(Path(p).exists() for p in prev.get("outputs", {}).values()):
                log.info("%s: unchanged since %s, skipped", job.id, prev.get("finished"))
                return Result(job.id, "skipped", 0.0, "outputs match inputs and options", prev.get("outputs", {}))
            done.unlink()
        log.info("%s: start", job.id)
        outputs = process_scan(job, outdir, options, layout=layout,
                               dicom_dir=None if layout == "flat" else Path(outroot) / "dicom" / job.id)
        write_text_atomic(done, json.dumps({
            "id": job.id, "fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": {k: str(v) for k, v in outputs.items()}, "options": options.to_dict()}, indent=2) + "\n")
        secs = time.perf_counter() - t0
        log.info("%s: ok in %.1f s", job.id, secs)
        return Result(job.id, "ok", secs, "", {k: str(v) for k, v in outputs.items()})
    except Exception as exc:  # one scan's failure never stops the others
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if options.output.reduce_paths:
            msg = redact_paths(msg)
        if not isinstance(exc, InputError):
            msg = f"{type(exc).__name__}: {msg}"
            log.exception("%s: internal error", job.id)
        else:
            log.error("%s: %s", job.id, msg)
        return Result(job.id, "failed", time.perf_counter() - t0, msg)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def refuse_inputs_in_outputs(jobs: list[Job], outroot: Path, manifest: Path) -> None:
    """InputError when an input lies where the batch writes: inside OUTROOT/<id>/ of a scan, or
    OUTROOT/summary.csv (the manifest included)."""
    root = outroot.resolve()
    ids = {j.id for j in jobs}
    for j in jobs:
        for p in [manifest, *j.inputs()]:
            rp = Path(p).resolve()
            try:
                rel = rp.relative_to(root)
            except ValueError:
                continue
            if rel.parts and (rel.parts[0] in ids and len(rel.parts) > 1 or rel.as_posix() == "summary.csv"):
                raise InputError(f"input {p} lies inside OUTROOT where the batch writes ({rel.parts[0]}): "
                                 f"move it or choose another OUTROOT")


def _scan_dims(path: str) -> tuple[int, int, int, int | None]:
    """(ncoil, samples per echo, echoes, protocol matrix) from a twix header without reading the
    samples; from the file size (complex64 samples, 8 channels assumed) when it cannot be read."""
    p = Path(path)
    if p.suffix.lower() not in (".h5", ".mrd") and p.is_file():
        try:
            meas = [m for m in describe(p)["measurements"] if m.get("dims")]
            if meas:
                d, mat = meas[-1]["dims"], meas[-1].get("matrix")
                return (int(d["ncoil"]), int(d["nreadout"]) * int(d["nsample"]), int(d["necho"]),
                        int(mat[0]) if mat else None)
        except (InputError, OSError, KeyError, TypeError, ValueError) as exc:
            log.debug("memory estimate: no header dims for %s (%s)", path, exc)
    size = p.stat().st_size if p.exists() else 0
    return 8, max(1, size // (8 * 8)), 1, None


def estimate_job_bytes(job: Job, options: RunOptions) -> int:
    """Peak memory of one scan's reconstruction by the stage model (`core.memory.recon_stage_bytes`):
    coils, samples and echoes from the scan's header, the grids the NUFFT plans would choose
    (`nufft.planning.choose_plan`: upsampling 2 or 1.25, single or double precision) and the
    coils the solver would run on (`recon.coils.compression_plan`), plus the interpreter."""
    ropt = options.recon
    ncoil, points, necho, acq_matrix = _scan_dims(job.scan)
    n = int(ropt.matrix or acq_matrix or 96)
    shape = (n, n, n)
    necho = 1 if ropt.echo is not None else necho
    nv, _ = compression_plan(ncoil, ropt.coil_compress if not isinstance(ropt.coil_compress, int)
                             else min(ropt.coil_compress, ncoil))
    nsolve = nv or maps_rank(ncoil) or ncoil
    plan = choose_plan(ropt.eps, shape, points, np.complex64)
    pm = PlanMemory(points, 3, plan.grid_shape, plan.work_dtype.itemsize, plan.width)
    psf = None
    if ropt.method != "adjoint":
        big = tuple(2 * s for s in shape)
        pc = choose_plan(min(ropt.eps, 1e-4), big, points, np.complex64)
        psf = PlanMemory(points, 3, pc.grid_shape, pc.work_dtype.itemsize, pc.width, stored_weights=False)
    stages = recon_stage_bytes(shape, points, ncoil, ropt.method, pm, psf, ncoil_solved=nsolve,
                               necho=necho)
    return max(stages.values()) + 300 * 2**20


def plan_workers(jobs: list[Job], options: RunOptions, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Worker and thread counts: requested ones, capped by the jobs, the cores and the free memory."""
    ncpu = os.cpu_count() or 1
    w = workers or max(1, ncpu // (threads or 1))
    w = max(1, min(w, len(jobs)))
    per_job = max(estimate_job_bytes(j, options) for j in jobs)
    cap = max(1, int(available_bytes() * 0.8 // per_job))
    if cap < w:
        log.warning("memory allows %d worker(s) of ~%.1f GB each; using %d instead of %d", cap, per_job / 2**30, cap, w)
        w = cap
    t = threads or max(1, ncpu // w)
    return w, t


def write_summary(outroot: Path, results: list[Result]) -> Path:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["id", "status", "seconds", "message"])
    for r in results:
        wr.writerow([r.id, r.status, f"{r.seconds:.2f}", r.message])
    path = outroot / "summary.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def _check_bids_labels(jobs: list[Job]) -> None:
    """InputError for labels BIDS refuses or two scans with one subject and session."""
    seen: dict[tuple, str] = {}
    for j in jobs:
        key = (j.subject or j.id, j.session)
        bids_dir(".", *key)  # checks the labels
        if key in seen:
            raise InputError(f"scans {seen[key]} and {j.id} have the same BIDS subject and session {key}: "
                             "give each a session")
        seen[key] = j.id


class _Interrupted(Exception):
    pass


def run_batch(manifest: str | os.PathLike, outroot: str | os.PathLike, options: RunOptions | None = None,
              workers: int | None = None, threads_per_worker: int | None = None, dask: str | None = None,
              progress: bool | None = None, on_result: Callable[[Result], None] | None = None,
              layout: str = "flat") -> list[Result]:
    """Run every scan of `manifest`; write OUTROOT/summary.csv; return the results in manifest order.

    dask: None for a local process pool, 'local' for a dask.distributed LocalCluster, or a scheduler
    address 'tcp://HOST:PORT'. layout: 'flat' (OUTROOT/<id>/) or 'bids' (BIDS-style derivatives,
    `export.bids`; a manifest's subject and session columns name them). On SIGINT or SIGTERM the
    running scans are stopped, unfinished ones are recorded as skipped ('interrupted') and
    KeyboardInterrupt is raised after the summary.
    """
    jobs = read_manifest(manifest)
    options = options or RunOptions()
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    refuse_inputs_in_outputs(jobs, Path(outroot), Path(manifest))
    outroot = ensure_writable_dir(outroot)
    if layout == "bids":
        _check_bids_labels(jobs)
        with reduced_paths(options.output.reduce_paths):
            write_dataset_description(outroot, command_line())
    w, t = plan_workers(jobs, options, workers, threads_per_worker)
    log.info("batch: %d scan(s), %d worker(s) x %d thread(s)%s", len(jobs), w, t, f", dask {dask}" if dask else "")
    results: dict[str, Result] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="scan", disable=not (progress if progress is not None else sys.stderr.isatty()))

    def record(r: Result) -> None:
        results[r.id] = r
        bar.update(1)
        bar.set_postfix_str(f"{r.id}: {r.status}")
        if on_result:
            on_result(r)

    # both signals get our own handler, whatever a library imported on the way did to SIGINT's
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_term(signum, frame):
        raise _Interrupted()

    interrupted = False
    try:
        for s in old_handlers:
            signal.signal(s, _on_term)
    except ValueError:  # not the main thread: no signal handling
        old_handlers = {}
    try:
        if dask:
            run_dask(functools.partial(run_job, layout=layout), jobs, outroot, options, dask, w, t, record)
        else:
            run_pool(functools.partial(run_job, layout=layout), jobs, outroot, options, w, t, record,
                     holder=lambda i: lock_holder(outroot, i, layout))
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        bar.close()
        ordered = [results.get(j.id) or Result(j.id, "skipped", 0.0, "interrupted" if interrupted else "not run")
                   for j in jobs]
        write_summary(outroot, ordered)  # an OutputError (full disk) names summary.csv
    if interrupted:
        raise KeyboardInterrupt
    return ordered


