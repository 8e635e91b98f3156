"""The HTML QC report of one processed scan: a single self-contained file."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..core.atomic import write_text_atomic
from ..core.nifti import sidecar_path
from .figures import delay_text

__all__ = ["html_report"]

#: Sidecar blocks summarised under each image.
SIDECAR_KEYS = ("acquisition", "recon", "quant", "b1", "calibration")


def html_report(path: str | os.PathLike, title: str, outputs: Mapping[str, str | os.PathLike]) -> str:
    """A self-contained HTML QC report: every PNG among `outputs` (and beside each NIfTI) embedded
    as base64 data, each NIfTI's sidecar summarised. All text is HTML-escaped. Written atomically;
    returns the path (str)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
              "pre{background:#f4f4f4;padding:6px;font-size:12px}</style>"), f"<h1>{html.escape(title)}</h1>"]
    seen = set()
    for name, p in outputs.items():
        p = Path(p)
        pngs = [p] if p.suffix == ".png" else []
        if p.suffix == ".csv" and p.exists():
            parts.append(f"<h2>{html.escape(str(name))}: {html.escape(p.name)}</h2>" + _csv_table(p))
        if p.name.endswith((".nii.gz", ".nii")):
            side = sidecar_path(p)
            pngs += sorted(p.parent.glob(side.stem + "*.png"))
            parts.append(f"<h2>{html.escape(str(name))}: {html.escape(p.name)}</h2>")
            if side.exists():
                meta = json.loads(side.read_text())
                keep = {k: meta[k] for k in SIDECAR_KEYS if k in meta}
                delay = (meta.get("recon") or {}).get("gradient_delay")
                if isinstance(delay, dict) and delay.get("applied_us"):
                    parts.append(f"<p>{html.escape(delay_text(delay))}</p>")
                parts.append(f"<pre>{html.escape(json.dumps(keep, indent=1)[:4000])}</pre>")
        for png in pngs:
            if png in seen or not png.exists():
                continue
            seen.add(png)
            b64 = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(png.name)}</h3><img src='data:image/png;base64,{b64}'>")
    write_text_atomic(path, "\n".join(parts) + "\n")
    return str(path)


def _csv_table(path: Path, max_rows: int = 300) -> str:
    """An HTML table of a CSV file (the ROI table), every cell escaped."""
    rows = list(csv.reader(path.read_text().splitlines()))[:max_rows + 1]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table border='1' style='border-collapse:collapse;font-size:12px'><tr>{head}</tr>{body}</table>"
