"""Typed, validated options of each step: the one definition of every default, help text and choice.

`ReconOptions`, `QuantOptions` and `B1Options` are frozen dataclasses checked once, in
`__post_init__`, whichever way they were made: from the command line (`options_cli.add_options` /
`options_cli.from_args` build argparse options from these fields), from a run config or a batch
manifest (`from_mapping`), or in Python. A bad value raises InputError with one line naming the
option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..errors import InputError

METHODS = ("adjoint", "cg", "cs-tv", "cs-wavelet")
COMBINES = ("sos", "adaptive", "sense")
MAPS = ("walsh", "espirit")
INTERCEPTS = ("fit", "zero", "noise-floor")
B1_FITS = ("poly", "smooth", "none")
TRAJ_UNITS = ("per_m", "kmax", "kmax_half")
B0_NUCLEI = ("23Na", "1H")
RECEIVE_MODES = ("n4", "reference", "reciprocal", "none")
MAX_POLY_ORDER = 6
#: Largest gradient delay accepted (us); `traj.delay.MAX_DELAY_US` is the same limit.
MAX_GRADIENT_DELAY_US = 100.0

# Defaults from scripts/sweep_defaults.py: single-coil brain phantom, matrix 48 (64 was too slow on
# the shared cores), full sampling, seed 0, radial / DA-radial / TPI x SNR 10, 20, 40; NRMSE of TSC
# over the head (vial calibration) against the adjoint's 0.262/0.154/0.116 (radial), 0.259/0.160/
# 0.121 (DA-radial), 0.229/0.148/0.119 (TPI) at SNR 10/20/40; bias = GM/WM TSC bias.
# CS: lambda relative to the image noise SD. CS-TV 0.35: NRMSE 0.013-0.078 below the adjoint on all
# nine, GM/WM bias at most +10/+12% (radial SNR 10), +7/+13% (TPI SNR 10), -3/-4% (DA-radial); 0.5
# is 0.008 lower in NRMSE on average but biases TSC up to +16/+20% (radial) and +15/+23% (TPI) at
# SNR 10 (larger lambdas shrink the small vials' contrast), 1.0 loses to the adjoint at SNR 10.
# CS-wavelet 0.5 with 10 iterations: 0.006-0.044 below the adjoint on all nine, GM/WM bias at most
# +11/+12% (radial SNR 10); at 30 iterations every lambda of 0.1-4 loses to the adjoint on radial
# (0.5: +0.018/+0.023/+0.019) as the iterates approach the noisier weighted least-squares solution.
# CG: Tikhonov weight 0.1 (relative to ||E^H W E|| ~ 1) with the discrepancy stopping rule
# (ReconOptions.discrepancy, recon/solvers.cg_sense). Run to 15 iterations no weight beat the DCF
# adjoint on fully sampled single-coil DA-radial (3: +0.0023 at SNR 10; 10: +0.0003..+0.0008): the
# adjoint already fits those data to the noise, so with the rule CG stops at its first iterate (the
# scaled adjoint) and equals it in all nine cells (0.01, 0.1, 0.3 alike; 0.3 then runs on at SNR 40,
# +0.0031 on DA-radial). On the 8-coil 3.5x undersampled radial case (tests/_multicoil.py, matrix
# 32) the default gives image NRMSE 0.334 / 0.259 / 0.241 at SNR 10 / 20 / 40 after 1 / 2 / 15
# iterations (at 40 the Tikhonov shrinkage alone keeps the misfit above the noise's share), against
# the adjoint's 0.572 / 0.420 / 0.353 and weight 3 without the rule 0.324 / 0.274 / 0.271.
# CG with the decay-aware model ("cg+decay", where the rule is off: its first iterate blurs each
# class by its decay twice): 0.2, from `scripts/sweep_defaults.py --decay-truth --readout-ms 15
# --method cg` (matrix 48, radial / DA-radial / TPI 15 ms x SNR 10 / 20 / 40, the model from the
# truth labels): mean TSC NRMSE 0.204 / 0.184 / 0.174 / 0.164 / 0.156 at 0.1 / 0.2 / 0.3 / 0.5 / 1
# against the adjoint's 0.186 (0.1 was up to +0.077 worse than the adjoint: DA-radial, SNR 10);
# 0.2 is the smallest weight below the adjoint's mean. A larger one trades the model's own
# correction away: the ventricles, whose decay differs from GM/WM's, read +3.0..+6.9% (TPI) at 0.1,
# +3.5..+6.5 at 0.2, +4.7..+7.4 at 0.3, +13.5..+17.0 at 1 and +17.7..+21.1 with the adjoint; and
# the per-tissue PSFs the PVC takes fit the image less (validate_anatomy.py, TPI 15 ms, matrix 64,
# SNR 20: GTM GM/WM +0.3/-0.1% at 0.1, +2.3/+0.7 at 0.2, +3.9/+1.2 at 0.3, bound 3%). The weight
# shrinks the late, high-k samples of the fast-decaying classes (by d^2 / (d^2 + lam), d their
# decay) more than the vials'. At high SNR a lower weight undoes more blur (8-coil case, T2* 4 ms
# over a 3.9 ms readout, SNR 200: NRMSE against the decay-free recon 0.083 at 0.1, 0.151 at 0.3):
# give --lam there.
# CG with the B0 model ("cg+b0", --b0-map) also keeps 0.1: at 3 CG stays near the first iterate, a
# conjugate-phase adjoint, which does not undo the blur at sharp field steps (offres phantom, TPI
# 15 ms readout, -40..+40 Hz, matrix 32, noiseless: worst compartment error after calibration 8.2% at
# 3, 2.3% at 0.1 (15 iterations), 3.1% at 0.01 (30); NRMSE 0.116, 0.102, 0.115).
DEFAULT_LAM = {"cg": 0.1, "cg+decay": 0.2, "cg+b0": 0.1, "cs-tv": 0.35, "cs-wavelet": 0.5}
DEFAULT_ITERS = {"cg": 15, "cs-tv": 30, "cs-wavelet": 10}


def opt(default: Any, help: str, *, kind: str, choices: tuple | None = None, metavar: str | None = None,
        default_text: str | None = None, flag: str | None = None) -> Any:
    """A dataclass field that also describes its command-line option.

    kind: 'int', 'float', 'str', 'bool' (a switch that turns the default over), 'floats' (one or
    more numbers), 'labelmap' (LABEL=NAME[,LABEL=NAME...]). default_text: what the help says the
    default is when it is None (e.g. "the scan's"). flag: the option name when it is not
    --field-name (a bool that defaults to True is --no-field-name).
    """
    meta = {"help": help, "kind": kind, "choices": choices, "metavar": metavar, "default_text": default_text,
            "flag": flag}
    return field(default=default, metadata=meta)


# --- value checks (one line each, naming the option) ----------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _as_int(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, (bool, str)):
        raise InputError(f"{_flag(name)} must be a whole number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{_flag(name)} must be a whole number, got {v!r}") from None
    if not math.isfinite(f) or not f.is_integer():
        raise InputError(f"{_flag(name)} must be a whole number, got {v!r}")
    return int(f)


def _as_float(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        raise InputError(f"{_flag(name)} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{_flag(name)} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not math.isfinite(f):
        raise InputError(f"{_flag(name)} must be a finite number, got {v!r}")
    return f


def _in_range(name: str, v: float | None, lo: float | None = None, hi: float | None = None,
              lo_open: bool = False, hi_open: bool = False) -> None:
    if v is None:
        return
    bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        lo_s = "" if lo is None else f"{'(' if lo_open else '['}{lo:g}"
        hi_s = "" if hi is None else f"{hi:g}{')' if hi_open else ']'}"
        rng = f"in {lo_s}, {hi_s}" if lo is not None and hi is not None else (
            f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else f"{'<' if hi_open else '<='} {hi:g}")
        raise InputError(f"{_flag(name)} must be {rng}, got {v:g}")


def _choice(name: str, v: Any, choices: tuple) -> None:
    if v is not None and v not in choices:
        raise InputError(f"{_flag(name)} must be one of {', '.join(choices)}, got {v!r}")


def _as_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise InputError(f"{name} must be true or false, got {v!r}")


def _as_str(name: str, v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InputError(f"{_flag(name)} must be a name, got {v!r}")
    return v


def parse_label_map(name: str, v: Any) -> dict[int, str] | None:
    """{label: preset} from 'LABEL=NAME,...' text or a mapping; None stays None."""
    if v is None or v == "":
        return None
    items: list[tuple[Any, Any]]
    if isinstance(v, str):
        items = []
        for part in v.split(","):
            lab, sep, preset = part.partition("=")
            if not sep:
                raise InputError(f"{_flag(name)} expects LABEL=PRESET[,LABEL=PRESET...], got {v!r}")
            items.append((lab.strip(), preset.strip()))
    elif isinstance(v, Mapping):
        items = list(v.items())
    else:
        raise InputError(f"{_flag(name)} expects LABEL=PRESET[,LABEL=PRESET...], got {v!r}")
    out: dict[int, str] = {}
    for lab, preset in items:
        try:
            key = int(str(lab).strip())
        except ValueError:
            raise InputError(f"{_flag(name)}: label {lab!r} is not a whole number") from None
        if not isinstance(preset, str) or not preset.strip():
            raise InputError(f"{_flag(name)}: label {key} needs a preset name, got {preset!r}")
        out[key] = preset.strip()
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_CONVERT = {"int": _as_int, "float": _as_float, "str": _as_str}


class _Options:
    """Shared behaviour of the option dataclasses."""

    def _coerce(self) -> None:
        for f in fields(self):
            kind, v = f.metadata.get("kind"), getattr(self, f.name)
            if kind in _CONVERT:
                v = _CONVERT[kind](f.name, v)
            elif kind == "bool":
                v = _as_bool(_flag(f.name), v)
            elif kind == "floats" and v is not None:
                vals = list(v) if isinstance(v, (list, tuple)) else [v]
                v = tuple(_as_float(f.name, x) for x in vals)
            elif kind == "labelmap":
                v = parse_label_map(f.name, v)
            if f.metadata.get("choices"):
                _choice(f.name, v, f.metadata["choices"])
            object.__setattr__(self, f.name, v)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "options"):
        """Options from a config table or manifest row; unknown keys are refused (InputError)."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"{where}: unknown key(s) {unknown}; known: {known}")
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-ready values (for sidecars and batch fingerprints)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
            elif isinstance(v, dict):
                d[k] = {str(a): b for a, b in v.items()}
        return d

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """{field: default} of every field (the CLI's defaults are these)."""
        return {f.name: (f.default if f.default is not MISSING else None) for f in fields(cls)}


