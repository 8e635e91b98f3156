"""Many scans: a manifest run on a local process pool (default) or on a Dask cluster.

Manifest (CSV with a header row, or TOML with a `[[scan]]` table per scan): `id,scan,traj` and
optionally `b1_scan_a,b1_scan_2a,vials,vial_mask,labels`; relative paths are relative to the
manifest. Each scan's results go to `OUTROOT/<id>/`, with its log in `OUTROOT/<id>/log.txt`;
`OUTROOT/summary.csv` has `id,status,seconds,message` with status ok | failed | skipped.

Resuming: a scan whose folder holds a `done.json` whose fingerprint (the SHA-256 of every input
file, the options and the toolkit version) matches is skipped. `done.json` is written last and
every output atomically, so an interrupted batch (SIGINT, SIGTERM) leaves either a finished scan or
one that is redone on the next run, never a half-written file that passes for a result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import InputError
from .io.atomic import remove_stale, write_text_atomic
from .jobs import FIELDS, ID_RE, PATH_FIELDS, Job, load_toml
from .provenance import sha256_file

log = logging.getLogger(__name__)

@dataclass
class Result:
    id: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    message: str = ""
    outputs: dict = field(default_factory=dict)


def read_manifest(path: str | os.PathLike) -> list[Job]:
    """Parse a CSV or TOML manifest into jobs; a malformed manifest is an InputError.

    Files that do not exist are not refused here: that scan fails on its own and the others run.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    if path.suffix.lower() == ".toml":
        rows = load_toml(path, "manifest").get("scan", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(f"manifest {path.name}: expected [[scan]] tables")
    else:
        text = path.read_text(errors="replace")
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
    jobs, seen = [], set()
    for n, row in enumerate(rows, start=2):
        if not any(str(v).strip() for v in row.values()):
            continue
        jid = str(row.get("id", "")).strip()
        if not ID_RE.match(jid):
            raise InputError(f"manifest {path.name} row {n}: id {jid!r} must be letters, digits, '_', '-', '.'")
        if jid in seen:
            raise InputError(f"manifest {path.name} row {n}: id {jid!r} appears twice")
        seen.add(jid)
        vals = {}
        for f in PATH_FIELDS:
            v = str(row.get(f) or "").strip()
            vals[f] = str((path.parent / v).resolve()) if v else None
        if not vals["scan"] or not vals["traj"]:
            raise InputError(f"manifest {path.name} row {n} ({jid}): scan and traj are required")
        jobs.append(Job(id=jid, **vals))
    if not jobs:
        raise InputError(f"manifest {path.name} lists no scans")
    return jobs


def fingerprint(job: Job, options: dict) -> str:
    """SHA-256 over the inputs' checksums, the options and the toolkit version."""
    h = hashlib.sha256()
    h.update(__version__.encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    for f in PATH_FIELDS:
        p = getattr(job, f)
        h.update(f"{f}={sha256_file(p) if p else ''};".encode())
    return h.hexdigest()


def run_job(job: Job, outroot: str, options: dict) -> Result:
    """Process one scan into OUTROOT/<id>/ (runs in a worker). Never raises: failures are results.

    A pool worker that receives SIGTERM while in here unwinds the job (removing its temporary
    files) and then ends its process, so it cannot go on with another queued scan."""
    try:
        return _run_job(job, outroot, options)
    finally:
        if _TERMINATED:
            os._exit(128 + signal.SIGTERM)


def _run_job(job: Job, outroot: str, options: dict) -> Result:
    from .pipeline import process_scan

    _apply_thread_limit()
    t0 = time.perf_counter()
    outdir = Path(outroot) / job.id
    outdir.mkdir(parents=True, exist_ok=True)
    remove_stale(outdir)  # temporary files and staging folders of a worker killed mid-write
    handler = logging.FileHandler(outdir / "log.txt", mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("na23recon")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        missing = [p for p in job.inputs() if not Path(p).is_file()]
        if missing:
            raise InputError(f"input not found: {missing[0]}")
        fp = fingerprint(job, options)
        done = outdir / "done.json"
        if done.exists():
            try:
                prev = json.loads(done.read_text())
            except json.JSONDecodeError:
                prev = {}
            if prev.get("fingerprint") == fp and all(Path(p).exists() for p in prev.get("outputs", {}).values()):
                log.info("%s: unchanged since %s, skipped", job.id, prev.get("finished"))
                return Result(job.id, "skipped", 0.0, "outputs match inputs and options", prev.get("outputs", {}))
            done.unlink()
        log.info("%s: start", job.id)
        outputs = process_scan(job, outdir, options)
        write_text_atomic(done, json.dumps({
            "id": job.id, "fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": {k: str(v) for k, v in outputs.items()}, "options": options}, indent=2) + "\n")
        secs = time.perf_counter() - t0
        log.info("%s: ok in %.1f s", job.id, secs)
        return Result(job.id, "ok", secs, "", {k: str(v) for k, v in outputs.items()})
    except Exception as exc:  # one scan's failure never stops the others
        msg = " ".join(str(exc).split()) or type(exc).__name__
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


_THREAD_VARS = ("NA23RECON_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(threads: int, ignore_sigint: bool = True) -> None:
    """Limit a worker process's threads so that workers x threads fits the machine.

    The environment covers libraries loaded later; threadpoolctl caps the BLAS and OpenMP pools
    already loaded (a spawned worker re-imports the parent's main module, numpy included, before
    this runs: unlimited, OpenBLAS's threads made two workers run their solvers ~2x slower)."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
        # the parent stops workers with SIGTERM: unwind so that temporary files are removed
        signal.signal(signal.SIGTERM, _exit_on_term)


_TERMINATED = False


def _exit_on_term(signum, frame) -> None:
    """SIGTERM in a pool worker: unwind the running job (its temporary files are removed on the
    way out), then `run_job` ends the process; the pool would otherwise catch the SystemExit and
    go on with the next queued scan."""
    global _TERMINATED
    _TERMINATED = True
    raise SystemExit(128 + signum)


def _apply_thread_limit() -> None:
    """numba's thread count is per calling thread: set it in the thread that runs the job."""
    n = os.environ.get("NA23RECON_THREADS")
    if not n:
        return
    try:
        import numba

        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # numba's threading layer refuses: keep its default
        pass


def estimate_job_bytes(job: Job, options: dict) -> int:
    """Rough peak memory of one scan: k-space a few times over plus the NUFFT grids."""
    scan_bytes = Path(job.scan).stat().st_size if Path(job.scan).exists() else 0
    n = int(options.get("matrix") or 96)
    grid = (2 * n) ** 3 * 8  # one complex64 grid at upsampling 2 (and the Toeplitz 2N grid)
    return 3 * scan_bytes + 6 * grid + 300 * 2**20


def available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def plan_workers(jobs: list[Job], options: dict, workers: int | None, threads: int | None) -> tuple[int, int]:
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


class _Interrupted(Exception):
    pass


def run_batch(manifest: str | os.PathLike, outroot: str | os.PathLike, options: dict | None = None,
              workers: int | None = None, threads_per_worker: int | None = None, dask: str | None = None,
              progress: bool | None = None, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every scan of `manifest`; write OUTROOT/summary.csv; return the results in manifest order.

    dask: None for a local process pool, 'local' for a dask.distributed LocalCluster, or a scheduler
    address 'tcp://HOST:PORT'. On SIGINT or SIGTERM the running scans are stopped, unfinished ones
    are recorded as skipped ('interrupted') and KeyboardInterrupt is raised after the summary.
    """
    jobs = read_manifest(manifest)
    options = dict(options or {})
    from .io.atomic import ensure_writable_dir

    outroot = ensure_writable_dir(outroot)
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

    old_term = signal.getsignal(signal.SIGTERM)

    def _on_term(signum, frame):
        raise _Interrupted()

    interrupted = False
    try:
        signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread: no signal handling
        old_term = None
    try:
        if dask:
            _run_dask(jobs, outroot, options, dask, w, t, record)
        elif w == 1 and options.get("in_process"):
            for j in jobs:
                record(run_job(j, str(outroot), options))
        else:
            _run_pool(jobs, outroot, options, w, t, record)
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
        ordered = [results.get(j.id) or Result(j.id, "skipped", 0.0, "interrupted" if interrupted else "not run")
                   for j in jobs]
        write_summary(outroot, ordered)
    if interrupted:
        raise KeyboardInterrupt
    return ordered


def _run_pool(jobs, outroot, options, w, t, record) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # numba's threading layer is not fork-safe
    ex = ProcessPoolExecutor(max_workers=w, mp_context=ctx, initializer=_init_worker, initargs=(t,))
    futs = {}
    try:
        futs = {ex.submit(run_job, j, str(outroot), options): j for j in jobs}
        pending = set(futs)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                j = futs[f]
                try:
                    record(f.result())
                except Exception as exc:  # the worker died (killed, out of memory)
                    record(Result(j.id, "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}"))
    except BaseException:
        procs = list(getattr(ex, "_processes", {}).values())
        for p in procs:
            p.terminate()
        for p in procs:  # let each worker unwind (remove its temporary files) before we go on
            p.join(timeout=10)
        # wait for the pool's manager thread to see the dead workers, or it fails at interpreter exit
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_dask(jobs, outroot, options, address, w, t, record) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install 'na23recon[dask]'") from None
    if not log.isEnabledFor(logging.INFO):
        for name in ("distributed", "tornado", "bokeh"):
            logging.getLogger(name).setLevel(logging.ERROR)
    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR if not log.isEnabledFor(logging.INFO) else logging.INFO)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout="10s")
        except Exception as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    futs = []
    try:
        client.run(_init_worker, t, False)
        futs = [client.submit(run_job, j, str(outroot), options, key=f"na23recon-{j.id}-{time.time_ns()}", pure=False)
                for j in jobs]
        by_key = {f.key: j for f, j in zip(futs, jobs)}
        for f in as_completed(futs):
            try:
                record(f.result())
            except Exception as exc:
                record(Result(by_key[f.key].id, "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}"))
    except BaseException:
        for f in futs:
            f.cancel()
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
