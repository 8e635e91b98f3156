"""Memory estimates before allocating: refuse a job whose arrays cannot fit, with the figure,
instead of swapping or dying in the allocator (or the OOM killer) minutes later."""

from __future__ import annotations

import os

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
