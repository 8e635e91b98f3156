"""Worker processes of a batch: thread limits, clean SIGTERM, the end of workers whose parent
died, the process-pool (restarted after a worker is killed) and Dask runners."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What became of one scan of a batch (a row of summary.csv)."""

    id: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    message: str = ""
    outputs: dict = field(default_factory=dict)


def failed(job_id: str, exc: BaseException) -> Result:
    """The result of a job whose worker died (killed, out of memory)."""
    return Result(job_id, "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}")


_THREAD_VARS = ("NA23RECON_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


PDEATHSIG_GRACE_S = 2.0


def end_with_parent(expected_parent: int | None = None, sig: int = signal.SIGTERM, poll_s: float = 0.5) -> None:
    """Make this process end when its parent does (a SIGKILLed batch must not leave workers).

    On Linux the kernel sends `sig` when the parent dies (prctl PR_SET_PDEATHSIG; SIGTERM lets a
    pool worker unwind and remove its temporary files); on every system a daemon thread polls
    the parent's id and, once it changed, ends the process after a short grace period (also the
    fallback when the signal cannot unwind a thread busy in compiled code). `expected_parent`:
    the process id the parent had (if it is no longer our parent, it died before this ran)."""
    parent = os.getppid()
    if expected_parent is not None and parent != expected_parent:  # died before we got here
        os._exit(128 + int(sig))
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        try:
            os.kill(os.getpid(), sig)
        except OSError:
            pass
        time.sleep(PDEATHSIG_GRACE_S)
        os._exit(128 + int(sig))

    threading.Thread(target=watch, name="na23recon-parent-watch", daemon=True).start()


def init_worker(threads: int, ignore_sigint: bool = True, watch_parent: bool | int = True) -> None:
    """Limit a worker process's threads so that workers x threads fits the machine.

    The environment covers libraries loaded later; threadpoolctl caps the BLAS and OpenMP pools
    already loaded (a spawned worker re-imports the parent's main module, numpy included, before
    this runs: unlimited, OpenBLAS's threads made two workers run their solvers ~2x slower)."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    if watch_parent is not False:  # True: any parent; an int: the parent's expected process id
        end_with_parent(None if watch_parent is True else int(watch_parent))
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
        # the parent stops workers with SIGTERM: unwind so that temporary files are removed
        signal.signal(signal.SIGTERM, _exit_on_term)


TERMINATED = False


def _exit_on_term(signum, frame) -> None:
    """SIGTERM in a pool worker: unwind the running job (its temporary files are removed on the
    way out), then `run_job` ends the process; the pool would otherwise catch the SystemExit and
    go on with the next queued scan."""
    global TERMINATED
    TERMINATED = True
    raise SystemExit(128 + signum)


def apply_thread_limit() -> None:
    """numba's thread count is per calling thread: set it in the thread that runs the job."""
    n = os.environ.get("NA23RECON_THREADS")
    if not n:
        return
    try:
        import numba

        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # numba's threading layer refuses: keep its default
        pass


def run_pool(run_job: Callable, jobs, outroot, options, w: int, t: int, record: Callable,
             holder: Callable[[str], int | None] | None = None) -> None:
    """Run `run_job(job, outroot, options)` for every job on `w` spawned processes of `t` threads;
    `record(result)` as each finishes.

    A worker that dies (SIGKILL, the OOM killer) breaks the pool: its job is recorded failed
    ('worker died'), found by `holder(job_id)` (the process id the job wrote when it started)
    among the dead workers; the pool is restarted and every other unfinished job is run again,
    once. Without `holder`, or when no dead worker can be matched, every unfinished job is retried once.
    """
    from concurrent.futures.process import BrokenProcessPool

    attempts: dict[str, int] = {}
    todo = list(jobs)
    while todo:
        for j in todo:
            attempts[j.id] = attempts.get(j.id, 0) + 1
        unfinished, dead = _pool_round(run_job, todo, outroot, options, w, t, record)
        if not unfinished:
            return
        died = {j.id for j in unfinished if holder is not None and holder(j.id) in dead}
        todo = []
        for j in unfinished:
            if j.id in died or attempts[j.id] >= 2:
                why = f"exit code {dead[holder(j.id)]}" if j.id in died else "the pool broke twice"
                record(failed(j.id, BrokenProcessPool(f"the worker process ended abruptly ({why})")))
            else:
                todo.append(j)
        if todo:
            log.warning("batch: a worker died; restarting the pool for %d unfinished scan(s)", len(todo))


def _pool_round(run_job: Callable, jobs, outroot, options, w: int, t: int, record: Callable):
    """One process pool over `jobs`: returns (jobs left unfinished by a broken pool, {pid: exit
    code} of the workers that died)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # numba's threading layer is not fork-safe
    ex = ProcessPoolExecutor(max_workers=min(w, len(jobs)), mp_context=ctx, initializer=init_worker,
                             initargs=(t, True, os.getpid()))
    procs: dict = {}
    unfinished = []
    try:
        futs = {ex.submit(run_job, j, str(outroot), options): j for j in jobs}
        pending = set(futs)
        while pending:
            procs.update(getattr(ex, "_processes", None) or {})
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                j = futs[f]
                try:
                    record(f.result())
                except BrokenProcessPool:
                    unfinished.append(j)
                except Exception as exc:  # the job could not be sent or its result not returned
                    record(failed(j.id, exc))
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
    # the workers that died; not those the broken pool itself stopped with SIGTERM afterwards
    dead = {}
    for pid, p in procs.items():
        code = p.exitcode
        if code is not None and code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            dead[pid] = code
    return unfinished, dead


def run_dask(run_job: Callable, jobs, outroot, options, address: str, w: int, t: int, record: Callable) -> None:
    """As `run_pool` on a dask.distributed cluster: 'local' (a LocalCluster of `w` processes) or a
    scheduler address."""
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
        # a LocalCluster's nannies run inside this process and its workers are our children: they
        # end with this process; a remote cluster's workers are left alone
        client.run(init_worker, t, False, os.getpid() if cluster is not None else False)
        futs = [client.submit(run_job, j, str(outroot), options, key=f"na23recon-{j.id}-{time.time_ns()}", pure=False)
                for j in jobs]
        by_key = {f.key: j for f, j in zip(futs, jobs)}
        for f in as_completed(futs):
            try:
                record(f.result())
            except Exception as exc:
                record(failed(by_key[f.key].id, exc))
    except BaseException:
        for f in futs:
            f.cancel()
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
