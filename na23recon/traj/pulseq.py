"""Pulseq sequence files both ways: the trajectory a `.seq` file plays, and a generated design as a `.seq`.

Pulseq (Layton et al., MRM 2017; Ravi et al., JOSS 2019 for pypulseq) is an open, vendor-neutral
sequence format. Its gradients are in Hz/m on the logical axes x, y, z that the scanner's
interpreter plays along the protocol's read, phase and slice directions, so the k-space of a
`.seq` file is in 1/m along image axes (read, phase, partition), this toolkit's unit, whatever the
nucleus (the gyromagnetic ratio is already inside the Hz/m).

`read_seq`: k at every ADC sample and each sample's time from its excitation (pypulseq's
`calculate_kspace`), one readout per ADC event. `match_scan` fits it to a scan: the ADC count
(readouts, or readouts x echoes x repetitions in acquisition order), the samples per readout
(the ADC's, or twice them for a readout oversampled by 2, whose k is interpolated at the
oversampled sample times) and the dwell are checked, with one clear error when they differ.
`write_seq`: a generated trajectory (`GradientDesign`) as a runnable sequence: non-selective hard
pulse, the readout gradients with the ADC at the design dwell, a spoiler, the TR, 23Na's gamma.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .. import GAMMA_BAR_NA23_HZ_PER_T
from ..core.atomic import atomic_path
from ..core.trajectory import Trajectory
from ..errors import InputError

log = logging.getLogger(__name__)

#: ADC dwell agreement between the .seq and the scan header (relative).
DWELL_RTOL = 1e-3


def _pypulseq():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pypulseq
    except ImportError:  # pragma: no cover - a dependency
        raise InputError("Pulseq files need the 'pypulseq' package (pip install pypulseq)") from None
    return pypulseq


@contextlib.contextmanager
def _quiet():
    """pypulseq prints and warns freely; keep it off the user's terminal (logged at debug)."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        yield
    if buf.getvalue().strip():
        log.debug("pypulseq: %s", buf.getvalue().strip()[:2000])