@dataclass(frozen=True)
class ReconOptions(_Options):
    """How to reconstruct: method, matrix, regularisation, coils, decay model, which data.

    The methods: 'adjoint' (density-compensated gridding, Jackson et al., IEEE TMI 1991), 'cg'
    (CG-SENSE, Pruessmann et al., MRM 2001), 'cs-tv' (3D total variation, Block et al., MRM 2007,
    primal-dual) and 'cs-wavelet' (L1 wavelets, Lustig et al., MRM 2007, FISTA).
    """

    method: str = opt("adjoint", "reconstruction: adjoint (DCF gridding), cg (CG-SENSE), cs-tv (3D total "
                      "variation), cs-wavelet (L1 wavelets)", kind="str", choices=METHODS)
    matrix: int | None = opt(None, "matrix N (below the acquired one the samples beyond its edge are dropped; "
                             "above it the image is interpolated, with a warning)",
                             kind="int", default_text="the scan's", metavar="N")
    lam: float | None = opt(None, "regularisation relative to the image noise SD (cs-*), Tikhonov weight (cg)",
                            kind="float", default_text=", ".join(f"{k} {v:g}" for k, v in DEFAULT_LAM.items()))
    iters: int | None = opt(None, "maximum iterations", kind="int",
                            default_text=", ".join(f"{k} {v}" for k, v in DEFAULT_ITERS.items()))
    tol: float = opt(1e-4, "stopping tolerance (CG: relative residual; CS: relative image change)", kind="float")
    discrepancy: float = opt(1.0, "cg: stop at the first iterate that fits the data to within TAU times the noise's "
                             "expected misfit (discrepancy principle; needs a noise estimate); 0: off",
                             kind="float", metavar="TAU")
    eps: float = opt(1e-3, "NUFFT tolerance", kind="float")
    coil_compress: str | int = opt("auto", "SVD coil compression: auto (to 8 virtual coils above 12 channels), "
                                   "none, or N virtual coils", kind="str", metavar="auto|none|N")
    coil_combine: str | None = opt(None, "adjoint: sos, adaptive or sense; iterative methods use sense", kind="str",
                                   choices=COMBINES, default_text="sos")
    maps: str = opt("walsh", "sensitivity maps for SENSE-type methods", kind="str", choices=MAPS)
    t2s_ms: tuple[float, ...] | None = opt(None, "decay-aware model: one T2* or short and long T2* in ms "
                                           "(needs 't' in the trajectory; iterative methods)", kind="floats",
                                           metavar="T2S", default_text="off")
    frac_short: float = opt(0.6, "fraction of the short T2* component with two T2* values", kind="float")
    b0_map: str | None = opt(None, "B0 field map (NIfTI, Hz, any grid in scanner coordinates, resampled through its "
                             "affine): off-resonance model (time segmentation) in cg/cs-*, conjugate-phase "
                             "correction in the adjoint", kind="str", metavar="B0.nii.gz", default_text="off")
    b0_map_nucleus: str = opt("23Na", "nucleus the --b0-map's Hz refer to (1H is scaled by gamma(23Na)/gamma(1H))",
                              kind="str", choices=B0_NUCLEI)
    b0_segments: int | None = opt(None, "time segments of the off-resonance model", kind="int", metavar="L",
                                  default_text="the fewest that interpolate the map's range over the readout")
    decay_map: str | None = opt(None, "label map (NIfTI, any grid in scanner coordinates) for a per-voxel decay "
                                "model: each label of --decay-labels decays with its relaxation preset, other "
                                "voxels with --t2s-ms (without it, as the fastest-decaying label)", kind="str",
                                metavar="LABELS.nii.gz",
                                default_text="off")
    decay_labels: dict[int, str] | None = opt(None, "relaxation preset per label of --decay-map, e.g. "
                                              "1=csf,2=gm,3=wm,11=agar2", kind="labelmap",
                                              metavar="LABEL=PRESET,...", default_text="none")
    decay_target: str | None = opt(None, "decay of the output's point-spread function, a relaxation preset or a T2* "
                                   "in ms: the decay model reconstructs every voxel as if it decayed so (one "
                                   "smooth PSF for tissue and vials alike)", kind="str", metavar="PRESET|MS",
                                   default_text="with --decay-map, the slowest-decaying of its classes; with "
                                   "--t2s-ms alone, none (fully deconvolved)")
    rep: int | None = opt(None, "reconstruct this repetition/average only", kind="int",
                          default_text="average all in k-space")
    echo: int | None = opt(None, "reconstruct this echo only", kind="int", default_text="all")
    allow_nucleus: bool = opt(False, "accept a scan whose nucleus is not 23Na", kind="bool")
    traj_units: str = opt("per_m", "units of a .mat/.txt/.csv trajectory or of one stored in an MRD file: per_m "
                          "(1/m), kmax (|k| = 1 at the matrix edge), kmax_half (|k| = 0.5 there); .npz and .seq "
                          "are 1/m", kind="str", choices=TRAJ_UNITS)
    zero_bad_samples: bool = opt(False, "set non-finite or absurdly large raw samples to 0 (counted in the "
                                 "sidecar) instead of refusing the scan", kind="bool")
    gradient_delay_us: tuple[float, ...] | None = opt(None, "known gradient delays along the read, phase and "
                                                      "partition axes, us: k(t) -> k(t - d) per axis",
                                                      kind="floats", metavar="D", default_text="none")
    estimate_delay: bool = opt(False, "estimate the per-axis gradient delays from the data (RING for full-diameter "
                               "spokes, a data-consistency search for centre-out readouts) and correct them",
                               kind="bool")
    psf: bool = opt(False, "also write the point-spread function X_psf.nii.gz (the method applied to a point; "
                    "exact for adjoint and cg, the linear part for cs-*), FWHM in the sidecar's recon.psf", kind="bool")
    psf_tissue: str = opt("gm", "relaxation preset whose T2* decay blurs the PSF, or 'none'; several, comma-"
                          "separated (gm,wm,csf,agar2), give a 4D PSF, one volume each", kind="str",
                          metavar="PRESET")

    def __post_init__(self) -> None:
        cc = self.coil_compress
        if cc is None or isinstance(cc, (int, float)) and not isinstance(cc, bool):
            object.__setattr__(self, "coil_compress", "none" if cc is None else str(_as_int("coil_compress", cc)))
        self._coerce()
        cc = self.coil_compress.strip().lower()
        if cc not in ("auto", "none"):
            if not _is_number(cc):
                raise InputError(f"--coil-compress must be auto, none or a number of virtual coils, got {cc!r}")
            cc = _as_int("coil_compress", float(cc))
            _in_range("coil_compress", cc, 1)
        object.__setattr__(self, "coil_compress", cc)
        _in_range("matrix", self.matrix, 8, 512)
        _in_range("lam", self.lam, 0)
        _in_range("iters", self.iters, 1, 10000)
        _in_range("tol", self.tol, 0)
        _in_range("discrepancy", self.discrepancy, 0, 100)
        _in_range("eps", self.eps, 1e-7, 0.1)
        _in_range("frac_short", self.frac_short, 0, 1)
        _in_range("rep", self.rep, 0)
        _in_range("echo", self.echo, 0)
        _in_range("b0_segments", self.b0_segments, 1, 32)
        if self.b0_map == "":
            raise InputError("--b0-map needs a file name")
        if self.gradient_delay_us is not None:
            if len(self.gradient_delay_us) != 3:
                raise InputError(f"--gradient-delay-us takes three delays (read, phase, partition), got "
                                 f"{len(self.gradient_delay_us)}")
            if any(abs(v) > MAX_GRADIENT_DELAY_US for v in self.gradient_delay_us):
                raise InputError(f"--gradient-delay-us {list(self.gradient_delay_us)}: a delay beyond "
                                 f"+-{MAX_GRADIENT_DELAY_US:g} us is not a scanner's (are the values in us?)")
            if self.estimate_delay:
                raise InputError("--gradient-delay-us and --estimate-delay exclude each other: give the delays or "
                                 "estimate them")
        if self.method != "adjoint" and self.coil_combine not in (None, "sense"):
            raise InputError(f"--coil-combine {self.coil_combine} applies to the adjoint method only: "
                             f"{self.method} combines coils through the SENSE model")
        if self.t2s_ms is not None:
            if len(self.t2s_ms) not in (1, 2):
                raise InputError(f"--t2s-ms takes one or two values (short, long), got {len(self.t2s_ms)}")
            if any(v <= 0 for v in self.t2s_ms):
                raise InputError(f"--t2s-ms must be positive (ms), got {list(self.t2s_ms)}")
            if self.method == "adjoint":
                raise InputError("the decay-aware model (--t2s-ms) needs an iterative method: cg, cs-tv or cs-wavelet")
        if (self.decay_map is None) != (self.decay_labels is None):
            raise InputError("--decay-map and --decay-labels go together: the label map and the preset of each label")
        if self.decay_map == "":
            raise InputError("--decay-map needs a file name")
        if self.decay_target is not None and self.t2s_ms is None and self.decay_map is None:
            raise InputError("--decay-target needs a decay model: --t2s-ms or --decay-map")
        if self.decay_map is not None and self.method == "adjoint":
            raise InputError("the per-voxel decay model (--decay-map) needs an iterative method: cg, cs-tv or cs-wavelet")

    @property
    def lam_value(self) -> float:
        """lambda in force (the method's default when not given); 0 for the adjoint."""
        if self.lam is not None:
            return float(self.lam)
        decay, b0 = f"{self.method}+decay", f"{self.method}+b0"
        if (self.t2s_ms is not None or self.decay_map is not None) and decay in DEFAULT_LAM:
            return DEFAULT_LAM[decay]
        if self.b0_map is not None and b0 in DEFAULT_LAM:
            return DEFAULT_LAM[b0]
        return DEFAULT_LAM.get(self.method, 0.0)

    @property
    def iters_value(self) -> int:
        """maximum iterations in force (the method's default when not given)."""
        return int(self.iters) if self.iters is not None else DEFAULT_ITERS.get(self.method, 0)

    @property
    def t2s_model(self) -> float | tuple[float, float] | None:
        """T2* for the decay model: one value (ms), (short, long), or None."""
        if self.t2s_ms is None:
            return None
        return self.t2s_ms[0] if len(self.t2s_ms) == 1 else (self.t2s_ms[0], self.t2s_ms[1])


