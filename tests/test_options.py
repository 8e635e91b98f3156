"""Each option has one definition: the dataclasses' fields make the command-line options, whose
defaults, choices and help cannot disagree with them; values are validated once, however given."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields

import pytest

from na23recon.cli import build_parser
from na23recon.cli.options import default_help, flag_name, from_args
from na23recon.core import B1Options, QuantOptions, ReconOptions
from na23recon.errors import InputError
from na23recon.pipeline.config import RunOptions

# (command, dataclass, option prefix, fields left out) for every command taking step options
COMMANDS = [
    ("recon", ReconOptions, "", ()),
    ("b1map", ReconOptions, "", ()),
    ("b1map", B1Options, "", ()),
    ("quantify", QuantOptions, "", ()),
    ("run", ReconOptions, "", ()),
    ("run", QuantOptions, "", ("echo",)),
    ("run", B1Options, "b1-", ()),
    ("batch", ReconOptions, "", ()),
    ("batch", QuantOptions, "", ("echo",)),
    ("batch", B1Options, "b1-", ()),
]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("command,cls,prefix,exclude", COMMANDS)
def test_every_field_is_an_option_with_the_dataclass_default_and_help(command, cls, prefix, exclude):
    acts = _actions(_subparser(command))
    for f in fields(cls):
        if f.name in exclude:
            continue
        flag = flag_name(f.name, f.default, f.metadata["kind"], prefix, f.metadata.get("flag"))
        assert flag in acts, f"{command} lacks {flag}"
        act = acts[flag]
        if command != "run":  # run leaves unset options out so that they do not override its config
            assert act.default == f.default, (command, flag, act.default, f.default)
        assert act.help == default_help(f).replace("%", "%%")
        if f.metadata.get("choices"):
            assert tuple(act.choices) == tuple(f.metadata["choices"])
        assert "(default:" in act.help or f.metadata["kind"] == "bool"


@pytest.mark.parametrize("command,cls,prefix,exclude", [c for c in COMMANDS if c[0] != "run"])
def test_no_arguments_give_the_dataclass_defaults(command, cls, prefix, exclude):
    positional = {"recon": ["s.dat", "--traj", "t.npz", "-o", "o.nii.gz"],
                  "b1map": ["a.dat", "b.dat", "-o", "o.nii.gz"],
                  "quantify": ["i.nii.gz", "--vials", "v.json", "-o", "o.nii.gz"],
                  "batch": ["m.csv", "-o", "out"]}[command]
    args = build_parser().parse_args([command, *positional])
    assert from_args(cls, args, prefix, exclude) == cls()


def test_help_shows_the_default_text():
    text = " ".join(_subparser("recon").format_help().split())
    assert "(default: adjoint)" in text and "(default: walsh)" in text
    assert "(default: cg 15, cs-tv 30, cs-wavelet 10)" in text.replace("cs- ", "cs-")  # argparse wraps at '-'


def test_options_parse_and_validate_once():
    args = build_parser().parse_args(["batch", "m.csv", "-o", "x", "--method", "cg", "--lam", "0.3", "--t2s-ms",
                                      "4", "25", "--b1-order", "2", "--tissue", "wm", "--label-tissue", "1=csf,2=gm"])
    opts = RunOptions(recon=from_args(ReconOptions, args), quant=from_args(QuantOptions, args, exclude=("echo",)),
                      b1=from_args(B1Options, args, prefix="b1-"))
    assert opts.recon == ReconOptions(method="cg", lam=0.3, t2s_ms=(4.0, 25.0))
    assert opts.recon.t2s_model == (4.0, 25.0)
    assert opts.b1.order == 2 and opts.quant.tissue == "wm" and opts.quant.label_tissue == {1: "csf", 2: "gm"}


@pytest.mark.parametrize("kw,msg", [
    ({"method": "fft"}, "--method must be one of"),
    ({"matrix": 4}, "--matrix must be in [8, 512]"),
    ({"matrix": 64.5}, "--matrix must be a whole number"),
    ({"matrix": "64"}, "--matrix must be a whole number"),
    ({"lam": -1.0}, "--lam must be >= 0"),
    ({"lam": float("nan")}, "--lam must be a finite number"),
    ({"iters": 0}, "--iters must be in [1, 10000]"),
    ({"eps": 1.0}, "--eps must be in"),
    ({"coil_compress": 0}, "--coil-compress must be >= 1"),
    ({"method": "cg", "coil_combine": "sos"}, "applies to the adjoint method only"),
    ({"t2s_ms": (1.0, 2.0, 3.0), "method": "cg"}, "one or two values"),
    ({"t2s_ms": (-1.0,), "method": "cg"}, "must be positive"),
    ({"t2s_ms": (5.0,)}, "needs an iterative method"),
    ({"rep": -1}, "--rep must be >= 0"),
    ({"allow_nucleus": "yes"}, "must be true or false"),
])
def test_recon_options_refuse(kw, msg):
    with pytest.raises(InputError, match=re.escape(msg)):
        ReconOptions(**kw)


@pytest.mark.parametrize("cls,kw,msg", [
    (QuantOptions, {"flip_deg": 180.0}, "--flip-deg must be in (0, 180)"),
    (QuantOptions, {"tr_ms": 0.0}, "--tr-ms must be in (0, 100000]"),
    (QuantOptions, {"te_ms": -0.1}, "--te-ms must be in [0, 10000]"),
    (QuantOptions, {"intercept": "free"}, "--intercept must be one of"),
    (QuantOptions, {"label_tissue": "1:gm"}, "LABEL=PRESET"),
    (QuantOptions, {"label_tissue": "x=gm"}, "is not a whole number"),
    (QuantOptions, {"noise_sd": 0.0}, "--noise-sd must be > 0"),
    (B1Options, {"flip_deg": 90.0}, "--flip-deg must be in (0, 90)"),
    (B1Options, {"order": 7}, "--order must be in [0, 6]"),
    (B1Options, {"fit": "spline"}, "--fit must be one of"),
])
def test_quant_and_b1_options_refuse(cls, kw, msg):
    with pytest.raises(InputError, match=re.escape(msg)):
        cls(**kw)


def test_config_tables_refuse_unknown_keys():
    with pytest.raises(InputError, match=r"unknown key\(s\) \['methd'\]"):
        RunOptions.from_sections({"recon": {"methd": "cg"}}, "config x.toml")
    opts = RunOptions.from_sections({"recon": {"method": "cs-tv", "t2s_ms": [4, 25]}, "quant": {"tissue": "wm"},
                                     "b1": {"fit": "smooth"}}, "config x.toml")
    assert opts.recon.t2s_ms == (4.0, 25.0) and opts.quant.tissue == "wm" and opts.b1.fit == "smooth"


def test_cli_refuses_a_bad_option_value_with_exit_2(capsys):
    from na23recon.cli import main

    assert main(["recon", "s.dat", "--traj", "t.npz", "-o", "o.nii.gz", "--method", "cg",
                 "--coil-combine", "sos"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "applies to the adjoint method only" in err[0]


def test_old_receive_map_spelling_still_works(capsys):
    """`--receive R.nii.gz` (a receive map, before --receive took a correction mode) is read as
    `--receive-map`; correction modes pass through unchanged."""
    from na23recon.cli import _old_receive_flag

    assert _old_receive_flag(["quantify", "x.nii.gz", "--receive", "r.nii.gz"]) == \
        ["quantify", "x.nii.gz", "--receive-map", "r.nii.gz"]
    assert _old_receive_flag(["quantify", "--receive=r.nii.gz"]) == ["quantify", "--receive-map=r.nii.gz"]
    assert "--receive-map" in capsys.readouterr().err
    for mode in ("n4", "reference", "reciprocal", "none"):
        assert _old_receive_flag(["quantify", "--receive", mode]) == ["quantify", "--receive", mode]
