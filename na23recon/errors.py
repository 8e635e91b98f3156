"""Error types that separate a user's bad input (CLI exit 2) from an internal fault (exit 1)."""


class InputError(ValueError):
    """Bad input or usage: a truncated file, a wrong nucleus, a mismatched trajectory, ...

    The message is one line that says what was expected and what was found; the CLI prints it
    and exits with code 2.
    """
