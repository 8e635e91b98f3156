"""Command-line interface: argument parsing only; every subcommand calls the library.

Exit codes: 0 success, 2 bad input or usage (one line on stderr; also an output folder that cannot
be written), 1 internal fault or a full disk (one line naming the file), 3 a batch in which some
scans failed, 141 stdout closed early (`| head`), quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import warnings

from .. import __version__
from ..core.options import RECEIVE_MODES
from ..errors import InputError, OutputError
from ..provenance import set_command
from .commands import EXIT_FAULT, EXIT_INPUT, SUBCOMMANDS

log = logging.getLogger("na23recon")

EXIT_PIPE = 128 + 13  # as a shell reports a process ended by SIGPIPE


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        sys.stderr.write(f"na23recon: error: {message} (see '{self.prog} -h')\n")
        sys.exit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="na23recon", description="Sodium (23Na) MRI reconstruction and TSC quantification.")
    parser.add_argument("--version", action="version", version=f"na23recon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal faults")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _old_receive_flag(argv: list[str]) -> list[str]:
    """`quantify --receive R.nii.gz` (a receive map, before --receive took a correction mode) still
    works: a value that is not a mode becomes `--receive-map` with a note on stderr."""
    out = list(argv)
    for i, a in enumerate(out):
        name, eq, value = a.partition("=")
        if name != "--receive":
            continue
        value = value if eq else (out[i + 1] if i + 1 < len(out) else "")
        if value and value not in RECEIVE_MODES:
            sys.stderr.write("na23recon: note: --receive now takes a correction mode; a receive map is "
                             "--receive-map (read as one)\n")
            out[i] = f"--receive-map={value}" if eq else "--receive-map"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _old_receive_flag(list(sys.argv[1:] if argv is None else argv))
    set_command(["na23recon", *argv])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (one line already written) and -h / --version
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        warnings.simplefilter("ignore")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except InputError as exc:
        sys.stderr.write(f"na23recon {args.command}: error: {_one_line(exc)}\n")
        return EXIT_INPUT
    except BrokenPipeError:  # `na23recon info X | head -1`: the reader has gone; end quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except OutputError as exc:
        sys.stderr.write(f"na23recon {args.command}: error: {_one_line(exc)}\n")
        return EXIT_FAULT if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else EXIT_INPUT
    except RecursionError:
        sys.stderr.write(f"na23recon {args.command}: error: an input nests too deeply to be read\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write(f"na23recon {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # an internal fault: say so in one line, traceback with --debug
        if args.debug or os.environ.get("NA23RECON_DEBUG"):
            raise
        sys.stderr.write(f"na23recon {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                         f"(rerun with --debug for the traceback)\n")
        return EXIT_FAULT


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

