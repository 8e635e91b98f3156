"""Spoiled gradient-echo signal weight of sodium with B1 flip scaling, T1 and biexponential T2*.

    W = sin(a) (1 - E1) / (1 - E1 cos a) * [f exp(-TE/T2*_s) + (1 - f) exp(-TE/T2*_l)],
    E1 = exp(-TR/T1),  a = k_B1 * nominal flip

(the spoiled steady state of Ernst & Anderson, Rev Sci Instrum 1966; the biexponential decay of
spin-3/2 sodium and the bias it causes when ignored: Boada et al., Magn Reson Med 1994). The
signal of a voxel is M0 * W, M0 being proportional to the sodium concentration; vial
calibration divides W out of vial and tissue alike (quant/tsc.py).

Presets: tissues at 3 T (GM/WM biexponential T2* of Riemer et al., NMR Biomed 2018; CSF
mono-exponential) and vial media, read from the package data file na23recon/data/relaxation.json,
the one table that the simulator's phantoms (na23recon.sim.phantom) also name their relaxation
from. A config dict {name: {field: value}} overrides or adds presets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from importlib.resources import files

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Relaxation:
    """Relaxation of one tissue or medium. Units: ms; `frac_short` is the fraction (0..1) of the
    signal with the short T2* (0 for a mono-exponential medium such as saline or CSF)."""

    t1_ms: float
    t2s_short_ms: float
    t2s_long_ms: float
    frac_short: float = 0.0

    def __post_init__(self) -> None:
        vals = (self.t1_ms, self.t2s_short_ms, self.t2s_long_ms, self.frac_short)
        if not all(np.isfinite(v) for v in vals) or min(vals[:3]) <= 0 or not 0.0 <= self.frac_short <= 1.0:
            raise InputError(f"impossible relaxation parameters {asdict(self)}: T1, T2* must be > 0 ms "
                             "and frac_short in [0, 1]")

    def decay(self, te_ms: float | np.ndarray) -> np.ndarray:
        """Biexponential T2* decay at echo time `te_ms` (1 at TE = 0)."""
        te = np.asarray(te_ms, dtype=np.float64)
        return (self.frac_short * np.exp(-te / self.t2s_short_ms)
                + (1.0 - self.frac_short) * np.exp(-te / self.t2s_long_ms))

    def saturation(self, tr_ms: float, flip_rad: float | np.ndarray) -> np.ndarray:
        """Spoiled steady state sin(a) (1 - E1) / (1 - E1 cos a) for flip `flip_rad` (radians)."""
        a = np.asarray(flip_rad, dtype=np.float64)
        e1 = np.exp(-float(tr_ms) / self.t1_ms)
        return np.sin(a) * (1.0 - e1) / (1.0 - e1 * np.cos(a))


RELAXATION_FILE = "relaxation.json"
"""Name of the presets file in the package data folder na23recon/data/."""


def load_preset_table(name: str = RELAXATION_FILE) -> tuple[dict[str, Relaxation], dict[str, Relaxation]]:
    """(tissues, media) from the package data file `name` (na23recon/data/, read with
    importlib.resources, so it works from an installed wheel as from a checkout)."""
    d = json.loads((files("na23recon") / "data" / name).read_text(encoding="utf-8"))
    out = []
    for block in ("tissues", "media"):
        try:
            out.append({k: Relaxation(**{f: float(x) for f, x in v.items()}) for k, v in d[block].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"relaxation presets file {name}: bad {block!r} block ({exc})") from None
    return out[0], out[1]


#: Tissues at 3 T (see the module docstring); the lesion-like preset is a mildly oedematous tissue.
#: MEDIA: the reference vials' gels and saline. Both from na23recon/data/relaxation.json.
TISSUES, MEDIA = load_preset_table()

PRESETS: dict[str, Relaxation] = {**TISSUES, **MEDIA}


def presets(config: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Relaxation]:
    """All presets, with `config` {name: {t1_ms: .., t2s_short_ms: .., ...}} overriding fields of a
    known preset or defining a new one (then all four fields, frac_short defaulting to 0)."""
    out = dict(PRESETS)
    known = {f.name for f in fields(Relaxation)}
    for name, over in (config or {}).items():
        if not isinstance(over, Mapping):
            raise InputError(f"relaxation config for {name!r} must be an object of fields, got {over!r}")
        bad = set(over) - known
        if bad:
            raise InputError(f"relaxation config for {name!r} has unknown field(s) {sorted(bad)}; "
                             f"expected some of {sorted(known)}")
        try:
            vals = {k: float(v) for k, v in over.items()}
        except (TypeError, ValueError):
            raise InputError(f"relaxation config for {name!r} must hold numbers, got {dict(over)}") from None
        if name in out:
            out[name] = replace(out[name], **vals)
        else:
            missing = {"t1_ms", "t2s_short_ms", "t2s_long_ms"} - set(vals)
            if missing:
                raise InputError(f"new relaxation preset {name!r} needs {sorted(missing)}")
            out[name] = Relaxation(**vals)
    return out


def get_preset(name: str, config: Mapping[str, Mapping[str, float]] | None = None) -> Relaxation:
    """The preset called `name` (after `config` overrides); unknown name -> InputError."""
    table = presets(config)
    if name not in table:
        raise InputError(f"unknown tissue or medium {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def check_acquisition(flip_deg: float, tr_ms: float, te_ms: float) -> None:
    """Refuse an impossible nominal acquisition: need 0 < flip < 180 deg, TR > 0 ms, TE >= 0 ms, all finite."""
    try:
        flip, tr, te = float(flip_deg), float(tr_ms), float(te_ms)
    except (TypeError, ValueError):
        raise InputError(f"flip, TR and TE must be numbers, got {flip_deg!r}, {tr_ms!r}, {te_ms!r}") from None
    if not (np.isfinite(flip) and 0.0 < flip < 180.0):
        raise InputError(f"flip angle must be a finite number in (0, 180) deg, got {flip_deg}")
    if not (np.isfinite(tr) and tr > 0.0):
        raise InputError(f"TR must be a finite number > 0 ms, got {tr_ms}")
    if not (np.isfinite(te) and te >= 0.0):
        raise InputError(f"TE must be a finite number >= 0 ms, got {te_ms}")


def spgr_weight(relax: Relaxation, flip_deg: float, tr_ms: float, te_ms: float,
                b1: float | np.ndarray = 1.0) -> np.ndarray:
    """Spoiled gradient-echo signal per unit M0: sin(a)(1-E1)/(1-E1 cos a) * decay(TE).

    flip_deg: nominal flip (degrees); b1: relative flip scale k_B1 (scalar or array of any shape,
    1.0 = nominal), so the actual flip is a = k_B1 * flip_deg. tr_ms, te_ms: ms.
    Returns float64 with the shape of `b1`. Transmit only: the receive sensitivity is applied by
    the caller (quant/b1.py).
    """
    check_acquisition(flip_deg, tr_ms, te_ms)
    a = np.deg2rad(float(flip_deg)) * np.asarray(b1, dtype=np.float64)
    return relax.saturation(tr_ms, a) * relax.decay(te_ms)
