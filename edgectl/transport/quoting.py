"""The one place a command line for a remote shell is built from arguments."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def quote_argv(argv: Sequence[str]) -> str:
    """Join argv into one POSIX-shell command line, each argument quoted to reach it intact."""
    if isinstance(argv, str):
        # A bare string would be quoted character by character: refuse the mistake loudly.
        raise TypeError("quote_argv takes a sequence of arguments, not a string")
    if not argv:
        raise ValueError("quote_argv needs at least one argument")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, not {type(arg).__name__}")
        if "\x00" in arg:
            raise ValueError("a command argument cannot contain a NUL byte")
    return " ".join(shlex.quote(arg) for arg in argv)
