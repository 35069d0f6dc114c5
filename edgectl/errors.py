"""The exceptions edgectl raises; each carries the exit status the CLI returns for it."""

from __future__ import annotations

from edgectl.status import ExitStatus


class EdgectlError(Exception):
    """A failure with a one-line message meant for the user."""

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(EdgectlError):
    """Bad arguments or bad input data."""

    exit_status = ExitStatus.USAGE


class ValidationError(UsageError):
    """A value (name, host, label, port...) that edgectl refuses to store."""


class ImportFormatError(UsageError):
    """An inventory file that cannot be imported; the message names file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class NotFoundError(EdgectlError):
    """A named node or file does not exist, or a selector matched nothing."""

    exit_status = ExitStatus.NOT_FOUND


class ConflictError(EdgectlError):
    """The thing to create exists already."""

    exit_status = ExitStatus.CONFLICT


class StoreError(EdgectlError):
    """A data file under EDGECTL_HOME cannot be read or written."""

    exit_status = ExitStatus.STORE
