"""Every exit code edgectl returns, in one place."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes; scripts depend on these values, so they never change meaning."""

    OK = 0
    ERROR = 1  # a failure that fits no narrower code
    USAGE = 2  # bad arguments or bad input (click uses 2 for usage errors as well)
    NOT_FOUND = 3  # a named node, job or file does not exist; a selector matched nothing
    CONFLICT = 4  # the thing exists already (e.g. `inventory add` of a taken name)
    STORE = 5  # a data file under EDGECTL_HOME is unreadable or cannot be written
    PARTIAL = 6  # fleet operation: some nodes failed or were unreachable
    ALL_FAILED = 7  # fleet operation: no node succeeded
    INTERRUPTED = 130  # Ctrl-C
