"""How many threads the compute kernels use: NA23RECON_THREADS if set, else every core.

The batch runner sets NA23RECON_THREADS in each worker process so that workers x threads fits the
machine (`batch.py`); a single scan uses all cores.
"""

from __future__ import annotations

import os


def default_threads() -> int:
    """Threads for the NUFFT's spreading/interpolation pool and scipy.fft's `workers`."""
    env = os.environ.get("NA23RECON_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return os.cpu_count() or 1
