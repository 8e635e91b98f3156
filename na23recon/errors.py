"""Error types that separate a user's bad input (CLI exit 2) from an internal fault (exit 1)."""


class InputError(ValueError):
    """Bad input or usage: a truncated file, a wrong nucleus, a mismatched trajectory, ...

    The message is one line that says what was expected and what was found; the CLI prints it
    and exits with code 2.
    """


class OutputError(OSError):
    """An output could not be written: no space left, a quota, a read-only or forbidden folder.

    The message is one line naming the file and the reason; nothing of that output is left
    behind. The CLI exits 2 when the output location is not writable (the user chose it) and 1
    for a full disk or quota (the command is right; rerun it once there is space)."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_
        self.message = message

    def __str__(self) -> str:
        return self.message
