"""A seeded fuzz campaign over the readers and the recon command (used by tests/test_fuzz.py).

Every mutant must end in one of two ways: exit 0 with a finite, plausible result, or an
InputError / exit 2 of one line with no output file. Anything else is counted: internal errors
(any other exception or exit code), hangs (past `HANG_S`, stopped by SIGALRM), non-finite
outputs, implausible outputs (image max beyond `PLAUSIBLE` x the unmutated one), outputs left
after a refusal, and silent changes (a result > 10% off the unmutated one with no warning logged).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import signal
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from na23recon.cli import main
from na23recon.core import Image
from na23recon.errors import InputError
from na23recon.io.trajfile import load_traj
from na23recon.io.twix import read_scan
from na23recon.io.twix.header import split_header
from na23recon.io.twix.layout import open_layout, walk
from na23recon.pipeline.config import load_run_config, read_manifest
from na23recon.quant.vials import load_vials

HANG_S = 60
PLAUSIBLE = 100.0
REAL_TWIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-twix"
EXTREMES_U16 = (0, 1, 0x7FFF, 0xFFFF)
EXTREMES_U32 = (0, 0x7FFFFFFF, 0xFFFFFFFF, 10**6)
BAD_NUMBERS = ("1e400", "inf", "nan", "-1", "0", "1e-30", "1e305", "-0.001", "1e11", "99999999999", "0x7fffffff")


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record):
        self.n += 1


def regions(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges of a twix file: header text, readout headers (MDH), samples."""
    lay = open_layout(path)
    m = lay.meas[-1]
    _, hdr_len = split_header(lay.mm, m.offset, m.length)
    ro = walk(lay, m, hdr_len)
    mdh = 192 if lay.is_ve else 128
    mdh_r = [(int(p), mdh) for p in ro.pos[:: max(1, ro.pos.size // 200)]]
    smp = [(int(p) + mdh + 32, 64) for p in ro.pos[:: max(1, ro.pos.size // 200)]]
    return {"header": [(m.offset, hdr_len)], "mdh": mdh_r, "samples": smp, "raid": [(0, 10240 if lay.is_ve else 64)]}


def counter_offsets(path: Path) -> list[tuple[int, str]]:
    """(byte offset, name) of the uint16 counters of each readout header."""
    import twixtools.mdh_def as mdh_def

    lay = open_layout(path)
    m = lay.meas[-1]
    _, hdr_len = split_header(lay.mm, m.offset, m.length)
    ro = walk(lay, m, hdr_len)
    dt = np.dtype(mdh_def.Scan_header if lay.is_ve else mdh_def.VB17_header)
    base = dt.fields["Counter"][1]
    cdt = dt.fields["Counter"][0]
    out = []
    for p in ro.pos[:: max(1, ro.pos.size // 100)]:
        for name in ("Lin", "Par", "Eco", "Rep", "Ave", "Ide", "Seg", "Sli"):
            out.append((int(p) + base + cdt.fields[name][1], name))
    return out


def mutate_twix(raw: bytes, reg: dict, counters: list, rng: np.random.Generator) -> tuple[bytes, str]:
    """One mutant of a twix file and what was done to it."""
    b = bytearray(raw)
    op = rng.choice(["bitflip", "overwrite", "field16", "field32", "float", "counter", "truncate",
                     "duplicate", "delete", "headernum"])
    if op == "counter" and counters:
        off, name = counters[int(rng.integers(len(counters)))]
        v = int(rng.choice([0x7FFF, 0xFFFF, int(rng.integers(0, 50)), 1]))
        struct.pack_into("<H", b, off, v)
        return bytes(b), f"counter {name}={v}@{off}"
    if op == "headernum" and "header" in reg:
        a, n = reg["header"][0]
        text = bytes(b[a: a + n]).decode("latin1")
        nums = [mm for mm in re.finditer(r"(?<=[= ])-?\d+(\.\d+)?(e[-+]?\d+)?(?=\s)", text)]
        if nums:
            mm = nums[int(rng.integers(len(nums)))]
            new = str(rng.choice(BAD_NUMBERS))
            width = mm.end() - mm.start()
            if len(new) <= width:
                new = new.rjust(width)
                b[a + mm.start(): a + mm.end()] = new.encode("latin1")
                return bytes(b), f"header {text[max(0, mm.start() - 30): mm.start()].split()[-1:]}={new.strip()}"
        op = "bitflip"
    kind = rng.choice(list(reg))
    a, n = reg[kind][int(rng.integers(len(reg[kind])))]
    pos = a + int(rng.integers(max(1, n)))
    pos = min(pos, len(b) - 9)
    if op == "bitflip":
        for _ in range(int(rng.integers(1, 8))):
            q = min(len(b) - 1, pos + int(rng.integers(0, 16)))
            b[q] ^= 1 << int(rng.integers(8))
    elif op == "overwrite":
        k = int(rng.integers(1, 16))
        b[pos: pos + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
    elif op == "field16":
        struct.pack_into("<H", b, pos, int(rng.choice(EXTREMES_U16)))
    elif op == "field32":
        struct.pack_into("<I", b, pos, int(rng.choice(EXTREMES_U32)))
    elif op == "float":
        struct.pack_into("<f", b, pos, float(rng.choice([np.nan, np.inf, -np.inf, 3e38, 1e20, -1e30])))
    elif op == "truncate":
        return bytes(b[: int(rng.integers(0, len(b)))]), f"truncate {kind}"
    elif op == "duplicate":
        k = int(rng.integers(1, 4096))
        return bytes(b[:pos] + b[pos: pos + k] + b[pos:]), f"duplicate {k}@{pos} {kind}"
    elif op == "delete":
        k = int(rng.integers(1, 4096))
        return bytes(b[:pos] + b[pos + k:]), f"delete {k}@{pos} {kind}"
    return bytes(b), f"{op}@{pos} {kind}"


def mutate_text(text: str, rng: np.random.Generator, pool: tuple[str, ...]) -> str:
    """A text mutant: a value replaced by a hostile one, a character flipped, lines cut or repeated."""
    op = rng.choice(["value", "char", "cut", "repeat", "bom", "nest"])
    if op == "value":
        toks = list(re.finditer(r"[-\w./\"]+", text))
        if toks:
            t = toks[int(rng.integers(len(toks)))]
            return text[: t.start()] + str(rng.choice(pool)) + text[t.end():]
    if op == "char" and text:
        i = int(rng.integers(len(text)))
        return text[:i] + chr(int(rng.integers(1, 0x2FF))) + text[i + 1:]
    if op == "cut":
        return text[: int(rng.integers(len(text) + 1))]
    if op == "repeat":
        lines = text.splitlines()
        i = int(rng.integers(max(1, len(lines))))
        return "\n".join(lines[: i + 1] + lines[i:]) + "\n"
    if op == "bom":
        return "\ufeff" + text
    return "[" * int(rng.integers(1000, 200000)) + text


HOSTILE = ("1e400", "inf", "nan", "-1", "0", "\"\"", "[1,2,3]", "{}", "\"x\"", "true", "\"no\"", "5",
           "\"summary.csv\"", "\"/etc/passwd\"", "1e9", "-0.001", "\"../../x\"")


class Campaign:
    """Base files in `root`, mutants written to `root/m`, counts in `self.counts`."""

    def __init__(self, root: Path, sim: dict):
        self.root = root
        self.sim = sim
        self.counts: Counter = Counter()
        self.findings: list[str] = []
        self.mdir = root / "m"
        self.mdir.mkdir(exist_ok=True)
        self.bases = [("sim", Path(sim["scan"]))]
        if REAL_TWIX.is_dir():
            self.bases += [("real", p) for p in sorted(REAL_TWIX.glob("*.dat"))]
        self.raw = {p: p.read_bytes() for _, p in self.bases}
        self.reg = {p: regions(p) for _, p in self.bases}
        self.cnt = {p: counter_offsets(p) for _, p in self.bases}
        ref_out = root / "ref.nii.gz"
        assert main(["recon", str(sim["scan"]), "--traj", str(sim["traj"]), "-o", str(ref_out), "--no-png"]) == 0
        self.ref = Image.load(ref_out).array

    def _outcome(self, kind: str, fn, outputs=()) -> tuple[str, object]:
        """Run fn with a hang alarm and warning count; classify."""
        w = _Warnings()
        lg = logging.getLogger("na23recon")
        lg.addHandler(w)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(HANG_S)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                res = fn()
            out = ("ok", res, w.n, err.getvalue())
        except InputError as exc:
            out = ("input", str(exc), w.n, "")
        except _Hang:
            out = ("hang", None, w.n, "")
        except RecursionError as exc:
            out = ("internal", f"RecursionError {exc}", w.n, "")
        except Exception as exc:
            out = ("internal", f"{type(exc).__name__}: {exc}", w.n, "")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            lg.removeHandler(w)
        return out

    def twix(self, rng, full_recon: bool) -> None:
        label, base = self.bases[int(rng.integers(len(self.bases)))]
        data, what = mutate_twix(self.raw[base], self.reg[base], self.cnt[base], rng)
        p = self.mdir / "mut.dat"
        p.write_bytes(data)
        if label == "sim" and full_recon:
            out = self.mdir / "mut.nii.gz"
            for f in self.mdir.glob("mut.*[!t]"):
                f.unlink()
            status, res, nwarn, err = self._outcome("recon", lambda: main(
                ["recon", str(p), "--traj", str(self.sim["traj"]), "-o", str(out), "--no-png"]))
            code = res if status == "ok" else None
            if status == "ok" and code == 0:
                arr = Image.load(out).array
                self._judge_image(arr, nwarn, what)
            elif status == "ok" and code == 2:
                self.counts["exit 2"] += 1
                if "\n" in err.strip():
                    self._finding("multi-line error", what, err)
                if out.exists():
                    self._finding("output after refusal", what, "")
            else:
                self._finding("internal", what, f"{status} {res} {err.strip()[-200:]}")
            return
        status, res, nwarn, _ = self._outcome("read", lambda: read_scan(p, allow_nucleus=True))
        if status == "ok":
            d = res.data
            ref = np.abs(read_scan(base, allow_nucleus=True).data).max()
            if not np.all(np.isfinite(d)):
                self._finding("nan output", what, "")
            elif np.abs(d).max() > 1e3 * max(ref, 1e-30):
                self._finding("implausible", what, f"max {np.abs(d).max():.3g} vs {ref:.3g}")
            else:
                self.counts["exit 0"] += 1
        else:
            self._count(status, res, what)

    def _judge_image(self, arr, nwarn, what) -> None:
        if not np.all(np.isfinite(arr)):
            return self._finding("nan output", what, "")
        if arr.shape != self.ref.shape:
            if nwarn == 0:
                return self._finding("silent change", what, f"shape {arr.shape}")
            self.counts["exit 0"] += 1
            return
        if arr.max() > PLAUSIBLE * self.ref.max():
            return self._finding("implausible", what, f"max {arr.max():.3g} vs {self.ref.max():.3g}")
        nrmse = float(np.linalg.norm(arr - self.ref) / np.linalg.norm(self.ref))
        if nrmse > 0.1 and nwarn == 0:
            self.counts["silent change"] += 1
            self.findings.append(f"silent change (NRMSE {nrmse:.2f}): {what}")
        self.counts["exit 0"] += 1

    def _count(self, status, res, what) -> None:
        if status == "input":
            self.counts["exit 2"] += 1
            if "\n" in res:
                self._finding("multi-line error", what, res)
        else:
            self._finding(status, what, str(res)[:200])

    def _finding(self, kind, what, detail) -> None:
        self.counts[kind] += 1
        self.findings.append(f"{kind}: {what} {detail}"[:300])

    def text_file(self, rng, which: str) -> None:
        """Mutants of a trajectory (npz bytes), vials, run config or manifest."""
        if which == "traj":
            raw = Path(self.sim["traj"]).read_bytes()
            data, what = mutate_twix(raw, {"all": [(0, len(raw))]}, [], rng)
            p = self.mdir / "t.npz"
            p.write_bytes(data)
            status, res, _, _ = self._outcome("traj", lambda: load_traj(p))
            if status == "ok":
                ok = np.all(np.isfinite(res.k)) and (res.dcf is None or np.all(np.isfinite(res.dcf)))
                self.counts["exit 0"] += int(ok)
                if not ok:
                    self._finding("nan output", what, "")
            else:
                self._count(status, res, what)
            return
        if which == "vials":
            text = Path(self.sim["vials"]).read_text()
            p = self.mdir / "v.json"
            p.write_text(mutate_text(text, rng, HOSTILE), encoding="utf-8")
            status, res, _, _ = self._outcome("vials", lambda: load_vials(p))
            if status == "ok":
                ok = all(np.isfinite(v.concentration_mM) and 0 <= v.concentration_mM < 1e4 for v in res)
                self.counts["exit 0" if ok else "implausible"] += 1
            else:
                self._count(status, res, "vials")
            return
        if which == "config":
            base = (f"[input]\nscan = \"{self.sim['scan']}\"\ntraj = \"{self.sim['traj']}\"\n"
                    f"vials = \"{self.sim['vials']}\"\n[recon]\nmethod = \"adjoint\"\nmatrix = 16\n"
                    f"allow_nucleus = false\nt2s_ms = [1.0]\n[quant]\nte_ms = 0.3\n[output]\ndir = \"out\"\n")
            p = self.mdir / "c.toml"
            p.write_text(mutate_text(base, rng, HOSTILE), encoding="utf-8")
            status, res, _, _ = self._outcome("config", lambda: load_run_config(p))
            if status == "ok":
                job, opts, outdir = res
                ok = isinstance(opts.recon.allow_nucleus, bool) and str(outdir).startswith(str(self.mdir))
                self.counts["exit 0" if ok else "silent change"] += 1
                if not ok:
                    self.findings.append(f"config accepted oddly: {p.read_text()[:200]!r}")
            else:
                self._count(status, res, "config")
            return
        base = f"id,scan,traj\ns1,{self.sim['scan']},{self.sim['traj']}\ns2,{self.sim['scan']},{self.sim['traj']}\n"
        p = self.mdir / ("man.csv" if rng.random() < 0.5 else "man.json")
        if p.suffix == ".json":
            base = json.dumps([{"id": "s1", "scan": str(self.sim["scan"]), "traj": str(self.sim["traj"])}])
        p.write_text(mutate_text(base, rng, HOSTILE), encoding="utf-8")
        status, res, _, _ = self._outcome("manifest", lambda: read_manifest(p))
        if status == "ok":
            ok = all(j.id.lower() != "summary.csv" and "/" not in j.id for j in res)
            self.counts["exit 0" if ok else "silent change"] += 1
        else:
            self._count(status, res, "manifest")

    def run(self, n: int, seed: int, recon_every: int = 10) -> Counter:
        rng = np.random.default_rng(seed)
        for i in range(n):
            r = rng.random()
            if r < 0.6:
                self.twix(rng, full_recon=(i % recon_every == 0))
            else:
                self.text_file(rng, ["traj", "vials", "config", "manifest"][int(rng.integers(4))])
            self.counts["mutants"] += 1
        return self.counts
