"""Memory estimates before allocating: refuse a job whose arrays cannot fit, with the figure,
instead of swapping or dying in the allocator (or the OOM killer) minutes later; and the memory
model of a reconstruction, stage by stage (`recon_stage_bytes`), that `pipeline.batch` uses to
choose its worker count. The model counts the arrays the code allocates (checked against the
peak RSS that `scripts/bench_scale.py` measures per stage)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def available_bytes() -> int:
    """Memory available to a new allocation: Linux MemAvailable (free + reclaimable cache), else
    the free physical pages, else 8 GiB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_fits(nbytes: float, what: str, fraction: float = 0.8) -> None:
    """InputError when `what` needs more than `fraction` of the available memory."""
    avail = available_bytes()
    if nbytes > fraction * avail:
        raise InputError(f"{what} needs about {gb(nbytes)} of memory, more than the {gb(fraction * avail)} "
                         f"this machine can give ({gb(avail)} available)")


# --------------------------------------------------------------------------- the memory model
C64 = 8  # bytes of a complex64 value


@dataclass(frozen=True)
class PlanMemory:
    """What a NUFFT plan holds and uses, from the plan's own choice (`Nufft.grid_shape`,
    `Nufft.work_dtype`, `Nufft.width`, or `nufft.planning.choose_plan` before it is made).

    points: M samples; ndim 2 or 3; grid_shape the oversampled grid; work_itemsize the bytes of
    one grid value (8 complex64, 16 when the plan runs complex64 data in double precision);
    width the kernel taps per axis; stored_weights whether per-point weights are kept.
    """
    points: int
    ndim: int
    grid_shape: tuple
    work_itemsize: int
    width: int
    stored_weights: bool = True

    @property
    def grid_bytes(self) -> int:
        """One oversampled grid in the working precision."""
        return int(np.prod(self.grid_shape)) * int(self.work_itemsize)

    @property
    def plan_bytes(self) -> int:
        """Held for the plan's life: float64 coordinates (own copy and grid units), the sort
        permutation, and the stored kernel weights and first-tap indices."""
        m, d = self.points, self.ndim
        held = m * d * 8 * 2 + m * 8
        if self.stored_weights:
            held += m * d * (self.width * 4 + 4)
        return int(held)


def recon_stage_bytes(shape: Sequence[int], points: int, ncoil: int, method: str, plan: PlanMemory,
                      psf_plan: PlanMemory | None = None, ncoil_solved: int | None = None, necho: int = 1,
                      coil_batch: int = 1) -> dict[str, int]:
    """Peak bytes of each reconstruction stage (the resident arrays of the stage plus what it
    allocates), for `ncoil` channels of `points` samples, images of `shape`.

    Stages: 'read' (k-space of every echo as read, and its whitened copy), 'adjoint' (coil images
    of one echo, a batch's grid and weighted samples), 'maps' (calibration and the maps at full
    resolution), 'kernel' (building the Toeplitz kernel: the psf plan's grid, the 2N psf and its
    FFT), 'solve' (maps, Toeplitz kernel and buffer, solver vectors). ncoil_solved: the (virtual)
    coils the solver runs on (compression or factored maps), default ncoil. Coils go through the
    transforms `coil_batch` at a time (`recon.operators`).
    """
    nvox = int(np.prod(tuple(shape)))
    ndim = len(tuple(shape))
    ks = ncoil * points * C64
    base = 2 * necho * ks + plan.plan_bytes + points * 4 * 3  # k-space (+ whitened copy), plan, weights
    batch = max(1, int(coil_batch))
    stages = {"read": int(base)}
    stages["adjoint"] = int(base + ncoil * nvox * C64 + batch * (plan.grid_bytes + points * C64 + nvox * C64))
    if method == "adjoint":
        return stages
    nv = int(ncoil_solved or ncoil)
    cal = ncoil * 32**ndim * C64 * 4
    maps = nv * nvox * C64
    stages["maps"] = int(base + cal + 3 * maps)
    big = 2**ndim * nvox
    psf = psf_plan.grid_bytes + psf_plan.plan_bytes if psf_plan is not None else big * 2 * C64
    stages["kernel"] = int(base + maps + psf + 2 * big * C64)
    vectors = (8 + ndim) * nvox * C64  # CG: x, r, p, Ap, b; PDHG: x, x+, grad, b and u (ndim images)
    stages["solve"] = int(base + maps + big * 4 + big * C64 + vectors + nv * points * C64 // max(necho, 1))
    return stages