def read_seq(path: str | os.PathLike) -> Trajectory:
    """The trajectory of a Pulseq `.seq` file: k (nadc, nsample, 3) in 1/m, t (nadc, nsample) in s
    from each readout's excitation, meta: source, file name, ADC dwell and count, FOV (m) of the
    file's definitions when it gives one. InputError for an unreadable file, one without ADC
    events, or ADCs of different lengths."""
    pp = _pypulseq()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Pulseq file not found: {path}")
    seq = pp.Sequence()
    try:
        with _quiet():
            seq.read(str(path))
            k_adc, _, t_exc, _, t_adc = seq.calculate_kspace()
    except Exception as exc:  # pypulseq raises many kinds for a damaged file
        raise InputError(f"{path.name}: not a readable Pulseq file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    adcs = []
    for b in seq.block_events:
        adc = seq.get_block(b).adc
        if adc is not None:
            adcs.append((int(adc.num_samples), float(adc.dwell)))
    if not adcs:
        raise InputError(f"{path.name}: the sequence has no ADC events")
    lengths, dwells = {a[0] for a in adcs}, {round(a[1], 12) for a in adcs}
    if len(lengths) != 1 or len(dwells) != 1:
        raise InputError(f"{path.name}: ADC events differ (samples {sorted(lengths)}, dwell {sorted(dwells)} s): "
                         f"one trajectory needs readouts of one length")
    ns, dwell = adcs[0]
    nadc = len(adcs)
    k = np.asarray(k_adc, dtype=np.float64).T.reshape(nadc, ns, 3)
    t_abs = np.asarray(t_adc, dtype=np.float64).reshape(nadc, ns)
    t_exc = np.asarray(t_exc, dtype=np.float64)
    if t_exc.size:
        i = np.searchsorted(t_exc, t_abs[:, 0], side="right") - 1
        t = t_abs - np.where(i >= 0, t_exc[np.maximum(i, 0)], 0.0)[:, None]
    else:
        t = t_abs - t_abs[:, :1]
    meta = {"source": "pulseq", "file": path.name, "dwell_s": dwell, "nadc": nadc, "adc_samples": ns}
    fov = seq.definitions.get("FOV") if hasattr(seq, "definitions") else None
    if fov is not None and np.size(fov) == 3 and all(float(f) > 0 for f in np.ravel(fov)):
        meta.update({f"fov_{a}_m": float(f) for a, f in zip("xyz", np.ravel(fov))})
    return Trajectory(k=k, t=t, kind="pulseq", meta=meta)


def seq_fov_mm(traj: Trajectory) -> tuple[float, float, float] | None:
    """The FOV (mm) of a `.seq` file's definitions, or None."""
    if all(f"fov_{a}_m" in traj.meta for a in "xyz"):
        return tuple(float(traj.meta[f"fov_{a}_m"]) * 1e3 for a in "xyz")
    return None


def match_scan(traj: Trajectory, nreadout: int, nsample: int, necho: int = 1, nrep: int = 1,
               dwell_us: float | None = None, trust_seq_dwell: bool = False, source: str = ".seq") -> Trajectory:
    """Fit the trajectory of a `.seq` (`read_seq`) to a scan of (nreadout, nsample) readouts.

    ADC events: nreadout, or nrep x nreadout x necho in acquisition order (repetition slowest, echo
    fastest), of which the first repetition's first echo is kept (the others must play the same k
    within 1e-3 of kmax). Samples: the ADC's, or os x the ADC's (readout oversampling by os = 2):
    k at the oversampled times, (j + 0.5) dwell / os from the ADC start, by cubic interpolation of the
    ADC samples (exact on gradient plateaus). Dwell: the scan's (per sample) must be the ADC's / os
    within 0.1%, unless `trust_seq_dwell` (a Pulseq interpreter's placeholder protocol: warned).
    """
    nadc, ns = traj.shape
    k, t = traj.k, np.broadcast_to(traj.t, traj.shape)
    if nadc != nreadout:
        if nadc != nreadout * necho * nrep:
            raise InputError(f"{source} has {nadc} ADC events but the scan has {nreadout} readouts"
                             + (f" x {necho} echoes x {nrep} repetitions" if necho * nrep > 1 else ""))
        k4 = k.reshape(nrep, nreadout, necho, ns, 3)
        spread = float(np.max(np.abs(k4 - k4[:1, :, :1]))) / max(traj.kmax_per_m(), 1e-12)
        if spread > 1e-3:
            log.warning("%s: echoes/repetitions play different k (up to %.2g of kmax); using the first", source,
                        spread)
        k, t = k4[0, :, 0], t.reshape(nrep, nreadout, necho, ns)[0, :, 0]
    os_factor = nsample // ns if nsample % ns == 0 else 0
    if os_factor not in (1, 2):
        raise InputError(f"{source}: its ADCs have {ns} samples but the scan's readouts have {nsample} "
                         f"(neither equal nor oversampled by 2)")
    dwell_seq_us = float(traj.meta.get("dwell_s", 0.0)) * 1e6
    if dwell_us is not None and dwell_seq_us > 0:
        want = dwell_seq_us / os_factor
        if abs(dwell_us - want) > DWELL_RTOL * want:
            msg = (f"{source}: ADC dwell {dwell_seq_us:g} us"
                   f"{' / 2 (oversampled)' if os_factor == 2 else ''} but the scan header says {dwell_us:g} us")
            if not trust_seq_dwell:
                raise InputError(msg)
            log.warning("%s; the header is a Pulseq interpreter's placeholder protocol: using the sequence's", msg)
    if os_factor == 2:
        k, t = _oversample(k, t, dwell_seq_us * 1e-6)
    meta = {**traj.meta, "oversampling": os_factor}
    return Trajectory(k=np.ascontiguousarray(k), t=np.ascontiguousarray(t), kind=traj.kind, meta=meta)


def _oversample(k: np.ndarray, t: np.ndarray, dwell_s: float) -> tuple[np.ndarray, np.ndarray]:
    """k and t at twice the sampling rate: sample j' at (j' + 0.5) dwell/2 from the ADC start."""
    from scipy.interpolate import CubicSpline

    ns = k.shape[1]
    x = (np.arange(ns) + 0.5) * dwell_s
    xo = (np.arange(2 * ns) + 0.5) * dwell_s / 2
    ko = CubicSpline(x, k, axis=1, extrapolate=True)(xo)
    to = t[:, :1] - x[0] + xo[None, :]
    return ko, to


def write_seq(path: str | os.PathLike, traj: Trajectory, fov_mm: float, flip_deg: float = 90.0,
              tr_ms: float | None = None, rf_us: float = 200.0, gmax_mT_m: float = 40.0,
              slew_T_m_s: float = 150.0, gamma_hz_t: float = GAMMA_BAR_NA23_HZ_PER_T) -> dict:
    """Write a generated trajectory (with its `GradientDesign`) as a runnable Pulseq sequence.

    Per readout: a non-selective hard pulse of `rf_us`, the design's readout gradients
    (rotation[r] @ g_base, piecewise constant on its raster, then a ramp to zero at the slew
    limit) with the ADC at the design dwell placed so that sample j is read at the design's
    time, a spoiler along the readout (4 cycles per voxel), and the TR (default: the shortest).
    Gamma is 23Na's (`Opts(gamma=...)`). Runs pypulseq's timing check and refuses a sequence that
    fails it. Returns {'path', 'tr_s', 'te_s', 'duration_s', 'nreadout'}.
    """
    pp = _pypulseq()
    d = traj.design
    if d is None:
        raise InputError("writing a .seq needs a generated trajectory (its gradient design)")
    path = Path(path)
    if path.suffix != ".seq":
        raise InputError(f"Pulseq output must end in .seq, found {path.name!r}")
    raster = float(d.raster_s)
    t_adc = np.asarray(traj.t, dtype=np.float64)
    t_adc = (t_adc if t_adc.ndim == 1 else t_adc[0]) - d.te_s
    dwell = float(np.median(np.diff(t_adc))) if t_adc.size > 1 else raster
    sys_ = pp.Opts(max_grad=gmax_mT_m * 1e-3 * gamma_hz_t, grad_unit="Hz/m", max_slew=slew_T_m_s * gamma_hz_t,
                   slew_unit="Hz/m/s", grad_raster_time=raster, rf_raster_time=1e-6, adc_raster_time=1e-7,
                   block_duration_raster=raster, rf_ringdown_time=20e-6, rf_dead_time=100e-6,
                   adc_dead_time=10e-6, gamma=gamma_hz_t)
    seq = pp.Sequence(system=sys_)
    with _quiet():
        rf = pp.make_block_pulse(flip_angle=math.radians(flip_deg), duration=rf_us * 1e-6, system=sys_,
                                 use="excitation")
        # gradients start one raster after the readout block starts; sample j at t_adc[j] after them
        g_delay = max(raster, math.ceil((0.5 * dwell - t_adc[0]) / raster - 1e-9) * raster + raster)
        adc_delay = round((g_delay + raster + t_adc[0] - 0.5 * dwell) / 1e-7) * 1e-7
        adc = pp.make_adc(num_samples=t_adc.size, dwell=dwell, delay=adc_delay, system=sys_)
        max_step = slew_T_m_s * raster  # T/m per raster step
        kmax = max(d.kmax_per_m, 1e-12)
        spoil_area = 4.0 * kmax * 2  # 4 cycles across a voxel: 4 / voxel = 4 * 2 kmax
        spoiler = pp.make_trapezoid(channel="x", area=spoil_area, system=sys_)
        nread = traj.nreadout
        blocks = []
        for r in range(nread):
            g = d.gradient(r)  # (ngrad, 3) T/m
            peak = float(np.max(np.abs(g[-1])))
            nramp = max(1, int(math.ceil(peak / max_step)))
            ramp = g[-1][None, :] * (1 - np.arange(1, nramp + 1)[:, None] / nramp)
            # pypulseq plays shape points at raster centres, linearly joined: a leading zero keeps
            # the first step within the slew limit and delays the waveform by one raster
            wave = np.concatenate([np.zeros((1, 3)), g, ramp], axis=0) * gamma_hz_t
            grads = []
            for ax, ch in enumerate("xyz"):
                w = wave[:, ax]
                if np.max(np.abs(w)) < 1e-9:
                    continue
                grads.append(pp.make_arbitrary_grad(channel=ch, waveform=w, first=0.0, last=0.0,
                                                    delay=g_delay, system=sys_))
            dur = pp.calc_duration(adc, *grads)
            grads.append(pp.make_delay(math.ceil(dur / raster - 1e-6) * raster))  # block on the raster
            blocks.append(grads)
        rf_dur = pp.calc_duration(rf)
        te_s = rf_dur - rf.delay - rf.shape_dur / 2 + g_delay + raster + t_adc[0]
        min_tr = rf_dur + max(pp.calc_duration(adc, *b) for b in blocks) + pp.calc_duration(spoiler)
        tr = max(min_tr, (tr_ms or 0.0) * 1e-3)
        tr = math.ceil(tr / raster - 1e-9) * raster
        for r in range(nread):
            seq.add_block(rf)
            seq.add_block(adc, *blocks[r])
            # spoiler along this readout's direction (its last gradient)
            direction = d.gradient(r)[-1]
            nrm = np.linalg.norm(direction)
            direction = direction / nrm if nrm > 0 else np.array([1.0, 0.0, 0.0])
            sp = []
            for ax, ch in enumerate("xyz"):
                if abs(direction[ax]) > 1e-6:
                    sp.append(pp.scale_grad(pp.make_trapezoid(channel=ch, area=spoil_area, system=sys_),
                                            float(direction[ax])))
            fill = tr - rf_dur - pp.calc_duration(adc, *blocks[r])
            fill = max(fill, math.ceil(pp.calc_duration(*sp) / raster - 1e-6) * raster)
            seq.add_block(*sp, pp.make_delay(round(fill / raster) * raster))
        seq.set_definition("FOV", [fov_mm * 1e-3] * 3)
        seq.set_definition("Name", f"na23recon_{traj.kind or 'traj'}")
        seq.set_definition("Nucleus", "23Na")
        ok, errors = seq.check_timing()
    if not ok:
        raise InputError(f"{path.name}: the sequence fails Pulseq's timing check: {' '.join(map(str, errors))[:300]}")
    with atomic_path(path) as tmp:
        with _quiet():
            seq.write(str(tmp))
    return {"path": path, "tr_s": tr, "te_s": te_s, "duration_s": tr * nread, "nreadout": nread}
