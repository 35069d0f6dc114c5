"""What every connection offers, whatever carries it: results, options, errors."""

from __future__ import annotations

import abc
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

from edgectl.errors import EdgectlError

MiB = 1024 * 1024
DEFAULT_MAX_OUTPUT = 16 * MiB
READ_CHUNK = 64 * 1024
CLOSE_GRACE = 2.0  # seconds to wait for a process or channel to go after we end it

Reason = Literal["timeout", "refused", "auth", "hostkey-unknown", "hostkey-changed", "dns", "error"]
REASONS: tuple[str, ...] = get_args(Reason)


class TransportError(EdgectlError):
    """A node could not be reached or did not answer; `reason` says which way it failed."""

    def __init__(self, reason: Reason, message: str, *, retryable: bool = False) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown transport failure reason {reason!r}")
        # One line, always: these messages end up in tables and logs.
        super().__init__(" ".join(message.split()))
        self.reason: Reason = reason
        # True for drops during the handshake (sshd's MaxStartups): worth one more try.
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"TransportError({self.reason!r}, {self.message!r})"


@dataclass
class RunResult:
    """What a command left behind: exit status, output (maybe cut at the cap), time taken."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and its output is complete."""
        return self.exit_status == 0 and not self.truncated

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", errors="replace")


@dataclass
class ConnectOptions:
    """Timeouts, limits and the host-key policy of every connection of one run."""

    known_hosts_path: Path  # edgectl's own known_hosts; accepted keys are recorded here
    # Seconds. A connection attempt gets connect_timeout + login_timeout in all; once TCP is
    # up, banner, key exchange and authentication must finish within login_timeout.
    connect_timeout: float = 10.0
    login_timeout: float = 10.0
    command_timeout: float = 60.0  # per run(), put() and get() unless they pass their own
    keepalive_interval: float = 15.0  # a peer silent for 3 intervals is dropped
    accept_new: bool = False
    user_known_hosts: Path | None = Path("~/.ssh/known_hosts")  # read, never written
    max_output: int = DEFAULT_MAX_OUTPUT  # bytes kept per stream (stdout, stderr)


def script_command(
    argv: Sequence[str] | None, script: str | None, stdin: bytes | None
) -> tuple[list[str], bytes | None]:
    """Check run()'s arguments; return the argv to run and the bytes to send on stdin."""
    if (argv is None) == (script is None):
        raise ValueError("run() takes either argv or script=, not both and not neither")
    if script is not None:
        if stdin is not None:
            raise ValueError("script= is sent on stdin: it cannot be combined with stdin=")
        return ["sh", "-s"], script.encode("utf-8")
    assert argv is not None
    return list(argv), stdin


async def read_capped(
    read: Callable[[int], Awaitable[bytes]], cap: int, on_overflow: Callable[[], None]
) -> tuple[bytes, bool]:
    """Read a stream to EOF keeping at most `cap` bytes; call on_overflow once past it."""
    parts: list[bytes] = []
    kept = 0
    # Each pass consumes at least one byte or ends, so the loop is bounded by cap + 1 passes;
    # the caller bounds it in time.
    while True:
        chunk = await read(READ_CHUNK)
        if not chunk:
            return b"".join(parts), False
        if kept + len(chunk) > cap:
            parts.append(chunk[: cap - kept])
            on_overflow()
            return b"".join(parts), True
        parts.append(chunk)
        kept += len(chunk)


async def feed_stdin(
    write: Callable[[bytes], None],
    drain: Callable[[], Awaitable[None]],
    close: Callable[[], None],
    data: bytes | None,
) -> None:
    """Write data (if any) to a process's stdin in chunks, then close it."""
    try:
        if data:
            for start in range(0, len(data), READ_CHUNK):
                write(data[start : start + READ_CHUNK])
                await drain()
        close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command exited without reading all its input: its status tells the story


async def collect_output(
    read_stdout: Callable[[int], Awaitable[bytes]],
    read_stderr: Callable[[int], Awaitable[bytes]],
    stdin_feed: Coroutine[Any, Any, None],
    cap: int,
    on_overflow: Callable[[], None],
) -> tuple[bytes, bytes, bool]:
    """Read stdout and stderr under the cap while feeding stdin; return (out, err, truncated)."""
    tasks = [
        asyncio.ensure_future(read_capped(read_stdout, cap, on_overflow)),
        asyncio.ensure_future(read_capped(read_stderr, cap, on_overflow)),
        asyncio.ensure_future(stdin_feed),
    ]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # gather leaves the siblings running when one fails: stop them before going on.
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        raise
    out, out_truncated = tasks[0].result()  # type: ignore[misc]
    err, err_truncated = tasks[1].result()  # type: ignore[misc]
    return out, err, out_truncated or err_truncated


class Session(abc.ABC):
    """A command kept running on a node that answers requests, one at a time.

    For work repeated every few seconds on the same nodes (`top`): a request costs one
    write and one read on an open channel, not a new channel and a new remote shell.
    """

    @abc.abstractmethod
    async def exchange(
        self, request: bytes, end: bytes, *, timeout: float | None = None, max_output: int
    ) -> bytes:
        """Send a request; return the reply, which ends with `end`. Any failure ends the session."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the command; safe to call twice."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """True once the session has ended (closed, failed, or its connection lost)."""


class Connection(abc.ABC):
    """An open connection to one node: run commands, move single files."""

    node_name: str

    async def open_session(self, argv: Sequence[str]) -> Session | None:
        """Start argv (quoted) as a Session; None where this connection keeps none."""
        return None

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        script: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        max_output: int | None = None,
    ) -> RunResult:
        """Run argv (quoted) or a POSIX sh script (sent on stdin to `sh -s`) on the node."""

    @abc.abstractmethod
    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        """Copy one local file to a path on the node (relative paths start in the home)."""

    @abc.abstractmethod
    async def get(
        self, remote: str, local: Path, max_size: int, *, timeout: float | None = None
    ) -> int:
        """Copy one regular file from the node, refusing one over max_size; return its size."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call twice."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """True once the connection is closed or lost."""

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], timeout: float) -> T:
    """Await a result within timeout seconds, else raise asyncio.TimeoutError.

    On Python 3.11+ the awaitable runs in the calling task under `asyncio.timeout`;
    `wait_for` would wrap it in a task of its own, for every command on every node.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


async def with_timeout(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """Await a result, turning a timeout into TransportError('timeout')."""
    try:
        return await bounded(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TransportError("timeout", f"{what}: no result within {timeout:g} s") from None
