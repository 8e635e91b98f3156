"""A summary of a twix file without reading its samples: the `na23recon info` command."""

from __future__ import annotations

import os

from ...errors import InputError
from .header import acquisition_from_header, split_header
from .layout import image_mask, open_layout, readout_keys, walk
from .slicedata import checked_acquisition

UNKNOWN = "?"


def describe(path: str | os.PathLike) -> dict:
    """JSON-ready summary of a twix file without reading its samples.

    {"file", "version" ("VB" | "VD/VE"), "measurements": [{index, readouts, image_readouts,
    noise_readouts, complete, problem?, dims?: {nrep, necho, ncoil, nreadout, nsample}, and the
    `Acquisition.to_dict()` fields (nucleus, b0_T, larmor_hz, te_ms, tr_ms, flip_deg, dwell_us,
    geometry, ref_voltage, coil_names, software_version, protocol_name) plus fov_mm and matrix;
    unknown values null}]}. A header that cannot be read gives `problem` instead of those fields.
    """
    lay = open_layout(path)
    out = {"file": str(path), "version": "VD/VE" if lay.is_ve else "VB", "measurements": []}
    for m in lay.meas:
        hdr, hdr_len = split_header(lay.mm, m.offset, m.length)
        try:
            acq = acquisition_from_header(hdr)
        except InputError as exc:
            acq, entry = None, {"index": m.index, "problem": str(exc)}
        ro, walk_problem = None, ""
        try:
            ro = walk(lay, m, hdr_len)
            image, noise = image_mask(ro.mdh)
        except InputError as exc:
            ro, walk_problem = None, str(exc)
        if acq is not None:
            if ro is not None:
                acq = checked_acquisition(acq, ro.mdh[image], str(path))
            entry = {"index": m.index, **acq.to_dict(),
                     "fov_mm": None if acq.fov_mm is None else list(acq.fov_mm),
                     "matrix": None if acq.matrix is None else list(acq.matrix)}
        if ro is None:
            entry.update(complete=False, problem=walk_problem)
        else:
            entry.update(readouts=int(ro.pos.size), image_readouts=int(image.sum()),
                         noise_readouts=int(noise.sum()), complete=True)
            if image.any():
                try:
                    img = ro.mdh[image]
                    _rep, eco, rdo, nrep, _nave = readout_keys(img["Counter"])
                    entry["dims"] = {"nrep": nrep, "necho": int(eco.max()) + 1,
                                     "ncoil": int(img["UsedChannels"].max()), "nreadout": int(rdo.max()) + 1,
                                     "nsample": int(img["SamplesInScan"].max())}
                except InputError as exc:
                    entry.update(complete=False, problem=str(exc))
        out["measurements"].append(entry)
    return out


def _g(value, scale: float = 1.0, fmt: str = "g") -> str:
    """A number as text, UNKNOWN when it is None."""
    return UNKNOWN if value is None else format(value * scale, fmt)


def _triple(values, fmt: str = "g") -> str:
    return UNKNOWN if values is None else " x ".join(format(v, fmt) for v in values)


def format_description(d: dict) -> str:
    """Readable text of `describe`'s summary; unknown header values are shown as '?'."""
    lines = [f"{d['file']}  (twix {d['version']}, {len(d['measurements'])} measurement(s))"]
    for m in d["measurements"]:
        lines.append(f"measurement {m['index']}: {m.get('protocol_name') or '-'}"
                     f"{'' if m.get('complete') else '  [INCOMPLETE: ' + m.get('problem', '') + ']'}")
        if "nucleus" in m:
            lines.append(f"  nucleus {m['nucleus'] or UNKNOWN} at {_g(m['b0_T'])} T, "
                         f"{_g(m['larmor_hz'], 1e-6, '.4f')} MHz")
            te = UNKNOWN if m["te_ms"] is None else ", ".join(f"{t:g}" for t in m["te_ms"])
            lines.append(f"  TE {te} ms, TR {_g(m['tr_ms'])} ms, flip {_g(m['flip_deg'])} deg, "
                         f"dwell {_g(m['dwell_us'])} us")
            lines.append(f"  FOV {_triple(m['fov_mm'])} mm, matrix {_triple(m['matrix'], 'd')}")
            lines.append(f"  coils ({len(m['coil_names'])}): {', '.join(m['coil_names']) or '-'}")
        if "readouts" in m:
            lines.append(f"  readouts {m['readouts']} (image {m['image_readouts']}, noise {m['noise_readouts']})")
        if "dims" in m:
            lines.append("  data (nrep, necho, ncoil, nreadout, nsample) = ({nrep}, {necho}, {ncoil}, "
                         "{nreadout}, {nsample})".format(**m["dims"]))
        if "problem" in m and m.get("complete", True):
            lines.append(f"  problem: {m['problem']}")
    return "\n".join(lines)
