"""Reports: QC figures (`report.figures`, PNG through matplotlib's object API on an Agg canvas,
never pyplot) and the self-contained HTML QC report (`report.html`).

The names below are loaded on first use, so `import na23recon.report.html` does not import
matplotlib.
"""

from __future__ import annotations

_FIGURES = ("montage_png", "tsc_png", "calibration_png", "trajectory_png")

__all__ = ["calibration_png", "html_report", "montage_png", "trajectory_png", "tsc_png"]


def __getattr__(name: str):
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    if name == "html_report":
        from .html import html_report

        return html_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