@dataclass(frozen=True)
class QuantOptions(_Options):
    """How to turn an image into TSC (mM): acquisition overrides, relaxation presets, calibration.

    TSC by external vial calibration (Christensen et al., MRM 1996; Thulborn et al., Radiology
    1999) with transmit/receive B1 and relaxation corrections (Insko & Bolinger, JMR A 1993;
    Boada et al., MRM 1994).
    """

    te_ms: float | None = opt(None, "echo time, ms", kind="float", default_text="the image's sidecar")
    tr_ms: float | None = opt(None, "repetition time, ms", kind="float", default_text="the image's sidecar")
    flip_deg: float | None = opt(None, "nominal flip angle, deg", kind="float", default_text="the image's sidecar")
    echo: int = opt(0, "echo of a multi-echo image", kind="int")
    tissue: str = opt("gm", "relaxation preset for tissue voxels without a label preset", kind="str")
    label_tissue: dict[int, str] | None = opt(None, "relaxation preset per label of --labels, e.g. 1=csf,2=gm,3=wm",
                                              kind="labelmap", metavar="LABEL=PRESET,...", default_text="none")
    intercept: str = opt("fit", "calibration line through the vials", kind="str", choices=INTERCEPTS)
    reciprocity: bool = opt(True, "use the B1 map as receive sensitivity (reciprocity) too", kind="bool")
    receive: str | None = opt(None, "receive-bias correction: reference (ratio to the volume-coil image of "
                              "--receive-reference), n4 (bias field from the image itself, Tustison 2010), "
                              "reciprocal (R = B1 map: one transmit/receive coil), none", kind="str",
                              choices=RECEIVE_MODES, default_text="reference with --receive-reference, else "
                              "reciprocal for one coil, none (with a warning) for an array")
    # 3 mm: brain phantom, 32 helmet loops, noiseless, against the volume coil's TSC: worst compartment
    # 0.4% at matrix 48 for 2 mm, 1.5% for 4 mm, 2.7% for 5 mm (the ratio blurs across the vials' gap).
    # Noisy (simulate --snr 25, matrix 32): worst compartment 1.2-2.7% for 1-2.5 mm, 5.5% for 3 mm, 20% for
    # 4.5-9 mm; BART 8-coil phantom (SNR 17-19 volume coil): 0-8 mm within 0.4% of each other.
    receive_smooth_mm: float = opt(2.0, "Gaussian SD (mm) smoothing the array / volume-coil ratio", kind="float")
    receive_n4_mm: float = opt(60.0, "B-spline control-point spacing (mm) of --receive n4's bias field, "
                               "over the object's bounding box", kind="float")
    noise_sd: float | None = opt(None, "image noise SD", kind="float", default_text="from the background")
    vial_threshold: float | None = opt(None, "least filtered peak of a detected vial (image units)",
                                       kind="float", default_text="6 background SDs")
    register: bool = opt(False, "rigidly register the 1H anatomy (tissue maps, atlas, --anat) to the sodium image "
                         "(SimpleITK, mutual information) instead of trusting the affines alone", kind="bool")

    def __post_init__(self) -> None:
        self._coerce()
        _in_range("te_ms", self.te_ms, 0, 1e4)
        _in_range("tr_ms", self.tr_ms, 0, 1e5, lo_open=True)
        _in_range("flip_deg", self.flip_deg, 0, 180, lo_open=True, hi_open=True)
        _in_range("echo", self.echo, 0)
        _in_range("noise_sd", self.noise_sd, 0, lo_open=True)
        _in_range("receive_smooth_mm", self.receive_smooth_mm, 0, 100)
        _in_range("receive_n4_mm", self.receive_n4_mm, 10, 1000)
        _in_range("vial_threshold", self.vial_threshold, 0, lo_open=True)


