"""Command-line options generated from the option dataclasses (one definition of each option).

Each field of `ReconOptions`, `QuantOptions` or `B1Options` becomes one argparse option whose
name, type, choices, default and help come from the field; `from_args` builds the dataclass back
from the parsed namespace, so the dataclass validates what the user typed.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

_TYPES = {"int": int, "float": float, "str": str}


def flag_name(field_name: str, default: Any, kind: str, prefix: str = "", flag: str | None = None) -> str:
    """The option string of a field: --field-name, or --no-field-name for a switch on by default."""
    name = flag or field_name.replace("_", "-")
    if kind == "bool" and default is True and not flag:
        name = "no-" + name
    return f"--{prefix}{name}"


def default_help(f) -> str:
    """A field's help text with its default, as the CLI prints it."""
    m = f.metadata
    if m["kind"] == "bool":
        return m["help"] + (" (default: on)" if f.default else "")
    shown = m["default_text"] if f.default is None else f.default
    return f"{m['help']} (default: {shown})" if shown is not None else m["help"]


def add_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "", exclude: tuple[str, ...] = (),
                title: str | None = None, suppress: bool = False) -> None:
    """Add one option per field of the options dataclass `cls` to `parser`.

    prefix: put before every option name (e.g. 'b1-' where two steps share a parser).
    exclude: fields the command does not offer.
    suppress: leave options the user did not give out of the namespace (they then override a
        config file's values only when given; see `given`).
    """
    group = parser.add_argument_group(title) if title else parser
    for f in fields(cls):
        if f.name in exclude:
            continue
        m = f.metadata
        dest = prefix.replace("-", "_") + f.name
        opt = flag_name(f.name, f.default, m["kind"], prefix, m.get("flag"))
        kw: dict[str, Any] = {"dest": dest, "help": default_help(f).replace("%", "%%")}
        if m["kind"] == "bool":
            kw.update(action="store_false" if f.default else "store_true", default=f.default)
        elif m["kind"] == "floats":
            kw.update(type=float, nargs="+", default=f.default, metavar=m.get("metavar") or "X")
        elif m["kind"] == "labelmap":
            kw.update(type=str, default=f.default, metavar=m.get("metavar"))
        else:
            kw.update(type=_TYPES[m["kind"]], default=f.default)
            if m.get("metavar"):
                kw["metavar"] = m["metavar"]
            if m.get("choices"):
                kw["choices"] = list(m["choices"])
        if suppress:
            kw["default"] = argparse.SUPPRESS
        group.add_argument(opt, **kw)


def from_args(cls: type[T], args: argparse.Namespace, prefix: str = "", exclude: tuple[str, ...] = (),
              **fixed: Any) -> T:
    """The options dataclass from a parsed namespace (fields not on the parser, or in `exclude`,
    keep their default; `fixed` sets fields the command decides itself)."""
    values = given(cls, args, prefix, exclude)
    values.update(fixed)
    return cls(**values)


def given(cls: type, args: argparse.Namespace, prefix: str = "", exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """{field: value} of the options of `cls` that are in the namespace (with `suppress`: given),
    leaving out `exclude` (fields whose option belongs to another step on a shared parser)."""
    dest = prefix.replace("-", "_")
    return {f.name: getattr(args, dest + f.name) for f in fields(cls)
            if f.name not in exclude and hasattr(args, dest + f.name)}