@dataclass(frozen=True)
class B1Options(_Options):
    """Double-angle B1+ mapping (Insko & Bolinger, JMR A 1993): nominal flip and spatial fit."""

    flip_deg: float | None = opt(None, "nominal flip a of the first scan, deg", kind="float",
                                 default_text="scan a's sidecar or header")
    fit: str = opt("poly", "spatial regularisation of the map", kind="str", choices=B1_FITS)
    order: int = opt(3, "polynomial order for fit poly", kind="int")
    snr_min: float = opt(5.0, "mask voxels below this SNR in scan a", kind="float")

    def __post_init__(self) -> None:
        self._coerce()
        _in_range("flip_deg", self.flip_deg, 0, 90, lo_open=True, hi_open=True)
        _in_range("order", self.order, 0, MAX_POLY_ORDER)
        _in_range("snr_min", self.snr_min, 0)


#: A pseudonym (--subject-id) is a BIDS label: letters and digits only.
SUBJECT_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class OutputOptions(_Options):
    """What the written files may say about the subject, and which extra forms they take.

    deidentify: no patient name, ID, birth date, accession or institution in any output; DICOM
    per the basic application level confidentiality profile (DICOM PS3.15 Annex E) with the
    pseudonym `subject_id`; inputs, command lines, figures and reports name files without their
    folders (unless full_paths).
    """

    deidentify: bool = opt(False, "write no patient identity: DICOM de-identified (PS3.15 basic profile), "
                           "inputs named by file name and checksum, no input file names in figures and reports",
                           kind="bool")
    subject_id: str | None = opt(None, "pseudonym of the subject in de-identified outputs (letters and digits)",
                                 kind="str", metavar="ID", default_text="a hash of the patient ID")
    full_paths: bool = opt(False, "with --deidentify, still record inputs by absolute path", kind="bool")
    dicom: bool = opt(False, "also write DICOM series (parametric map, integer MR series, QC capture)", kind="bool")
    reference_dicom: str | None = opt(None, "a DICOM series of the same study: study and patient attributes "
                                      "for the DICOM outputs", kind="str", metavar="DIR", default_text="the twix header's")

    def __post_init__(self) -> None:
        self._coerce()
        if self.subject_id is not None and (not self.subject_id or
                                            any(c not in SUBJECT_ID_CHARS for c in self.subject_id)):
            raise InputError(f"--subject-id must be letters and digits only, got {self.subject_id!r}")
        if self.subject_id is not None and len(self.subject_id) > 64:
            raise InputError(f"--subject-id must be at most 64 characters, got {len(self.subject_id)}")

    @property
    def reduce_paths(self) -> bool:
        """Whether inputs, command lines, figures and reports name files without their folders."""
        return self.deidentify and not self.full_paths
